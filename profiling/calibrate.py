"""`python -m profiling calibrate`: measure this device's profile and write it (profiling.device_profile)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from profiling.device_profile import (DeviceProfile, ProfileError, cache_path, cached_profile, calibrate,
                                      save_profile)


def _per_parameter(adamw: dict) -> str:
    grid = adamw.get("grid")
    if not grid:
        return f"{adamw['seconds_per_parameter'] * 1e9:,.2f} ns/parameter"
    values = [seconds for row in grid["seconds_per_parameter"] for seconds in row]
    return (f"{min(values) * 1e9:,.2f}-{max(values) * 1e9:,.2f} ns/parameter (tensors of "
            f"{grid['tensor_elements'][0]:,}-{grid['tensor_elements'][-1]:,} elements)")


def describe(profile: DeviceProfile) -> str:
    """A few headline figures of a profile, for the terminal."""
    overhead = profile.overhead
    return "\n".join([
        f"{profile.kind} profile of {profile.device} ({profile.dtype}), {profile.date}",
        f"  best matmul        {profile.peak_flops / 1e9:,.1f} GFLOP/s ({profile.peak_flops_source})",
        f"  copy bandwidth     {profile.memory_bandwidth / 1e9:,.1f} GB/s (read + written)",
        f"  AdamW              {_per_parameter(profile.adamw)} + "
        f"{profile.adamw['seconds_per_tensor'] * 1e6:,.1f} us/tensor",
        f"  per call           {overhead['per_call_s']['inference'] * 1e6:,.1f} us inference, "
        f"{profile.per_call_seconds('prefill') * 1e6:,.1f} us prefill, "
        f"{overhead['per_call_s']['training'] * 1e6:,.1f} us training (beyond the tables)",
        f"  fixed              {overhead['fixed_s']['forward'] * 1e6:,.1f} us per forward, "
        f"{overhead['fixed_s']['train_micro_step'] * 1e6:,.1f} us per training micro-step, "
        f"{overhead['fixed_s']['token'] * 1e6:,.1f} us per generated token, "
        f"{overhead['fixed_s']['prefill'] * 1e6:,.1f} us per prefill, "
        f"{overhead['fixed_s']['train_step'] * 1e6:,.1f} us per training step",
    ])


def add_parser(subparsers) -> argparse.ArgumentParser:
    from gpt.cli import HelpFormatter

    parser = subparsers.add_parser(
        "calibrate", formatter_class=HelpFormatter,
        help="measure this device's profile (matmuls, attention, memory-bound ops, AdamW, per-call overhead)",
        description="Time matmuls over an (M, N, K) grid, attention over sequence lengths and head sizes, "
        "memory-bound operations over sizes, the AdamW step per parameter and the fixed cost of an operator call, "
        "and write the device profile JSON that python -m profiling predict uses. About 100 s at one "
        "thread on the project's 2-vCPU VM, a progress bar showing the shapes timed. "
        "The profile is cached per device name under $GPTMETER_CACHE_DIR/device_profiles/. Under torchrun "
        "(torchrun --standalone --nproc_per_node N -m profiling calibrate) it instead times all-reduce, all-gather "
        "and reduce-scatter over message sizes on the running backend, and the harness of a DDP and an FSDP "
        "training step at width 8 (hooks, bookkeeping, the trainer's scalar all-reduces), and adds them to the "
        "cached profile, which predict --world-size N then uses.",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", help="fp32, tf32, bf16 or fp16 (default: bf16 on a GPU, fp32 on CPU)")
    parser.add_argument("--out", metavar="FILE", help="also write the profile here (JSON)")
    parser.add_argument("--quick", action="store_true",
                        help="a few grid points only (seconds; coarse): cached for the hardware view, used for a "
                        "prediction only through --out FILE and predict --profile FILE")
    return parser


def calibrate_collectives(device, dtype: str, out: str | None) -> int:
    """Under torchrun: measure the collectives on every rank and add them to this device's cached profile
    (rank 0 writes). The compute tables come from a plain `calibrate` run first, one process alone on the device."""
    import torch

    from gpt import distributed
    from profiling import hardware, harness
    from profiling.collectives import MODES, measure

    device = distributed.init(device)
    name = hardware.device_name(device)  # a CPU's name holds its threads: torchrun gives each rank 1 by default
    profile = cached_profile(name, dtype)  # every rank checks, so every rank stops with the same line
    if profile is None:
        threads = f"OMP_NUM_THREADS={torch.get_num_threads()} " if device.type == "cpu" else ""
        raise ProfileError(f"no cached {dtype} profile of {name} to add collectives to; measure it first in one "
                           f"process with the threads each rank has: {threads}python -m profiling calibrate "
                           f"--dtype {dtype}")
    table = measure()
    table["harness"] = harness.measure(replace(profile, collectives=table), device, dtype)
    if not distributed.is_main():
        return 0
    profile = replace(profile, collectives=table)
    largest = max(range(len(table["ops"]["all_reduce"]["bytes"])), key=lambda i: table["ops"]["all_reduce"]["bytes"][i])
    nbytes, seconds = table["ops"]["all_reduce"]["bytes"][largest], table["ops"]["all_reduce"]["seconds"][largest]
    print(f"collectives on {table['backend']}, world size {table['world_size']}: all-reduce of {nbytes / 2**20:,.0f} "
          f"MiB in {seconds * 1e3:,.1f} ms ({nbytes / seconds / 1e9:,.2f} GB/s of tensor)")
    for mode in MODES:
        cost = table["harness"][mode]
        print(f"harness of a {mode.upper()} step (width 8): {cost['per_step_s'] * 1e6:,.0f} us per step + "
              f"{cost['per_block_s'] * 1e6:,.0f} us per block")
    print(f"cached in {save_profile(profile, cache_path(profile.device, profile.dtype), named_by='the cache')}")
    if out:
        print(f"written to {save_profile(profile, out)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from gpt import distributed
    from gpt.cli import resolve_device
    from gpt.files import check_output_file, writable_cache_root

    check_output_file(args.out, "--out")  # before minutes of measuring, not after
    if not args.quick:
        writable_cache_root()
    device = resolve_device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if distributed.launched() and int(os.environ["WORLD_SIZE"]) > 1:
        return calibrate_collectives(device, dtype, args.out)
    profile = calibrate(str(device), dtype, progress=True, quick=args.quick)
    print(describe(profile))
    print(f"cached in {cache_path(profile.device, profile.dtype, args.quick)}"
          + (" (quick grid: for the hardware view only; predictions need the full grid or --out)" if args.quick else ""))
    if args.out:
        print(f"written to {save_profile(profile, args.out)}")
    return 0
