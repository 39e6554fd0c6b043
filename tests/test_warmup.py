"""Compilation stays out of timed generation: the warm-up meets every kernel variant decoding will launch.

The Triton kernel runs in the interpreter here (conftest.py). The forward kernel is wrapped by a
recorder that keys each launch the way Triton keys its compiled kernels and autotuning entries:
Triton's own specialisation of every integer argument (its native `specialize_impl`), the
constexpr arguments, and the autotuning key's buckets.
"""

from __future__ import annotations

import dataclasses
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
    model.generate(prompt, 45, temperature=0)  # prefill, decode steps 6..48, then re-encodes of the full block
    # Decode steps attend through the static KV cache's mask (SDPA), so the kernel runs for the prompt
    # and the re-encodes only, and every variant of those was compiled before timing.
    assert len(counter.keys["timed"]) >= 2
    assert counter.compiled_while_timed() == set()


def test_a_warm_up_without_the_re_encode_leaves_compilation_in_the_timed_loop(counter):
    """The check above can fail: skipping the full-block re-encode leaves its kernel variant to the timed run."""
    model, prompt = small_model(block_size=48), torch.randint(0, 61, (1, 5))
    warm_up(model, prompt, dataclasses.replace(plan_warmup(5, 45, 48, every_key=True), reencode=False))
    counter.phase = "timed"
    model.generate(prompt, 45, temperature=0)
    assert len(counter.compiled_while_timed()) >= 1


def test_the_profile_json_says_how_many_steps_were_left_out_and_why(tmp_path, capsys):
    path = tmp_path / "profile.json"
    assert sample.main(["--init", "random", "--preset", "tiny", "--prompt", "ab", "--max-new-tokens", "4",
                        "--attention", "sdpa", "--profile-json", str(path)]) == 0
    profile = json.loads(path.read_text())
    assert profile["decode_steps_left_out"] == 0 and profile["decode_steps_left_out_reason"].startswith("none: ")
    assert profile["warmup_forwards"] == 2 and profile["warmup_decode_key_lengths"] == [4]  # eos + 2 bytes + 1


@pytest.mark.slow
def test_sample_compile_compiles_every_cache_window_before_timing(monkeypatch, capsys):
    """sample.py --compile: the untimed warm-up compiles the step for each window; the timed run compiles nothing."""
    from torch._dynamo.utils import counters

    import gpt.generate

    graphs: dict[str, int] = {}
    real_generate = gpt.generate.generate

    def timed_generate(*args, **kwargs):
        graphs["before"] = counters["stats"]["unique_graphs"]
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(gpt.generate, "generate", timed_generate)
    first = counters["stats"]["unique_graphs"]
    assert sample.main(["--init", "random", "--preset", "tiny", "--layers", "1", "--width", "32", "--heads", "2",
                        "--prompt", "ab", "--max-new-tokens", "40", "--compile", "--attention", "sdpa"]) == 0
    assert graphs["before"] - first == 2  # key slots 4 to 43 (eos + 2 bytes, then 40 new): windows 32 and 64
    assert counters["stats"]["unique_graphs"] == graphs["before"]


def test_the_warm_up_draws_as_the_run_will_and_makes_the_decoding_head_without_touching_any_random_stream(
        monkeypatch):
    """generate's first-use work (the first draw, the decoding head's copy) runs in the warm-up, not in the timed
    prefill; the draw has its own generator, so the run's stream and the global one are as before."""
    import gpt.generate
    import gpt.warmup

    model = GPT(GPTConfig(vocab_size=61, block_size=64, n_layer=1, n_head=2, n_embd=32, attention="sdpa")).eval()
    prompt = torch.randint(61, (1, 5))
    draws = []
    real_sample = gpt.warmup.sample_next_token
    monkeypatch.setattr(gpt.warmup, "sample_next_token", lambda logits, *settings: (
        draws.append((tuple(logits.shape), settings[:3])), real_sample(logits, *settings))[1])
    run = torch.Generator().manual_seed(3)
    global_state, run_state = torch.get_rng_state(), run.get_state()
    warm_up(model, prompt, plan_warmup(5, 8, 64, every_key=False), 0.7, 5, 0.9)
    assert draws == [((1, 61), (0.7, 5, 0.9))]
    assert torch.equal(torch.get_rng_state(), global_state) and torch.equal(run.get_state(), run_state)
    made = []
    real_copy = torch.Tensor.contiguous
    monkeypatch.setattr(torch.Tensor, "contiguous", lambda self, *a, **k: (made.append(self.shape),
                                                                           real_copy(self, *a, **k))[1])
    head = gpt.generate.decoding_head(model, 1)  # what generate asks for: kept from the warm-up, not made again
    assert head is not None and tuple(head.shape) == (32, 61) and made == []
