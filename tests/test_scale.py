"""Extrapolation: roofline switch point, memory fit, predicted steps with labelled inputs, bad input through the CLI."""

import json
import math
from dataclasses import replace

import pytest

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from profiling import collectives, cost, flops, predict, rundir, scale
from profiling.plan import NOT_BANDED, Planner, ServingInputs, band_inputs, plan_serving
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


H100 = reference_profile("h100-sxm", "bf16")


def _plan(config=GPT3, device="h100-sxm", prices=cost.PriceChoice(), **inputs):
    priced = cost.price_device(prices, device, scale.device_spec(device).board_power_w)
    return plan_serving(config, scale.device_spec(device), reference_profile(device, "bf16"), ServingInputs(**inputs),
                        priced)


def test_the_chosen_batch_fits_and_the_next_one_does_not_meet_the_limit_named():
    plan = _plan(prompt_tokens=500, output_tokens=500, queries_per_day=1e8)
    usable = plan.tensor_parallel * 80e9 * 0.9
    kv_per_token = flops.kv_cache_bytes_per_token(GPT3, "bf16")  # bf16 KV: 2 bytes × 2 × layers × kv width
    assert plan.weight_gb * 1e9 + plan.batch * 1000 * kv_per_token <= usable  # the KV cache of the batch fits
    if plan.limited_by == "memory":
        assert plan.weight_gb * 1e9 + (plan.batch + 1) * 1000 * kv_per_token > usable
    assert plan.ttft_s <= 2.0 and plan.user_tokens_per_sec >= 5.0
    assert plan.tensor_parallel == 8  # 349 GB of bf16 weights: more than 4 × 72 GB usable
    assert plan.candidates[4] == "refused: memory at batch 1"
    int8 = _plan(prompt_tokens=500, output_tokens=500, weights_dtype="int8")  # 175 GB of weights fit on 4
    assert int8.candidates[4].startswith("batch ") and int8.batch > plan.batch


def test_the_decode_step_is_the_predictors_step_shared_over_tp_plus_the_hand_counted_all_reduces():
    plan = _plan(prompt_tokens=0, output_tokens=200, queries_per_day=1e7)
    tp, batch = plan.tensor_parallel, plan.batch
    one_device = predict.predict_decode_step(GPT3, batch, 1 + 100, H100)
    # 2 ring all-reduces per layer of batch × 12288 bf16 values over 450 GB/s, 2(tp-1)/tp of it each, + 10 µs
    allreduce = 2 * 96 * (2 * (tp - 1) / tp * batch * 12288 * 2 / 450e9 + 10e-6)
    assert plan.decode_step.seconds == pytest.approx(one_device.step_seconds / tp + allreduce, rel=1e-12)
    assert plan.replica_queries_per_sec == pytest.approx(batch / (200 * plan.decode_step.seconds))


def test_more_queries_never_mean_fewer_devices():
    devices = [_plan(prompt_tokens=200, output_tokens=300, queries_per_day=q).devices
               for q in (1e5, 1e6, 3e6, 1e7, 3e7, 1e8)]
    assert devices == sorted(devices) and devices[-1] > devices[0]


def test_a_stricter_latency_target_never_gives_a_larger_batch():
    by_speed = [_plan(prompt_tokens=200, output_tokens=300, min_user_tokens_per_sec=y).batch
                for y in (1, 5, 10, 20, 30)]
    assert by_speed == sorted(by_speed, reverse=True) and by_speed[-1] < by_speed[0]
    by_ttft = [_plan(config=GPT2, device="a100-80gb", prompt_tokens=900, output_tokens=100, ttft_s=t).batch
               for t in (1.0, 0.1, 0.03, 0.01)]
    assert by_ttft == sorted(by_ttft, reverse=True)


def test_bad_inputs_name_the_limit_that_failed():
    with pytest.raises(scale.ScaleError, match=r"fit no server: 8 l4 devices offer 172.8 GB usable; use --weights-dtype"):
        _plan(device="l4", prices=cost.PriceChoice(usd_per_device_hour=1.0))  # 349 GB of weights against 8 × 24 GB
    with pytest.raises(scale.ScaleError, match=r"tokens/s, under --min-user-tokens-per-sec 10000"):
        _plan(min_user_tokens_per_sec=10_000)
    with pytest.raises(scale.ScaleError, match=r"time to first token is .* over --ttft-s 0.001"):
        _plan(prompt_tokens=1000, output_tokens=100, ttft_s=0.001)
    for bad in (0, -5):
        with pytest.raises(GptmeterError, match="queries_per_day"):
            _plan(queries_per_day=bad)


