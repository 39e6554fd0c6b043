"""The accelerator table, device detection, and the measured ceilings (a view of the calibrated profile).

The autouse fixture in conftest.py points GPTMETER_CACHE_DIR at a temporary folder; tests that
write the cache use their own tmp_path on top of that.
"""

import json

import pytest

from gpt.errors import GptmeterError
from profiling import device_profile, hardware
from profiling.__main__ import main
from tests.test_predict import synthetic_profile


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path))
    return tmp_path


def cache_cpu_profile(best_matmul: float = 5e10, name: str | None = None) -> device_profile.DeviceProfile:
    """A measured CPU profile in the cache whose fastest matmul is `best_matmul` and whose streaming copy moves
    1.2e10 bytes/s; its (transposed) copy table is four times slower, as on the 2-core VM."""
    profile = synthetic_profile()
    profile.device = name or hardware.device_name("cpu")
    profile.matmul["flops_per_sec"][2][1][0] = best_matmul
    profile.memory["copy"] = {"elements": [256, 2**20], "seconds": [1e-6, 4 * 2 * 2**20 * 4 / 1.2e10]}
    profile.memory["stream_copy"] = {"bytes": 2**27, "bytes_per_sec": 1.2e10}
    device_profile.save_profile(profile, device_profile.cache_path(profile.device, "fp32"))
    return profile


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
        ("Tesla V100-PCIE-16GB", "v100-pcie-16gb"),
        ("Tesla V100-PCIE-32GB", "v100-pcie-32gb"),
        ("Tesla T4", "t4"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H800", "h800-sxm"),
        ("NVIDIA GH200 480GB", "gh200"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA A30", "a30"),
        ("NVIDIA A40", "a40"),
        ("NVIDIA L40", "l40"),
        ("nvidia h100 80gb hbm3 ", "h100-sxm"),  # case and stray spaces do not matter
    ],
)
def test_detection_by_reported_name(reported, key):
    assert hardware.accelerator_for_device_name(reported).key == key


@pytest.mark.parametrize("reported", ["NVIDIA B200", "NVIDIA RTX A6000", "NVIDIA A100-SXM4-40GB2"])
def test_unknown_gpu_says_how_to_pass_peaks(reported):
    with pytest.raises(hardware.UnknownDeviceError, match="--peak-tflops"):
        hardware.accelerator_for_device_name(reported)


def test_new_rows_hold_their_datasheet_figures():
    # Dense = the datasheets' sparsity figures halved (H100 NVL bf16 1,671 TFLOPS*, A10 bf16 250*).
    nvl, h800, gh200, a10, t4 = (hardware.accelerator(key) for key in ("h100-nvl", "h800-sxm", "gh200", "a10", "t4"))
    assert (nvl.peak("bf16"), nvl.peak("tf32"), nvl.peak("fp32"), nvl.memory_bandwidth) == (835.5e12, 417.5e12,
                                                                                          60e12, 3.9e12)
    assert h800.peak_flops == gh200.peak_flops == hardware.accelerator("h100-sxm").peak_flops
    assert (gh200.memory_bytes, gh200.memory_bandwidth) == (96e9, 4.0e12)
    assert (a10.peak("bf16"), a10.peak("tf32"), a10.peak("fp32"), a10.board_power_w) == (125e12, 62.5e12, 31.2e12, 150)
    assert (t4.peak("fp16"), t4.peak("fp32")) == (65e12, 8.1e12) and "bf16" not in t4.peak_flops


@pytest.mark.parametrize(
    "reported, parent, compute, bandwidth_slices, memory_gb",
    [
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "a100-40gb", 1 / 7, 1 / 8, 5),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "a100-40gb", 3 / 7, 4 / 8, 20),
        ("NVIDIA A100-SXM4-40GB MIG 7g.40gb", "a100-40gb", 1, 1, 40),
        ("NVIDIA A100-SXM4-80GB MIG 2g.20gb", "a100-80gb", 2 / 7, 2 / 8, 20),
        ("NVIDIA A100-PCIE-40GB MIG 1g.5gb+me", "a100-pcie-40gb", 1 / 7, 1 / 8, 5),
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "h100-sxm", 3 / 7, 4 / 8, 40),
        ("NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb", "h100-sxm", 1 / 7, 4 / 8, 40),  # a compute instance of a 3g
        ("NVIDIA H100 NVL MIG 1g.12gb", "h100-nvl", 1 / 7, 1 / 8, 12),
        ("NVIDIA A30 MIG 2g.12gb", "a30", 2 / 4, 2 / 4, 12),
    ],
)
def test_mig_instance_is_its_parent_scaled_by_its_slices(reported, parent, compute, bandwidth_slices, memory_gb):
    whole, instance = hardware.accelerator(parent), hardware.accelerator_for_device_name(reported)
    for dtype, flops in whole.peak_flops.items():
        assert instance.peak(dtype) == pytest.approx(flops * compute, rel=1e-12)
    assert instance.memory_bandwidth == pytest.approx(whole.memory_bandwidth * bandwidth_slices, rel=1e-12)
    assert instance.memory_bytes == memory_gb * 10**9
    assert instance.key.startswith(parent + "-mig-") and "Multi-Instance GPU User Guide" in instance.source
    assert instance.board_power_w is None  # the board's power is not split between instances


