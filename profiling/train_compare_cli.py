"""`python -m profiling train-compare`: why training needs GPUs, as time, energy and cost per device
(the command line and text output of profiling.train_compare)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gpt.cli import HelpFormatter, positive_float, positive_int
from gpt.config import PRESETS, GPTConfig
from gpt.files import dumps_json
from profiling import flops, hardware
from profiling.device_profile import DeviceProfile, cached_profile, calibrate, resolve_profile
from profiling.scale import TrainingInputs
from profiling.train_compare import (
    CPU_PURCHASE_USD_PER_THREAD, CPU_USD_PER_THREAD_HOUR, CPU_WATTS_PER_THREAD, PUBLISHED_GPT3, CompareError,
    CompareInputs, DeviceRequest, compare,
)

CPU_DTYPE, GPU_DTYPE = "fp32", "bf16"  # what `calibrate` measures on each by default


def parse_devices(specs: list[str], count: int | None) -> list[DeviceRequest]:
    """KEY or KEY:N per device; a bare KEY takes `count` (None: from --days or the memory minimum)."""
    requests = []
    for spec in specs:
        key, _, number = spec.partition(":")
        if number and not number.isdigit():
            raise CompareError(f"--devices {spec}: the count after ':' must be a whole number, e.g. h100-sxm:1024")
        requests.append(DeviceRequest(key, int(number) if number else count))
    if len({request.key for request in requests}) != len(requests):
        raise CompareError("--devices names a device twice; name each once (KEY or KEY:N)")
    return requests


def device_profile(key: str, progress: bool = True) -> DeviceProfile:
    """This CPU's measured profile (measured now and cached if there is none yet), or a GPU's profile."""
    if key != "cpu":
        return resolve_profile(key, dtype=GPU_DTYPE)
    cached = cached_profile(hardware.device_name("cpu"), CPU_DTYPE)
    if cached is not None:
        return cached
    print(f"no measured {CPU_DTYPE} profile of this CPU yet: measuring one now (about a minute on 2 cores; cached "
          "for next time, as python -m profiling calibrate --device cpu would)", file=sys.stderr)
    return calibrate("cpu", CPU_DTYPE, progress=progress)


# --------------------------------------------------------------------------- text


def duration(seconds: float) -> str:
    """A wall time in the unit that reads best: minutes, hours, days or years."""
    days = seconds / 86_400
    if days >= 365.25:
        return f"{days / 365.25:,.1f} years"
    if days >= 2:
        return f"{days:,.1f} days"
    return f"{seconds / 3600:,.1f} hours" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def _money(usd: float) -> str:
    return f"${usd:,.0f}" if usd >= 100 else f"${usd:,.2f}"


def _row_cells(row: dict[str, Any]) -> dict[str, str]:
    profile = row["profile"]
    cells = {"profile": f"{profile['kind']}, {profile['dtype']} ({profile['date'][:10]})"}
    if row["refused"]:
        return cells | {"devices": "refused"}
    return cells | {
        "tokens/s per device": f"{row['tokens_per_sec_per_device']:,.4g}",
        "MFU (predicted)": f"{row['mfu']:.1%}",
        "devices": f"{row['devices']:,}",
        "wall time": duration(row["wall_seconds"]),
        "device-hours": f"{row['device_hours']:,.4g}",
        "energy (facility)": f"{row['kwh']:,.4g} kWh",
        "cost, cloud": _money(row["usd_cloud"]),
        "cost, owned (TCO)": _money(row["usd_owned"]),
        "CO2": f"{row['kg_co2'] / 1000:,.4g} t",
    }


def _shared_inputs(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The inputs every device has with the same value and source (facility figures), printed once."""
    first = rows[0]["inputs"]
    return {name: entry for name, entry in first.items() if all(row["inputs"].get(name) == entry for row in rows)}


def _input_lines(inputs: dict[str, dict[str, Any]]) -> list[str]:
    return [f"    {name:<28} {entry['kind']:<9} "
            f"{entry['value'] if isinstance(entry['value'], str) else format(entry['value'], 'g')} {entry['unit']}"
            f"  [{entry['source']}]" for name, entry in inputs.items()]


