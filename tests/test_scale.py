"""Extrapolation: roofline switch point, memory fit, predicted steps with labelled inputs, bad input through the CLI."""

import json
import math

import pytest

from gpt.config import GPTConfig
from profiling import flops, predict, rundir, scale
from profiling.device_profile import reference_profile

GPT2 = GPTConfig.from_preset("gpt2")
GPT3 = GPTConfig.from_preset("gpt3-175b")


def test_decode_roofline_switches_from_bandwidth_to_compute_at_the_hand_computed_batch():
    # One decode step at context c for batch b: compute b·F/P against memory (W + b·c·K)/B.
    # They are equal at b* = (W/B) / (F/P − c·K/B).
    peak, bandwidth, context = 1e14, 1e12, 8  # short context: the shared weights dominate the bytes
    F = flops.decode_flops_per_token(GPT2, context)
    W = flops.decode_weight_bytes(GPT2, "bf16")
    K = flops.kv_cache_bytes_per_token(GPT2, "bf16")
    switch = (W / bandwidth) / (F / peak - context * K / bandwidth)
    assert 100 < switch < 1000  # a sanity range for GPT-2 on this made-up device

    def bound(batch: int) -> str:
        return scale.roofline(batch * F, flops.decode_bytes_per_step(GPT2, context, batch, "bf16"),
                              peak, bandwidth, 1.0, 1.0).bound

    assert bound(math.floor(switch)) == "bandwidth"
    assert bound(math.ceil(switch)) == "compute"


def test_roofline_divides_each_roof_by_its_efficiency():
    line = scale.roofline(flops=2e12, bytes_read=1e9, peak_flops=1e12, bandwidth=1e9, mfu=0.5, bandwidth_utilisation=0.25)
    assert (line.compute_s, line.memory_s, line.seconds, line.bound) == (4.0, 4.0, 4.0, "compute")


def test_memory_fit_picks_the_smallest_power_of_two_group():
    weights = flops.param_count(GPT3) * 2  # bf16
    kv = 32 * 700 * flops.kv_cache_bytes_per_token(GPT3, "bf16")
    fit = scale.fit_replica(weights, kv, 80e9, 8, 0.9, "gpt3")
    assert fit.tensor_parallel == 8  # 455 GB: more than 4 × 72 GB, less than 8 × 72 GB
    assert scale.fit_replica(weights, 0, 141e9, 8, 0.9, "gpt3").tensor_parallel == 4  # 349 GB on H200s


def test_a_model_that_fits_on_no_server_is_a_clear_error():
    weights = flops.param_count(GPT3) * 4  # fp32: 698 GB
    with pytest.raises(scale.ScaleError, match=r"needs 737\.\d GB \(weights 698\.\d GB .* offers 576\.0 GB usable; lower --batch"):
        scale.fit_replica(weights, 128 * 2048 * flops.kv_cache_bytes_per_token(GPT3, "fp32") / 64, 80e9, 8, 0.9,
                          "gpt3 in fp32")


def _profile(path, **fields):
    path.write_text(json.dumps({"gptmeter_profile": 1, "device": "cpu", **fields}))
    return path


