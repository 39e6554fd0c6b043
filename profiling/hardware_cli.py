"""`python -m profiling hardware`: the datasheet table, this device's peaks, and its measured ceilings.

The ceilings are a view of the device's calibrated profile (`device_profile.measured_ceilings`); `--measure`
calibrates it now.
"""

from __future__ import annotations

import dataclasses

from gpt.files import dumps_json
from profiling import device_profile, hardware


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
                        "about a minute on a 2-core CPU) and show its ceilings")
    parser.add_argument(
        "--peak-tflops", type=positive_float, help="dense peak in TFLOP/s, for a device not in the table"
    )
    parser.add_argument("--peak-bandwidth-gbs", type=positive_float, help="memory bandwidth in GB/s (1 GB = 1e9 bytes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def run(args) -> int:
    from gpt.cli import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    needs_measurement = args.measure or (device.type == "cpu" and not args.peak_tflops)
    measured = (device_profile.measured_ceilings(device, refresh=args.measure) if needs_measurement
                else device_profile.cached_ceilings(hardware.device_name(device),
                                                    "bf16" if device.type == "cuda" else "fp32"))
    peaks = hardware.device_peaks(
        device,
        resolve_dtype(args.dtype, device),
        peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None,
        peak_bandwidth=args.peak_bandwidth_gbs * 1e9 if args.peak_bandwidth_gbs else None,
        measured=measured,
    )
    if args.json:
        table = {key: dataclasses.asdict(entry) for key, entry in hardware.ACCELERATORS.items()}
        print(dumps_json({"table": table, "device": dataclasses.asdict(peaks)}, indent=2))
    else:
        print(hardware.table_text() + "\n\n" + hardware.peaks_text(peaks))
    return 0
