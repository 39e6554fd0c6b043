"""Energy readers: RAPL on a fake sysfs tree (with wraparound), the labelled estimate, NVML present/failing/absent."""

import sys
import time
import types
from pathlib import Path

import pytest

from profiling.energy import (
    NVML_ENERGY_COUNTER,
    NVML_POWER_SAMPLING,
    RAPL,
    CpuUtilisationEstimate,
    NvmlEnergyCounter,
    PowerSampler,
    RaplCounter,
    is_estimate,
    open_energy_reader,
    open_nvml_reader,
)

RANGE_UJ = 262_143_328_850  # a real max_energy_range_uj


def make_zone(root: Path, name: str, energy_uj: int, range_uj: int = RANGE_UJ) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return zone


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_sums_packages_ignores_subzones_and_unwraps(tmp_path):
    package0 = make_zone(tmp_path, "intel-rapl:0", 1_000_000)
    package1 = make_zone(tmp_path, "intel-rapl:1", 5_000_000)
    core = make_zone(tmp_path, "intel-rapl:0:0", 700_000)  # part of package 0: must not be added again
    counter = RaplCounter.find(tmp_path)
    assert counter is not None and counter.source == RAPL
    assert counter.joules() == 0.0

    set_energy(package0, 3_500_000)  # +2.5 J
    set_energy(package1, 6_000_000)  # +1.0 J
    set_energy(core, 99_000_000)
    assert counter.joules() == pytest.approx(3.5, abs=1e-9)

    set_energy(package0, 500_000)  # wrapped: +(RANGE - 3.5 J) + 0.5 J
    assert counter.joules() == pytest.approx(3.5 + (RANGE_UJ - 3_500_000 + 500_000) / 1e6, abs=1e-6)


def test_rapl_absent_or_unreadable_gives_none(tmp_path, monkeypatch):
    assert RaplCounter.find(tmp_path) is None
    make_zone(tmp_path, "intel-rapl:0", 1)

    def denied(zone):
        raise PermissionError(13, "Permission denied", str(zone / "energy_uj"))

    monkeypatch.setattr(RaplCounter, "_read_uj", staticmethod(denied))
    assert RaplCounter.find(tmp_path) is None


def test_estimate_is_labelled_with_inputs_and_integrates_cpu_time():
    cpu_seconds = iter([10.0, 13.0])
    estimate = CpuUtilisationEstimate(65.0, cores=2, cpu_seconds=lambda: next(cpu_seconds))
    assert estimate.joules() == pytest.approx(65.0 * 3.0 / 2)  # 1.5 busy cores-worth of 2 for 3 CPU-s
    assert is_estimate(estimate.source) and "65 W" in estimate.source and "2 cores" in estimate.source
    assert not any(is_estimate(source) for source in (RAPL, NVML_ENERGY_COUNTER, NVML_POWER_SAMPLING, None))
    with pytest.raises(ValueError, match="board power"):
        CpuUtilisationEstimate(0.0)


def test_cpu_reader_prefers_rapl_then_estimate_then_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert open_energy_reader("cpu", board_watts=None, rapl_root=empty) is None
    assert is_estimate(open_energy_reader("cpu", board_watts=95.0, rapl_root=empty).source)
    make_zone(tmp_path / "rapl", "intel-rapl:0", 1)
    assert open_energy_reader("cpu", board_watts=95.0, rapl_root=tmp_path / "rapl").source == RAPL


class FakeNvmlError(Exception):
    pass


def fake_nvml(*, init_fails=False, has_counter=True, energy_mj=(1_000, 4_500)):
    readings = iter(energy_mj)
    calls = []

    def counter(handle):
        if not has_counter:
            raise FakeNvmlError("Not Supported")
        return next(readings)

    def init():
        if init_fails:
            raise FakeNvmlError("Driver Not Loaded")

    return types.SimpleNamespace(
        NVMLError=FakeNvmlError,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByUUID=lambda uuid: "handle",
        nvmlDeviceGetHandleByIndex=lambda index: "handle",
        nvmlDeviceGetTotalEnergyConsumption=counter,
        nvmlDeviceGetPowerUsage=lambda handle: 200_000,  # milliwatts
        calls=calls,
    )


def test_nvml_missing_or_failing_degrades_to_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert open_nvml_reader(0) is None
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_fails=True))
    assert open_nvml_reader(0) is None


def test_nvml_energy_counter_reads_millijoules(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    reader = open_nvml_reader(0)
    assert isinstance(reader, NvmlEnergyCounter) and reader.source == NVML_ENERGY_COUNTER
    assert reader.joules() == pytest.approx(3.5)  # (4500 - 1000) mJ
    reader.close()
    assert sys.modules["pynvml"].calls == ["shutdown"]


def test_nvml_without_counter_falls_back_to_power_sampling(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(has_counter=False))
    reader = open_nvml_reader(0, sample_interval_s=0.01)
    try:
        assert isinstance(reader, PowerSampler) and reader.source == NVML_POWER_SAMPLING
    finally:
        reader.close()


def test_power_sampler_integrates_constant_power():
    started = time.perf_counter()
    sampler = PowerSampler(lambda: 200.0, interval_s=0.01)
    time.sleep(0.3)
    sampler.close()
    elapsed = time.perf_counter() - started
    # It integrates up to its last sample, at most one interval (plus scheduling) before close.
    assert 200.0 * (elapsed - 0.05) <= sampler.joules() <= 200.0 * elapsed
