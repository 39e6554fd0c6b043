"""Will a benchmark case fit? Checked before it allocates anything, so that a bench skips it with a printed
reason instead of dying of an out-of-memory error halfway through a sweep.

Where `gpt.memory` refuses a run only on a lower bound (never a false alarm), a bench skips on the
expected peak (`training_bytes` below; `gpt.memory.generation_bytes` for decoding), keeping headroom
for what the estimates leave out: the CUDA context, cuBLAS workspaces, the allocator's fragmentation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpt.config import GPTConfig
from gpt.memory import free_bytes
from profiling import flops

if TYPE_CHECKING:
    import torch

HEADROOM = 0.9  # a case may plan to use this share of the memory free before it starts
GiB = 2**30


def skip_reason(case: str, needed_bytes: float, device: "torch.device") -> str | None:
    """None when `needed_bytes` fits in HEADROOM of the free memory (or that is unknown); else why `case` is skipped."""
    free = free_bytes(device)
    if free is None or needed_bytes <= HEADROOM * free:
        return None
    return (f"skipped {case}: needs about {needed_bytes / GiB:,.1f} GiB, {device} has {free / GiB:,.1f} GiB free "
            f"(a case may use {HEADROOM:.0%}); use a smaller batch or a larger device")


def training_bytes(config: GPTConfig, batch: int, activation_dtype: object = "bf16") -> float:
    """Expected peak of one AdamW training step with float32 master weights (gpt.memory's is a lower bound).

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
