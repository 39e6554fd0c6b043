"""The step meter: turns (tokens, seconds) per step into throughput, utilisation and energy figures.

The meter never counts FLOPs or bytes itself: callers pass the model FLOPs per token (PaLM convention,
see flops.py), optionally the hardware FLOPs the kernels really execute, and for decoding the bytes a
step must read. From those and the measured step time it derives

    tokens_per_sec = tokens / step_time_s
    mfu            = flops_per_token × tokens_per_sec / peak_flops
    hfu            = hardware_flops_per_token × tokens_per_sec / peak_flops
    bandwidth_utilisation = bytes_read / step_time_s / peak_bandwidth

Timing. Steps timed by the caller go through `record(tokens, step_time_s)` (the trainer measures its
step on the host, synchronised once per step by `loss.item()`). Otherwise `start()` / `stop()` / `lap()`
time the step: with `time.perf_counter` on CPU, and on CUDA with a pair of `torch.cuda.Event`s recorded
on the stream at the step edges. Events are read lazily — a step's record comes back when the *next*
step stops (or at `flush()`), by which time its end event has completed — so the host never waits for
the device just to be measured.

Warm-up steps (compilation, allocator growth, cache fills) are recorded but left out of the rolling
window and of the whole-run figures in `summary()`.

Energy comes from an `energy.EnergyReader`, read on the host at step edges (at most once per
`energy_interval_s`). `watts` is the mean power over the last `window` readings and
`joules_per_token = watts / window_tokens_per_sec`. Host-side readings line up with the device's work
only in the steady state; to meter a few long phases (a prompt's prefill, a whole decode loop) on CUDA,
pass `synchronize_edges=True`: one device synchronisation per phase edge, negligible at that scale.
"""

from __future__ import annotations

import collections
import dataclasses
import operator
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from gpt.host_memory import release_freed_memory
from profiling.energy import EnergyReader

WARMUP_STEPS = 3  # steps a meter leaves out of its figures by default (train.py's): allocation, caches, lazy init


@dataclass(slots=True)
class StepMetrics:
    """What one step measured; `to_dict()` is what train.py writes into its metrics.jsonl step line."""

    step: int
    tokens: int
    step_time_s: float
    tokens_per_sec: float
    flops_per_token: float | None  # model FLOPs per token used for mfu
    mfu: float | None  # None without a peak FLOP/s
    hfu: float | None  # None without hardware FLOPs or a peak
    bandwidth_utilisation: float | None  # None without bytes_read or a peak bandwidth
    window_tokens_per_sec: float  # over the last `window` measured steps (this step alone during warm-up)
    window_mfu: float | None
    watts: float | None  # mean power over the last `window` energy readings
    joules_per_token: float | None
    energy_source: str | None  # see energy.py; "estimate: ..." is never a measurement
    warmup: bool  # excluded from the window and the whole-run figures

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Totals(NamedTuple):
    """Amounts of one or more steps, summed for windows and the whole run."""

    tokens: int
    seconds: float
    model_flops: float
    hardware_flops: float
    bytes_read: float

    def plus(self, other: _Totals) -> _Totals:
        return _Totals(*map(operator.add, self, other))

    def minus(self, other: _Totals) -> _Totals:
        return _Totals(*map(operator.sub, self, other))


_NOTHING = _Totals(0, 0.0, 0.0, 0.0, 0.0)


@dataclass(slots=True)
class _StepInput:
    """What a step did, as the caller states it; None falls back to the meter's default."""

    tokens: int
    flops_per_token: float | None
    hardware_flops_per_token: float | None
    bytes_read: float | None


@dataclass(slots=True)
class _PendingStep:
    count: int  # 1-based position in the meter's life
    start: Any  # torch.cuda.Event, or perf_counter seconds
    end: Any
    done: _StepInput


def _first_given(value, default):
    return value if value is not None else default


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _utilisation(amount: float | None, rate: float, peak: float | None) -> float | None:
    """amount × rate / peak (e.g. FLOPs per token × tokens/s / peak FLOP/s); None if the amount or peak is unknown."""
    if amount is None or not peak:
        return None
    return amount * rate / peak


