"""The attention benchmark's non-timing parts: FLOP convention, correctness gate, report files."""

from __future__ import annotations

import json

import pytest
import torch

from bench import attention as bench

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_flop_convention_matches_the_flashattention_papers():
    shape = bench.Shape("bf16", head_dim=128, causal=True, seq=1024, batch=16, heads=16)
    full = 4 * 16 * 16 * 1024 * 1024 * 128
    assert bench.forward_flops(shape) == full / 2
    assert bench.mode_flops(shape, "bwd") == 2.5 * full / 2
    assert bench.mode_flops(shape, "fwd+bwd") == 3.5 * full / 2
    assert bench.forward_flops(bench.Shape("bf16", 128, False, 1024, 16, 16)) == full


def test_sweep_keeps_tokens_and_width_fixed():
    shapes = bench.sweep(16384, 2048, ["bf16"], [64, 128], [True], [512, 16384])
    assert [(s.batch, s.heads) for s in shapes] == [(32, 32), (1, 32), (32, 16), (1, 16)]
    with pytest.raises(SystemExit, match="multiple"):
        bench.sweep(1000, 2048, ["bf16"], [64], [True], [512])


def test_correctness_gate_rejects_a_wrong_provider():
    shape = bench.Shape("fp16", head_dim=16, causal=True, seq=24, batch=1, heads=2)
    q, k, v, grad_out = (torch.randn(1, 2, 24, 16, device=DEVICE).half() for _ in range(4))
    providers = bench.build_providers(shape, DEVICE, include_naive=True)
    providers["sdpa-flash"] = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # not causal
    verdicts = bench.check_correctness(shape, providers, q, k, v, grad_out)
    assert verdicts["triton (ours)"] == "ok" and verdicts["naive"] == "ok"
    assert verdicts["sdpa-flash"].startswith("incorrect: out error")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the kernel is compiled, not interpreted")
def test_cpu_smoke_run_writes_json_plot_and_table(tmp_path, capsys):
    assert bench.main(["--cpu-smoke", "--out-dir", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("attention-*.json")
    assert len(list(tmp_path.glob("attention-*.png"))) == 1
    report = json.loads(json_file.read_text())
    assert {"device", "date", "torch", "triton", "command", "flop_convention", "timer"} <= set(report["meta"])
    ours = [r for r in report["results"] if r["provider"] == "triton (ours)"]
    assert len(ours) == 2 and all(r["status"] == "ok" and r["fwd+bwd_tflops"] > 0 for r in ours)
    table = capsys.readouterr().out
    assert "| fp16 D=16 causal T=32 | 2×2 |" in table and "÷ sdpa-default" in table
    assert "NOT a performance figure" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_cuda_it_exits_with_a_one_line_error(capsys):
    assert bench.main([]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
