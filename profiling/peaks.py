"""The peaks a run is measured against, and `python -m profiling hardware`: the datasheet table, this device,
and its measured ceilings.

Measured ceilings are a view of the device's calibrated profile (profiling/device_profile.py, `python -m
profiling calibrate`): the best matmul of its grid and its copy bandwidth (bytes read + bytes written). A CPU has
no datasheet entry: its peak is the measured matmul ceiling, and is labelled as measured. This module sits above
both the table (hardware.py) and the profiles, so that neither imports the other's user.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpt.files import dumps_json
from profiling import device_profile, hardware
from profiling.flops import dtype_name
from profiling.hardware import TABLE_DTYPES, Ceilings, UnknownDeviceError

if TYPE_CHECKING:  # torch loads inside the functions that measure, so that --help answers at once
    import torch


def cached_ceilings(name: str, dtype: str = "fp32") -> Ceilings | None:
    """The ceilings of the device called `name` from its cached calibrated `dtype` profile, if any, with the
    fastest matmul of every other dtype calibrated on it (`python -m profiling calibrate --dtype fp16`, ...)."""
    profile = device_profile.cached_profile(name, dtype)
    if profile is None:
        return None
    ceilings = device_profile.as_ceilings(profile)
    for other in TABLE_DTYPES:
        extra = device_profile.cached_profile(name, other) if other != profile.dtype else None
        if extra is not None:
            ceilings.matmul_flops[other] = device_profile.as_ceilings(extra).matmul_flops[other]
    return ceilings


def measured_ceilings(device: torch.device | str, refresh: bool = False) -> Ceilings:
    """The ceilings of `device`: a view of its calibrated profile (`python -m profiling calibrate`).

    The profile of the dtype the tools run (fp32 on a CPU, bf16 on a GPU) is read from the cache. If
    absent it is measured first: the full grid when `refresh`, and on a GPU; on a CPU, the quick grid
    (seconds), until `python -m profiling calibrate` replaces it.
    """
    import torch

    device = torch.device(device)
    dtype = "bf16" if device.type == "cuda" else "fp32"
    ceilings = None if refresh else cached_ceilings(hardware.device_name(device), dtype)
    if ceilings is None:
        quick = device.type == "cpu" and not refresh
        ceilings = device_profile.as_ceilings(device_profile.calibrate(str(device), dtype, progress=not quick,
                                                                      quick=quick))
    return ceilings


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
    measure: bool = False,
) -> Peaks:
    """Peaks of `device` for `dtype`: hand-given values first, then the datasheet table, then (CPU) the measurement.

    Measured ceilings come from the cache, or are measured now when `measure` is set; a CPU
    without a hand-given peak is always measured (or read from the cache), since no
    datasheet covers it. A GPU outside the table needs `peak_flops`.
    """
    import torch

    device = torch.device(device)
    name, dtype = hardware.device_name(device), dtype_name(dtype)
    try:
        entry = hardware.detect_accelerator(device)
    except UnknownDeviceError:
        if peak_flops is None:
            raise
        entry = None
    is_cpu = entry is not None and entry.key == "cpu"
    measured = measured_ceilings(device, refresh=measure) if measure or (is_cpu and peak_flops is None) else None
    measured = measured or cached_ceilings(name, "bf16" if device.type == "cuda" else "fp32")

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


def _peaks_text(peaks: Peaks) -> str:
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


def add_parser(subparsers) -> object:
    from gpt.cli import positive_float

    parser = subparsers.add_parser(
        "hardware",
        help="peak FLOP/s and bandwidth table, the detected device, measured ceilings",
        description="Show the datasheet table of accelerators (dense peaks), the peaks of this device, and its "
        "measured matmul and copy ceilings: a view of its calibrated device profile (python -m profiling calibrate, "
        "cached in $GPTMETER_CACHE_DIR/device_profiles/).",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", help="bf16, fp16, tf32 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--measure", action="store_true", help="calibrate this device now (python -m profiling calibrate: "
                        "under a minute on a 2-core CPU) and show its ceilings")
    parser.add_argument(
        "--peak-tflops", type=positive_float, help="dense peak in TFLOP/s, for a device not in the table"
    )
    parser.add_argument("--peak-bandwidth-gbs", type=positive_float, help="memory bandwidth in GB/s (1 GB = 1e9 bytes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def run(args) -> int:
    from gpt.cli import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    peaks = device_peaks(
        device,
        resolve_dtype(args.dtype, device),
        peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None,
        peak_bandwidth=args.peak_bandwidth_gbs * 1e9 if args.peak_bandwidth_gbs else None,
        measure=args.measure,
    )
    if args.json:
        table = {entry.key: dataclasses.asdict(entry) for entry in hardware.ACCELERATORS.values()}
        print(dumps_json({"table": table, "device": dataclasses.asdict(peaks)}, indent=2))
    else:
        print(hardware.table_text() + "\n\n" + _peaks_text(peaks))
    return 0
