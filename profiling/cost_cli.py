"""`python -m profiling cost`: price a measured (or given) throughput, or reproduce a published scenario.

The arithmetic is `profiling.cost`'s; this module reads the command line, finds the throughput
(`profiling.rundir`) and lays out the answer.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpt.cli import positive_int
from gpt.config import PRESETS
from gpt.files import dumps_json
from profiling.cost import add_price_arguments, kind_of, price_choice, price_device, serving_cost
from profiling.device_profile import resolve_profile
from profiling.predict import predict_decode
from profiling.prices import PriceError, require_positive
from profiling.rundir import read_measurements
from profiling.plan import ServingInputs
from profiling.scale import device_spec, resolve_model
from profiling.scenarios import format_scenario, run_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cost",
        help="cost of a device-hour, per token, per query and per day, or a published scenario",
        description="Turn a throughput (predicted: --model PRESET on --device's profile; measured: --from RUN_DIR "
        "or PROFILE_JSON; or given: --tokens-per-sec) and a device-hour price into USD and kWh per token, per "
        "million tokens, per query and per day. "
        "With --scenario NAME, reproduce a published estimate from its own inputs instead.",
    )
    parser.add_argument("--scenario", metavar="NAME", help="a published estimate (see: python -m profiling scenarios)")
    parser.add_argument("--device", metavar="KEY", help="device key in the hardware table, e.g. h100-sxm "
                        "(default: the device recorded in --from)")
    parser.add_argument("--tokens-per-sec", type=float, help="throughput of ONE device, tokens/s (given, not measured)")
    parser.add_argument("--model", metavar="PRESET", help="predict the throughput instead: decode tokens/s per device "
                        f"of this model on --device's profile (measured if one exists, else reference); one of "
                        f"{', '.join(PRESETS)}")
    parser.add_argument("--batch", type=positive_int, default=32, help="with --model: sequences decoded together")
    parser.add_argument("--dtype", default="bf16", help="with --model: weights, KV cache and profile dtype")
    parser.add_argument("--from", dest="sources", action="append", type=Path, default=[], metavar="PATH",
                        help="a train.py run directory (training tokens/s) or a sample.py --profile-json file "
                        "(decode tokens/s); the measured throughput to price")
    parser.add_argument("--tokens-per-query", type=float, help="tokens per query (for per-query and per-day figures; "
                        f"with --model also the tokens generated, default {ServingInputs.output_tokens})")
    parser.add_argument("--queries-per-day", type=float, help="queries per day (for per-day figures)")
    add_price_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def _throughput(args: argparse.Namespace) -> tuple[float, str, str, str | None]:
    """(tokens/s per device, its kind, provenance, device name recorded with the measurement)."""
    if args.tokens_per_sec is not None:
        return require_positive("tokens_per_sec", args.tokens_per_sec), "assumed", "assumed (--tokens-per-sec)", None
    if args.model is not None:
        return _predicted(args)
    if not args.sources:
        raise PriceError("give a throughput: --model PRESET --device KEY, --tokens-per-sec N, "
                         "or --from RUN_DIR / --from PROFILE_JSON")
    measured = read_measurements(args.sources)
    if measured.tokens_per_sec is None:
        raise PriceError(f"no tokens/s in {', '.join(map(str, args.sources))}; pass --tokens-per-sec")
    return measured.tokens_per_sec.value, "measured", measured.tokens_per_sec.source, measured.device


def _predicted(args: argparse.Namespace) -> tuple[float, str, str, str | None]:
    """Decode tokens/s of one device for --model, predicted on --device's profile (all of the model on it, as a
    tensor-parallel replica with perfect scaling would give each of its devices)."""
    if args.device is None:
        raise PriceError("--model needs --device KEY: the device to predict on and to price")
    config = resolve_model(args.model)
    new_tokens = int(args.tokens_per_query or ServingInputs.output_tokens)
    profile = resolve_profile(device_spec(args.device).key, None, args.dtype)
    prediction = predict_decode(config, args.batch, 1, new_tokens, profile)
    summary = prediction.profile
    return prediction.tokens_per_sec, f"predicted on a {summary['kind']} profile", (
        f"{args.model} decoding {new_tokens} tokens at batch {args.batch} on the {summary['kind']} "
        f"profile of {summary['device']} ({summary['date'][:10]})"), None


def run(args: argparse.Namespace) -> int:
    """The cost subcommand. Bad input raises a GptmeterError, which `python -m profiling` prints as one line."""
    if args.scenario is not None:
        result = run_scenario(args.scenario)
        print(dumps_json(result, indent=2) if args.json else format_scenario(result))
        return 0
    tokens_per_sec, kind, provenance, measured_device = _throughput(args)
    device = device_spec(args.device) if args.device is not None else None
    priced = price_device(price_choice(args), args.device, device.board_power_w if device else None)
    result = serving_cost(priced.device_hour, tokens_per_sec, priced.kw_per_device, args.tokens_per_query,
                          args.queries_per_day, priced.grid_kg_co2_per_kwh)
    report = {
        "device": args.device or measured_device,
        "measured_on": measured_device,
        "tokens_per_sec_per_device": {"value": tokens_per_sec, "source": provenance, "kind": kind},
        "device_hour": priced.device_hour.to_dict(),
        "inputs": {name: entry | {"kind": kind_of(entry["source"])} for name, entry in priced.inputs.items()},
        **asdict(result),
    }
    print(dumps_json(report, indent=2) if args.json else format_cost(report))
    return 0


def _energy(template: str, value: float | None) -> str:
    return "" if value is None else template.format(value)


def _labelled(entry: dict[str, Any]) -> str:
    """An input's source, led by its kind unless the source already says it."""
    return entry["source"] if entry["source"].startswith(entry["kind"]) else f"{entry['kind']}: {entry['source']}"


def format_cost(report: dict[str, Any]) -> str:
    hour = report["device_hour"]
    rows = [
        ("priced device", report["device"] or "not named"),
        ("throughput measured on", report["measured_on"] or "not measured (predicted or given by hand)"),
        ("tokens/s per device", f"{report['tokens_per_sec_per_device']['value']:,.1f} "
                                f"({_labelled(report['tokens_per_sec_per_device'])})"),
        (f"device-hour ({hour['basis']})", f"${hour['total_usd']:.4f} = " + " + ".join(
            f"{part} ${usd:.4f}" for part, usd in hour["parts"].items())),
        ("per million tokens", f"${report['usd_per_million_tokens']:,.4f}"
                               + _energy(", {:,.4f} kWh", report["kwh_per_million_tokens"])),
    ]
    if report["usd_per_query"] is not None:
        rows.append(("per query", f"${report['usd_per_query']:.6f}" + _energy(", {:.4f} Wh", report["wh_per_query"])))
    if report["usd_per_day"] is not None:
        rows.append(("per day", f"${report['usd_per_day']:,.2f}, {report['device_hours_per_day']:,.1f} device-hours"
                                + _energy(", {:,.1f} kWh", report["kwh_per_day"])
                                + _energy(", {:,.1f} kg CO2", report["kg_co2_per_day"])))
    rows += [(f"  {name}", f"{entry['value']:g} {entry['unit']}  [{_labelled(entry)}]".replace("  [", " [", 1))
             for name, entry in report["inputs"].items()]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
