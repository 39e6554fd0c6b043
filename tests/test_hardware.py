"""The accelerator table, device detection, the microbenchmarks and their cache.

The autouse fixture in conftest.py points GPTMETER_CACHE_DIR at a temporary folder; tests that
write the cache use their own tmp_path on top of that.
"""

import json
import time

import pytest
import torch

from gpt.errors import GptmeterError
from profiling import hardware
from profiling.__main__ import main
from profiling.hardware import Ceilings


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path))
    return tmp_path


def fake_ceilings(name: str, fp32: float = 5e10) -> Ceilings:
    return Ceilings(name, {"fp32": fp32}, 1.2e10, 1024, 2**27, torch.__version__, "2025-01-01T00:00:00+00:00")


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    "reported, key",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("Tesla V100-SXM2-16GB", "v100-sxm2-16gb"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("nvidia h100 80gb hbm3 ", "h100-sxm"),  # case and stray spaces do not matter
    ],
)
def test_detection_by_reported_name(reported, key):
    assert hardware.accelerator_for_device_name(reported).key == key


@pytest.mark.parametrize("reported", ["NVIDIA B200", "NVIDIA H100 NVL", "NVIDIA L40", "NVIDIA A10"])
def test_unknown_gpu_says_how_to_pass_peaks(reported):
    with pytest.raises(hardware.UnknownDeviceError, match="--peak-tflops"):
        hardware.accelerator_for_device_name(reported)


def test_guide_peaks_are_dense_datasheet_figures():
    h100, h200, a100 = (hardware.accelerator(key) for key in ("h100-sxm", "h200", "a100-80gb"))
    assert (h100.peak("bf16"), h100.peak("tf32"), h100.peak("fp32")) == (989.5e12, 494.5e12, 67e12)
    assert hardware.accelerator("h100-pcie").peak("bfloat16") == 756e12
    assert h200.peak_flops == h100.peak_flops
    assert (a100.peak("bf16"), a100.peak("tf32"), a100.peak("fp32")) == (312e12, 156e12, 19.5e12)
    assert (h100.memory_bandwidth, h200.memory_bandwidth) == (3.35e12, 4.8e12)
    assert a100.memory_bandwidth == pytest.approx(2.04e12, rel=0.001)
    assert (a100.board_power_w, h100.board_power_w) == (400, 700)


def test_every_gpu_entry_is_complete_and_sourced():
    for entry in hardware.ACCELERATORS.values():
        if entry.key == "cpu":
            continue
        assert entry.device_names and entry.memory_bandwidth and entry.memory_bytes and entry.board_power_w
        assert "http" in entry.source and any(str(year) in entry.source for year in range(2017, 2027)), entry.key
        assert set(entry.peak_flops) <= set(hardware.TABLE_DTYPES) and "fp32" in entry.peak_flops


def test_lookup_errors_name_the_choices():
    with pytest.raises(GptmeterError, match="h100-sxm, h100-pcie"):
        hardware.accelerator("h100")
    with pytest.raises(GptmeterError, match="no datasheet bf16 peak"):
        hardware.accelerator("v100-sxm2-32gb").peak("bf16")