def test_the_band_is_ordered_and_the_tornado_is_the_plan_rerun_with_one_input_changed():
    request = scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", queries_per_day=1e8, prompt_tokens=300,
                                 tokens_per_query=300)
    result = scale.extrapolate(request)
    serving = result["serving"]
    for name in ("usd_per_day", "wh_per_query", "devices_band", "kg_co2_per_day_band"):
        band = serving[name]
        assert band["low"] <= band["central"] <= band["high"], name
    assert serving["usd_per_day"]["central"] == pytest.approx(serving["devices"] * 24 * 2.49)
    central = {"usd_per_day": serving["usd_per_day"]["central"]}

    def swing(entry):
        ends = [entry[f"{end}_usd_per_day"] for end in ("low", "high")]
        return abs((ends[1] or central["usd_per_day"]) - (ends[0] or central["usd_per_day"]))

    effects = [swing(entry) for entry in serving["tornado"]]
    assert effects == sorted(effects, reverse=True)
    # Both ends of every entry are exactly the plan re-run with that one input changed (re-priced for a price input).
    for entry in serving["tornado"]:
        assert entry["low"] <= entry["central"] <= entry["high"], entry["input"]
        for end in ("low", "high"):
            serving_inputs = dict(prompt_tokens=300, output_tokens=300, queries_per_day=1e8)
            prices = cost.PriceChoice()
            value = entry[end]
            if entry["applies_to"] == "serving":
                serving_inputs[entry["field"]] = int(value) if entry["field"] in (
                    "prompt_tokens", "output_tokens", "devices_per_server") else value
            else:
                prices = replace(prices, **{entry["field"]: value})
            try:
                rerun = _plan(prices=prices, **serving_inputs)
            except scale.ScaleError:
                assert entry[f"{end}_usd_per_day"] is None, (entry["input"], end)
                continue
            for metric in ("usd_per_day", "wh_per_query", "kg_co2_per_day", "devices"):
                assert entry[f"{end}_{metric}"] == pytest.approx(getattr(rerun, metric)), (entry["input"], end, metric)
    tornado = {entry["input"]: entry for entry in serving["tornado"]}
    assert tornado["price_factor"]["low_usd_per_day"] == pytest.approx(0.6 * serving["usd_per_day"]["central"])
    # The energy inputs move Wh per query, not a rented fleet's cost: by hand, energy ∝ board × load × PUE.
    pue = tornado["pue"]
    assert pue["low_usd_per_day"] == pue["high_usd_per_day"] == pytest.approx(central["usd_per_day"])
    assert pue["high_wh_per_query"] / pue["low_wh_per_query"] == pytest.approx(pue["high"] / pue["low"])
    load = tornado["power_load_factor"]
    assert load["high_wh_per_query"] == pytest.approx(serving["wh_per_query"]["central"] / 0.7)  # 70% -> 100%
    grid = tornado["grid_kg_co2_per_kwh"]
    assert grid["high_kg_co2_per_day"] == pytest.approx(serving["kwh_per_day"] * 0.713)
    assert serving["wh_per_query"]["low"] < pue["low_wh_per_query"]  # the Wh band moves with the energy inputs
    assert serving["wh_per_query"]["high"] > load["high_wh_per_query"]
    # Every end carries a source, published or the word "assumption".
    for entry in serving["tornado"]:
        assert set(entry["sources"]) == {"low", "central", "high"} and all(entry["sources"].values()), entry
    # Every input the plan lists is either banded or named, with a reason, as not banded.
    banded = set(tornado)
    assert set(result["inputs"]) - banded <= set(NOT_BANDED), set(result["inputs"]) - banded - set(NOT_BANDED)
    assert {"prompt_tokens", "tokens_per_query", "utilisation", "pue", "power_load_factor", "grid_kg_co2_per_kwh",
            "devices_per_server"} <= banded


def test_an_owned_fleet_bands_its_own_price_inputs_and_the_energy_moves_its_cost():
    request = scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", queries_per_day=1e7,
                                 prices=cost.PriceChoice(pricing="tco"))
    result = scale.extrapolate(request)
    tornado = {entry["input"]: entry for entry in result["serving"]["tornado"]}
    assert {"lifetime_years", "operations_fraction_per_year", "electricity_usd_per_kwh"} <= set(tornado)
    assert set(result["inputs"]) - set(tornado) <= set(NOT_BANDED)
    pue = tornado["pue"]
    assert pue["high_usd_per_day"] > pue["low_usd_per_day"]  # owned: the energy is paid per kWh
    lifetime = tornado["lifetime_years"]
    assert lifetime["low_usd_per_day"] > lifetime["high_usd_per_day"]  # a shorter life costs more per day


