"""Refuse work that cannot fit in memory before it starts, with the estimate it was refused on.

The estimates are lower bounds (fp32 weights, gradients and AdamW moments; the logits and
their gradient; a few activations per layer), so a refusal is never a false alarm; a run
that passes may still need more.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gpt.config import GPTConfig
from gpt.errors import GptmeterError

if TYPE_CHECKING:
    import torch

GIB = 2**30


class MemoryEstimateError(GptmeterError, ValueError):
    """The requested batch cannot fit in the device's memory."""


def parameter_count(config: GPTConfig) -> int:
    """Matrix parameters (biases and LayerNorm gains left out: this feeds lower bounds)."""
    d, d_kv = config.n_embd, config.n_kv_head * config.head_dim
    per_layer = 2 * d * d + 2 * d * d_kv + 8 * d * d  # q and output projections, k and v, the MLP's two matrices
    return config.vocab_size * d + config.block_size * d + config.n_layer * per_layer


def training_bytes(config: GPTConfig, batch_size: int, shards: int = 1) -> int:
    """Lower bound for one training micro-batch: 16 bytes a parameter (split over `shards` FSDP ranks),
    logits twice, 4 activations per layer."""
    tokens = batch_size * config.block_size
    weights_and_optimizer = 16 * parameter_count(config) // shards
    return weights_and_optimizer + 4 * tokens * (2 * config.vocab_size + 4 * config.n_layer * config.n_embd)


def generation_bytes(config: GPTConfig, samples: int, tokens: int, itemsize: int) -> int:
    """Lower bound for generating `samples` sequences of `tokens`: weights, the KV cache and one row of logits each."""
    kv_cache = 2 * config.n_layer * samples * min(tokens, config.block_size) * config.n_kv_head * config.head_dim
    return itemsize * (parameter_count(config) + kv_cache) + 4 * samples * config.vocab_size


def free_bytes(device: "torch.device") -> int | None:
    """Memory free for this process on `device`: the GPU's free memory, or the host's available RAM."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:  # Linux: MemAvailable counts the page cache the kernel would give back, unlike free pages
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not a POSIX system that reports it
        return None


def require_fits(needed: int, device: "torch.device", what: str, remedy: str) -> None:
    """MemoryEstimateError if `needed` bytes exceed what `device` has free."""
    free = free_bytes(device)
    if free is not None and needed > free:
        raise MemoryEstimateError(
            f"{what} needs at least {needed / GIB:,.1f} GiB (a lower-bound estimate) but {device} has "
            f"{free / GIB:,.1f} GiB free; {remedy}"
        )