def test_mfu_by_hand():
    # GPT-2 124M training at 400k tokens/s on an H100 SXM: 854,438,400 × 4e5 / 989.5e12.
    assert hardware.mfu(854_438_400, 4e5, 989.5e12) == pytest.approx(0.345402, rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        hardware.mfu(1, 1, 0)


# ----------------------------------------------------------------------------- peaks of a device


def test_gpu_peaks_come_from_the_datasheet(monkeypatch, cache_dir):
    monkeypatch.setattr(hardware, "device_name", lambda device: "NVIDIA H100 80GB HBM3")
    peaks = hardware.device_peaks("cuda", "bf16")
    assert (peaks.accelerator, peaks.flops, peaks.bandwidth) == ("h100-sxm", 989.5e12, 3.35e12)
    assert peaks.flops_source.startswith("datasheet: NVIDIA H100") and peaks.measured is None


def test_unknown_gpu_needs_peaks_by_hand(monkeypatch, cache_dir):
    monkeypatch.setattr(hardware, "device_name", lambda device: "NVIDIA B200")
    with pytest.raises(hardware.UnknownDeviceError):
        hardware.device_peaks("cuda", "bf16")
    peaks = hardware.device_peaks("cuda", "bf16", peak_flops=2.25e15, peak_bandwidth=8e12)
    assert (peaks.accelerator, peaks.flops, peaks.bandwidth) == (None, 2.25e15, 8e12)
    assert peaks.flops_source == "given by hand"


def test_cpu_peak_is_the_measured_ceiling_and_says_so(cache_dir):
    hardware.save_ceilings(fake_ceilings(hardware.device_name("cpu"), fp32=4.2e10))
    peaks = hardware.device_peaks("cpu", "fp32")
    assert (peaks.accelerator, peaks.flops, peaks.measured_flops) == ("cpu", 4.2e10, 4.2e10)
    assert "measured" in peaks.flops_source and "no datasheet" in peaks.flops_source
    assert peaks.bandwidth == 1.2e10 and peaks.bandwidth_source.startswith("measured")


# ----------------------------------------------------------------------------- measurements and their cache


def test_median_timing_of_a_known_duration():
    seconds = hardware._median_seconds(lambda: time.sleep(0.02), torch.device("cpu"), repeats=5)
    assert 0.02 <= seconds < 0.04


def test_cpu_microbenchmarks_are_plausible():
    flops = hardware.measure_matmul_flops("cpu", "fp32", size=256, repeats=3)
    assert 1e8 < flops < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s: no CPU is outside that
    bandwidth = hardware.measure_copy_bandwidth("cpu", nbytes=2**24, repeats=3)
    assert 1e8 < bandwidth < 1e13


def test_cache_round_trip_and_reuse(cache_dir, monkeypatch):
    name = hardware.device_name("cpu")
    assert hardware.cached_ceilings(name) is None
    path = hardware.save_ceilings(fake_ceilings(name))
    hardware.save_ceilings(fake_ceilings("another device"))
    assert path.parent == cache_dir and set(json.loads(path.read_text())) == {name, "another device"}
    assert hardware.cached_ceilings(name) == fake_ceilings(name)

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured although a cached result exists")

    monkeypatch.setattr(hardware, "measure_ceilings", must_not_measure)
    assert hardware.measured_ceilings("cpu") == fake_ceilings(name)


def test_measured_ceilings_measure_once_then_cache(cache_dir):
    measured = hardware.measured_ceilings("cpu", refresh=True)
    assert set(measured.matmul_flops) == {"fp32"} and measured.copy_bandwidth > 0
    assert hardware.cached_ceilings(measured.device_name) == measured


def test_corrupt_cache_is_a_clear_error(cache_dir):
    (cache_dir / hardware.CACHE_FILE).write_text("{not json")
    with pytest.raises(GptmeterError, match="delete it"):
        hardware.cached_ceilings("anything")


@pytest.mark.gpu
def test_cuda_ceilings_are_below_the_datasheet():
    peaks = hardware.device_peaks("cuda", "bf16", measure=True)
    assert 0.2 * peaks.flops < peaks.measured_flops <= 1.05 * peaks.flops
    assert 0.2 * peaks.bandwidth < peaks.measured.copy_bandwidth <= 1.05 * peaks.bandwidth


# ----------------------------------------------------------------------------- command line


def test_cli_json_on_cpu(cache_dir, capsys):
    hardware.save_ceilings(fake_ceilings(hardware.device_name("cpu")))
    assert main(["hardware", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["table"]["h200"]["peak_flops"]["bf16"] == 989.5e12
    assert report["device"]["accelerator"] == "cpu" and report["device"]["flops"] == 5e10


def test_cli_hand_peaks_and_clean_errors(cache_dir, capsys):
    assert main(["hardware", "--device", "cpu", "--peak-tflops", "1.5", "--peak-bandwidth-gbs", "50"]) == 0
    out = capsys.readouterr().out
    assert "peak fp32: 1.5 TFLOP/s (given by hand)" in out and "50 GB/s (given by hand)" in out
    hardware.save_ceilings(fake_ceilings(hardware.device_name("cpu")))
    assert main(["hardware", "--device", "cpu", "--dtype", "bf16"]) == 2
    assert capsys.readouterr().err.startswith("python -m profiling hardware: error: no measured bf16")
