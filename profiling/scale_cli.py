"""`python -m profiling scale`: the command line and text output of `profiling.scale`, and its --plot pictures."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpt.cli import add_shape_arguments
from gpt.config import PRESETS
from gpt.files import dumps_json
from profiling import cost
from profiling.derive import DERIVATIONS, derivation, derive
from profiling.levers import OTHER_DEVICE, RELAX, compare
from profiling.plots import write_levers_plot, write_tornado_plot
from profiling.plan import LATENCY_SOURCE, SERVING_BYTES, ServingInputs
from profiling.scale import ScaleError, ScaleRequest, TrainingInputs, extrapolate


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def _where(phase: dict[str, Any]) -> str:
    """"matmul 80%, attention 12%, ..." of a predicted phase."""
    total = phase["seconds"]
    return ", ".join(f"{part} {seconds / total:.0%}" for part, seconds in phase["breakdown"].items()
                     if seconds / total >= 0.005)


def _number(value: float | None, form: str = "{:,.4g}") -> str:
    return "no plan" if value is None else form.format(value)


def _swing(entry: dict[str, Any], metric: str) -> float:
    """How far one tornado input moves `metric` between its two ends (0 where an end has no plan)."""
    low, high = entry[f"low_{metric}"], entry[f"high_{metric}"]
    return 0.0 if low is None or high is None else abs(high - low)


def _communication(summary: dict[str, Any]) -> str:
    """One line on the gradient all-reduce of a training plan: its time, share and the links it ran over."""
    head = f"{_ms(summary['seconds_per_step'])} per optimizer step ({summary['share_of_step']:.0%} of it)"
    if "inter_server" not in summary:
        return f"{head}; {summary['links']}"
    intra, inter = summary["intra_server"], summary["inter_server"]
    inside = "" if intra is None else f"a ring over {intra['bytes_per_s'] / 1e9:,.0f} GB/s inside each server, "
    return (f"{head}: {summary['servers']:,} servers x {summary['devices_per_server']} devices, {inside}"
            f"{inter['bytes_per_s'] / 1e9:,.3g} GB/s per device between servers")


def _operating_cost_lines(sides: dict[str, Any]) -> list[str]:
    """Rented and owned fleets' USD per day by part, side by side; a side that could not be priced says why."""
    fleets = ("rented", "owned")
    head = [f"{fleet} (headline)" if fleet == sides["headline"] else fleet for fleet in fleets]
    lines = [f"  cost/day by part{'':<23}{head[0]:<22}{head[1]}"]
    for part, label in (("hardware", "hardware"), ("energy", "energy"), ("operations", "maintenance/operations"),
                        ("total", "total")):
        cells = []
        for fleet in fleets:
            side = sides[fleet]
            if "error" in side:
                cells.append("not priced" if part != "total" else f"not priced: {side['error']}")
            elif side["basis"] == "cloud" and part in ("energy", "operations"):
                cells.append("in the rental")
            else:
                note = {"cloud": " rental", "tco": " depreciation"}[side["basis"]] if part == "hardware" else ""
                cells.append(f"${side[part]:,.0f}{note}")
        lines.append(f"                 {label:<24}{cells[0]:<22}{cells[1]}")
    return lines