_PROC_STATUS, _PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak memory in bytes since the last `reset_peak_memory` (else since the process began), and what it is:
    CUDA's caching-allocator peak, or the whole process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    if _PROC_STATUS.exists():
        match = re.search(r"^VmHWM:\s+(\d+) kB", _PROC_STATUS.read_text(), re.M)
        if match:
            return int(match.group(1)) * 1024, "process peak RSS"
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (max_rss if sys.platform == "darwin" else max_rss * 1024), "process max RSS since start"  # Linux: KiB


def reset_peak_memory(device: torch.device) -> None:
    """Restart the peak-memory count from what is in use now, so that a peak read later belongs to the run.

    The profilers call it after measuring ceilings (gigabytes of benchmark buffers). On CPU it first hands back
    the freed memory the process keeps (gpt.host_memory: the command lines keep it, and 512 MiB freed in
    16 MiB blocks then stayed resident and in the peak; 2-core VM, 2026-12-03), then resets Linux's peak RSS (writing 5 to
    /proc/self/clear_refs); elsewhere the CPU peak stays since process start.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    release_freed_memory()
    if _PROC_CLEAR_REFS.exists():
        try:
            _PROC_CLEAR_REFS.write_text("5")
        except OSError:  # not permitted here: the peak stays the process's
            pass


class StepMeter:
    """Meters a sequence of steps of one kind (training steps, prefill, or decode steps)."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        flops_per_token: float | None = None,
        hardware_flops_per_token: float | None = None,
        peak_flops: float | None = None,
        measured_peak_flops: float | None = None,
        bytes_read_per_step: float | None = None,
        peak_bandwidth: float | None = None,
        warmup_steps: int = WARMUP_STEPS,
        window: int = 20,
        energy: EnergyReader | None = None,
        energy_interval_s: float = 0.1,
        synchronize_edges: bool = False,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must not be negative, got {warmup_steps}")
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.device = torch.device(device)
        self.flops_per_token, self.hardware_flops_per_token = flops_per_token, hardware_flops_per_token
        self.peak_flops, self.measured_peak_flops = peak_flops, measured_peak_flops
        self.bytes_read_per_step, self.peak_bandwidth = bytes_read_per_step, peak_bandwidth
        self.warmup_steps, self.window = warmup_steps, window
        self.energy, self.energy_interval_s = energy, energy_interval_s
        self._energy_source = energy.source if energy is not None else None

        self._uses_events = self.device.type == "cuda"
        self._synchronize_edges = synchronize_edges and self._uses_events
        self._steps = 0  # steps handed in, warm-up included
        self._tokens = 0
        self._recent: collections.deque[_Totals] = collections.deque(maxlen=window)
        self._window_totals = _NOTHING
        self._measured = _NOTHING
        self._open_start: Any = None
        self._last_end: Any = None
        self._pending: list[_PendingStep] = []
        self._readings: collections.deque[tuple[float, float]] = collections.deque(maxlen=window + 1)
        self._baseline: tuple[float, float] | None = None  # energy reading when the measured steps began
        self._read_energy(force=True)
        if warmup_steps == 0:
            self._baseline = self._latest_reading()

    # ----------------------------------------------------------------- energy

    def _latest_reading(self) -> tuple[float, float] | None:
        return self._readings[-1] if self._readings else None

    def _read_energy(self, force: bool = False) -> None:
        if self.energy is None:
            return
        now = time.perf_counter()
        latest = self._latest_reading()
        if force or latest is None or now - latest[0] >= self.energy_interval_s:
            self._readings.append((now, self.energy.joules()))

    def _window_watts(self) -> float | None:
        if len(self._readings) < 2:
            return None
        (t0, j0), (t1, j1) = self._readings[0], self._readings[-1]
        return _ratio(j1 - j0, t1 - t0)

    # ----------------------------------------------------------------- timing

    def _now(self) -> Any:
        if self._synchronize_edges:
            torch.cuda.synchronize(self.device)
        if self._uses_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))  # the metered device's stream, not the current one
            return event
        return time.perf_counter()

    def _elapsed(self, pending: _PendingStep) -> float:
        if self._uses_events:
            pending.end.synchronize()  # waits for this step only; later steps stay queued
            return pending.start.elapsed_time(pending.end) / 1000.0  # milliseconds
        return pending.end - pending.start

    def start(self) -> None:
        """Mark the beginning of a step timed by the meter."""
        self._open_start = self._now()
        if self._steps == self.warmup_steps:  # the first measured step begins: energy counts from here
            self._read_energy(force=True)
            self._baseline = self._latest_reading()

    def stop(
        self,
        tokens: int,
        *,
        flops_per_token: float | None = None,
        hardware_flops_per_token: float | None = None,
        bytes_read: float | None = None,
    ) -> list[StepMetrics]:
        """Mark the end of the step begun by `start()`; return the records of steps whose timing is now known.

        On CPU that is this step. On CUDA it is the steps before this one: this step's end event is read
        when the next step stops, or at `flush()`. Per-step FLOPs and bytes override the meter's defaults
        (decode steps read a growing KV cache).
        """
        if self._open_start is None:
            raise RuntimeError("StepMeter.stop() called without start()")
        end = self._now()
        count = self._step_edge()
        done = _StepInput(tokens, flops_per_token, hardware_flops_per_token, bytes_read)
        self._pending.append(_PendingStep(count, self._open_start, end, done))
        self._open_start = None
        self._last_end = end
        return self._resolve(keep_newest=self._uses_events)

    def lap(self, tokens: int, **per_step: Any) -> list[StepMetrics]:
        """End the current step and begin the next at the same instant (back-to-back steps, e.g. decoding)."""
        records = self.stop(tokens, **per_step)
        self._open_start = self._last_end
        return records

    def flush(self) -> list[StepMetrics]:
        """Wait for the device and return the records of every step not returned yet."""
        return self._resolve(keep_newest=False)

    def _resolve(self, keep_newest: bool) -> list[StepMetrics]:
        ready = self._pending[:-1] if keep_newest else self._pending
        self._pending = self._pending[len(ready) :]
        return [
            self._account(p.count, p.count <= self.warmup_steps, p.done, self._elapsed(p)) for p in ready
        ]

    def record(
        self,
        tokens: int,
        step_time_s: float,
        *,
        step: int | None = None,
        flops_per_token: float | None = None,
        hardware_flops_per_token: float | None = None,
        bytes_read: float | None = None,
    ) -> StepMetrics:
        """The record of a step the caller timed; `step` (the caller's numbering) defaults to the meter's count."""
        if not step_time_s > 0:
            raise ValueError(f"step time must be positive, got {step_time_s} s")
        count = self._step_edge()
        done = _StepInput(tokens, flops_per_token, hardware_flops_per_token, bytes_read)
        return self._account(count if step is None else step, count <= self.warmup_steps, done, step_time_s)

    def _step_edge(self) -> int:
        """Count a step that just ended and read the energy counter; returns the step's 1-based count."""
        self._steps += 1
        ends_warmup = self._steps == self.warmup_steps
        self._read_energy(force=ends_warmup)
        if ends_warmup:
            self._baseline = self._latest_reading()
        return self._steps

    # ----------------------------------------------------------------- figures

    def _account(self, step: int, warmup: bool, done: _StepInput, seconds: float) -> StepMetrics:
        flops_per_token = _first_given(done.flops_per_token, self.flops_per_token)
        hardware_flops_per_token = _first_given(done.hardware_flops_per_token, self.hardware_flops_per_token)
        bytes_read = _first_given(done.bytes_read, self.bytes_read_per_step)
        tokens = done.tokens
        self._tokens += tokens
        if not warmup:
            work = _Totals(tokens, seconds, (flops_per_token or 0) * tokens,
                           (hardware_flops_per_token or 0) * tokens, bytes_read or 0)
            if len(self._recent) == self.window:
                self._window_totals = self._window_totals.minus(self._recent[0])
            self._recent.append(work)
            self._window_totals = self._window_totals.plus(work)
            self._measured = self._measured.plus(work)
        window_tokens, window_seconds, window_flops = (
            self._window_totals[:3] if self._recent else (tokens, seconds, (flops_per_token or 0) * tokens)
        )
        tokens_per_sec, window_tokens_per_sec = tokens / seconds, window_tokens / window_seconds
        watts = self._window_watts()
        peak_flops, peak_bandwidth = self.peak_flops, self.peak_bandwidth
        return StepMetrics(
            step=step,
            tokens=tokens,
            step_time_s=seconds,
            tokens_per_sec=tokens_per_sec,
            flops_per_token=flops_per_token,
            mfu=_utilisation(flops_per_token, tokens_per_sec, peak_flops),
            hfu=_utilisation(hardware_flops_per_token, tokens_per_sec, peak_flops),
            bandwidth_utilisation=_utilisation(bytes_read, 1 / seconds, peak_bandwidth),
            window_tokens_per_sec=window_tokens_per_sec,
            window_mfu=_utilisation(
                window_flops if flops_per_token is not None else None, 1 / window_seconds, peak_flops
            ),
            watts=watts,
            joules_per_token=watts / window_tokens_per_sec if watts is not None else None,
            energy_source=self._energy_source,
            warmup=warmup,
        )

    def summary(self) -> dict[str, Any]:
        """Whole-run figures over the measured (post-warm-up) steps: the run-end line of metrics.jsonl.

        Energy is the mean power from the end of warm-up until now times the measured step time, so time
        spent between steps (evaluation, checkpoints) raises neither energy_j nor joules_per_token.
        """
        if self._pending:
            raise RuntimeError("StepMeter.summary() with unresolved steps; call flush() first")
        measured = self._measured
        seconds = measured.seconds
        achieved_flops = _ratio(measured.model_flops or None, seconds)
        achieved_hardware_flops = _ratio(measured.hardware_flops or None, seconds)
        bytes_per_sec = _ratio(measured.bytes_read or None, seconds)
        window = self._window_totals

        self._read_energy(force=True)
        watts = None
        if self._baseline is not None:
            (t0, j0), (t1, j1) = self._baseline, self._readings[-1]
            watts = _ratio(j1 - j0, t1 - t0)
        energy_j = watts * measured.seconds if watts is not None else None
        memory_bytes, memory_kind = peak_memory(self.device)
        return {
            "steps": self._steps,
            "warmup_steps": min(self.warmup_steps, self._steps),
            "measured_steps": max(0, self._steps - self.warmup_steps),
            "tokens": self._tokens,
            "measured_tokens": measured.tokens,
            "measured_time_s": measured.seconds,
            "tokens_per_sec": _ratio(measured.tokens, seconds),
            "window_tokens_per_sec": _ratio(window.tokens, window.seconds),
            "window_steps": len(self._recent),
            "flops_per_token": _ratio(measured.model_flops or None, measured.tokens),
            "achieved_flops_per_sec": achieved_flops,
            "achieved_hardware_flops_per_sec": achieved_hardware_flops,
            "mfu": _ratio(achieved_flops, self.peak_flops),
            "hfu": _ratio(achieved_hardware_flops, self.peak_flops),
            "peak_flops": self.peak_flops,
            "measured_peak_flops": self.measured_peak_flops,
            "mfu_measured_peak": _ratio(achieved_flops, self.measured_peak_flops),
            "bytes_read_per_sec": bytes_per_sec,
            "peak_bandwidth": self.peak_bandwidth,
            "bandwidth_utilisation": _ratio(bytes_per_sec, self.peak_bandwidth),
            "watts": watts,
            "energy_j": energy_j,
            "joules_per_token": _ratio(energy_j, measured.tokens),
            "energy_source": self._energy_source,
            "peak_memory_bytes": memory_bytes,
            "peak_memory_kind": memory_kind,
        }
