"""Accelerator peaks: one datasheet table, device detection, and measured ceilings.

Datasheet peaks are *dense* FLOP/s (NVIDIA prints tensor-core figures "with sparsity",
twice the dense rate, and marks them with an asterisk: we halve those). "fp32" is the
plain CUDA-core rate; "tf32" the tensor-core rate PyTorch uses for float32 matmuls when
`torch.backends.cuda.matmul.allow_tf32` is on. Bandwidths and memory sizes are decimal
(1 GB = 1e9 bytes), as datasheets state them.

Measured ceilings are what this machine actually reaches: a view of its calibrated device profile
(profiling/device_profile.py, `python -m profiling calibrate`): the best matmul of its grid and its
copy bandwidth (bytes read + bytes written). A CPU has no datasheet entry here: its peak is the
measured matmul ceiling, and is labelled as measured.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads inside the functions that measure, so that --help answers at once
    import torch

from gpt.errors import GptmeterError
from profiling.flops import dtype_name

TABLE_DTYPES = ("bf16", "fp16", "tf32", "fp32")


@dataclass(frozen=True)
class Accelerator:
    key: str  # short name for lookups, e.g. "h100-sxm"
    name: str
    peak_flops: dict[str, float]  # dense FLOP/s per dtype in TABLE_DTYPES; a missing dtype is unsupported
    memory_bandwidth: float | None  # bytes/s
    memory_bytes: int | None
    board_power_w: float | None  # maximum board power (TDP/TGP)
    source: str  # datasheet, URL, date
    device_names: tuple[str, ...] = field(default=())  # as torch.cuda.get_device_name reports them

    def peak(self, dtype: object = "bf16") -> float:
        name = dtype_name(dtype)
        if name not in self.peak_flops:
            have = ", ".join(self.peak_flops) or "none"
            raise UnknownDeviceError(
                f"no datasheet {name} peak for {self.name} (table has: {have}); "
                "choose another dtype or pass the peak by hand (--peak-tflops)"
            )
        return self.peak_flops[name]


def _dense_tflops(**per_dtype: float) -> dict[str, float]:
    return {dtype: tflops * 1e12 for dtype, tflops in per_dtype.items()}


_H100_SXM_COMPUTE = _dense_tflops(bf16=989.5, fp16=989.5, tf32=494.5, fp32=67)  # H200 SXM has the same
_A100_COMPUTE = _dense_tflops(bf16=312, fp16=312, tf32=156, fp32=19.5)  # all A100 variants
_V100_SXM2_COMPUTE = _dense_tflops(fp16=125, fp32=15.7)  # Volta: no bf16, no tf32
_H100_SOURCE = "NVIDIA H100 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h100/ (2023)"
_H200_SOURCE = "NVIDIA H200 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h200/ (Nov 2023)"
_A100_SOURCE = (
    "NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), "
    "https://www.nvidia.com/en-us/data-center/a100/ (2021)"
)
_V100_SOURCE = (
    "NVIDIA Tesla V100 GPU datasheet (volta-v100-datasheet-update-us-1165301-r5.pdf), "
    "https://www.nvidia.com/en-us/data-center/v100/ (Jan 2020)"
)
GB = 10**9

_TABLE = (
    Accelerator("h100-sxm", "NVIDIA H100 SXM5 80GB", _H100_SXM_COMPUTE, 3.35e12, 80 * GB, 700, _H100_SOURCE,
                ("NVIDIA H100 80GB HBM3",)),
    Accelerator("h100-pcie", "NVIDIA H100 PCIe 80GB", _dense_tflops(bf16=756, fp16=756, tf32=378, fp32=51),
                2.0e12, 80 * GB, 350, _H100_SOURCE, ("NVIDIA H100 PCIe",)),
    Accelerator("h200", "NVIDIA H200 SXM 141GB", _H100_SXM_COMPUTE, 4.8e12, 141 * GB, 700, _H200_SOURCE,
                ("NVIDIA H200",)),
    Accelerator("h200-nvl", "NVIDIA H200 NVL 141GB", _dense_tflops(bf16=835.5, fp16=835.5, tf32=417.5, fp32=60),
                4.8e12, 141 * GB, 600, _H200_SOURCE, ("NVIDIA H200 NVL",)),
    Accelerator("a100-80gb", "NVIDIA A100 SXM4 80GB", _A100_COMPUTE, 2.039e12, 80 * GB, 400, _A100_SOURCE,
                ("NVIDIA A100-SXM4-80GB",)),
    Accelerator("a100-40gb", "NVIDIA A100 SXM4 40GB", _A100_COMPUTE, 1.555e12, 40 * GB, 400, _A100_SOURCE,
                ("NVIDIA A100-SXM4-40GB",)),
    Accelerator("a100-pcie-80gb", "NVIDIA A100 PCIe 80GB", _A100_COMPUTE, 1.935e12, 80 * GB, 300, _A100_SOURCE,
                ("NVIDIA A100 80GB PCIe",)),
    Accelerator("a100-pcie-40gb", "NVIDIA A100 PCIe 40GB", _A100_COMPUTE, 1.555e12, 40 * GB, 250, _A100_SOURCE,
                ("NVIDIA A100-PCIE-40GB",)),
    Accelerator("l40s", "NVIDIA L40S", _dense_tflops(bf16=362.05, fp16=362.05, tf32=183, fp32=91.6), 864e9,
                48 * GB, 350, "NVIDIA L40S GPU datasheet, https://www.nvidia.com/en-us/data-center/l40s/ (2023)",
                ("NVIDIA L40S",)),
    Accelerator("l4", "NVIDIA L4", _dense_tflops(bf16=121, fp16=121, tf32=60, fp32=30.3), 300e9, 24 * GB, 72,
                "NVIDIA L4 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/l4/ (2023)",
                ("NVIDIA L4",)),
    Accelerator("a10g", "NVIDIA A10G (AWS)", _dense_tflops(bf16=70, fp16=70, tf32=35, fp32=31.52), 600e9, 24 * GB,
                300, "no NVIDIA datasheet exists for this AWS-only part; figures as tabulated in Baseten, "
                "'NVIDIA A10 vs A10G for ML model inference', "
                "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/ (2023)",
                ("NVIDIA A10G",)),
    Accelerator("rtx-4090", "NVIDIA GeForce RTX 4090", _dense_tflops(bf16=165.2, fp16=165.2, tf32=82.6, fp32=82.6),
                1008e9, 24 * GB, 450, "NVIDIA Ada Lovelace GPU Architecture whitepaper v2.1 (FP32-accumulate "
                "tensor rates), "
                "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf (2023)",
                ("NVIDIA GeForce RTX 4090",)),
    Accelerator("v100-sxm2-32gb", "NVIDIA V100 SXM2 32GB", _V100_SXM2_COMPUTE, 900e9, 32 * GB, 300, _V100_SOURCE,
                ("Tesla V100-SXM2-32GB",)),
    Accelerator("v100-sxm2-16gb", "NVIDIA V100 SXM2 16GB", _V100_SXM2_COMPUTE, 900e9, 16 * GB, 300, _V100_SOURCE,
                ("Tesla V100-SXM2-16GB",)),
    Accelerator("cpu", "CPU (any)", {}, None, None, None,
                "no datasheet peak for an arbitrary CPU: its peak is the measured fp32 matmul ceiling "
                "(python -m profiling hardware --measure)"),
)
ACCELERATORS: dict[str, Accelerator] = {accelerator.key: accelerator for accelerator in _TABLE}


class UnknownDeviceError(GptmeterError, ValueError):
    """A device (or a dtype of it) that is not in the table; the message says how to pass its peaks by hand."""


class HardwareCacheError(GptmeterError, ValueError):
    """A hardware cache file that cannot be read; the message says how to rebuild it."""


def accelerator(key: str) -> Accelerator:
    """Table entry by short key ("h100-sxm", "h200", "a100-80gb", ...)."""
    if key not in ACCELERATORS:
        raise UnknownDeviceError(f"unknown accelerator {key!r}; choose one of {', '.join(ACCELERATORS)}")
    return ACCELERATORS[key]


def accelerator_for_device_name(device_name: str) -> Accelerator:
    """Table entry whose reported name (torch.cuda.get_device_name) is exactly `device_name`, ignoring case."""
    wanted = device_name.strip().casefold()
    for entry in _TABLE:
        if any(wanted == name.casefold() for name in entry.device_names):
            return entry
    raise UnknownDeviceError(
        f"GPU {device_name!r} is not in the peak table (profiling/hardware.py); pass its dense peak by hand "
        "(--peak-tflops and --peak-bandwidth-gbs, or peak_flops= and peak_bandwidth=), or add it to the table"
    )


def device_name(device: torch.device | str) -> str:
    """What the device calls itself; for a CPU the model name and the threads PyTorch uses (both set its speed)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def detect_accelerator(device: torch.device | str) -> Accelerator:
    """Table entry of `device`: the CPU entry for any CPU; raises UnknownDeviceError for a GPU not in the table."""
    import torch

    if torch.device(device).type == "cpu":
        return ACCELERATORS["cpu"]
    return accelerator_for_device_name(device_name(device))