@pytest.mark.parametrize(
    "reported, reason",
    [
        ("NVIDIA A10 MIG 1g.6gb", "has no MIG mode"),
        ("NVIDIA B200 MIG 1g.23gb", "MIG instance of 'nvidia b200', which is not in the peak table"),
        ("NVIDIA A100-SXM4-40GB MIG 8g.40gb", "8 of .* 7 slices"),
    ],
)
def test_unknown_mig_instances_give_a_one_line_reason(reported, reason):
    with pytest.raises(hardware.UnknownDeviceError, match=reason) as error:
        hardware.accelerator_for_device_name(reported)
    assert "\n" not in str(error.value)


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
    cache_cpu_profile(best_matmul=4.2e10)
    peaks = hardware.device_peaks("cpu", "fp32", measured=device_profile.measured_ceilings("cpu"))
    assert (peaks.accelerator, peaks.flops, peaks.measured_flops) == ("cpu", 4.2e10, 4.2e10)
    assert "measured" in peaks.flops_source and "no datasheet" in peaks.flops_source
    assert peaks.bandwidth == pytest.approx(1.2e10) and peaks.bandwidth_source.startswith("measured")
    with pytest.raises(GptmeterError, match="calibrate"):  # a CPU with neither a measurement nor a hand peak
        hardware.device_peaks("cpu", "fp32")
    assert peaks.measured.matmul_size == 4096  # M of the fastest grid point (index 2 of 1, 64, 4096)


# ----------------------------------------------------------------------------- the view of the calibrated profile


def test_ceilings_are_read_from_the_profile_not_measured_again(cache_dir, monkeypatch):
    profile = cache_cpu_profile()

    def must_not_measure(*args, **kwargs):
        raise AssertionError("calibrated although a cached profile exists")

    monkeypatch.setattr(device_profile, "calibrate", must_not_measure)
    assert device_profile.measured_ceilings("cpu") == device_profile.as_ceilings(profile)
    assert device_profile.cached_ceilings("another device") is None


def test_without_a_profile_the_cpu_is_calibrated_on_the_quick_grid_once(cache_dir, monkeypatch):
    calls = []

    def fake_calibrate(device, dtype, progress=True, quick=False):
        calls.append((device, dtype, quick))
        return cache_cpu_profile()

    monkeypatch.setattr(device_profile, "calibrate", fake_calibrate)
    first = device_profile.measured_ceilings("cpu")
    assert device_profile.measured_ceilings("cpu") == first and calls == [("cpu", "fp32", True)]
    device_profile.measured_ceilings("cpu", refresh=True)  # --measure: the full grid
    assert calls[-1] == ("cpu", "fp32", False)


@pytest.mark.gpu
def test_cuda_ceilings_are_below_the_datasheet():
    peaks = hardware.device_peaks("cuda", "bf16", measured=device_profile.measured_ceilings("cuda", refresh=True))
    assert 0.2 * peaks.flops < peaks.measured_flops <= 1.05 * peaks.flops
    assert 0.2 * peaks.bandwidth < peaks.measured.copy_bandwidth <= 1.05 * peaks.bandwidth


# ----------------------------------------------------------------------------- command line


def test_cli_json_on_cpu(cache_dir, capsys):
    cache_cpu_profile()
    assert main(["hardware", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["table"]["h200"]["peak_flops"]["bf16"] == 989.5e12
    assert report["device"]["accelerator"] == "cpu" and report["device"]["flops"] == 5e10


def test_cli_hand_peaks_and_clean_errors(cache_dir, capsys):
    assert main(["hardware", "--device", "cpu", "--peak-tflops", "1.5", "--peak-bandwidth-gbs", "50"]) == 0
    out = capsys.readouterr().out
    assert "peak fp32: 1.5 TFLOP/s (given by hand)" in out and "50 GB/s (given by hand)" in out
    cache_cpu_profile()
    assert main(["hardware", "--device", "cpu", "--dtype", "bf16"]) == 2
    assert capsys.readouterr().err.startswith("python -m profiling hardware: error: no measured bf16")


def test_the_view_lists_every_dtype_calibrated_on_the_device(cache_dir):
    cache_cpu_profile(best_matmul=5e10)
    half = synthetic_profile()
    half.device, half.dtype = hardware.device_name("cpu"), "fp16"
    half.matmul["flops_per_sec"][0][0][0] = 9e10
    device_profile.save_profile(half, device_profile.cache_path(half.device, "fp16"))
    assert device_profile.cached_ceilings(hardware.device_name("cpu"), "fp32").matmul_flops == {"fp32": 5e10, "fp16": 9e10}


def test_fp8_peaks_are_twice_bf16_where_a_datasheet_prints_one():
    """Hopper and Ada tensor cores run fp8 at twice their bf16 rate (datasheets: dense = sparse / 2); A100, V100
    and older have no fp8 tensor cores, hence no entry."""
    with_fp8 = {key for key, entry in hardware.ACCELERATORS.items() if "fp8" in entry.peak_flops}
    assert {"h100-sxm", "h100-pcie", "h200", "l40s", "l4"} <= with_fp8
    assert not with_fp8 & {"a100-80gb", "a100-40gb", "v100-sxm2-32gb", "t4"}
    for key in with_fp8:
        entry = hardware.accelerator(key)
        assert entry.peak("fp8") == pytest.approx(2 * entry.peak("bf16"), rel=0.025), key
