"""Energy readers: one cumulative joule count per device, measured where the hardware allows, else estimated.

Every reader answers `joules()` — energy since it was opened — and names where the number comes from
in `source`. The meter reads it at step edges on the host; none of the readers touches the GPU stream.

- "nvml-energy-counter": NVML's total-energy counter (Volta and newer), millijoules since driver load.
- "nvml-power-sampling": older GPUs without the counter; board power sampled by a background thread
  and integrated over time.
- "rapl": Linux RAPL package counters (/sys/class/powercap), the whole CPU socket(s), every process on
  them included; readable only where the kernel allows it (often root only).
- "estimate: ...": board power × this process's CPU utilisation, with its inputs in the label. It is
  never a measurement, and `is_estimate` lets callers say so.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:  # torch loads inside the functions that measure, so that --help answers at once
    import torch

NVML_ENERGY_COUNTER = "nvml-energy-counter"
NVML_POWER_SAMPLING = "nvml-power-sampling"
RAPL = "rapl"
ESTIMATE_PREFIX = "estimate: "

RAPL_ROOT = Path("/sys/class/powercap")
_RAPL_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")  # packages only: sub-zones (core, uncore, dram) would double count


class EnergyReader(Protocol):
    source: str

    def joules(self) -> float:
        """Energy consumed since the reader was opened, in joules; never decreases."""
        ...

    def close(self) -> None: ...


def is_estimate(source: str | None) -> bool:
    return source is not None and source.startswith(ESTIMATE_PREFIX)


class NvmlEnergyCounter:
    """NVML's cumulative energy counter: one cheap driver query per read, no GPU synchronisation."""

    source = NVML_ENERGY_COUNTER

    def __init__(self, nvml, handle) -> None:
        self._nvml, self._handle = nvml, handle
        self._start_mj = self._read_mj()

    def _read_mj(self) -> int:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def joules(self) -> float:
        return (self._read_mj() - self._start_mj) / 1000.0

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class PowerSampler:
    """Integrates a power reading (watts) taken every `interval_s` by a daemon thread (trapezoid rule)."""

    source = NVML_POWER_SAMPLING

    def __init__(
        self,
        read_watts: Callable[[], float],
        interval_s: float = 0.05,
        on_close: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._read_watts, self._interval_s, self._on_close, self._clock = read_watts, interval_s, on_close, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._joules = 0.0
        self._last = (clock(), read_watts())
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        now, watts = self._clock(), self._read_watts()
        with self._lock:
            then, previous_watts = self._last
            self._joules += 0.5 * (watts + previous_watts) * (now - then)
            self._last = (now, watts)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def joules(self) -> float:
        with self._lock:
            return self._joules

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._on_close is not None:
            self._on_close()


class RaplCounter:
    """Sum of the RAPL package counters, in joules, unwrapping each counter at its max_energy_range_uj.

    A counter wraps after max_energy_range_uj (about 262 kJ, i.e. tens of minutes at full load), so it must
    be read more often than that; the meter reads it every step.
    """

    source = RAPL

    def __init__(self, zones: list[Path]) -> None:
        self._zones = zones
        self._ranges_uj = [int((zone / "max_energy_range_uj").read_text()) for zone in zones]
        self._last_uj = [self._read_uj(zone) for zone in zones]
        self._total_uj = 0

    @staticmethod
    def _read_uj(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    @classmethod
    def find(cls, root: Path = RAPL_ROOT) -> RaplCounter | None:
        """The package zones under `root`, or None when there are none or the kernel does not let us read them."""
        zones = sorted(path for path in root.glob("intel-rapl:*") if _RAPL_PACKAGE_ZONE.fullmatch(path.name))
        if not zones:
            return None
        try:
            return cls(zones)
        except (OSError, ValueError):  # PermissionError for non-root on most recent kernels
            return None

    def joules(self) -> float:
        for i, zone in enumerate(self._zones):
            now = self._read_uj(zone)
            delta = now - self._last_uj[i]
            if delta < 0:  # the counter wrapped once since the last read
                delta += self._ranges_uj[i]
            self._total_uj += delta
            self._last_uj[i] = now
        return self._total_uj / 1e6

    def close(self) -> None:
        pass


class CpuUtilisationEstimate:
    """Estimate: board power × (CPU seconds this process used / wall seconds / cores), integrated over time.

    That equals board_watts × CPU-seconds / cores, so one `time.process_time()` call per read suffices.
    Idle power, other processes and memory are ignored: an estimate, labelled with its inputs.
    """

    def __init__(
        self, board_watts: float, cores: int | None = None, cpu_seconds: Callable[[], float] = time.process_time
    ) -> None:
        if not board_watts > 0:
            raise ValueError(f"board power must be positive, got {board_watts} W")
        self._board_watts, self._cores, self._cpu_seconds = board_watts, cores or os.cpu_count() or 1, cpu_seconds
        self._start = cpu_seconds()
        self.source = (
            f"{ESTIMATE_PREFIX}{board_watts:g} W board power x CPU utilisation of this process on {self._cores} cores"
        )

    def joules(self) -> float:
        return self._board_watts * (self._cpu_seconds() - self._start) / self._cores

    def close(self) -> None:
        pass


def _nvml_handle(nvml, device_index: int):
    """The NVML handle of torch's CUDA device `device_index`, matched by UUID (indices differ under
    CUDA_VISIBLE_DEVICES); by index when torch cannot tell the UUID."""
    import torch

    try:
        uuid = torch.cuda.get_device_properties(device_index).uuid
        return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    except (AttributeError, RuntimeError, AssertionError, nvml.NVMLError):
        return nvml.nvmlDeviceGetHandleByIndex(device_index)


def open_nvml_reader(device_index: int, sample_interval_s: float = 0.05) -> EnergyReader | None:
    """NVML's energy counter for a CUDA device, else its sampled power; None when NVML is missing or fails."""
    try:
        import pynvml as nvml
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None
    try:
        handle = _nvml_handle(nvml, device_index)
        try:
            return NvmlEnergyCounter(nvml, handle)
        except nvml.NVMLError:  # no energy counter on this GPU (before Volta) or driver
            pass
        return PowerSampler(
            lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # milliwatts
            interval_s=sample_interval_s,
            on_close=nvml.nvmlShutdown,
        )
    except nvml.NVMLError:
        nvml.nvmlShutdown()
        return None


def open_energy_reader(
    device: torch.device | str,
    board_watts: float | None = None,
    rapl_root: Path = RAPL_ROOT,
) -> EnergyReader | None:
    """The best energy reader for `device`, or None when nothing can be measured or estimated.

    CUDA: NVML only (a GPU's power cannot be guessed from CPU utilisation).
    CPU: RAPL if readable, else the labelled estimate when `board_watts` (e.g. the CPU's TDP) is given.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return open_nvml_reader(index)
    rapl = RaplCounter.find(rapl_root)
    if rapl is not None:
        return rapl
    return CpuUtilisationEstimate(board_watts) if board_watts is not None else None