def format_comparison(result: dict[str, Any]) -> str:
    model, rows = result["model"], result["rows"]
    cells = [_row_cells(row) for row in rows]
    labels = list(dict.fromkeys(label for row_cells in cells for label in row_cells))
    width = [max(len(row["key"]), *(len(c.get(label, "")) for label in labels)) for row, c in zip(rows, cells)]
    label_width = max(map(len, labels))
    lines = [f"training {model['name']} ({model['params'] / 1e6:,.1f}M params, context {model['block_size']}) on "
             f"{result['tokens']:,.4g} tokens: {result['flops']:.3e} model FLOPs (3 x forward, PaLM)", "",
             " " * label_width + "  " + "  ".join(f"{row['key']:>{w}}" for row, w in zip(rows, width))]
    lines += [f"{label:<{label_width}}  " + "  ".join(f"{c.get(label, '-'):>{w}}" for c, w in zip(cells, width))
              for label in labels]
    shared = _shared_inputs(rows)
    lines += ["", "inputs of every device (kind: measured, reference or assumed)"]
    lines += _input_lines(shared)
    for row in rows:
        lines.append(f"{row['key']}: {row['device']}; " + (
            f"refused: {row['refused']}" if row["refused"] else
            f"{row['devices']:,} device{'s' * (row['devices'] != 1)} ({row['devices_rule']}; memory needs at least "
            f"{row['memory']['min_devices']:,})"
            f", {row['kw_per_device'] * 1000:,.1f} W per device at the wall"))
        lines += _input_lines({name: entry for name, entry in row["inputs"].items() if name not in shared})
    check = result["gpt3_check"]
    published, predicted = check["published"], check["predicted"]
    lines += ["", f"sanity check: GPT-3 175B on 300B tokens on {published['devices']:,} {published['device']}",
              f"  FLOPs  predicted {predicted['flops']:.3e} (with attention), 6ND {check['six_n_d_flops']:.3e}, "
              f"published {published['flops']:.3e}",
              f"  days   predicted {predicted['days']:,.1f} at MFU {predicted['mfu']:.0%} ({predicted['profile']['kind']} "
              f"profile, gradient all-reduce {predicted['communication_share']:.0%} of a step), published {published['days']:g} at MFU "
              f"{published['implied_mfu']:.0%}  [{published['source']}]"]
    if result.get("plots"):
        lines += ["", "plots: " + ", ".join(result["plots"])]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-compare", formatter_class=HelpFormatter,
        help="why training needs GPUs: time, energy and cost of training a model on N tokens, per device",
        description="Predict, for each device, the time, energy and cost of training a model on a token count: "
        "this machine's CPU on the profile measured here (measured now if none is cached), any GPU of the hardware "
        "table on its measured profile if one exists, else its reference profile. The devices train data-parallel, "
        "each step adding the gradient all-reduce over the hardware table's links (NVLink inside a server, "
        "InfiniBand between servers; see docs/cost.md), and each holds its share of the 16-byte-per-parameter training "
        "state (FSDP/ZeRO-3) plus one micro-batch's recomputed activations. See docs/cost.md.",
    )
    parser.add_argument("--model", default="gpt2", choices=list(PRESETS), metavar="PRESET",
                        help=f"model preset: {', '.join(PRESETS)}")
    parser.add_argument("--tokens", type=positive_float, required=True, metavar="N",
                        help="training tokens, e.g. 10e9 (each trained at the model's full context)")
    parser.add_argument("--devices", nargs="+", default=["cpu", "a100-80gb", "h100-sxm"], metavar="KEY[:N]",
                        help="devices to compare: cpu (this machine) and keys of python -m profiling hardware; "
                        ":N fixes that device's count")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--count", type=positive_int, metavar="N",
                       help="devices of each kind training together (a device's own :N wins). Default: the "
                       "fewest that hold the training state")
    count.add_argument("--days", type=positive_float, metavar="D",
                       help="instead of --count: the fewest devices of each kind that finish within this many days")
    parser.add_argument("--micro-batch", type=positive_int, default=TrainingInputs.micro_batch, metavar="B",
                        help="sequences of the full context per device per micro-step")
    parser.add_argument("--grad-accum", type=positive_int, default=TrainingInputs.grad_accum, metavar="G",
                        help="micro-steps per optimizer update")
    prices = parser.add_argument_group("prices (GPUs: profiling/prices.py; the CPU: assumptions, see docs/cost.md)")
    prices.add_argument("--prices", type=Path, metavar="FILE",
                        help="TOML or JSON file overriding the price table and facility figures (PUE, electricity, "
                        "grid CO2, ...)")
    prices.add_argument("--cpu-watts", type=positive_float, metavar="W",
                        help=f"this CPU's power while training, W (default {CPU_WATTS_PER_THREAD.value:.3g} W per "
                        "thread of the profile: a share of a server CPU's TDP)")
    prices.add_argument("--cpu-usd-per-hour", type=positive_float, metavar="USD",
                        help=f"rent of this CPU, USD per hour (default ${CPU_USD_PER_THREAD_HOUR.value:.4g} per thread, "
                        "a cloud vCPU)")
    prices.add_argument("--cpu-purchase-usd", type=positive_float, metavar="USD",
                        help=f"purchase of this CPU, USD (default ${CPU_PURCHASE_USD_PER_THREAD.value:,.0f} per thread: "
                        "a share of a server CPU's list price)")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="also draw DIR/train_compare.png: wall time and cloud cost per device, log scale")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    requests = parse_devices(args.devices, args.count)
    inputs = CompareInputs(tokens=args.tokens, days=args.days, micro_batch=args.micro_batch,
                           grad_accum=args.grad_accum, prices=args.prices, cpu_watts=args.cpu_watts,
                           cpu_usd_per_hour=args.cpu_usd_per_hour, cpu_purchase_usd=args.cpu_purchase_usd)
    config = GPTConfig.from_preset(args.model)
    keys = [request.key for request in requests] + [PUBLISHED_GPT3["device"]]
    profiles = {key: device_profile(key) for key in dict.fromkeys(keys)}
    result = {"model": {"name": args.model, "params": flops.param_count(config), **config.to_dict()},
              "flops": flops.training_flops_per_token(config) * args.tokens}
    result |= compare(config, requests, inputs, profiles)
    if args.plot is not None:
        from profiling.plots import write_training_comparison_plot  # matplotlib loads only when plots are drawn

        result["plots"] = [str(write_training_comparison_plot(result, args.plot))]
    print(dumps_json(result, indent=2) if args.json else format_comparison(result))
    return 0