def format_derivation(comparison: dict[str, Any]) -> list[str]:
    """Published against derived, the input that explains most of the gap, and every input's source."""
    published, derived = comparison["published"], comparison["derived"]
    band = derived["usd_per_day_band"]
    lines = [f"published against derived: {comparison['scenario']} ({comparison['source']})",
             f"  {'':<12}{'published':<34}derived by the planner (above)",
             f"  {'fleet':<12}{published['devices']:<34,.0f}{derived['devices']:,} (tp {derived['tensor_parallel']}, "
             f"batch {derived['batch']}, limited by {derived['limited_by']})",
             f"  {'USD/day':<12}{published['usd_per_day']:<34,.0f}{derived['usd_per_day']:,.0f} (band "
             f"{_number(band['low'], '{:,.0f}')}-{_number(band['high'], '{:,.0f}')})",
             f"  {'USD/query':<12}{published['usd_per_query']:<34.5f}{derived['usd_per_query']:.5f}",
             f"  derived / published = {comparison['derived_over_published']:.3g}; the published fleet is the one "
             "its cost pays for at its price, not an input here"]
    best = comparison["explains_most"]
    if best is not None:
        lines.append(f"  explains most (tornado, the publication's price left out): {best['input']} at its "
                     f"{best['end']} value {best['value']:g} alone gives ${best['usd_per_day']:,.0f}/day, "
                     f"{best['gap_closed']:.0%} of the gap to the published figure ({best['source']})")
    check = comparison["reproduction"]
    lines.append(f"  arithmetic check: cost --scenario {comparison['scenario']} gives ${check['usd_per_day']:,.0f}/day "
                 f"from the published inputs ({check['relative_difference']:+.2%} against the published figure)")
    if comparison["changed_on_the_command_line"]:
        lines.append("  changed on the command line: " + ", ".join(comparison["changed_on_the_command_line"]))
    lines.append("  inputs of the derivation:")
    lines += [f"    {name}: {source}" for name, source in comparison["inputs"].items()]
    return lines


def format_levers(comparison: dict[str, Any]) -> list[str]:
    """The lever table: each lever's plan and its change in cost per day against the baseline."""
    base = comparison["baseline"]
    lines = [f"levers (each the serving plan re-run with one input changed; baseline {base['devices']:,} devices, "
             f"tp {base['tensor_parallel']}, batch {base['batch']}, ${base['usd_per_day']:,.0f}/day)",
             f"  {'lever':<26}{'devices':>9}{'tp':>4}{'batch':>7}{'USD/day':>12}{'change':>19}  flags"]
    for row in comparison["levers"]:
        if "error" in row:
            lines.append(f"  {row['lever']:<26}no plan: {row['error']}")
            continue
        change = f"{row['change_usd_per_day']:+,.0f} ({row['change_fraction']:+.0%})"
        lines.append(f"  {row['lever']:<26}{row['devices']:>9,}{row['tensor_parallel']:>4}{row['batch']:>7}"
                     f"{row['usd_per_day']:>12,.0f}{change:>19}  {row['flags']}")
    return lines


