"""`python -m profiling report PATH`: a training run's figures as a table, PNG plots and a cost page; or, given
a file written by `python -m profiling scale --json`, its cost band and tornado (table and tornado chart).

The run's figures are computed by `profiling.rundir.summarize` (the run directory's one reader);
this module lays them out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from gpt.errors import GptmeterError
from gpt.files import dumps_json
from profiling.rundir import DEFAULT_WINDOW, load_run, summarize
from profiling.scaling import ScalingRow, scaling_rows


# --------------------------------------------------------------------------- terminal table


def _number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _flop_rate_text(flops_per_sec: float) -> str:
    if flops_per_sec >= 1e12:
        return f"{flops_per_sec / 1e12:,.1f} TFLOP/s"
    return f"{flops_per_sec / 1e9:,.1f} GFLOP/s"


def _energy_text(joules: float) -> str:
    return f"{joules / 1e3:,.2f} kJ ({joules / 3600:,.3f} Wh)" if joules >= 1e3 else f"{joules:,.2f} J"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a two-column table for the terminal."""
    peak = summary["peak_flops"]
    peak_text = "n/a" if not peak else f"{_flop_rate_text(peak)} ({summary['peak_flops_source'] or 'source unknown'})"
    of_peak = f"of the {summary['peak_precision']} peak" if summary["peak_precision"] else "model FLOPs / peak"
    rows = [
        ("run", summary["run_dir"]),
        ("device", f"{summary['device'] or 'unknown'} ({summary['dtype'] or 'dtype unknown'})"),
        ("steps", f"{summary['steps']:,} (last step {summary['last_step']:,}; "
                  f"{summary['warmup_steps']} warm-up steps left out of the figures below)"),
        ("tokens", f"{summary['tokens']:,} ({summary['measured_tokens']:,} measured)"),
        ("tokens/s, whole run", _number(summary["tokens_per_sec"])),
        (f"tokens/s, last {summary['window_steps']} steps", _number(summary["window_tokens_per_sec"])),
        ("model FLOPs per token", _number(summary["flops_per_token"])),
        ("peak FLOP/s", peak_text),
        (f"MFU ({of_peak})", _percent(summary["mfu"])),
        (f"MFU, last {summary['window_steps']} steps", _percent(summary["window_mfu"])),
    ]
    if summary["measured_peak_flops"] and summary["measured_peak_flops"] != peak:
        measured_label = f"MFU (measured peak {_flop_rate_text(summary['measured_peak_flops'])})"
        rows.append((measured_label, _percent(summary["mfu_measured_peak"])))
    rows.append(("HFU (executed FLOPs / peak)", _percent(summary["hfu"])))
    rows += _prediction_rows(summary)
    if summary["world_size"] > 1:
        rows += _distributed_rows(summary)
    if summary["energy_j"] is None:
        rows.append(("energy", "n/a (no power readings in the log)"))
    else:
        label = "ESTIMATE, not measured" if summary["energy_is_estimate"] else "measured"
        source = f"{label}: {summary['energy_source']}"
        rows += [
            ("energy", f"{_energy_text(summary['energy_j'])} at {summary['watts']:,.1f} W mean"),
            ("joules per token", f"{summary['joules_per_token']:.4g} J"),
            ("energy source", source),
        ]
    best = "n/a" if summary["best_val_loss"] is None else (
        f"{summary['best_val_loss']:.4f} at step {summary['best_val_step']:,}"
    )
    rows += [("final train loss", _number(summary["final_train_loss"], 4)), ("best val loss", best)]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _prediction_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Predicted against measured tokens/s, and the predicted step split into where its time goes."""
    prediction = summary["prediction"]
    if prediction is None:
        return [("tokens/s, predicted", summary["prediction_note"])]
    profile = prediction["profile"]
    error = "n/a" if summary["prediction_error"] is None else f"{summary['prediction_error']:+.1%}"
    rows = [("tokens/s, predicted", f"{_number(summary['predicted_tokens_per_sec'])} (error {error} against the "
                                    f"whole run; {profile['kind']} profile of {profile['device']}, {profile['date']})")]
    step = prediction["step_seconds"]
    rows += [(f"  predicted {category}", f"{seconds * 1e3:,.3f} ms ({seconds / step:.1%})")
             for category, seconds in prediction["breakdown"].items()]
    return rows


def _distributed_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """What a distributed step spends beyond one card's work: the share of step time the single-card prediction
    leaves unexplained (communication, waiting for slower ranks); n/a without a prediction."""
    return [("world size", f"{summary['world_size']} ({summary['mode']}); figures above are per card"),
            ("step time unexplained by one card's prediction", _percent(summary["unexplained_step_fraction"]))]


# --------------------------------------------------------------------------- a scale --json file: its tornado


class ScaleResultError(GptmeterError, ValueError):
    """A file given to report that is neither a run directory nor a `scale --json` output."""


def read_scale_result(path: Path) -> dict[str, Any]:
    """The `scale --json` object in `path`, checked to carry the band and the tornado."""
    def refuse(why: str) -> ScaleResultError:
        return ScaleResultError(f"{path} is a file, not a run directory, and not a `python -m profiling scale "
                                f"--json` output ({why}); pass a train.py --out-dir or such a file")
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise refuse(f"cannot read it: {error}") from None
    except json.JSONDecodeError as error:
        raise refuse(f"not JSON: {error.msg} at line {error.lineno}") from None
    serving = result.get("serving") if isinstance(result, dict) else None
    if not isinstance(serving, dict) or not isinstance(serving.get("tornado"), list) or \
            not isinstance(serving.get("usd_per_day"), dict):
        raise refuse("no serving.tornado and serving.usd_per_day")
    return result


def _usd(value: float | None) -> str:
    return "no plan" if value is None else f"${value:,.0f}"


def _energy_band(serving: dict[str, Any]) -> list[str]:
    """The Wh-per-query band line, where the scale file has one."""
    band = serving.get("wh_per_query")
    if not isinstance(band, dict):
        return []
    cells = ["no plan" if band[end] is None else f"{band[end]:.3g}" for end in ("low", "central", "high")]
    return [f"Wh per query  {cells[0]} low / {cells[1]} central / {cells[2]} high"]


def format_tornado(result: dict[str, Any], path: Path) -> str:
    """The band and one line per input: cost per day with that input alone at its low and at its high value."""
    serving, band = result["serving"], result["serving"]["usd_per_day"]
    model, device = result.get("model", {}), result.get("device", {})
    rows = [("input", "low value: USD/day", "high value: USD/day", "Wh/query low..high", "swing")]
    for entry in serving["tornado"]:
        ends = [value for value in (entry["low_usd_per_day"], entry["high_usd_per_day"]) if value is not None]
        energy = [entry.get(f"{end}_wh_per_query") for end in ("low", "high")]  # absent in older scale files
        rows.append((entry["input"], f"{entry['low']:g}: {_usd(entry['low_usd_per_day'])}",
                     f"{entry['high']:g}: {_usd(entry['high_usd_per_day'])}",
                     "..".join("n/a" if wh is None else f"{wh:.3g}" for wh in energy),
                     _usd(max(ends) - min(ends)) if len(ends) == 2 else "n/a"))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return "\n".join([
        f"what moves cost per day: {model.get('name', 'model')} on {device.get('name', 'device')} (from {path})",
        f"cost per day  {_usd(band['low'])} low / {_usd(band['central'])} central / {_usd(band['high'])} high",
        *_energy_band(serving),
        "", *("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows),
    ])


def report_scale_result(path: Path, plots: bool, as_json: bool) -> None:
    """Print a `scale --json` file's tornado and draw it as <file stem>-tornado.png beside the file."""
    from profiling.plots import write_tornado_plot

    result = read_scale_result(path)
    drawn = [str(write_tornado_plot(result["serving"], path.parent, f"{path.stem}-tornado.png"))] if plots else []
    if as_json:
        print(dumps_json({"source": str(path), "usd_per_day": result["serving"]["usd_per_day"],
                          "tornado": result["serving"]["tornado"], "plots": drawn}, indent=2))
    else:
        print(format_tornado(result, path) + ("\nplots: " + ", ".join(drawn) if drawn else ""))


