"""The step meter against workloads of known duration and hand-computed figures."""

import statistics
import time
import types

import pytest
import torch

from profiling.energy import CpuUtilisationEstimate
from profiling.meter import StepMeter, peak_memory, reset_peak_memory


def busy_wait(seconds: float) -> None:
    """A workload of fixed length that, unlike sleep, does not overshoot by a scheduler tick."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


class LinearEnergy:
    """A fake counter for a device drawing a constant `watts`."""

    source = "rapl"

    def __init__(self, watts: float) -> None:
        self.watts, self.started = watts, time.perf_counter()

    def joules(self) -> float:
        return self.watts * (time.perf_counter() - self.started)

    def close(self) -> None:
        pass


def test_tokens_per_sec_of_a_known_workload_and_warmup_exclusion():
    """Steps end on a fixed schedule (absolute deadlines), so a late wake-up on a busy machine shortens the next
    step instead of lengthening the run: 8 measured steps of 1000 tokens span 0.2 s, i.e. 40,000 tokens/s."""
    meter = StepMeter("cpu", warmup_steps=2, window=4)
    records = []
    deadline = time.perf_counter()
    meter.start()
    for duration in [0.06, 0.06] + [0.025] * 8:  # two slow warm-up steps, then 25 ms steps
        deadline += duration
        time.sleep(max(0.0, deadline - time.perf_counter()))
        records += meter.lap(tokens=1000)
    assert [record.step for record in records] == list(range(1, 11))
    assert [record.warmup for record in records] == [True, True] + [False] * 8
    summary = meter.summary()
    assert summary["steps"] == 10 and summary["measured_steps"] == 8
    assert summary["tokens"] == 10_000 and summary["measured_tokens"] == 8000
    assert summary["tokens_per_sec"] == pytest.approx(40_000, rel=0.03)  # warm-up would pull it to ~31,250
    assert summary["window_steps"] == 4
    assert summary["window_tokens_per_sec"] == pytest.approx(40_000, rel=0.05)


def test_lap_times_back_to_back_steps_without_gaps():
    meter = StepMeter("cpu", warmup_steps=0)
    started = time.perf_counter()
    meter.start()
    records = []
    for _ in range(20):
        busy_wait(0.01)
        records += meter.lap(tokens=64)
    wall = time.perf_counter() - started
    assert sum(record.step_time_s for record in records) == pytest.approx(wall, rel=0.02)


def test_figures_match_hand_computation():
    peak, fpt, hw_fpt = 1e12, 6_000_000, 5_000_000
    meter = StepMeter("cpu", flops_per_token=fpt, hardware_flops_per_token=hw_fpt, peak_flops=peak,
                      measured_peak_flops=0.8e12, warmup_steps=1, window=2)
    warm = meter.record(4096, 5.0)  # a compile step: excluded
    assert warm.warmup and warm.window_tokens_per_sec == pytest.approx(4096 / 5.0)
    first = meter.record(4096, 0.5, step=101)
    assert first.step == 101 and not first.warmup
    assert first.tokens_per_sec == pytest.approx(8192.0)
    assert first.mfu == pytest.approx(6e6 * 8192 / 1e12)  # 0.049152
    assert first.hfu == pytest.approx(5e6 * 8192 / 1e12)
    assert first.flops_per_token == fpt and first.bandwidth_utilisation is None
    meter.record(4096, 0.25)
    third = meter.record(2048, 0.25)
    # window of 2: (4096 + 2048) tokens in 0.5 s
    assert third.window_tokens_per_sec == pytest.approx(12_288.0)
    assert third.window_mfu == pytest.approx(6e6 * 12_288 / 1e12)

    summary = meter.summary()
    tokens, seconds = 4096 + 4096 + 2048, 0.5 + 0.25 + 0.25
    assert summary["tokens_per_sec"] == pytest.approx(tokens / seconds)
    assert summary["mfu"] == pytest.approx(fpt * tokens / seconds / peak)
    assert summary["mfu"] == pytest.approx(summary["flops_per_token"] * summary["tokens_per_sec"] / peak)
    assert summary["hfu"] == pytest.approx(hw_fpt * tokens / seconds / peak)
    assert summary["mfu_measured_peak"] == pytest.approx(fpt * tokens / seconds / 0.8e12)
    assert summary["watts"] is None and summary["energy_source"] is None


def test_decode_bandwidth_utilisation_with_per_step_overrides():
    meter = StepMeter("cpu", flops_per_token=100, peak_flops=1e9, peak_bandwidth=2e12, warmup_steps=0)
    one = meter.record(1, 0.001, bytes_read=1.0e9, flops_per_token=300)
    assert one.bandwidth_utilisation == pytest.approx(1e9 / 0.001 / 2e12)  # 0.5
    assert one.mfu == pytest.approx(300 * 1000 / 1e9)
    meter.record(1, 0.003, bytes_read=1.2e9)
    summary = meter.summary()
    assert summary["bandwidth_utilisation"] == pytest.approx(2.2e9 / 0.004 / 2e12)
    assert summary["flops_per_token"] == pytest.approx(200)  # (300 + 100) / 2 tokens


def test_energy_watts_and_joules_per_token():
    meter = StepMeter("cpu", warmup_steps=1, energy=LinearEnergy(100.0), energy_interval_s=0.0)
    records = []
    for _ in range(6):
        meter.start()
        time.sleep(0.01)
        records += meter.stop(tokens=500)
    last = records[-1]
    assert last.energy_source == "rapl"
    assert last.watts == pytest.approx(100.0, rel=0.05)
    assert last.joules_per_token == pytest.approx(last.watts / last.window_tokens_per_sec, rel=1e-12)
    summary = meter.summary()
    assert summary["watts"] == pytest.approx(100.0, rel=0.05)
    assert summary["energy_j"] == pytest.approx(summary["watts"] * summary["measured_time_s"])
    assert summary["joules_per_token"] == pytest.approx(summary["energy_j"] / 2500)


def test_energy_counts_from_the_first_measured_step_not_from_construction():
    counter = types.SimpleNamespace(source="rapl", joules=lambda: 0.0, close=lambda: None)
    meter = StepMeter("cpu", warmup_steps=0, energy=counter)
    time.sleep(0.1)  # idle between construction and the first step: no energy, and it must not dilute the power
    meter.start()
    time.sleep(0.05)
    counter.joules = lambda: 5.0  # 5 J during a 50 ms step: 100 W
    meter.stop(tokens=10)
    assert meter.summary()["watts"] == pytest.approx(100.0, rel=0.2)


def test_estimated_energy_keeps_its_label():
    meter = StepMeter("cpu", warmup_steps=0, energy=CpuUtilisationEstimate(65.0, cores=2))
    meter.start()
    busy_wait(0.02)
    (record,) = meter.stop(tokens=10)
    assert record.energy_source.startswith("estimate: ")
    assert meter.summary()["energy_source"].startswith("estimate: ")


STEP_S = 0.02  # the shortest training step we expect: GPT-2 124M on one H100 takes about 30 ms per 16k tokens


@pytest.mark.parametrize("timed_by_meter", [True, False])
def test_meter_overhead_is_under_one_percent_of_a_step(timed_by_meter):
    """Wall time of each meter call, an energy read included, right after a 20 ms step of work.

    The median is compared, so that one preemption of this process by the OS does not decide the test.
    """
    meter = StepMeter("cpu", flops_per_token=1000, peak_flops=1e12, warmup_steps=2,
                      energy=CpuUtilisationEstimate(65.0), energy_interval_s=0.0)
    call_times = []
    if timed_by_meter:
        meter.start()
    for _ in range(25):
        busy_wait(STEP_S)
        before = time.perf_counter()
        if timed_by_meter:
            meter.lap(tokens=64)
        else:
            meter.record(64, STEP_S)
        call_times.append(time.perf_counter() - before)
    assert statistics.median(call_times) < 0.01 * STEP_S


def test_misuse_is_reported():
    meter = StepMeter("cpu")
    with pytest.raises(RuntimeError, match="without start"):
        meter.stop(tokens=1)
    with pytest.raises(ValueError, match="step time must be positive"):
        meter.record(1, 0.0)
    with pytest.raises(ValueError, match="window"):
        StepMeter("cpu", window=0)


def test_peak_memory_on_cpu_is_process_rss():
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched
    bytes_used, kind = peak_memory(torch.device("cpu"))
    assert kind == "process peak RSS"
    assert bytes_used >= block.numel()


def test_peak_memory_restarts_at_a_reset():
    cpu = torch.device("cpu")
    block = torch.ones(256 * 2**20, dtype=torch.uint8)  # a ceiling benchmark's buffers, say
    del block
    before, _ = peak_memory(cpu)
    reset_peak_memory(cpu)
    after, _ = peak_memory(cpu)
    assert after <= before - 200 * 2**20  # the freed 256 MiB no longer counts


def test_peak_memory_on_cuda_is_the_metered_devices(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: calls.append(("read", device)) or 7)
    device = torch.device("cuda", 1)
    reset_peak_memory(device)
    assert peak_memory(device) == (7, "cuda max_memory_allocated")
    assert calls == [("reset", device), ("read", device)]


@pytest.mark.gpu
def test_cuda_events_resolve_one_step_late_and_match_wall_clock():
    meter = StepMeter("cuda", warmup_steps=0)
    torch.cuda.synchronize()
    started = time.perf_counter()
    meter.start()
    returned = []
    for _ in range(10):
        torch.cuda._sleep(20_000_000)  # a few ms of device time, queued without blocking the host
        returned.append(meter.lap(tokens=100))
    records = [record for batch in returned for record in batch] + meter.flush()
    torch.cuda.synchronize()
    wall = time.perf_counter() - started
    assert returned[0] == [] and [len(batch) for batch in returned[1:]] == [1] * 9
    assert [record.step for record in records] == list(range(1, 11))
    assert sum(record.step_time_s for record in records) == pytest.approx(wall, rel=0.05)
