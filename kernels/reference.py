"""Plain-PyTorch attention: the oracle the Triton kernel is tested against.

It has exactly the semantics of `kernels.flash_attention` (layout, grouped-query
heads, bottom-right causal alignment, zeros for query rows that see no key) and
materialises the full score matrix, so it is only meant for tests, benchmarks'
correctness checks and small CPU runs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def causal_visibility(seq_q: int, seq_k: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean (seq_q, seq_k) mask: query i sees key j when j <= i + seq_k - seq_q.

    Aligning the diagonal to the bottom-right corner is what KV-cache decoding needs:
    the last query is the newest token and sees every cached key.
    """
    rows = torch.arange(seq_q, device=device).unsqueeze(1)
    cols = torch.arange(seq_k, device=device).unsqueeze(0)
    return cols <= rows + (seq_k - seq_q)


def attention_reference(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = True, sm_scale: float | None = None
) -> Tensor:
    """softmax(q kᵀ · sm_scale, masked) v in the inputs' own precision.

    q: (batch, heads, seq_q, head_dim); k, v: (batch, kv_heads, seq_k, head_dim) with
    heads % kv_heads == 0 (query head h reads key/value head h // (heads / kv_heads)).
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[-1])
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1)) * sm_scale  # (batch, heads, seq_q, seq_k)
    if not causal:
        return torch.softmax(scores, dim=-1) @ v
    visible = causal_visibility(q.shape[-2], k.shape[-2], q.device)
    # A finite fill (not -inf) keeps softmax and its backward free of NaN for rows that
    # see no key; those rows are then zeroed, which also zeroes their gradients.
    scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1) * visible.any(dim=-1, keepdim=True)
    return probs @ v