def format_extrapolation(result: dict[str, Any]) -> str:
    model, device, serving, training = result["model"], result["device"], result["serving"], result["training"]
    profile, confidence = result["profile"], result["confidence"]
    decode, prefill = serving["decode_step"], serving["prefill"]
    lines = [
        f"{model['name']} ({model['params'] / 1e9:,.2f}B params, {model['n_layer']} layers, width {model['n_embd']}) "
        f"on {device['name']} ({device['dtype']}, {device['peak_flops'] / 1e12:,.0f} TFLOP/s, "
        f"{device['memory_bandwidth_bytes_per_s'] / 1e12:,.2f} TB/s, {device['memory_bytes'] / 1e9:,.0f} GB)",
        f"step times predicted on the {profile['kind']} profile of {profile['device']} ({profile['date'][:10]})",
        "",
        "serving",
        f"  replica        {serving['tensor_parallel']} devices, batch {serving['batch']} (limited by "
        f"{serving['limited_by']}); weights {serving['weight_gb']:,.1f} GB + KV cache {serving['kv_cache_gb']:,.1f} GB",
        "  chosen from    " + "; ".join(f"tp {tp}: {why}" for tp, why in serving["candidates"].items()),
        f"  latency        first token {serving['ttft_s']:.3g} s, {serving['user_tokens_per_sec']:,.1f} tokens/s "
        f"per user; fleet utilisation {serving['utilisation']:.0%}",
        f"  decode step    {_ms(decode['seconds'])} for the batch (mean over the generation), MFU "
        f"{decode['mfu']:.1%}; {serving['replica_tokens_per_sec']:,.0f} tokens/s per replica, prefill included",
        f"                 where it goes: {_where(decode)}",
    ]
    if "traffic" in result:
        traffic = result["traffic"]
        lines.insert(lines.index("serving") + 1,
                     f"  traffic        {len(traffic['classes'])} classes from {traffic['source']}: means "
                     f"{traffic['mean_prompt_tokens']:,.1f} prompt + {traffic['mean_output_tokens']:,.1f} output "
                     f"tokens (priced); KV cache sized for {traffic['kv_context_tokens']:,} tokens per sequence "
                     f"(its {traffic['percentile'] * 100:.0f}th percentile)")
    if prefill["seconds"]:
        lines += [f"  prefill        {_ms(prefill['seconds'])} per prompt, MFU {prefill['mfu']:.1%}",
                  f"                 where it goes: {_where(prefill)}"]
    step = training["step"]
    lines += [
        f"  weights        {serving['weights']}",
        f"  fleet          {serving['replicas']:,} replicas = {serving['devices']:,} devices",
        f"  cost           ${serving['usd_per_day']['central']:,.0f}/day = ${serving['usd_per_query']:.5f}/query = "
        f"${serving['usd_per_million_tokens']:,.3f} per million generated tokens",
        "  band           " + "; ".join(
            f"{name} {_number(band['low'])} / {_number(band['central'])} / {_number(band['high'])}" for name, band in
            (("usd/day", serving["usd_per_day"]), ("devices", serving["devices_band"]),
             ("Wh/query", serving["wh_per_query"]),
             ("t CO2/day", {end: None if kg is None else kg / 1000
                            for end, kg in serving["kg_co2_per_day_band"].items()}))) + " (low / central / high)",
        "  tornado        " + "; ".join(
            f"{entry['input']} {_number(entry['low_usd_per_day'], '${:,.0f}')}.."
            f"{_number(entry['high_usd_per_day'], '${:,.0f}')}"
            for entry in serving["tornado"]),
        "                 Wh/query: " + "; ".join(
            f"{entry['input']} {_number(entry['low_wh_per_query'], '{:.3g}')}..{_number(entry['high_wh_per_query'], '{:.3g}')}"
            for entry in sorted(serving["tornado"], key=lambda entry: -_swing(entry, "wh_per_query"))
            if _swing(entry, "wh_per_query") > 0),
        *_operating_cost_lines(serving["operating_cost_usd_per_day"]),
        f"  energy         {serving['kwh_per_day']:,.0f} kWh/day = {serving['wh_per_query']['central']:.3f} Wh/query, "
        f"{serving['kg_co2_per_day'] / 1000:,.1f} t CO2/day",
        "",
        "training",
        f"  predicted MFU  {training['predicted_mfu']:.1%} per device (an optimizer step on each of "
        f"{training['n_devices']:,} devices: {_ms(step['step_seconds'])}; "
        f"where it goes: {_where({'seconds': step['step_seconds'], 'breakdown': step['breakdown']})})",
        f"  all-reduce     {_communication(training['communication'])}",
        f"  {training['flops']:.3e} FLOPs = {training['device_hours']:,.0f} device-hours = "
        f"{training['days']:,.1f} days on {training['n_devices']:,} devices; ${training['usd']:,.0f}, "
        f"{training['kwh'] / 1000:,.0f} MWh",
        "",
        "confidence: " + confidence["note"],
    ]
    lines += [f"  {phase:<8} {entry['error']:+.1%}  [{entry['source']}]" for phase, entry in confidence["errors"].items()]
    if "derivation" in result:
        lines += ["", *format_derivation(result["derivation"])]
    if "levers" in result:
        lines += ["", *format_levers(result["levers"])]
    lines += ["", "inputs (kind: measured, reference or assumed)"]
    width = max(len(name) for name in result["inputs"])
    lines += [f"  {name:<{width}}  {entry['kind']:<9} {entry['value']:<12} {entry['unit']:<9} {entry['source']}"
              if isinstance(entry["value"], str) else
              f"  {name:<{width}}  {entry['kind']:<9} {entry['value']:<12g} {entry['unit']:<9} {entry['source']}"
              for name, entry in result["inputs"].items()]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "scale",
        help="a large model on a fleet: training and serving cost from step times predicted on the target device",
        description="Predict the training step, prefill and decode times of a target model on a target device "
        "(its measured profile if one exists, else its reference profile: datasheet x published efficiencies), "
        "and turn them into training time and cost, and a serving fleet: the tensor-parallel degree and the largest "
        "batch meeting the latency targets and memory, tokens/s, fleet "
        "size, cost per day (a low/central/high band and a tornado), per query and per million tokens, energy. "
        "Every input is labelled measured, "
        "reference or assumed. --from a run measured here adds the predictor's own error on this device as a "
        "confidence figure; nothing measured on one device class is carried to another.",
    )
    target = parser.add_argument_group("target model (a preset, or an explicit shape)")
    target.add_argument("--model", metavar="PRESET", help=f"one of {', '.join(PRESETS)}")
    add_shape_arguments(target, "--context", "--vocab")
    parser.add_argument("--device", metavar="KEY", help="target device key of the hardware table (required unless "
                        "--scenario)")
    parser.add_argument("--scenario", metavar="NAME", choices=list(DERIVATIONS),
                        help="derive a published estimate through the planner from its traffic, model, device and "
                        f"price (one of {', '.join(DERIVATIONS)}; its other inputs are listed with their sources), "
                        "and print published against derived; other flags change one of its inputs")
    parser.add_argument("--dtype", default="bf16", help="serving and training dtype: weights, KV cache, profile (bf16)")
    parser.add_argument("--profile", dest="device_profile", type=Path, metavar="FILE",
                        help="device profile of the target device class (python -m profiling calibrate --out); "
                        "default: a measured one committed or cached, else the reference profile")
    parser.add_argument("--from", dest="sources", action="append", type=Path, default=[], metavar="PATH",
                        help="train.py run directory and/or sample.py --profile-json file; may repeat. Only the "
                        "predictor's error there is read, as a confidence figure")
    traffic = parser.add_argument_group("serving")
    traffic.add_argument("--queries-per-day", type=float, help=f"default {ServingInputs.queries_per_day:g}")
    traffic.add_argument("--tokens-per-query", type=int, help=f"generated tokens (default {ServingInputs.output_tokens})")
    traffic.add_argument("--prompt-tokens", type=int,
                         help=f"prompt tokens per query (default {ServingInputs.prompt_tokens}: LMSYS-Chat-1M's mean "
                         "user prompt, an assumption until verified; banded 0 .. 1,020)")
    traffic.add_argument("--traffic", type=Path, metavar="FILE",
                         help="a distribution instead of the two means: JSON or CSV rows of prompt_tokens, "
                         "output_tokens, share; throughput from their means, the KV cache sized for their 99th "
                         "percentile of prompt + output (docs/cost.md)")
    traffic.add_argument("--ttft-s", type=float,
                         help=f"time to first token at most this, seconds (default {ServingInputs.ttft_s:g}: {LATENCY_SOURCE})")
    traffic.add_argument("--min-user-tokens-per-sec", type=float,
                         help=f"each user's decode speed at least this, tokens/s (default "
                         f"{ServingInputs.min_user_tokens_per_sec:g}: {LATENCY_SOURCE})")
    traffic.add_argument("--weights-dtype", default="bf16", choices=list(SERVING_BYTES),
                         help="stored weights: sets memory, hence the batch, and on a reference profile the bytes each "
                         "matmul reads (int8/int4 weight-only at --dtype; fp8 at the datasheet fp8 peak where it has "
                         "one) (bf16)")
    traffic.add_argument("--kv-dtype", default="bf16", choices=list(SERVING_BYTES),
                         help="stored KV cache: sets memory, hence the batch; attention stays priced at --dtype (bf16)")
    traffic.add_argument("--peak-to-average", type=float, help="fleet sized for average × this, at least 1 (default 1.0)")
    traffic.add_argument("--devices-per-server", type=int, help="devices one tensor-parallel replica may span (8)")
    traffic.add_argument("--usable-memory-fraction", type=float, help="of device memory for weights + KV (0.9)")
    traffic.add_argument("--allreduce-latency-s", type=float,
                         help=f"fixed cost of one all-reduce inside a server, seconds (default "
                         f"{ServingInputs.allreduce_latency_s:g}, assumption)")
    train = parser.add_argument_group("training")
    train.add_argument("--train-tokens", type=float, help="training tokens (default 20 × params, Chinchilla)")
    train.add_argument("--train-devices", type=int, help="devices training together (default 1024)")
    train.add_argument("--train-micro-batch", type=int,
                       help=f"sequences of the full context per device per micro-step (default {TrainingInputs.micro_batch})")
    train.add_argument("--train-grad-accum", type=int,
                       help=f"micro-steps per optimizer update (default {TrainingInputs.grad_accum})")
    cost.add_price_arguments(parser)
    parser.add_argument("--tensor-parallel", type=int, metavar="N",
                        help="devices per replica, at most --devices-per-server (default: the planner chooses the "
                        "degree needing the fewest devices)")
    parser.add_argument("--compare", action="store_true",
                        help="also re-run the serving plan under each optimisation lever (fp8 and int8 weights, "
                        f"latency targets relaxed {RELAX:g}x, twice the tensor-parallel degree, another device class, "
                        "owned instead of rented) and print each one's change in USD per day against the baseline")
    parser.add_argument("--compare-device", metavar="KEY",
                        help="the device class of --compare's device lever (default: "
                        + ", ".join(f"{a} -> {b}" for a, b in OTHER_DEVICE.items()) + ", else h100-sxm)")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="also draw the tornado chart (cost per day, each uncertain input alone at its low and "
                        "high) as DIR/tornado.png, and with --compare the levers' changes as DIR/levers.png")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def request_from(args: argparse.Namespace) -> ScaleRequest:
    """The command line's answers as a typed request; with --scenario, the derivation's request with the flags
    given on top of it."""
    shape = {"n_layer": args.layers, "n_embd": args.width, "n_head": args.heads, "n_kv_head": args.kv_heads,
             "block_size": args.context, "vocab_size": args.vocab}
    chosen = {name: getattr(args, name) for name in (
        "model", "dtype", "device_profile", "weights_dtype", "kv_dtype", "ttft_s", "min_user_tokens_per_sec",
        "prompt_tokens", "tokens_per_query", "queries_per_day",
        "peak_to_average", "devices_per_server", "usable_memory_fraction", "allreduce_latency_s", "tensor_parallel",
        "traffic", "train_tokens", "train_devices", "train_micro_batch", "train_grad_accum")}
    if args.scenario is None:
        if args.device is None:
            raise ScaleError("name the target device: --device KEY (or derive a published case: --scenario NAME)")
        return ScaleRequest(device=args.device, shape=shape, sources=tuple(args.sources),
                            prices=cost.price_choice(args), **chosen)
    if args.device is not None or args.model is not None or any(value is not None for value in shape.values()):
        raise ScaleError(f"--scenario {args.scenario} fixes the model and the device; drop --device, --model and "
                         "the shape flags")
    base = derivation(args.scenario).request
    if args.traffic is not None:  # the file replaces the derivation's two means
        base = replace(base, prompt_tokens=None, tokens_per_query=None)
    prices = cost.price_choice(args)
    price_changes = {name: value for name, value in vars(prices).items() if value != getattr(cost.PriceChoice(), name)}
    return replace(base, sources=tuple(args.sources), prices=replace(base.prices, **price_changes),
                   **{name: value for name, value in chosen.items() if value is not None and name != "model"})


def run(args: argparse.Namespace) -> int:
    request = request_from(args)
    if args.scenario is not None:
        result, result["derivation"] = derive(args.scenario, request)
    else:
        result = extrapolate(request)
    if args.compare:
        result["levers"] = compare(request, args.compare_device)
    if args.plot is not None:
        result["plots"] = [str(write_tornado_plot(result["serving"], args.plot))]
        if args.compare:
            result["plots"].append(str(write_levers_plot(result["levers"], args.plot)))
    print(dumps_json(result, indent=2) if args.json else format_extrapolation(result))
    return 0
