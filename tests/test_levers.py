"""Optimisation levers: each row is the plan re-run with that one input changed; quantized weights priced through
the bytes a matmul reads; fp8 weights never need more devices than bf16."""

import json
from dataclasses import replace

import pytest

from profiling import cost, levers, scale
from profiling.device_profile import REFERENCE_FIGURES, reference_profile
from profiling.flops import Op
from profiling.plan import Planner, weights_profile

GPT3 = scale.ScaleRequest(device="a100-80gb", model="gpt3-175b", queries_per_day=1e7, tokens_per_query=300,
                          prompt_tokens=200)


def _matmul(m: int, n: int, k: int) -> Op:
    return Op("w", "matmul", (m, n, k), 2 * m * n * k, 0)


@pytest.mark.parametrize("weight_bytes", [1.0, 0.5])
def test_weight_only_quantization_reads_fewer_bytes_at_the_same_peak(weight_bytes):
    n = k = 16384
    bf16 = reference_profile("a100-80gb", "bf16")
    narrow = reference_profile("a100-80gb", "bf16", weight_bytes=weight_bytes)
    bandwidth = 2.039e12 * REFERENCE_FIGURES["copy_bandwidth_fraction"]["value"]
    # One row against a 16k x 16k weight: memory-bound, hand count of the bytes read.
    assert narrow.device_seconds(_matmul(1, n, k)) == pytest.approx(((k + n) * 2 + k * n * weight_bytes) / bandwidth)
    assert bf16.device_seconds(_matmul(1, n, k)) == pytest.approx(((k + n) * 2 + k * n * 2) / bandwidth)
    # A large square product stays compute-bound at the bf16 peak.
    big = _matmul(16384, 16384, 16384)
    assert narrow.device_seconds(big) == pytest.approx(bf16.device_seconds(big))


def test_fp8_matmuls_run_at_the_datasheet_fp8_peak_only_where_there_is_one():
    big = _matmul(16384, 16384, 16384)
    gemm = REFERENCE_FIGURES["gemm_efficiency"]["value"]
    h100, note = weights_profile(reference_profile("h100-sxm", "bf16"), scale.device_spec("h100-sxm"), "fp8")
    assert h100.device_seconds(big) == pytest.approx(big.flops / (1979e12 * gemm)) and "fp8 peak" in note
    a100, note = weights_profile(reference_profile("a100-80gb", "bf16"), scale.device_spec("a100-80gb"), "fp8")
    assert a100.device_seconds(big) == pytest.approx(big.flops / (312e12 * gemm)) and note.startswith("weight-only")


@pytest.mark.parametrize("request_", [
    GPT3,
    scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", queries_per_day=1e8, tokens_per_query=700),
    scale.ScaleRequest(device="h100-sxm", model="gpt2-xl", queries_per_day=1e9, tokens_per_query=500,
                       prompt_tokens=400, min_user_tokens_per_sec=30),
    scale.ScaleRequest(device="l40s", model="gpt2-large", queries_per_day=1e6, tokens_per_query=200,
                       prices=cost.PriceChoice(usd_per_device_hour=1.0)),
])
def test_fp8_weights_never_need_more_devices_than_bf16(request_):
    bf16 = scale.plan_request(request_)
    fp8_request = replace(request_, weights_dtype="fp8")
    assert scale.plan_request(fp8_request).devices <= bf16.devices
    # At the bf16 plan's own degree and batch, the fp8 replica's iteration is no slower.
    target = scale.resolve(fp8_request)
    fp8 = Planner(target.config, target.device, target.profile, scale.serving_inputs(fp8_request))
    assert fp8.point(bf16.tensor_parallel, bf16.batch).iteration_s <= bf16.decode_step.seconds + (
        bf16.batch / fp8.inputs.output_tokens * bf16.prefill.seconds) * (1 + 1e-12)


def test_each_lever_is_the_scale_command_rerun_with_its_flags(cli):
    base_argv = ["scale", "--model", "gpt3-175b", "--device", "a100-80gb", "--queries-per-day", "1e7",
                 "--tokens-per-query", "300", "--prompt-tokens", "200"]
    status, out, _ = cli(*base_argv, "--compare", "--json")
    comparison = json.loads(out)["levers"]
    base = comparison["baseline"]["usd_per_day"]
    assert status == 0 and base == pytest.approx(json.loads(out)["serving"]["usd_per_day"]["central"])
    names = [row["lever"] for row in comparison["levers"]]
    assert names == ["fp8 weights", "int8 weights", "latency targets relaxed 2x", "tensor parallel 2x",
                     "device h100-sxm", "owned instead of rented"]
    for row in comparison["levers"]:
        assert "error" not in row, row
        status, out, _ = cli(*base_argv, *row["flags"].split(), "--json")
        rerun = json.loads(out)["serving"]
        assert status == 0 and rerun["usd_per_day"]["central"] == pytest.approx(row["usd_per_day"], rel=1e-12)
        assert rerun["devices"] == row["devices"] and rerun["batch"] == row["batch"]
        assert row["change_usd_per_day"] == pytest.approx(row["usd_per_day"] - base)


def test_a_lever_that_does_not_apply_says_why():
    request = replace(GPT3, weights_dtype="int8", prices=cost.PriceChoice(pricing="tco"))
    rows = {row["lever"]: row for row in levers.compare(request, device="l40s")["levers"]}
    assert rows["int8 weights"]["error"] == "the baseline already stores int8 weights"
    assert "no price for device 'l40s'" in rows["device l40s"]["error"]  # owned: no purchase price for it
    assert "rented instead of owned" in rows and "usd_per_day" in rows["fp8 weights"]


def test_levers_plot(cli, tmp_path):
    status, out, _ = cli("scale", "--model", "gpt2", "--device", "h100-sxm", "--compare", "--plot", str(tmp_path),
                         "--json")
    assert status == 0 and json.loads(out)["plots"][-1] == str(tmp_path / "levers.png")
    assert (tmp_path / "levers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_forced_tensor_parallel_degree_beyond_the_server_is_one_line(cli):
    status, out, err = cli("scale", "--model", "gpt2", "--device", "h100-sxm", "--tensor-parallel", "16")
    assert status == 2 and "--tensor-parallel 16 needs 16 linked devices" in err and err.count("\n") == 1



def test_a_measured_profile_keeps_its_own_matmuls_and_the_weights_set_memory_only():
    measured = replace(reference_profile("h100-sxm", "bf16"), kind="measured")
    profile, note = weights_profile(measured, scale.device_spec("h100-sxm"), "int4")
    assert profile is measured and "memory only" in note
