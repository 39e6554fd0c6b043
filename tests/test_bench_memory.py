"""Benches check memory before each case and skip, with a printed reason, what will not fit."""

from __future__ import annotations

import torch

from bench import _memory
from bench import attention as bench
from gpt import memory
from gpt.config import GPTConfig
from profiling import flops


def test_free_memory_is_the_cases_device(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: asked.append(device) or (3 * 2**30, 40 * 2**30))
    reason = _memory.skip_reason("case", 3 * 2**30, torch.device("cuda", 1))
    assert asked == [torch.device("cuda", 1)] and "cuda:1 has 3.0 GiB free" in reason


def test_skip_reason_keeps_headroom_and_says_why(monkeypatch):
    monkeypatch.setattr(_memory, "free_bytes", lambda device: 10 * 2**30)
    device = torch.device("cuda", 0)
    assert _memory.skip_reason("case", 9 * 2**30, device) is None  # 90% of 10 GiB
    reason = _memory.skip_reason("gpt2-xl training", 9.5 * 2**30, device)
    assert reason == ("skipped gpt2-xl training: needs about 9.5 GiB, cuda:0 has 10.0 GiB free (a case may use 90%); "
                      "use a smaller batch or a larger device")
    monkeypatch.setattr(_memory, "free_bytes", lambda device: None)
    assert _memory.skip_reason("case", 1e15, device) is None  # unknown free memory: run and see


def test_training_estimate_by_hand():
    config = GPTConfig.from_preset("gpt2-xl")
    params = flops.param_count(config)
    tokens = 8 * 1024
    by_hand = 16 * params + 48 * 34 * tokens * 1600 + 3 * tokens * 50257 * 4
    assert _memory.training_bytes(config, 8, "bf16") == by_hand
    assert 40e9 < by_hand < 60e9  # the A100-40GB case does not fit; an 80 GB GPU holds it
    assert by_hand > memory.training_bytes(config, 8)  # above gpt.memory's lower bound
    assert _memory.training_bytes(config, 8, "fp32") > by_hand  # float32 activations are twice as large


def test_attention_bench_skips_a_shape_that_does_not_fit(monkeypatch, capsys):
    monkeypatch.setattr(_memory, "free_bytes", lambda device: 2**20)
    shape = bench.Shape("fp16", head_dim=16, causal=True, seq=1024, batch=4, heads=2)
    assert bench.case_bytes(shape) == 12 * 4 * 2 * 1024 * 16 * 2
    (record,) = bench.run_shape(shape, "cpu", bench.wall_timer)
    assert record["status"].startswith("skipped fp16 D=16 causal T=1024: needs about")
    assert record["status"] in capsys.readouterr().err
    table = bench.markdown_table([record], {"device": "x", "date": "d", "torch": "t", "triton": "t", "command": "c",
                                            "timer": "w"})
    assert "Not measured:" in table and record["status"] in table


def test_extrapolation_bench_skips_cases_that_do_not_fit(monkeypatch):
    from bench import extrapolate

    monkeypatch.setattr(_memory, "free_bytes", lambda device: 2**30)
    big, small = GPTConfig.from_preset("gpt2-xl"), GPTConfig.from_preset("tiny")
    assert extrapolate.case_skip_reason("gpt2-xl", big, 8).startswith("skipped gpt2-xl training at batch 8: needs")
    assert extrapolate.case_skip_reason("tiny", small, 1) is None
