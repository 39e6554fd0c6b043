"""`python -m profiling report RUN_DIR`: summarise a training run from its metrics.jsonl and config.json.

Whole-run figures are recomputed from the step lines (so a run cut short, without a summary line, still
reports), over the steps the meter did not flag as warm-up:

    tokens_per_sec = Σ tokens / Σ step_time_s
    mfu            = Σ (mfu_i · step_time_s_i) / Σ step_time_s      (= Σ model FLOPs / Σ time / peak)
    energy_j       = Σ (watts_i · step_time_s_i)                     over the steps with a power reading
    joules_per_token = energy_j / Σ tokens of those steps

`summarize_run` returns the figures as a dict; it is also what the cost page builds on.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt.errors import GptmeterError
from profiling.energy import is_estimate

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
KINDS = ("step", "eval", "summary")
STEP_FIELDS = ("step", "tokens", "step_time_s")
DEFAULT_WINDOW = 20


class RunDirError(GptmeterError, ValueError):
    """A run directory that cannot be reported on; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class RunLog:
    run_dir: Path
    config: dict[str, Any]
    steps: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any] | None  # the meter's run-end line, when the run got that far


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise RunDirError(f"cannot read {path} as text ({error}); pass a train.py run directory") from None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); {what}") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path} holds a JSON {type(value).__name__}, not an object; {what}")
    return value