def test_the_default_prompt_is_sourced_and_banded():
    result = scale.extrapolate(scale.ScaleRequest(device="h100-sxm", model="gpt3-175b"))
    prompt = result["inputs"]["prompt_tokens"]
    assert prompt["value"] == 70 and "LMSYS-Chat-1M" in prompt["source"] and "assumption" in prompt["source"]
    entry = next(entry for entry in result["serving"]["tornado"] if entry["input"] == "prompt_tokens")
    assert (entry["low"], entry["central"], entry["high"]) == (0, 70, 1020)
    assert "Splitwise" in entry["sources"]["high"] and entry["low_usd_per_day"] < entry["high_usd_per_day"]
    # A model whose context cannot take the published high end gets it capped at its context, said so.
    small = scale.extrapolate(scale.ScaleRequest(device="h100-sxm", model="gpt2"))
    entry = next(entry for entry in small["serving"]["tornado"] if entry["input"] == "prompt_tokens")
    assert entry["high"] == 1024 - 700 and "capped at the model's context" in entry["sources"]["high"]


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
    assert {"queries_per_day", "allreduce_latency_s"} <= set(result["assumed"])
    assert {"usd_per_device_hour", "board_power_w", "device_profile", "ttft_s"} <= set(result["reference"])
    serving = result["serving"]
    assert serving["tensor_parallel"] == 8 and serving["limited_by"] in ("memory", "ttft", "user_tokens_per_sec")
    # Training: model FLOPs over the profile's peak at the MFU of one device's step slowed by the gradient
    # all-reduce over 1,024 H100s = 128 servers × 8, counted by hand: DDP's buckets of float32 gradients (the first
    # 1 MiB, then 25 MiB), each a reduce-scatter + all-gather ring over NVLink 4 (450 GB/s, 2 µs per hop) inside the
    # server and an all-reduce of its 1/8 share over each GPU's 400 Gb/s NDR NIC (50 GB/s, a tree: 2·⌈log2 128⌉ hops
    # of 5 µs); and DDP's copies of the gradients into the buckets and back, priced on the profile's copy table.
    step = predict.predict_train(GPT3, 1, GPT3.block_size, 16, h100)
    bucket = 25 * 2 ** 20
    full, rest = divmod(4 * flops.param_count(GPT3) - 2 ** 20, bucket)

    def one(size):
        return 2 * 7 / 8 * size / 450e9 + 14 * 2e-6 + 2 * 127 / 128 * (size / 8) / 50e9 + 2 * 7 * 5e-6

    allreduce = one(2 ** 20) + full * one(bucket) + one(rest)
    copies = sum(predict.price(collectives.data_parallel_copies(GPT3, 1024, 16, False, "bf16"), h100,
                                "training").values())
    training = result["training"]
    assert training["communication"]["seconds_per_step"] == pytest.approx(allreduce, rel=1e-9)
    assert (training["communication"]["servers"], training["communication"]["devices_per_server"]) == (128, 8)
    assert training["step"]["step_seconds"] == pytest.approx(step.step_seconds + copies + allreduce, rel=1e-9)
    mfu = step.mfu * step.step_seconds / (step.step_seconds + copies + allreduce)
    assert training["predicted_mfu"] == pytest.approx(mfu, rel=1e-9)
    expected_seconds = flops.training_flops_per_token(GPT3) * 20 * flops.param_count(GPT3) / (h100.peak_flops * mfu)
    assert training["device_hours"] == pytest.approx(expected_seconds / 3600)
    assert "NDR 400 Gb/s" in result["inputs"]["inter_node_bytes_per_s"]["source"]
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


