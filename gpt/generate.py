"""Decoding at the memory's speed: a static KV cache, sampling on the device, an optional compiled step.

One decode step reads every weight (and the cache) once for two FLOPs per weight and
token, so at small batch its speed limit is memory bandwidth. What keeps a plain loop far
from it is per-token overhead: a cache whose shape grows (no compiled step can be reused),
a round-trip to the host per token (to sample, to check for end-of-text, to print), and
the dispatch of a dozen small kernels per layer. As gpt-fast does, this loop keeps the
cache's shapes fixed (gpt.model.KVCache), samples on the device, looks at the host only
every SYNC_EVERY tokens, and can compile the one-token step (`compile=True`: inductor's
fused kernels on CPU, CUDA graphs through mode="reduce-overhead" on GPUs). Attention reads
only the cache slots that hold tokens (a compiled step: a power-of-two window over them),
not the whole preallocated context. Decoding one sequence on a CPU multiplies by a
(C, vocab) copy of the output head, which streams faster there (decoding_head).
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F

from gpt.model import GPT, KVCache

SYNC_EVERY = 16  # new tokens between host round-trips (end-of-text check, streaming); 1 would sync every token
MIN_WINDOW = 32  # smallest cache window a compiled step attends over (see window_bucket)

_DECODERS: "weakref.WeakKeyDictionary[GPT, _CompiledDecoder]" = weakref.WeakKeyDictionary()
_HEADS: "weakref.WeakKeyDictionary[GPT, tuple[tuple, torch.Tensor]]" = weakref.WeakKeyDictionary()


class _CompiledDecoder:
    """A model's compiled one-token step and the full-context cache it runs on, kept across calls."""

    def __init__(self, device: torch.device) -> None:
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs replay the whole step
        self.step = torch.compile(one_token_step, mode=mode, fullgraph=True, dynamic=False)
        self.cache: KVCache | None = None

    def cache_for(self, model: GPT, batch: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        """The cache, emptied; a new one (and so a new compilation) only when batch, device or dtype change."""
        cache = self.cache
        first = cache.keys[0] if cache is not None else None
        if first is None or first.size(0) != batch or first.device != device or first.dtype != dtype:
            cache = self.cache = KVCache(model.config, batch, device=device, dtype=dtype)
            for tensor in (*cache.keys, *cache.values, cache.pos):
                torch._dynamo.mark_static_address(tensor)  # written in place; CUDA graphs may keep its address
        cache.reset()
        return cache


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token: int | None = None,
    generator: torch.Generator | None = None,
    on_tokens: Callable[[torch.Tensor], None] | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Continue idx (B, T) by up to max_new_tokens tokens; returns (B, T + new).

    temperature 0 means greedy. Generation stops once every row has produced `eos_token`
    (rows that finished early are padded with it); that is checked every SYNC_EVERY tokens,
    and the output is cut at the step where the last row finished. `on_tokens(columns)`
    receives the new tokens (B, n) once after the first one (which ends the prefill) and
    then in chunks of SYNC_EVERY, e.g. to stream text.
    Past the context, each step re-encodes the newest block_size tokens: learned absolute
    positions leave no cached keys valid once the window slides.
    """
    batch, prompt_len = idx.shape
    block_size = model.config.block_size
    total = prompt_len + max_new_tokens
    device, dtype = idx.device, model.lm_head.weight.dtype
    if compile:
        decoder = _compiled_decoder(model, device)
        cache, step = decoder.cache_for(model, batch, device, dtype), decoder.step
    else:  # eager: a cache just long enough for this call
        cache = KVCache(model.config, batch, capacity=min(block_size, total), device=device, dtype=dtype)
        step = one_token_step
    head = decoding_head(model, batch)

    out = idx.new_empty(batch, total)  # (B, T + new), filled as tokens arrive
    out[:, :prompt_len] = idx
    length, streamed = prompt_len, prompt_len
    cached = min(prompt_len, block_size)  # tokens in the cache, counted on the host
    logits = model(idx[:, -block_size:], cache=cache)[0][:, -1]  # (B, vocab)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for i in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B,), stays on the device
        if eos_token is not None:
            token = torch.where(finished, torch.full_like(token, eos_token), token)
            finished |= token == eos_token
        out[:, length] = token
        length += 1
        last = i == max_new_tokens - 1
        if i == 0 or length - streamed >= SYNC_EVERY or last:  # the only places the host waits
            if eos_token is not None and bool(finished.all()):
                length = streamed + _first_all_equal(out[:, streamed:length], eos_token) + 1
                last = True
            if on_tokens is not None:
                on_tokens(out[:, streamed:length])
            streamed = length
        if last:
            break
        if cached == cache.capacity:  # the window slides: re-encode the newest block_size tokens
            cache.reset()
            cached = min(length, block_size)
            logits = model(out[:, length - cached : length], cache=cache)[0][:, -1]
        else:  # attention reads the stored slots only: exactly, or (compiled) rounded up to one of a few windows
            cache.window = window_bucket(cached + 1, cache.capacity) if compile else cached + 1
            logits = step(model, token.view(batch, 1), cache, head)  # a fresh (B, 1): the same strides every step
            cached += 1
    return out[:, :length]


def _compiled_decoder(model: GPT, device: torch.device) -> _CompiledDecoder:
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = _CompiledDecoder(device)
    return decoder


@torch.no_grad()
def compile_steps(model: GPT, idx: torch.Tensor, max_new_tokens: int) -> list[int]:
    """Compile, untimed, the one-token step for every cache window that generate(idx, max_new_tokens,
    compile=True) will use (one compilation each); returns those windows."""
    batch, prompt_len = idx.shape
    block_size = model.config.block_size
    decoder = _compiled_decoder(model, idx.device)
    cache = decoder.cache_for(model, batch, idx.device, model.lm_head.weight.dtype)
    model(idx[:, -block_size:], cache=cache)  # the prefill: steps after it see a non-empty cache
    slots = range(min(prompt_len, block_size) + 1, min(prompt_len + max_new_tokens, block_size) + 1)
    windows = sorted({window_bucket(n, cache.capacity) for n in slots})
    token = idx.new_empty(batch).copy_(idx[:, -1])  # a fresh (B,) of unit stride, as sampling returns it
    head = decoding_head(model, batch)
    for window in windows:
        cache.pos.fill_(window - 1)  # the step writes its key at the window's last slot, inside the cache
        cache.window = window
        decoder.step(model, token.view(batch, 1), cache, head)
    cache.reset()
    return windows


def one_token_step(model: GPT, token: torch.Tensor, cache: KVCache, head: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, vocab) of the next token after `token` (B, 1); the unit that `compile=True` compiles.

    `head` is decoding_head's (C, vocab) copy of the output head's weight, or None for the model's own head.
    """
    hidden = model.hidden(token, cache)[:, -1]  # (B, C)
    return model.lm_head(hidden) if head is None else hidden @ head


def decoding_head(model: GPT, batch: int) -> torch.Tensor | None:
    """The output head's weight laid out (C, vocab), for decoding one sequence on a CPU; None elsewhere.

    At batch 1 the head is a matrix-vector product that streams the whole (vocab, C) weight for one
    row of logits, the largest read of a decode step with GPT-2's vocabulary. MKL streams the
    transposed layout faster: on the project's 2-core VM, 2.2-2.4 ms against 2.8-3.2 ms for the
    50,257 × 384 head and 4.3 against 5.3 ms at width 768, caches flushed (2026-12-03). At batch
    2-8 neither layout wins everywhere, and GPUs were not measured, so they keep the model's own.
    The copy costs vocab × C more memory; it is kept per model and made again when the weight
    changes (another tensor or dtype, or an in-place update such as an optimizer step, which its
    version counter counts). Inference-mode weights keep no version counter: they use their own head.
    """
    weight = model.lm_head.weight
    if batch != 1 or weight.device.type != "cpu" or weight.is_inference():
        return None
    identity = (id(weight), weight.data_ptr(), weight.dtype, weight._version)
    kept = _HEADS.get(model)
    if kept is None or kept[0] != identity:
        kept = _HEADS[model] = (identity, weight.detach().t().contiguous())
    return kept[1]


def window_bucket(slots: int, capacity: int) -> int:
    """The cache slots a compiled step attends over: the next power of two ≥ slots (≥ MIN_WINDOW), ≤ capacity.

    Each distinct window is one compilation (one CUDA graph on GPUs), so a context of L tokens
    costs log2(L / MIN_WINDOW) + 1 of them, and attention reads at most twice the slots in use.
    """
    return min(capacity, max(MIN_WINDOW, 1 << (slots - 1).bit_length()))


def _first_all_equal(columns: torch.Tensor, value: int) -> int:
    """Index of the first column of (B, n) whose entries all equal `value`."""
    return int((columns == value).all(dim=0).int().argmax())


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of logits (B, vocab): greedy at temperature 0, else sample.

    top_k keeps the k most likely tokens; top_p keeps the smallest set whose
    probability reaches p (nucleus sampling). Both apply after temperature.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already ≥ p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return draw(F.softmax(logits, dim=-1), generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of probs (B, V), index i with probability probs[:, i] (B,).

    Inverse transform sampling: one uniform number per row, found in the running sum (float64,
    so that rare tokens keep their weight). torch.multinomial on CPU costs about 25 ns per
    vocabulary entry, 1.2 ms a row at GPT-2's 50,257: a third of a 30M model's decode step at
    batch 1, more than the whole step at batch 16; this is about 20 times less. A zero-probability
    index is never drawn: u < total, and the first running sum above u ends on a positive probability.
    """
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, dtype=total.dtype, device=total.device, generator=generator) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # rounding must not reach the total
    return torch.searchsorted(cdf, u, right=True).squeeze(1)
