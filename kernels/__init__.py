"""Attention kernels: the fused Triton kernel, its plain-PyTorch oracle, and the `auto` evidence table."""

from kernels.fused_attention import flash_attention
from kernels.reference import attention_reference
from kernels.selection import measured_faster_than_sdpa

__all__ = ["flash_attention", "attention_reference", "measured_faster_than_sdpa"]