# --------------------------------------------------------------------------- several runs: scaling


def format_scaling(rows: list[ScalingRow]) -> str:
    """One line per run: world size, mode, tokens/s per card and for the job, MFU per card, efficiency, and the
    share of step time the single-card prediction leaves unexplained."""
    table = [("world size", "mode", "tokens/s per card", "tokens/s, job", "MFU per card", "efficiency",
              "unexplained", "run")]
    table += [(str(row.world_size), row.mode, _number(row.tokens_per_sec_per_card), _number(row.job_tokens_per_sec),
               _percent(row.mfu_per_card), f"{row.efficiency:.1%}",
               _percent(row.unexplained_step_fraction), row.run_dir) for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    return "\n".join(["scaling: tokens/s per card against the smallest world size (100% = perfect scaling); "
                      "unexplained: the share of step time one card's prediction does not account for", "",
                      *("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                        for line in table)])


def report_scaling(run_dirs: list[Path], window: int, plots: bool, as_json: bool) -> None:
    """Several runs of one workload at different world sizes: the scaling table, and scaling.png in the folder
    that holds them all."""
    from profiling.plots import write_scaling_plot

    summaries = [summarize(load_run(run_dir), window) for run_dir in run_dirs]
    rows = scaling_rows(summaries)
    folder = Path(os.path.commonpath([Path(row.run_dir).resolve() for row in rows]))
    drawn = [str(write_scaling_plot(rows, folder / "scaling.png"))] if plots else []
    if as_json:
        print(dumps_json({"scaling": [dataclasses.asdict(row) for row in rows], "plots": drawn}, indent=2))
    else:
        print(format_scaling(rows) + ("\nplots: " + ", ".join(drawn) if drawn else ""))


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="summarise a training run directory (table and PNG plots), or a scale --json file (its tornado)",
        description="Summarise RUN_DIR/metrics.jsonl and RUN_DIR/config.json: a table in the terminal, and "
        "throughput.png, mfu.png and loss.png written into RUN_DIR. Given instead a FILE written by "
        "python -m profiling scale --json, print its cost-per-day band and tornado (each uncertain input alone at "
        "its low and high value) and draw the tornado chart as <FILE stem>-tornado.png beside it. Given several "
        "run directories of one workload at different world sizes, print tokens/s and MFU per card, tokens/s for "
        "the job and the scaling efficiency against the smallest world size, and draw scaling.png.",
    )
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR|FILE",
                        help="the --out-dir of a train.py run, a folder of numbered runs such as out/tiny (its "
                        "newest), or a file written by python -m profiling scale --json; several run directories "
                        "of one workload at different world sizes (torchrun) give the scaling table and "
                        "scaling.png (tokens/s per card against world size) in the folder holding them all")
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW,
        help=f"steps in the rolling window for 'last N steps' figures and the plots' smoothing "
        f"(default {DEFAULT_WINDOW})",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a table")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    cost = parser.add_argument_group("cost page (an estimate: a large model's step times predicted on the target "
                                     "device; the run adds the predictor's error here as a confidence figure)")
    cost.add_argument("--cost-device", default="h100-sxm", metavar="KEY",
                      help="target accelerator from profiling/hardware.py (python -m profiling hardware lists them)")
    cost.add_argument("--cost-model", default="gpt3-175b", metavar="PRESET", help="target model preset")
    cost.add_argument("--profile", type=Path, metavar="PROFILE_JSON",
                      help="a sample.py --profile-json file: its prefill and decode prediction errors join the "
                      "confidence figures")
    cost.add_argument("--no-cost", action="store_true", help="leave the cost page out")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the report and write the plots; a bad run directory raises RunDirError (a GptmeterError)."""
    from profiling.plots import write_plots, write_prediction_plot  # matplotlib loads only when plots are drawn

    if len(args.run_dirs) > 1:
        report_scaling(args.run_dirs, args.window, plots=not args.no_plots, as_json=args.json)
        return 0
    run_dir = args.run_dirs[0]
    if run_dir.is_file():
        report_scale_result(run_dir, plots=not args.no_plots, as_json=args.json)
        return 0
    run_log = load_run(run_dir)
    summary = summarize(run_log, args.window)
    plots = [] if args.no_plots else write_plots(run_log, args.window)
    if not args.no_plots and (breakdown := write_prediction_plot(run_log.run_dir, summary)) is not None:
        plots.append(breakdown)
    page = None
    if not args.no_cost:
        from profiling.cost_report import cost_page

        page = cost_page(run_log.run_dir, args.cost_device, args.cost_model, args.profile, plots=not args.no_plots)
        plots += page.plots
        summary["cost"] = page.results
    summary["plots"] = [str(path) for path in plots]
    if args.json:
        print(dumps_json(summary, indent=2))
    else:
        print(format_summary(summary))
        if page is not None:
            print("\n" + page.text)
        if plots:
            print("plots: " + ", ".join(str(path) for path in plots))
    return 0
