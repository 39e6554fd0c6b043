"""train-compare: time scales with tokens and profile speed, energy and cost by hand count, the CPU row on the
CPU's own measured profile, memory minimum by hand, and one-line errors for bad input."""

import json
import math

import pytest

from gpt.config import GPTConfig
from profiling import collectives, device_profile, flops, hardware, predict, train_compare_cli
from profiling.__main__ import main
from profiling.cost import HOURS_PER_YEAR
from profiling.prices import DEVICE_PRICES, FACILITY
from profiling.train_compare import (
    CPU_WATTS_PER_THREAD, STATE_BYTES_PER_PARAM, CompareError, CompareInputs, DeviceRequest, compare_device,
    memory_need, min_devices,
)
from tests.test_collectives import HARNESS
from tests.test_predict import synthetic_profile

CONFIG = GPTConfig(vocab_size=300, block_size=64, n_layer=3, n_head=4, n_embd=64)


def cpu_profile(threads: int = 2):
    profile = synthetic_profile()
    profile.device, profile.threads = hardware.device_name("cpu"), threads
    profile.source = "measured: python -m profiling calibrate --device cpu (test)"
    return profile


def test_more_tokens_take_proportionally_longer_and_a_faster_profile_less():
    h100 = device_profile.reference_profile("h100-sxm", "bf16")
    one = compare_device(CONFIG, DeviceRequest("h100-sxm", 8), h100, CompareInputs(tokens=1e9))
    three = compare_device(CONFIG, DeviceRequest("h100-sxm", 8), h100, CompareInputs(tokens=3e9))
    assert three["days"] == pytest.approx(3 * one["days"], rel=1e-12)
    assert three["usd_cloud"] == pytest.approx(3 * one["usd_cloud"], rel=1e-12)
    slow, fast = cpu_profile(), cpu_profile()
    fast.matmul = dict(fast.matmul, flops_per_sec=[[[rate * 4 for rate in row] for row in plane]
                                                    for plane in fast.matmul["flops_per_sec"]])
    inputs = CompareInputs(tokens=1e6)
    slow_row, fast_row = (compare_device(CONFIG, DeviceRequest("cpu", 1), profile, inputs) for profile in (slow, fast))
    assert fast_row["days"] < slow_row["days"]
    assert fast_row["tokens_per_sec_per_device"] > slow_row["tokens_per_sec_per_device"]
    # time = tokens / (tokens/s per device × devices), with perfect scaling
    assert one["wall_seconds"] == pytest.approx(1e9 / (one["tokens_per_sec_per_device"] * 8), rel=1e-9)


def test_energy_and_cost_by_hand():
    a100 = device_profile.reference_profile("a100-80gb", "bf16")
    row = compare_device(CONFIG, DeviceRequest("a100-80gb", 4), a100, CompareInputs(tokens=2e9))
    hours = 2e9 / row["tokens_per_sec_per_device"] / 3600  # device-hours
    assert row["device_hours"] == pytest.approx(hours, rel=1e-9)
    kw = 400 / 1000 * FACILITY.power_load_factor.value * FACILITY.pue.value  # board power × load × PUE
    assert row["kwh"] == pytest.approx(kw * hours, rel=1e-9)
    assert row["kg_co2"] == pytest.approx(kw * hours * FACILITY.grid_kg_co2_per_kwh.value, rel=1e-9)
    assert row["usd_cloud"] == pytest.approx(hours * DEVICE_PRICES["a100-80gb"].cloud_usd_per_hour.value, rel=1e-9)
    purchase = DEVICE_PRICES["a100-80gb"].purchase_usd.value
    owned_hour = (purchase / (FACILITY.lifetime_years.value * HOURS_PER_YEAR) + kw * FACILITY.electricity_usd_per_kwh.value
                  + FACILITY.operations_fraction_per_year.value * purchase / HOURS_PER_YEAR)
    assert row["usd_owned"] == pytest.approx(hours * owned_hour, rel=1e-9)
    assert row["days"] == pytest.approx(hours / 4 / 24, rel=1e-9)


