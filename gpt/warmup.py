"""Untimed warm-up before timed generation: every kernel variant the run will launch, compiled and tuned.

Our Triton attention kernel compiles one variant per specialisation of its integer arguments and
autotunes once per power-of-two bucket of the sequence lengths (`kernels.fused_attention.launch_key`).
While decoding, the key length grows by one per step, so a new variant or bucket turns up every few
steps; timed cold, those steps would include compilation and autotuning. `plan_warmup` lists, for the
lengths `GPT.generate` will meet, one key length per distinct launch key, and `warm_up` runs one
forward pass at each, so that the timed run compiles nothing.

Since the static-shape KV cache (gpt/generate.py), a decode step attends through the cache's mask
with SDPA, so the kernel runs only for the prompt and the full-block re-encodes past the context;
the per-length decode forwards are then cheap no-ops for the kernel, kept until this plan is trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt.generate import decoding_head, sample_next_token
from gpt.model import GPT, KVCache


@dataclass(frozen=True)
class WarmupPlan:
    prompt_len: int
    decode_key_lengths: tuple[int, ...]  # one decode step's key length per distinct launch key
    reencode: bool  # generation passes the context, where each step re-encodes a full block
    every_key: bool  # for our Triton kernel; other backends compile nothing per length

    @property
    def forwards(self) -> int:
        return 1 + len(self.decode_key_lengths) + int(self.reencode)

    def profile_fields(self) -> dict:
        """What a profile JSON says about compilation and the steps it times."""
        return {
            "warmup_forwards": self.forwards,
            "warmup_decode_key_lengths": list(self.decode_key_lengths),
            "decode_steps_left_out": 0,
            "decode_steps_left_out_reason": (
                "none: the prompt's prefill, one draw and one decode step per distinct Triton launch key "
                "(autotuning bucket and specialisation of the key length) ran untimed first, so no timed step "
                "compiles"
                if self.every_key else
                "none: the prompt's prefill, one draw and the first decode step ran untimed first; this "
                "attention backend compiles nothing per key length"
            ),
        }


def decode_key_lengths(prompt_len: int, max_new_tokens: int, block_size: int) -> range:
    """Key lengths of the cached decode steps of `GPT.generate`: one per new token while within the context."""
    return range(prompt_len + 1, min(prompt_len + max_new_tokens, block_size) + 1)


def plan_warmup(prompt_len: int, max_new_tokens: int, block_size: int, every_key: bool) -> WarmupPlan:
    """`every_key` for our Triton kernel; other backends need the prefill and the first decode step only."""
    lengths = decode_key_lengths(prompt_len, max_new_tokens, block_size)
    reencode = prompt_len + max_new_tokens > block_size
    if not every_key:
        return WarmupPlan(prompt_len, tuple(lengths[:1]), reencode, every_key)
    from kernels.fused_attention import launch_key  # imports Triton: only for the backend that uses it

    first_of_key: dict[tuple, int] = {}
    for length in lengths:
        first_of_key.setdefault(launch_key(1, length), length)
    return WarmupPlan(prompt_len, tuple(first_of_key.values()), reencode, every_key)


@torch.no_grad()
def warm_up(model: GPT, idx: torch.Tensor, plan: WarmupPlan, temperature: float = 1.0, top_k: int | None = None,
            top_p: float | None = None) -> None:
    """Run the plan's forward passes on `idx` (B, prompt_len): the prefill, each decode key length, the re-encode;
    and generate's own first-use work: one draw as the run will sample (`temperature`, `top_k`, `top_p`) and
    the decoding head's copy (gpt.generate.decoding_head), which would otherwise land in the timed prefill.

    In a fresh process the tiny model's 22-token prefill took 1.8-1.9 ms after a warm-up of forwards only,
    1.4-1.6 ms after one that also drew a token and made the head (2-core VM, 2 threads, 2026-12-03): the
    first draw's kernels and the head's copy run once per process, not once per prefill.
    A decode step at key length L runs on a cache advanced to L - 1; keys past the prompt hold
    whatever the cache buffer holds, which is fine for compiling: the outputs are thrown away. The draw uses
    its own generator: the run's random stream, and the global one, are left as they were.
    """
    def new_cache() -> KVCache:
        return KVCache(model.config, idx.size(0), device=idx.device, dtype=model.lm_head.weight.dtype)

    cache = new_cache()
    logits = model(idx, cache=cache)[0][:, -1]
    sample_next_token(logits, temperature, top_k, top_p, torch.Generator(device=idx.device))
    decoding_head(model, idx.size(0))
    for length in plan.decode_key_lengths:
        cache.pos.fill_(length - 1)
        model(idx[:, -1:], cache=cache)
    if plan.reencode:
        model(idx.new_zeros(idx.size(0), model.config.block_size), cache=new_cache())