def test_scale_prices_the_predicted_steps_and_labels_every_input(tmp_path):
    profile_file = _profile(tmp_path / "profile.json", decode_tokens_per_sec=123.0, decode_prediction_error=0.05,
                            prefill_prediction_error=-0.1)
    request = scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", sources=(profile_file,),
                                 queries_per_day=1e8, tokens_per_query=700)
    result = scale.extrapolate(request)
    h100 = reference_profile("h100-sxm", "bf16")
    assert result["profile"]["kind"] == "reference" and result["inputs"]["device_profile"]["kind"] == "reference"
    assert result["measured"] == []  # nothing measured on the CPU is an input for the H100
    assert {"batch", "queries_per_day", "tensor_parallel_efficiency"} <= set(result["assumed"])
    assert {"usd_per_device_hour", "board_power_w", "device_profile"} <= set(result["reference"])
    # The decode step: the predictor's mean step for the whole model on one H100, shared by the 8 of a replica.
    serving = result["serving"]
    assert serving["tensor_parallel"] == 8
    one_device = predict.predict_decode(GPT3, 32, 1, 700, h100)
    assert serving["decode_step"]["seconds"] == pytest.approx(one_device.step_seconds / 8, rel=1e-12)
    assert sum(serving["decode_step"]["breakdown"].values()) == pytest.approx(serving["decode_step"]["seconds"])
    qps = 1e8 / 86_400
    assert serving["replica_queries_per_sec"] == pytest.approx(32 / (700 * serving["decode_step"]["seconds"]))
    assert serving["replicas"] == math.ceil(qps / serving["replica_queries_per_sec"])
    assert serving["devices"] == 8 * serving["replicas"]
    assert serving["usd_per_day"] == pytest.approx(serving["devices"] * 24 * 2.49)
    assert serving["usd_per_query"] == pytest.approx(serving["usd_per_day"] / 1e8)
    # Training: model FLOPs over the profile's peak at the MFU predicted for one device's step.
    step = predict.predict_train(GPT3, 1, GPT3.block_size, 16, h100)
    expected_seconds = flops.training_flops_per_token(GPT3) * 20 * flops.param_count(GPT3) / (h100.peak_flops * step.mfu)
    assert result["training"]["device_hours"] == pytest.approx(expected_seconds / 3600)
    # The CPU file gives a confidence figure only: the same request without it predicts the very same fleet.
    errors = result["confidence"]["errors"]
    assert errors["decode"]["error"] == 0.05 and errors["prefill"]["error"] == -0.1
    assert "not a correction" in result["confidence"]["note"]
    alone = scale.extrapolate(scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", queries_per_day=1e8,
                                                 tokens_per_query=700))
    assert alone["serving"] == result["serving"] and alone["training"] == result["training"]
    assert alone["confidence"]["errors"] == {}


def test_a_run_gives_its_throughput_and_the_predictors_error_there(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {}, "params": 1}))
    step = {"kind": "step", "step": 1, "tokens": 100, "step_time_s": 0.5, "mfu": 0.02, "tokens_per_sec": 200.0}
    summary = {"kind": "summary", "device": "cpu", "prediction": {"tokens_per_sec": 220.0}}
    (run / "metrics.jsonl").write_text(json.dumps(step) + "\n" + json.dumps(summary) + "\n")
    measured = rundir.read_measurements([run])
    assert measured.tokens_per_sec.value == 200.0
    assert measured.prediction_errors["training"].value == pytest.approx(0.1)
    assert measured.prediction_errors["training"].source.startswith(f"measured (from {run}): training")


def test_a_foreign_profile_file_is_refused(tmp_path):
    foreign = tmp_path / "trace.json"
    foreign.write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(rundir.MeasurementError, match='not a gptmeter profile .*"gptmeter_profile": 1'):
        rundir.read_measurements([foreign])


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def cli(capsys):
    """`python -m profiling`, in process."""
    from profiling import __main__ as dispatcher

    def call(*argv: str) -> tuple[int, str, str]:
        status = dispatcher.main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return call


