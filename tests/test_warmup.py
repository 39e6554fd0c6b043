"""Compilation stays out of timed generation: the warm-up meets every kernel variant decoding will launch.

The Triton kernel runs in the interpreter here (conftest.py). The forward kernel is wrapped by a
recorder that keys each launch the way Triton keys its compiled kernels and autotuning entries:
Triton's own specialisation of every integer argument (its native `specialize_impl`), the
constexpr arguments, and the autotuning key's buckets.
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend

import sample
from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.warmup import plan_warmup, warm_up

flash_module = importlib.import_module("kernels.fused_attention")


class CompileCounter:
    """Wraps the forward kernel: the set of compile and autotuning keys it met, per phase."""

    def __init__(self, kernel) -> None:
        self.kernel, self.phase, self.keys = kernel, "warm-up", {"warm-up": set(), "timed": set()}

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            specialised = tuple(native_specialize_impl(BaseBackend, a, False, True, True)
                                for a in args if isinstance(a, int) and not isinstance(a, bool))
            dtypes = tuple(str(a.dtype) for a in args if isinstance(a, torch.Tensor))
            named = dict(zip(self.kernel.arg_names, args))
            tuning = tuple(named[name] for name in flash_module._TUNING_KEY if name in named)  # bucket values
            self.keys[self.phase].add((specialised, dtypes, tuning, tuple(sorted(kwargs.items()))))
            return self.kernel[grid](*args, **kwargs)
        return run

    def compiled_while_timed(self) -> set:
        return self.keys["timed"] - self.keys["warm-up"]


@pytest.fixture
def counter(monkeypatch):
    counting = CompileCounter(flash_module._forward_kernel)
    monkeypatch.setattr(flash_module, "_forward_kernel", counting)
    return counting


def small_model(block_size: int = 64) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=61, block_size=block_size, n_layer=1, n_head=2, n_embd=32, attention="triton")
    return GPT(config).eval()


def test_plan_has_one_length_per_bucket_and_specialisation():
    # Prompt of 5, 60 new tokens, context 64: decode key lengths 6..64, then re-encoding past the context.
    plan = plan_warmup(5, 60, 64, every_key=True)
    # By hand: buckets 16 (6..16), 32 (17..32), 64 (33..64), each split by divisibility by 16.
    assert plan.decode_key_lengths == (6, 16, 17, 32, 33, 48)
    assert plan.reencode and plan.forwards == 1 + 6 + 1
    short = plan_warmup(5, 10, 64, every_key=True)
    assert short.decode_key_lengths == (6,) and not short.reencode  # 6..15: one bucket, none divisible by 16
    assert plan_warmup(5, 60, 64, every_key=False).decode_key_lengths == (6,)


@pytest.mark.slow
def test_decoding_after_the_warm_up_compiles_nothing(counter):
    model, prompt = small_model(block_size=48), torch.randint(0, 61, (1, 5))
    warm_up(model, prompt, plan_warmup(5, 45, 48, every_key=True))
    counter.phase = "timed"
    model.generate(prompt, 45, temperature=0)  # decode at key lengths 6..48 (buckets 16, 32, 64), then re-encode
    assert len(counter.keys["timed"]) >= 7  # the run met many variants...
    assert counter.compiled_while_timed() == set()  # ...all of them compiled before timing


def test_the_old_two_token_warm_up_left_compilation_in_the_timed_loop(counter):
    """The check above can fail: warming up only the first two key lengths misses later variants."""
    model, prompt = small_model(), torch.randint(0, 61, (1, 5))
    model.generate(prompt, 2, temperature=0)
    counter.phase = "timed"
    model.generate(prompt, 40, temperature=0)
    assert len(counter.compiled_while_timed()) >= 3  # length 16, bucket 32, length 32 at least


def test_the_profile_json_says_how_many_steps_were_left_out_and_why(tmp_path, capsys):
    path = tmp_path / "profile.json"
    assert sample.main(["--init", "random", "--preset", "tiny", "--prompt", "ab", "--max-new-tokens", "4",
                        "--attention", "sdpa", "--profile-json", str(path)]) == 0
    profile = json.loads(path.read_text())
    assert profile["decode_steps_left_out"] == 0 and profile["decode_steps_left_out_reason"].startswith("none: ")
    assert profile["warmup_forwards"] == 2 and profile["warmup_decode_key_lengths"] == [4]  # eos + 2 bytes + 1