def test_the_cpu_row_is_priced_on_the_cpus_measured_profile_and_labelled_so():
    row = compare_device(CONFIG, DeviceRequest("cpu", 1), cpu_profile(threads=2), CompareInputs(tokens=1e6))
    assert row["profile"]["kind"] == "measured" and row["profile"]["device_class"] == "cpu"
    assert row["inputs"]["device_profile"]["kind"] == "measured"
    assert "calibrate" in row["inputs"]["device_profile"]["source"]
    assert "datasheet" not in row["inputs"]["device_profile"]["source"]
    assert row["inputs"]["board_power_w"]["kind"] == "assumed"
    assert row["inputs"]["board_power_w"]["value"] == pytest.approx(2 * CPU_WATTS_PER_THREAD.value)
    assert row["inputs"]["memory_bytes"]["kind"] == "measured"
    given = compare_device(CONFIG, DeviceRequest("cpu", 1), cpu_profile(), CompareInputs(tokens=1e6, cpu_watts=50.0))
    assert given["kw_per_device"] == pytest.approx(0.05 * FACILITY.power_load_factor.value * FACILITY.pue.value)
    with pytest.raises(CompareError, match="never carried"):  # a GPU's profile never stands for the CPU
        compare_device(CONFIG, DeviceRequest("cpu", 1), device_profile.reference_profile("h100-sxm"),
                       CompareInputs(tokens=1e6))


def test_memory_minimum_by_hand_and_a_count_below_it_is_refused():
    config = GPTConfig.from_preset("gpt3-175b")
    need = memory_need(config, micro_batch=1)
    assert need["state_bytes"] == 16 * flops.param_count(config) == STATE_BYTES_PER_PARAM * 174_604_259_328
    assert need["activation_bytes"] == 2048 * 12288 * (2 * 96 + 34)
    usable = 0.9 * 80e9
    assert min_devices(need, usable) == math.ceil(need["state_bytes"] / (usable - need["activation_bytes"])) == 43
    assert min_devices(need, need["activation_bytes"]) is None
    h100 = device_profile.reference_profile("h100-sxm", "bf16")
    refused = compare_device(config, DeviceRequest("h100-sxm", 8), h100, CompareInputs(tokens=1e9))
    assert "needs at least 43 devices" in refused["refused"] and "days" not in refused
    fewest = compare_device(config, DeviceRequest("h100-sxm"), h100, CompareInputs(tokens=1e9))
    assert fewest["devices"] == 43 and fewest["refused"] is None


def test_data_parallel_rows_add_the_gradient_all_reduce_counted_by_hand():
    a100 = device_profile.reference_profile("a100-80gb", "bf16")
    inputs = CompareInputs(tokens=1e9)
    one = compare_device(CONFIG, DeviceRequest("a100-80gb", 1), a100, inputs)
    sixteen = compare_device(CONFIG, DeviceRequest("a100-80gb", 16), a100, inputs)
    S = 4 * flops.param_count(CONFIG)  # float32 gradients, one 25 MiB bucket
    # 2 servers × 8: NVLink 3 ring (300 GB/s, 2 µs per hop), then S/8 over each GPU's 200 Gb/s HDR NIC (5 µs per hop)
    allreduce = 2 * 7 / 8 * S / 300e9 + 14 * 2e-6 + 2 * 1 / 2 * (S / 8) / 25e9 + 2 * 5e-6
    copies = sum(predict.price(collectives.data_parallel_copies(CONFIG, 16, 1, False, "bf16"), a100,
                                "training").values())
    compute = one["step"]["step_seconds"] + copies  # DDP's bucket copies on each device
    assert one["communication"]["seconds_per_step"] == 0 and one["inputs"]["data_parallel_scaling"]["value"] == 1
    assert sixteen["communication"]["seconds_per_step"] == pytest.approx(allreduce, rel=1e-12)
    assert sixteen["communication"]["servers"] == 2
    assert sixteen["inputs"]["data_parallel_scaling"]["value"] == pytest.approx(compute / (compute + allreduce))
    assert sixteen["inputs"]["data_parallel_scaling"]["kind"] == "assumed"
    assert sixteen["days"] == pytest.approx(one["days"] / 16 * (compute + allreduce) / one["step"]["step_seconds"],
                                            rel=1e-9)
    # The CPU: one 2-thread VM per server on the assumed 12.5 Gb/s network (AWS c6i.large)
    cpu = compare_device(CONFIG, DeviceRequest("cpu", 4), cpu_profile(), inputs)
    assert cpu["communication"]["seconds_per_step"] == pytest.approx(2 * 3 / 4 * S / (12.5e9 / 8) + 2 * 2 * 5e-6)
    assert cpu["communication"]["intra_server"] is None and cpu["inputs"]["inter_node_bytes_per_s"]["kind"] == "assumed"
    # A measured table at the row's world size is used instead of the links; at another world size it is not.
    table = {"backend": "gloo", "world_size": 2, "harness": HARNESS,
             "ops": {op: {"bytes": [1000, 3000], "seconds": [1e-4, 3e-4]} for op in ("all_reduce", "all_gather",
                                                                                    "reduce_scatter")}}
    measured = cpu_profile()
    measured.collectives = table
    two = compare_device(CONFIG, DeviceRequest("cpu", 2), measured, inputs)
    assert two["communication"]["seconds_per_step"] == pytest.approx(3e-4 * S / 3000)  # beyond its largest size
    assert two["communication"]["links"].startswith("measured")
    four = compare_device(CONFIG, DeviceRequest("cpu", 4), measured, inputs)
    assert four["communication"]["seconds_per_step"] == pytest.approx(cpu["communication"]["seconds_per_step"])