@pytest.mark.parametrize("argv, message", [
    (["scale", "--model", "gpt5", "--device", "h100-sxm"], "unknown model 'gpt5'; known presets: tiny, gpt2"),
    (["scale", "--model", "gpt2", "--device", "tpu-v9"], "unknown accelerator 'tpu-v9'; choose one of h100-sxm"),
    (["scale", "--model", "gpt2", "--device", "cpu"], "'cpu' has no datasheet"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--queries-per-day", "0"], "queries_per_day must be"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--tokens-per-query", "-5"], "tokens_per_query must be"),
    (["scale", "--model", "gpt2", "--device", "h100-sxm", "--usd-per-device-hour", "-1"], "usd_per_device_hour"),
    (["scale", "--model", "gpt3-175b", "--device", "l4", "--usd-per-device-hour", "1"], "offer 172.8 GB usable"),
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
    assert result["tokens_per_sec_per_device"]["kind"] == "predicted on a reference profile"
    assert result["tokens_per_sec_per_device"]["source"].startswith("gpt2 decoding 100 tokens at batch 8")
    assert {entry["kind"] for entry in result["inputs"].values()} == {"reference", "assumed"}
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


def test_scale_plot_draws_the_tornado(cli, tmp_path):
    status, out, _ = cli("scale", "--model", "gpt2", "--device", "h100-sxm", "--plot", str(tmp_path / "pics"), "--json")
    result = json.loads(out)
    assert status == 0 and result["plots"] == [str(tmp_path / "pics" / "tornado.png")]
    assert (tmp_path / "pics" / "tornado.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = band_inputs(ServingInputs(), scale.GPTConfig.from_preset("gpt2"), scale.device_spec("h100-sxm"),
                           cost.price_device(cost.PriceChoice(), "h100-sxm", 700), cost.PriceChoice())
    assert {entry["input"] for entry in result["serving"]["tornado"]} == set(expected)


def test_an_input_end_with_no_plan_is_reported_as_none_not_an_error():
    planner = Planner(GPT3, scale.device_spec("h100-sxm"), H100, ServingInputs(output_tokens=300))
    fastest = planner.point(8, 1).user_tokens_per_sec
    request = scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", tokens_per_query=300,
                                 min_user_tokens_per_sec=0.95 * fastest)  # met at batch 1, not if steps were 25% slower
    serving = scale.extrapolate(request)["serving"]
    slower = next(entry for entry in serving["tornado"] if entry["input"] == "step_time_factor")
    assert serving["batch"] >= 1 and slower["high_usd_per_day"] is None and slower["low_usd_per_day"] is not None
    assert serving["usd_per_day"]["low"] <= serving["usd_per_day"]["central"]


# --------------------------------------------------------------------------- owned against rented


def test_owned_and_rented_fleets_side_by_side_sum_to_their_totals():
    request = scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", queries_per_day=1e8, tokens_per_query=700)
    rented_first = scale.extrapolate(request)["serving"]
    owned_first = scale.extrapolate(replace(request, prices=cost.PriceChoice(pricing="tco")))["serving"]
    devices = rented_first["devices"]
    assert owned_first["devices"] == devices  # the price never changes the plan
    for serving, headline in ((rented_first, "rented"), (owned_first, "owned")):
        sides = serving["operating_cost_usd_per_day"]
        assert sides["headline"] == headline
        assert sides[headline]["total"] == pytest.approx(serving["usd_per_day"]["central"])
        for fleet in ("rented", "owned"):
            parts = sides[fleet]
            assert parts["hardware"] + parts["energy"] + parts["operations"] == pytest.approx(parts["total"])
    sides = rented_first["operating_cost_usd_per_day"]
    assert sides == owned_first["operating_cost_usd_per_day"] | {"headline": "rented"}
    assert sides["rented"]["total"] == pytest.approx(devices * 24 * 2.49) and sides["rented"]["energy"] == 0
    owned = sides["owned"]  # hand count from the price table: $27,500 over 5 years, 10%/year, 700 W × 0.7 × 1.58
    hours_per_year = 365.25 * 24
    assert owned["hardware"] == pytest.approx(devices * 24 * 27_500 / (5 * hours_per_year))
    assert owned["operations"] == pytest.approx(devices * 24 * 0.10 * 27_500 / hours_per_year)
    assert owned["energy"] == pytest.approx(devices * 24 * 0.700 * 0.7 * 1.58 * 0.0806)
    assert owned["inputs"]["purchase_usd"]["kind"] == "reference"


def test_a_fleet_that_cannot_be_priced_owned_says_why_and_keeps_the_rented_side(cli):
    status, out, _ = cli("scale", "--model", "gpt2", "--device", "l40s", "--usd-per-device-hour", "1", "--json")
    sides = json.loads(out)["serving"]["operating_cost_usd_per_day"]
    assert status == 0 and sides["rented"]["total"] > 0
    assert "no price for device 'l40s'" in sides["owned"]["error"]