def _parse_metrics(path: Path) -> tuple[list[dict], list[dict], dict | None]:
    text = _read_text(path)
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:  # torn last line: the process was killed mid-write
            lines.pop()
    steps, evals, summary = [], [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            raise RunDirError(
                f"line {number} of {path} is not a gptmeter metrics record (a JSON object with kind "
                f"{'/'.join(KINDS)}); point the report at a directory written by train.py"
            )
        if record["kind"] == "step":
            missing = [name for name in STEP_FIELDS if not isinstance(record.get(name), (int, float))]
            if missing:
                raise RunDirError(f"step record on line {number} of {path} lacks {', '.join(missing)}")
            steps.append(record)
        elif record["kind"] == "eval":
            evals.append(record)
        else:
            summary = record
    return steps, evals, summary


def load_run(run_dir: Path | str) -> RunLog:
    """Read and check a run directory; raises RunDirError with a one-line message."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"run directory {run_dir} does not exist; pass the --out-dir of a train.py run")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory; pass the --out-dir of a train.py run")
    metrics_path, config_path = run_dir / METRICS_FILE, run_dir / CONFIG_FILE
    for path in (metrics_path, config_path):
        if not path.is_file():
            raise RunDirError(f"{run_dir} has no {path.name}; is it a train.py run directory?")
    config = _read_json_object(config_path, "train.py writes it at the start of a run")
    steps, evals, summary = _parse_metrics(metrics_path)
    if not steps:
        raise RunDirError(f"{metrics_path} has no step records yet; train for at least one step")
    return RunLog(run_dir, config, steps, evals, summary)


def _sum(records: list[dict], key: str) -> float:
    return sum(record[key] for record in records)


def _time_weighted_mean(records: list[dict], key: str) -> float | None:
    """Σ value·step_time / Σ step_time over the records that have the value; None if none has it."""
    timed = [record for record in records if record.get(key) is not None]
    if not timed:
        return None
    return sum(record[key] * record["step_time_s"] for record in timed) / _sum(timed, "step_time_s")


def _throughput(records: list[dict]) -> float | None:
    seconds = _sum(records, "step_time_s")
    return _sum(records, "tokens") / seconds if seconds > 0 else None


def _energy(measured: list[dict]) -> dict[str, Any]:
    powered = [record for record in measured if record.get("watts") is not None]
    if not powered:
        return {"energy_j": None, "joules_per_token": None, "watts": None, "energy_source": None,
                "energy_is_estimate": None}
    energy_j = sum(record["watts"] * record["step_time_s"] for record in powered)
    sources = sorted({record.get("energy_source") or "unknown" for record in powered})
    return {
        "energy_j": energy_j,
        "joules_per_token": energy_j / _sum(powered, "tokens"),
        "watts": energy_j / _sum(powered, "step_time_s"),
        "energy_source": "; ".join(sources),
        "energy_is_estimate": any(is_estimate(source) or source == "unknown" for source in sources),
    }


def _first_present(key: str, *sources: dict[str, Any] | None) -> Any:
    for source in sources:
        if source and source.get(key) is not None:
            return source[key]
    return None


def summarize_run(run_dir: Path | str, window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """The run's figures as a flat dict (JSON-ready): what the terminal table shows and the cost page consumes."""
    return summarize(load_run(run_dir), window)


def summarize(run: RunLog, window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    if window <= 0:
        raise RunDirError(f"window must be a positive number of steps, got {window}")
    measured = [record for record in run.steps if not record.get("warmup", False)]
    recent = measured[-window:]
    best_eval = min(run.evals, key=lambda record: record["val_loss"], default=None)
    counted = [record for record in measured if record.get("flops_per_token") is not None]
    model_flops = sum(record["flops_per_token"] * record["tokens"] for record in counted)
    achieved_flops = model_flops / _sum(counted, "step_time_s") if counted else None
    measured_peak = _first_present("measured_peak_flops", run.summary, run.config)
    return {
        "run_dir": str(run.run_dir),
        "device": _first_present("device", run.summary, run.config),
        "dtype": _first_present("dtype", run.config, run.config.get("train")),
        "params": run.config.get("params"),
        "steps": len(run.steps),
        "last_step": run.steps[-1]["step"],
        "warmup_steps": len(run.steps) - len(measured),
        "tokens": _sum(run.steps, "tokens"),
        "measured_tokens": _sum(measured, "tokens"),
        "measured_time_s": _sum(measured, "step_time_s"),
        "elapsed_s": run.steps[-1].get("elapsed_s"),
        "tokens_per_sec": _throughput(measured) if measured else None,
        "window_steps": len(recent),
        "window_tokens_per_sec": _throughput(recent) if recent else None,
        "flops_per_token": model_flops / _sum(counted, "tokens") if counted else None,
        "achieved_flops_per_sec": achieved_flops,
        "mfu": _time_weighted_mean(measured, "mfu"),
        "window_mfu": _time_weighted_mean(recent, "mfu"),
        "hfu": _time_weighted_mean(measured, "hfu"),
        "peak_flops": _first_present("peak_flops", run.summary, run.config),
        "peak_flops_source": _first_present("peak_flops_source", run.summary, run.config),
        "peak_precision": _first_present("peak_precision", run.summary, run.config),
        "measured_peak_flops": measured_peak,
        "mfu_measured_peak": achieved_flops / measured_peak if achieved_flops and measured_peak else None,
        **_energy(measured),
        "final_train_loss": run.steps[-1].get("loss"),
        "best_val_loss": best_eval["val_loss"] if best_eval else None,
        "best_val_step": best_eval["step"] if best_eval else None,
    }


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


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="summarise a training run directory: terminal table and PNG plots",
        description="Summarise RUN_DIR/metrics.jsonl and RUN_DIR/config.json: a table in the terminal, and "
        "throughput.png, mfu.png and loss.png written into RUN_DIR.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --out-dir of a train.py run")
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW,
        help=f"steps in the rolling window for 'last N steps' figures and the plots' smoothing "
        f"(default {DEFAULT_WINDOW})",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a table")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    cost = parser.add_argument_group("cost page (an estimate: the run's measured efficiency carried to a large model)")
    cost.add_argument("--cost-device", default="h100-sxm", metavar="KEY",
                      help="target accelerator from profiling/hardware.py (python -m profiling hardware lists them)")
    cost.add_argument("--cost-model", default="gpt3-175b", metavar="PRESET", help="target model preset")
    cost.add_argument("--profile", type=Path, metavar="PROFILE_JSON",
                      help="a sample.py --profile-json file, for measured prefill MFU and decode bandwidth")
    cost.add_argument("--no-cost", action="store_true", help="leave the cost page out")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the report and write the plots; a bad run directory raises RunDirError (a ValueError)."""
    from profiling.plots import write_plots  # matplotlib loads only when plots are drawn

    run_log = load_run(args.run_dir)
    summary = summarize(run_log, args.window)
    plots = [] if args.no_plots else write_plots(run_log, args.window)
    page = None
    if not args.no_cost:
        from profiling.cost_report import cost_page

        page = cost_page(args.run_dir, args.cost_device, args.cost_model, args.profile, plots=not args.no_plots)
        plots += page.plots
        summary["cost"] = page.results
    summary["plots"] = [str(path) for path in plots]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
        if page is not None:
            print("\n" + page.text)
        if plots:
            print("plots: " + ", ".join(str(path) for path in plots))
    return 0