def test_days_picks_the_fewest_devices_that_finish_in_time():
    h100 = device_profile.reference_profile("h100-sxm", "bf16")
    one = compare_device(CONFIG, DeviceRequest("h100-sxm", 1), h100, CompareInputs(tokens=1e12))
    limit = one["days"] / 10.5
    row = compare_device(CONFIG, DeviceRequest("h100-sxm"), h100, CompareInputs(tokens=1e12, days=limit))
    assert row["devices"] == 11 and row["days"] <= limit
    assert compare_device(CONFIG, DeviceRequest("h100-sxm", 10), h100, CompareInputs(tokens=1e12))["days"] > limit


def test_cli_json_gpt3_check_and_plot(tmp_path, capsys):
    assert main(["train-compare", "--tokens", "1e9", "--devices", "a100-80gb:2", "h100-sxm", "--json",
                 "--plot", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["key"] for row in result["rows"]] == ["a100-80gb", "h100-sxm"]
    assert [row["devices"] for row in result["rows"]] == [2, 1]
    kinds = {entry["kind"] for row in result["rows"] for entry in row["inputs"].values()}
    assert kinds <= {"measured", "reference", "assumed"} and {"reference", "assumed"} <= kinds
    check = result["gpt3_check"]
    assert check["published"]["flops"] == 3.14e23 and check["published"]["days"] == 34
    assert check["six_n_d_flops"] == pytest.approx(3.14e23, rel=0.01)  # 6 × 174.6B × 300B
    assert check["predicted"]["flops"] == pytest.approx(3.14e23, rel=0.05)  # plus the attention term
    assert check["published"]["implied_mfu"] == pytest.approx(0.335, abs=0.005)
    assert (tmp_path / "train_compare.png").stat().st_size > 0


def test_zero_tokens_are_refused():
    with pytest.raises(CompareError, match="--tokens must be a positive number"):
        CompareInputs(tokens=0)
    with pytest.raises(SystemExit) as exit_:
        main(["train-compare", "--tokens", "0"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("argv, message", [
    (["--devices", "tpu-v9"], "unknown accelerator 'tpu-v9'"),
    (["--devices", "h100-sxm:0"], "positive whole number"),
    (["--devices", "h100-sxm", "h100-sxm:2"], "twice"),
    (["--devices", "l4"], "no price for l4"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(["train-compare", "--tokens", "1e9", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_cli_takes_this_cpus_cached_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path))  # this test's cache only
    cached = cpu_profile()
    device_profile.save_profile(cached, device_profile.cache_path(cached.device, cached.dtype))
    assert train_compare_cli.device_profile("cpu") == cached  # found in the cache: nothing is measured
    assert main(["train-compare", "--tokens", "1e6", "--devices", "cpu:1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["profile"]["device"] == cached.device and row["profile"]["kind"] == "measured"