# ----------------------------------------------------------------------------- measured ceilings


@dataclass(frozen=True)
class Ceilings:
    """Throughput this device reached: a view of its calibrated profile (see module docstring)."""

    device_name: str
    matmul_flops: dict[str, float]  # FLOP/s per dtype
    copy_bandwidth: float  # bytes/s, read + written
    matmul_size: int  # largest of M, N, K of the fastest matmul measured
    copy_bytes: int  # size of the largest copy measured
    torch_version: str
    measured_at: str  # ISO 8601, UTC


# ----------------------------------------------------------------------------- the peaks a run is measured against


@dataclass(frozen=True)
class Peaks:
    """Peak FLOP/s and bandwidth for one device and dtype, each with where it came from."""

    device_name: str
    accelerator: str | None  # table key; None for a GPU outside the table
    dtype: str
    flops: float  # the peak MFU is reported against
    flops_source: str
    bandwidth: float | None  # bytes/s
    bandwidth_source: str | None
    board_power_w: float | None
    measured: Ceilings | None  # also report MFU against measured_flops when present

    @property
    def measured_flops(self) -> float | None:
        return self.measured.matmul_flops.get(self.dtype) if self.measured else None


def device_peaks(
    device: torch.device | str,
    dtype: object = "bf16",
    peak_flops: float | None = None,
    peak_bandwidth: float | None = None,
    measured: Ceilings | None = None,
) -> Peaks:
    """Peaks of `device` for `dtype`: hand-given values first, then the datasheet table, then (CPU) the measurement.

    `measured` is the device's measured ceilings (`device_profile.measured_ceilings`, a view of its
    calibrated profile); a CPU without a hand-given peak needs them, since no datasheet covers it. A GPU
    outside the table needs `peak_flops`.
    """
    import torch

    device = torch.device(device)
    name, dtype = device_name(device), dtype_name(dtype)
    try:
        entry = detect_accelerator(device)
    except UnknownDeviceError:
        if peak_flops is None:
            raise
        entry = None
    is_cpu = entry is not None and entry.key == "cpu"
    if is_cpu and peak_flops is None and measured is None:
        raise UnknownDeviceError("a CPU has no datasheet peak: calibrate it (python -m profiling calibrate) or "
                                 "give its peak by hand (--peak-tflops)")

    if peak_flops is not None:
        flops, flops_source = peak_flops, "given by hand"
    elif is_cpu:
        if dtype not in measured.matmul_flops:
            raise UnknownDeviceError(f"no measured {dtype} matmul ceiling on the CPU (measured: fp32); use --dtype fp32")
        flops = measured.matmul_flops[dtype]
        flops_source = (
            f"measured {dtype} matmul ceiling, n={measured.matmul_size}, {measured.measured_at} (no datasheet)"
        )
    else:
        flops, flops_source = entry.peak(dtype), f"datasheet: {entry.source}"

    if peak_bandwidth is not None:
        bandwidth, bandwidth_source = peak_bandwidth, "given by hand"
    elif entry is not None and entry.memory_bandwidth is not None:
        bandwidth, bandwidth_source = entry.memory_bandwidth, f"datasheet: {entry.source}"
    elif measured is not None:
        bandwidth, bandwidth_source = measured.copy_bandwidth, f"measured copy bandwidth, {measured.measured_at}"
    else:
        bandwidth, bandwidth_source = None, None
    return Peaks(
        device_name=name,
        accelerator=entry.key if entry else None,
        dtype=dtype,
        flops=flops,
        flops_source=flops_source,
        bandwidth=bandwidth,
        bandwidth_source=bandwidth_source,
        board_power_w=entry.board_power_w if entry else None,
        measured=measured,
    )


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over a peak (datasheet or measured)."""
    if not peak_flops > 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops}")
    return flops_per_token * tokens_per_sec / peak_flops


# ----------------------------------------------------------------------------- python -m profiling hardware


def table_text() -> str:
    header = f"{'key':<16}" + "".join(f"{d + ' TFLOP/s':>14}" for d in TABLE_DTYPES) + f"{'TB/s':>7}{'GB':>6}{'W':>6}"
    rows = [header]
    for entry in _TABLE:
        peaks = "".join(
            f"{entry.peak_flops[d] / 1e12:>14,.1f}" if d in entry.peak_flops else f"{'-':>14}" for d in TABLE_DTYPES
        )
        bandwidth = f"{entry.memory_bandwidth / 1e12:>7.2f}" if entry.memory_bandwidth else f"{'-':>7}"
        memory = f"{entry.memory_bytes / GB:>6.0f}" if entry.memory_bytes else f"{'-':>6}"
        power = f"{entry.board_power_w:>6.0f}" if entry.board_power_w else f"{'-':>6}"
        rows.append(f"{entry.key:<16}{peaks}{bandwidth}{memory}{power}")
    rows += ["", "dense peaks (sparsity figures halved); sources:"]
    rows += [f"  {entry.key}: {entry.source}" for entry in _TABLE]
    return "\n".join(rows)


def peaks_text(peaks: Peaks) -> str:
    lines = [
        f"device: {peaks.device_name} (table entry: {peaks.accelerator or 'none'})",
        f"peak {peaks.dtype}: {peaks.flops / 1e12:.4g} TFLOP/s ({peaks.flops_source})",
    ]
    if peaks.bandwidth:
        lines.append(f"peak bandwidth: {peaks.bandwidth / 1e9:,.0f} GB/s ({peaks.bandwidth_source})")
    ceilings = peaks.measured
    if ceilings is None:
        lines.append("measured ceilings: no calibrated profile cached; run with --measure")
        return "\n".join(lines)
    lines.append(f"measured ceilings ({ceilings.measured_at}, torch {ceilings.torch_version}):")
    for dtype, flops in ceilings.matmul_flops.items():
        lines.append(f"  {dtype} matmul n={ceilings.matmul_size}: {flops / 1e12:.4g} TFLOP/s")
    lines.append(f"  copy of {ceilings.copy_bytes / 2**20:,.0f} MiB: {ceilings.copy_bandwidth / 1e9:,.1f} GB/s")
    if peaks.measured_flops and peaks.flops_source.startswith("datasheet"):
        lines.append(f"  measured / datasheet {peaks.dtype}: {peaks.measured_flops / peaks.flops:.1%}")
    return "\n".join(lines)