@pytest.mark.parametrize("argv, message", [
    (["scale", "--model", "gpt5", "--device", "h100-sxm"], "unknown model 'gpt5'; known presets: tiny, gpt2"),
    (["scale", "--model", "gpt2", "--device", "tpu-v9"], "unknown accelerator 'tpu-v9'; choose one of h100-sxm"),
    (["scale", "--model", "gpt2", "--device", "cpu"], "'cpu' has no datasheet"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--queries-per-day", "0"], "queries_per_day must be"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--tokens-per-query", "-5"], "tokens_per_query must be"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--usd-per-device-hour", "-1"], "usd_per_device_hour"),
    (["scale", "--model", "gpt3-175b", "--device", "l4", "--usd-per-device-hour", "1"], "offers 172.8 GB usable"),
    (["cost", "--tokens-per-sec", "0", "--usd-per-device-hour", "2"], "tokens_per_sec must be a positive number"),
    (["cost", "--scenario", "nope"], "unknown scenario 'nope'; known: semianalysis-2023"),
    (["cost", "--device", "h100-sxm"], "give a throughput"),
    (["cost", "--model", "gpt2"], "--model needs --device KEY"),
    (["cost", "--model", "gpt2", "--device", "cpu", "--dtype", "fp32"], "'cpu' has no datasheet"),
    (["scale", "--model", "gpt2", "--context", "4096", "--device", "h100-sxm"], "--context would be ignored"),
    (["scale", "--model", "gpt2", "--layers", "2", "--heads", "2", "--device", "h100-sxm"], "--layers --heads would"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--peak-to-average", "0.1"], "at least 1, got 0.1"),
])
def test_bad_input_is_one_line_and_status_2(cli, argv, message):
    status, out, err = cli(*argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_scale_json_from_the_cli(cli, tmp_path):
    status, out, _ = cli("scale", "--model", "gpt3-175b", "--device", "h100-sxm", "--queries-per-day", "1e8",
                         "--tokens-per-query", "700", "--json")
    result = json.loads(out)
    assert status == 0 and result["serving"]["devices"] > 0 and result["device"]["key"] == "h100-sxm"
    status, out, _ = cli("cost", "--from", str(_profile(tmp_path / "p.json", decode_tokens_per_sec=360.0)),
                         "--usd-per-device-hour", "3.6", "--json")
    result = json.loads(out)
    assert result["usd_per_million_tokens"] == pytest.approx(3.6 / 3600 / 360.0 * 1e6)
    assert result["tokens_per_sec_per_device"]["source"].startswith("measured (from ")


def test_cost_prices_a_predicted_throughput(cli):
    status, out, _ = cli("cost", "--model", "gpt2", "--device", "h100-sxm", "--tokens-per-query", "100",
                         "--batch", "8", "--json")
    result = json.loads(out)
    expected = predict.predict_decode(GPT2, 8, 1, 100, reference_profile("h100-sxm", "bf16")).tokens_per_sec
    assert status == 0 and result["tokens_per_sec_per_device"]["value"] == pytest.approx(expected, rel=1e-12)
    assert result["tokens_per_sec_per_device"]["source"].startswith("predicted: gpt2 decoding 100 tokens at batch 8")
    assert result["usd_per_million_tokens"] == pytest.approx(2.49 / 3600 / expected * 1e6)


def test_cost_page_of_a_run(tmp_path):
    from profiling.cost_report import cost_page

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {}, "params": 1}))
    step = {"kind": "step", "step": 1, "tokens": 100, "step_time_s": 0.5, "mfu": 0.05}
    (run / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    page = cost_page(run, "h100-sxm")
    assert [path.name for path in page.plots] == ["cost_breakdown.png", "devices_vs_traffic.png",
                                                  "cost_vs_model_size.png"]
    assert all(path.stat().st_size > 0 for path in page.plots)
    assert "confidence: " in page.text and "reference profile of NVIDIA H100" in page.text
    devices = list(page.results["devices_vs_queries_per_day"].values())
    assert devices == sorted(devices) and devices[-1] > devices[0]
    by_model = page.results["usd_per_million_tokens_by_model"]
    assert by_model["gpt2"] < by_model["gpt2-xl"] < by_model["gpt3-175b"]
    pricing = page.results["usd_per_day_by_pricing"]
    assert set(pricing["tco"]) == {"hardware", "energy", "operations"} and len(pricing["cloud"]) == 1
    assert all(usd > 0 for breakdown in pricing.values() for usd in breakdown.values())
