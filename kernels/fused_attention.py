"""Fused softmax attention in Triton, forward and backward (the FlashAttention-2 algorithm).

Attention is O = softmax(S) V with S = Q Kᵀ · sm_scale. Materialising S costs
seq_q × seq_k memory per head; this kernel never does. Each program owns a block of
rows and walks over the columns of S one tile at a time.

Forward (one program per block of BLOCK_M queries of one head). Online softmax:
keep, per row, the running maximum m and the running sum l of exp(S - m), and an
unnormalised output acc. For each tile of BLOCK_N keys, raise m to the tile's
maximum, rescale l and acc by exp(m_old - m_new), then add the tile's
probabilities and their product with V. At the end O = acc / l, and the row's
log-sum-exp (m + log l) is saved so that the backward pass can rebuild any
probability as exp(S - lse) without redoing the softmax. Exponentials are base 2
(exp2 is a single instruction): scores are pre-multiplied by log2(e).

Causal masking splits each row block's key range in two loops: tiles entirely
below the diagonal need no mask, and only the few tiles crossing the diagonal or
the end of the sequence pay for one. The diagonal is bottom-right aligned (query
i sees key j when j <= i + seq_k - seq_q), so with seq_q > seq_k the first rows
see no key at all: they return zeros, and their log-sum-exp is stored as +inf so
that every probability rebuilt from it is exactly 0.

Backward. With P = softmax(S) and dO given, dV = Pᵀ dO, dP = dO Vᵀ and
dS = P ∘ (dP - delta), where delta = rowsum(dO ∘ O) is computed by a small
preprocessing kernel (it equals rowsum(P ∘ dP) and saves a pass over the keys).
Then dQ = dS K · sm_scale and dK = dSᵀ Q · sm_scale. Two kernels rebuild P from
the saved log-sum-exp:
  - dK/dV: one program per block of keys of one key/value head; it loops over the
    query heads that share that head (grouped-query attention) and over their
    query blocks, so the sum over the group happens in registers, without atomics:
    the result is deterministic.
  - dQ: one program per block of queries, looping over key blocks like the forward.

The public entry point is `flash_attention`; it calls the custom ops
`gptmeter::flash_attention_fwd` / `gptmeter::flash_attention_bwd`, which carry a
fake implementation (for torch.compile), autograd, and a FLOP formula (for
FlopCounterMode).
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when this module is
# imported; a later change of the variable does not turn the interpreter on.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes", "y")  # as Triton parses it

_LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x · log2 e)
_LN2 = tl.constexpr(0.6931471805599453)  # ln(x) = log2(x) · ln 2


# --------------------------------------------------------------------------- tuning
#
# The tuning key holds the sequence lengths rounded up to a power of two (plus head
# dim, causality and, added by Triton itself, the dtypes), so a training run tunes
# once per shape family, not once per length. Under the interpreter a single small
# configuration keeps CPU tests fast; its unequal block sizes exercise tail masks.


def _configs(gpu: list[tuple[int, int, int, int]], interpreted: tuple[int, int]) -> list[triton.Config]:
    if INTERPRETED:
        block_m, block_n = interpreted
        return [triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=1, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps, num_stages=stages)
        for m, n, warps, stages in gpu
    ]


# float32 inputs take Triton's exact, non-tensor-core dot path: minutes to compile at
# large tiles and never the fast path, so they get one small tile instead of a sweep.
_FLOAT32_CONFIG = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)


def _prune_configs(configs, named_args, **kwargs):
    """Drop tiles much longer than the sequences (e.g. 128 query rows for one decoding query);
    float32 gets its single tile."""
    if named_args["Q"].dtype == torch.float32 and not INTERPRETED:
        return [_FLOAT32_CONFIG]
    fitting = [
        c for c in configs
        if c.kwargs["BLOCK_M"] <= named_args["seq_q_bucket"] and c.kwargs["BLOCK_N"] <= named_args["seq_k_bucket"]
    ]
    return fitting or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def _length_bucket(length: int) -> int:
    return triton.next_power_of_2(max(length, 16))


def _specialisation(value: int) -> str:
    """How Triton specialises an integer argument: a constant 1, divisible by 16, or neither."""
    return "1" if value == 1 else "16" if value % 16 == 0 else "-"


def launch_key(seq_q: int, seq_k: int) -> tuple[int, int, str, str]:
    """The part of a forward launch's keys that its sequence lengths set: the autotuning bucket of each
    and Triton's specialisation of each. A launch whose key was not seen before (the tensors' strides
    aside) compiles a kernel, and with a new bucket also autotunes: seconds on a GPU. Decoding meets a
    new key every few steps as the key length grows; timed runs warm them up first (gpt/warmup.py).
    """
    return _length_bucket(seq_q), _length_bucket(seq_k), _specialisation(seq_q), _specialisation(seq_k)


_TUNING_KEY = ["seq_q_bucket", "seq_k_bucket", "HEAD_DIM", "CAUSAL"]
_PRUNE = {"early_config_prune": _prune_configs}

# (BLOCK_M, BLOCK_N, warps, stages). Forward and dQ: BLOCK_M queries × BLOCK_N keys.
_FORWARD_CONFIGS = _configs(
    [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4), (64, 64, 4, 3), (64, 32, 4, 4),
     (32, 64, 4, 2), (16, 64, 4, 2)],
    interpreted=(32, 16),
)
_DQ_CONFIGS = _configs(
    [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 64, 4, 2)],
    interpreted=(32, 16),
)
# dK/dV: BLOCK_N keys per program, streamed over BLOCK_M queries (smaller, as in FA2).
_DKDV_CONFIGS = _configs(
    [(32, 128, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3), (16, 128, 4, 4), (16, 64, 4, 2)],
    interpreted=(16, 32),
)


# --------------------------------------------------------------------------- forward


@triton.jit
def _forward_key_tiles(acc, row_sum, row_max, q, k_ptrs, v_ptrs, stride_kn, stride_vn, rows, cols,
                       key_offset, seq_k, qk_scale, lo, hi,
                       BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold key tiles [lo, hi) into the online softmax of one query block."""
    for start_n in range(lo, hi, BLOCK_N):
        if MASKED:
            key_in_range = (start_n + cols) < seq_k
            k_t = tl.load(k_ptrs + start_n * stride_kn, mask=key_in_range[None, :], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=key_in_range[:, None], other=0.0)
        else:
            k_t = tl.load(k_ptrs + start_n * stride_kn)
            v = tl.load(v_ptrs + start_n * stride_vn)
        scores = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        if MASKED:
            visible = key_in_range[None, :]
            if CAUSAL:
                visible = visible & ((start_n + cols)[None, :] <= rows[:, None] + key_offset)
            scores = tl.where(visible, scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        if MASKED:
            # A row that has seen no key yet keeps max -inf; subtract 0 instead so
            # that exp2(-inf - -inf) does not turn into NaN.
            new_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        probs = tl.exp2(scores - new_max[:, None])
        rescale = tl.exp2(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(probs, 1)
        acc = tl.dot(probs.to(v.dtype), v, acc * rescale[:, None], input_precision=DOT_PRECISION)
        row_max = new_max
    return acc, row_sum, row_max


@triton.jit
def _block_of(length, BLOCK: tl.constexpr):
    """This program's block of `length` and its (batch, head) index, on the one-dimensional grid.

    Axis 0 of a grid allows 2^31 - 1 programs where axes 1 and 2 allow 65,535, so the
    launchers put every (batch, head) × block there (see `_flat_grid`). A head's blocks
    are adjacent, so the programs running together share its keys and values in L2.
    """
    num_blocks = tl.cdiv(length, BLOCK)
    return tl.program_id(0) % num_blocks, tl.program_id(0) // num_blocks, num_blocks


@triton.jit
def _query_block(seq_q, num_heads, group_size, BLOCK_M: tl.constexpr):
    """This program's first query row, batch, query head and the key/value head it shares (GQA).

    Causal query blocks near the end see the most keys: they are launched first, so
    the short ones fill the gaps at the end of the grid.
    """
    block, batch_head, num_blocks = _block_of(seq_q, BLOCK_M)
    start_m = (num_blocks - 1 - block) * BLOCK_M
    batch = (batch_head // num_heads).to(tl.int64)
    head = batch_head % num_heads
    kv_head = (head // group_size).to(tl.int64)
    return start_m, batch, head.to(tl.int64), kv_head


@triton.jit
def _key_ranges(start_m, seq_q, seq_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key tiles [0, unmasked_end) need no mask for this query block; [unmasked_end, end) do.

    With causal masking, keys up to the block's first row's diagonal are visible to
    every row of the block; the diagonal tiles after them are masked, and keys past the
    block's last row's diagonal are never visited.
    """
    key_offset = seq_k - seq_q  # bottom-right alignment: query i sees keys j <= i + key_offset
    if CAUSAL:
        unmasked_end = tl.maximum(start_m + key_offset + 1, 0) // BLOCK_N * BLOCK_N
        end = tl.minimum(tl.maximum(start_m + BLOCK_M + key_offset, 0), seq_k)
    else:
        unmasked_end = seq_k // BLOCK_N * BLOCK_N
        end = seq_k
    return key_offset, unmasked_end, end


@triton.autotune(configs=_FORWARD_CONFIGS, key=_TUNING_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _forward_kernel(Q, K, V, Out, LSE, sm_scale,
                    stride_qb, stride_qh, stride_qm, stride_qd,
                    stride_kb, stride_kh, stride_kn, stride_kd,
                    stride_vb, stride_vh, stride_vn, stride_vd,
                    stride_ob, stride_oh, stride_om, stride_od,
                    num_heads, group_size, seq_q, seq_k, seq_q_bucket, seq_k_bucket,
                    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m, batch, head, kv_head = _query_block(seq_q, num_heads, group_size, BLOCK_M)

    rows = start_m + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    row_in_range = rows < seq_q

    q_ptrs = Q + batch * stride_qb + head * stride_qh + rows[:, None] * stride_qm + dims[None, :] * stride_qd
    k_ptrs = K + batch * stride_kb + kv_head * stride_kh + cols[None, :] * stride_kn + dims[:, None] * stride_kd
    v_ptrs = V + batch * stride_vb + kv_head * stride_vh + cols[:, None] * stride_vn + dims[None, :] * stride_vd
    q = tl.load(q_ptrs, mask=row_in_range[:, None], other=0.0)

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    qk_scale = sm_scale * _LOG2E

    key_offset, unmasked_end, end = _key_ranges(start_m, seq_q, seq_k, CAUSAL, BLOCK_M, BLOCK_N)
    acc, row_sum, row_max = _forward_key_tiles(
        acc, row_sum, row_max, q, k_ptrs, v_ptrs, stride_kn, stride_vn, rows, cols, key_offset, seq_k,
        qk_scale, 0, unmasked_end, BLOCK_N, CAUSAL, False, DOT_PRECISION)
    acc, row_sum, row_max = _forward_key_tiles(
        acc, row_sum, row_max, q, k_ptrs, v_ptrs, stride_kn, stride_vn, rows, cols, key_offset, seq_k,
        qk_scale, unmasked_end, end, BLOCK_N, CAUSAL, True, DOT_PRECISION)

    sees_no_key = row_sum == 0.0
    row_sum = tl.where(sees_no_key, 1.0, row_sum)  # such rows have acc == 0: their output is 0
    out = acc / row_sum[:, None]
    lse = tl.where(sees_no_key, float("inf"), (row_max + tl.log2(row_sum)) * _LN2)
    o_ptrs = Out + batch * stride_ob + head * stride_oh + rows[:, None] * stride_om + dims[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_in_range[:, None])
    tl.store(LSE + (batch * num_heads + head) * seq_q + rows, lse, mask=row_in_range)


# --------------------------------------------------------------------------- backward


@triton.jit
def _backward_delta_kernel(Out, DO, Delta, stride_ob, stride_oh, stride_om, stride_od,
                           stride_dob, stride_doh, stride_dom, stride_dod, num_heads, seq_q,
                           HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(dO ∘ O), one float32 per query row."""
    block, batch_head, _ = _block_of(seq_q, BLOCK_M)
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    batch = (batch_head // num_heads).to(tl.int64)
    head = (batch_head % num_heads).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM)
    row_in_range = rows < seq_q
    out = tl.load(Out + batch * stride_ob + head * stride_oh + rows[:, None] * stride_om + dims[None, :] * stride_od,
                  mask=row_in_range[:, None], other=0.0)
    grad_out = tl.load(
        DO + batch * stride_dob + head * stride_doh + rows[:, None] * stride_dom + dims[None, :] * stride_dod,
        mask=row_in_range[:, None], other=0.0)
    delta = tl.sum(out.to(tl.float32) * grad_out.to(tl.float32), 1)
    tl.store(Delta + (batch * num_heads + head) * seq_q + rows, delta, mask=row_in_range)


@triton.jit
def _dkdv_query_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm, stride_dom,
                      keys, rows, key_offset, seq_q, qk_scale, lo, hi,
                      BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Accumulate one key block's dK, dV over query tiles [lo, hi) of one query head (transposed: keys × queries)."""
    for start_m in range(lo, hi, BLOCK_M):
        if MASKED:
            row_in_range = (start_m + rows) < seq_q
            q_t = tl.load(q_ptrs + start_m * stride_qm, mask=row_in_range[None, :], other=0.0)
            grad_out = tl.load(do_ptrs + start_m * stride_dom, mask=row_in_range[:, None], other=0.0)
            lse = tl.load(lse_ptrs + start_m, mask=row_in_range, other=0.0)
            delta = tl.load(delta_ptrs + start_m, mask=row_in_range, other=0.0)
        else:
            q_t = tl.load(q_ptrs + start_m * stride_qm)
            grad_out = tl.load(do_ptrs + start_m * stride_dom)
            lse = tl.load(lse_ptrs + start_m)
            delta = tl.load(delta_ptrs + start_m)
        scores_t = tl.dot(k, q_t, input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M), log2 units
        probs_t = tl.exp2(scores_t - lse[None, :] * _LOG2E)
        if MASKED:
            visible = row_in_range[None, :]
            if CAUSAL:
                visible = visible & (keys[:, None] <= (start_m + rows)[None, :] + key_offset)
            probs_t = tl.where(visible, probs_t, 0.0)
        dv = tl.dot(probs_t.to(grad_out.dtype), grad_out, dv, input_precision=DOT_PRECISION)
        dprobs_t = tl.dot(v, tl.trans(grad_out), input_precision=DOT_PRECISION)
        dscores_t = probs_t * (dprobs_t - delta[None, :])
        dk = tl.dot(dscores_t.to(q_t.dtype), tl.trans(q_t), dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.autotune(configs=_DKDV_CONFIGS, key=_TUNING_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _backward_dkdv_kernel(Q, K, V, DO, LSE, Delta, DK, DV, sm_scale,
                          stride_qb, stride_qh, stride_qm, stride_qd,
                          stride_kb, stride_kh, stride_kn, stride_kd,
                          stride_vb, stride_vh, stride_vn, stride_vd,
                          stride_dob, stride_doh, stride_dom, stride_dod,
                          num_heads, group_size, seq_q, seq_k, seq_q_bucket, seq_k_bucket,
                          HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    block, batch_kv_head, _ = _block_of(seq_k, BLOCK_N)
    start_n = block * BLOCK_N
    num_kv_heads = num_heads // group_size
    batch = (batch_kv_head // num_kv_heads).to(tl.int64)
    kv_head = batch_kv_head % num_kv_heads

    keys = start_n + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    key_in_range = keys < seq_k
    k = tl.load(K + batch * stride_kb + kv_head.to(tl.int64) * stride_kh + keys[:, None] * stride_kn
                + dims[None, :] * stride_kd, mask=key_in_range[:, None], other=0.0)
    v = tl.load(V + batch * stride_vb + kv_head.to(tl.int64) * stride_vh + keys[:, None] * stride_vn
                + dims[None, :] * stride_vd, mask=key_in_range[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * _LOG2E

    # Query tiles in three runs: [first, unmasked_start) crosses the diagonal,
    # [unmasked_start, full_tiles_end) sees the whole key block, [full_tiles_end, seq_q)
    # is the ragged end of the sequence. Queries before `first` see none of these keys.
    key_offset = seq_k - seq_q
    full_tiles_end = seq_q // BLOCK_M * BLOCK_M
    if CAUSAL:
        first = tl.maximum(start_n - key_offset, 0) // BLOCK_M * BLOCK_M
        # Rows from this one on see every key of the block; round up to a tile boundary.
        whole_block_row = tl.maximum(start_n + BLOCK_N - 1 - key_offset, 0)
        unmasked_start = (whole_block_row + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        unmasked_start = tl.maximum(first, tl.minimum(unmasked_start, full_tiles_end))
    else:
        first = 0
        unmasked_start = 0

    for member in range(group_size):
        head = (kv_head * group_size + member).to(tl.int64)
        row_base = (batch * num_heads + head) * seq_q
        q_ptrs = Q + batch * stride_qb + head * stride_qh + rows[None, :] * stride_qm + dims[:, None] * stride_qd
        do_ptrs = DO + batch * stride_dob + head * stride_doh + rows[:, None] * stride_dom + dims[None, :] * stride_dod
        lse_ptrs = LSE + row_base + rows
        delta_ptrs = Delta + row_base + rows
        dk, dv = _dkdv_query_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm, stride_dom,
                                   keys, rows, key_offset, seq_q, qk_scale, first, unmasked_start,
                                   BLOCK_M, CAUSAL, True, DOT_PRECISION)
        dk, dv = _dkdv_query_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm, stride_dom,
                                   keys, rows, key_offset, seq_q, qk_scale, unmasked_start, full_tiles_end,
                                   BLOCK_M, CAUSAL, False, DOT_PRECISION)
        dk, dv = _dkdv_query_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm, stride_dom,
                                   keys, rows, key_offset, seq_q, qk_scale, full_tiles_end, seq_q,
                                   BLOCK_M, CAUSAL, True, DOT_PRECISION)

    out_offsets = (batch * num_kv_heads + kv_head) * seq_k * HEAD_DIM + keys[:, None] * HEAD_DIM + dims[None, :]
    tl.store(DK + out_offsets, (dk * sm_scale).to(DK.dtype.element_ty), mask=key_in_range[:, None])
    tl.store(DV + out_offsets, dv.to(DV.dtype.element_ty), mask=key_in_range[:, None])


@triton.jit
def _dq_key_tiles(dq, q, grad_out, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, rows, cols,
                  key_offset, seq_k, qk_scale, lo, hi,
                  BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Accumulate one query block's dQ over key tiles [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        if MASKED:
            key_in_range = (start_n + cols) < seq_k
            k_t = tl.load(k_ptrs + start_n * stride_kn, mask=key_in_range[None, :], other=0.0)
            v_t = tl.load(v_ptrs + start_n * stride_vn, mask=key_in_range[None, :], other=0.0)
        else:
            k_t = tl.load(k_ptrs + start_n * stride_kn)
            v_t = tl.load(v_ptrs + start_n * stride_vn)
        scores = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale
        probs = tl.exp2(scores - lse[:, None] * _LOG2E)
        if MASKED:
            visible = key_in_range[None, :]
            if CAUSAL:
                visible = visible & ((start_n + cols)[None, :] <= rows[:, None] + key_offset)
            probs = tl.where(visible, probs, 0.0)
        dprobs = tl.dot(grad_out, v_t, input_precision=DOT_PRECISION)
        dscores = probs * (dprobs - delta[:, None])
        dq = tl.dot(dscores.to(k_t.dtype), tl.trans(k_t), dq, input_precision=DOT_PRECISION)
    return dq


@triton.autotune(configs=_DQ_CONFIGS, key=_TUNING_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _backward_dq_kernel(Q, K, V, DO, LSE, Delta, DQ, sm_scale,
                        stride_qb, stride_qh, stride_qm, stride_qd,
                        stride_kb, stride_kh, stride_kn, stride_kd,
                        stride_vb, stride_vh, stride_vn, stride_vd,
                        stride_dob, stride_doh, stride_dom, stride_dod,
                        num_heads, group_size, seq_q, seq_k, seq_q_bucket, seq_k_bucket,
                        HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m, batch, head, kv_head = _query_block(seq_q, num_heads, group_size, BLOCK_M)

    rows = start_m + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    row_in_range = rows < seq_q
    row_base = (batch * num_heads + head) * seq_q

    q = tl.load(Q + batch * stride_qb + head * stride_qh + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
                mask=row_in_range[:, None], other=0.0)
    grad_out = tl.load(
        DO + batch * stride_dob + head * stride_doh + rows[:, None] * stride_dom + dims[None, :] * stride_dod,
        mask=row_in_range[:, None], other=0.0)
    lse = tl.load(LSE + row_base + rows, mask=row_in_range, other=0.0)
    delta = tl.load(Delta + row_base + rows, mask=row_in_range, other=0.0)
    k_ptrs = K + batch * stride_kb + kv_head * stride_kh + cols[None, :] * stride_kn + dims[:, None] * stride_kd
    v_ptrs = V + batch * stride_vb + kv_head * stride_vh + cols[None, :] * stride_vn + dims[:, None] * stride_vd
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * _LOG2E

    key_offset, unmasked_end, end = _key_ranges(start_m, seq_q, seq_k, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_key_tiles(dq, q, grad_out, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, rows, cols,
                       key_offset, seq_k, qk_scale, 0, unmasked_end, BLOCK_N, CAUSAL, False, DOT_PRECISION)
    dq = _dq_key_tiles(dq, q, grad_out, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, rows, cols,
                       key_offset, seq_k, qk_scale, unmasked_end, end, BLOCK_N, CAUSAL, True, DOT_PRECISION)
    tl.store(DQ + row_base * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_in_range[:, None])


# --------------------------------------------------------------------------- launchers


def _allocate(shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Every buffer the kernels fill; tests replace it to poison outputs with NaN."""
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype)


def _dot_precision(t: Tensor) -> str:
    """float32 inputs get exact IEEE products (Triton's GPU default would be TF32); for
    float16/bfloat16 the option is ignored and "tf32" is simply Triton's default."""
    return "ieee" if t.dtype == torch.float32 else "tf32"


def _device_guard(device: torch.device):
    """Triton launches on the *current* CUDA device, not the tensors': make it theirs (cuda:1 tensors
    launched on cuda:0 fault on their pointers)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _flat_grid(length: int, block: str, batch_heads: int):
    """Launch grid of every (batch, head) × block of `length` (BLOCK_M or BLOCK_N long), on axis 0 alone."""
    return lambda meta: (triton.cdiv(length, meta[block]) * batch_heads,)


def _unit_stride_last(t: Tensor) -> Tensor:
    """Any strides work, but a unit stride along head_dim keeps loads vectorised."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, sm_scale: float) -> tuple[Tensor, Tensor]:
    q, k, v = (_unit_stride_last(t) for t in (q, k, v))
    batch, heads, seq_q, head_dim = q.shape
    seq_k = k.shape[2]
    out = _allocate((batch, heads, seq_q, head_dim), q)
    lse = _allocate((batch, heads, seq_q), q, torch.float32)
    if out.numel() == 0:
        return out, lse
    with _device_guard(q.device):
        _forward_kernel[_flat_grid(seq_q, "BLOCK_M", batch * heads)](
            q, k, v, out, lse, sm_scale, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            heads, heads // k.shape[1], seq_q, seq_k, _length_bucket(seq_q), _length_bucket(seq_k),
            HEAD_DIM=head_dim, CAUSAL=causal, DOT_PRECISION=_dot_precision(q))
    return out, lse


def _backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, causal: bool,
              sm_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    grad_out, q, k, v = (_unit_stride_last(t) for t in (grad_out, q, k, v))
    batch, heads, seq_q, head_dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    dq = _allocate(tuple(q.shape), q)
    dk = _allocate(tuple(k.shape), k)
    dv = _allocate(tuple(v.shape), v)
    if dq.numel() == 0 or dk.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    delta = _allocate((batch, heads, seq_q), q, torch.float32)
    delta_block = 32
    shape_args = (heads, heads // kv_heads, seq_q, seq_k, _length_bucket(seq_q), _length_bucket(seq_k))
    constants = dict(HEAD_DIM=head_dim, CAUSAL=causal, DOT_PRECISION=_dot_precision(q))
    strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride())
    with _device_guard(q.device):
        _backward_delta_kernel[_flat_grid(seq_q, "BLOCK_M", batch * heads)](
            out, grad_out, delta, *out.stride(), *grad_out.stride(), heads, seq_q,
            HEAD_DIM=head_dim, BLOCK_M=delta_block)
        _backward_dkdv_kernel[_flat_grid(seq_k, "BLOCK_N", batch * kv_heads)](
            q, k, v, grad_out, lse, delta, dk, dv, sm_scale, *strides, *shape_args, **constants)
        _backward_dq_kernel[_flat_grid(seq_q, "BLOCK_M", batch * heads)](
            q, k, v, grad_out, lse, delta, dq, sm_scale, *strides, *shape_args, **constants)
    return dq, dk, dv


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("gptmeter::flash_attention_fwd", mutates_args=())
def flash_attention_fwd(q: Tensor, k: Tensor, v: Tensor, causal: bool, sm_scale: float) -> tuple[Tensor, Tensor]:
    """Returns (out, lse): out like q, lse (batch, heads, seq_q) float32 natural log-sum-exp (+inf for empty rows)."""
    return _forward(q, k, v, causal, sm_scale)


@flash_attention_fwd.register_fake
def _(q, k, v, causal, sm_scale):
    batch, heads, seq_q, head_dim = q.shape
    return q.new_empty((batch, heads, seq_q, head_dim)), q.new_empty((batch, heads, seq_q), dtype=torch.float32)


@torch.library.custom_op("gptmeter::flash_attention_bwd", mutates_args=())
def flash_attention_bwd(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                        causal: bool, sm_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (dq, dk, dv), dk and dv summed over the query heads sharing each key/value head."""
    return _backward(grad_out, q, k, v, out, lse, causal, sm_scale)


@flash_attention_bwd.register_fake
def _(grad_out, q, k, v, out, lse, causal, sm_scale):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


def _setup_context(ctx, inputs, output):
    q, k, v, causal, sm_scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal, ctx.sm_scale = causal, sm_scale
    ctx.mark_non_differentiable(lse)


def _differentiate(ctx, grad_out, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = flash_attention_bwd(grad_out, q, k, v, out, lse, ctx.causal, ctx.sm_scale)
    return dq, dk, dv, None, None


flash_attention_fwd.register_autograd(_differentiate, setup_context=_setup_context)


# FLOP formulas: the same counts as torch's own SDPA formulas
# (torch.utils.flop_counter.sdpa_flop_count / sdpa_backward_flop_count), so a model
# counts the same FLOPs with this kernel as with SDPA. Two matmuls forward
# (Q Kᵀ, P V), five backward (S recomputed, dP, dV, dQ, dK), each over the full
# seq_q × seq_k matrix: causal masking is not discounted, as in PaLM's model FLOPs.


def attention_forward_flops(q_shape, k_shape, v_shape) -> int:
    batch, heads, seq_q, head_dim = q_shape
    seq_k, value_dim = k_shape[2], v_shape[3]
    return 2 * batch * heads * seq_q * seq_k * (head_dim + value_dim)


def attention_backward_flops(q_shape, k_shape, v_shape) -> int:
    batch, heads, seq_q, head_dim = q_shape
    seq_k, value_dim = k_shape[2], v_shape[3]
    return 2 * batch * heads * seq_q * seq_k * (2 * head_dim + 3 * value_dim)


@register_flop_formula(torch.ops.gptmeter.flash_attention_fwd)
def _forward_flop_formula(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return attention_forward_flops(q_shape, k_shape, v_shape)


@register_flop_formula(torch.ops.gptmeter.flash_attention_bwd)
def _backward_flop_formula(grad_out_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return attention_backward_flops(q_shape, k_shape, v_shape)


# --------------------------------------------------------------------------- entry point


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("flash_attention expects q, k, v shaped (batch, heads, seq, head_dim); "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must agree in batch and head_dim, got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    if q.shape[3] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[3]} is not supported by the Triton kernel; use one of "
                         f"{SUPPORTED_HEAD_DIMS} or the 'sdpa' attention backend")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"q, k, v must share one dtype among float16, bfloat16, float32; "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(f"the Triton attention kernel needs a CUDA device (got {q.device.type} tensors); "
                           "use the 'sdpa' backend on CPU, or set TRITON_INTERPRET=1 before importing "
                           "kernels to test it in Triton's interpreter")


def flash_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, sm_scale: float | None = None) -> Tensor:
    """Fused softmax(q kᵀ · sm_scale) v; see the module docstring.

    q: (batch, heads, seq_q, head_dim); k, v: (batch, kv_heads, seq_k, head_dim) with heads % kv_heads == 0.
    Causal masking is bottom-right aligned: query i sees key j when j <= i + seq_k - seq_q; a query that
    sees no key gets zeros. sm_scale defaults to 1/sqrt(head_dim). Returns a contiguous tensor like q.
    """
    _check_inputs(q, k, v)
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(q.shape[-1])
    out, _lse = flash_attention_fwd(q, k, v, causal, float(sm_scale))
    return out
