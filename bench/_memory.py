"""Will a benchmark case fit? Checked before it allocates anything, so that a bench skips it with a printed
reason instead of dying of an out-of-memory error halfway through a sweep.

The estimates are rough on purpose (within tens of percent) and the check keeps headroom for what they
leave out: the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gpt.config import GPTConfig
from profiling import flops

HEADROOM = 0.9  # a case may plan to use this share of the memory free before it starts
GiB = 2**30


def free_bytes(device: torch.device) -> int | None:
    """Memory free now: on CUDA the device's (not the current device's); on a Linux CPU MemAvailable; else None."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    meminfo = Path("/proc/meminfo")
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read_text(), re.M) if meminfo.exists() else None
    return int(match.group(1)) * 1024 if match else None


def skip_reason(case: str, needed_bytes: float, device: torch.device) -> str | None:
    """None when `needed_bytes` fits in HEADROOM of the free memory (or that is unknown); else why `case` is skipped."""
    free = free_bytes(device)
    if free is None or needed_bytes <= HEADROOM * free:
        return None
    return (f"skipped {case}: needs about {needed_bytes / GiB:,.1f} GiB, {device} has {free / GiB:,.1f} GiB free "
            f"(a case may use {HEADROOM:.0%}); use a smaller batch or a larger device")


def training_bytes(config: GPTConfig, batch: int, activation_dtype: object = "bf16") -> float:
    """Estimated peak of one AdamW training step with float32 master weights.

    16 bytes a parameter (weights, gradients, AdamW's two moments, all float32), plus the activations kept
    for backward, 34·T·B·d bytes per layer at 2-byte activations (Korthikanti et al. 2022, "Reducing
    Activation Recomputation in Large Transformer Models", eq. 1, without its 5·H·T²·B attention-matrix
    term, which fused attention never stores), scaled to the activation dtype, plus the float32 logits,
    their softmax and their gradient (3 × B·T·vocab × 4 bytes). GPT-2 XL at batch 8 × 1024 in bf16:
    about 51 GB, more than an A100 40GB holds.
    """
    activation_scale = flops.bytes_per_element(activation_dtype) / 2
    tokens = batch * config.block_size
    activations = config.n_layer * 34 * tokens * config.n_embd * activation_scale
    return 16 * flops.param_count(config) + activations + 3 * tokens * config.vocab_size * 4


def decode_bytes(config: GPTConfig, batch: int, context: int, dtype: object) -> float:
    """Estimated memory of KV-cache decoding at `context` tokens: weights, the full cache, float32 logits."""
    return flops.decode_bytes_per_step(config, context, batch, dtype) + batch * config.vocab_size * 4
