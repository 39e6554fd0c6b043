"""PNG plots of a run: throughput, MFU and loss over steps, and where a step's time goes (predicted against
measured), written next to its metrics.jsonl.

Figures are drawn with matplotlib's object API on the Agg canvas, so importing this module never
changes the pyplot backend of whoever imported it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from profiling.rundir import RunLog
from profiling.scaling import ScalingRow

WARMUP_COLOR = "0.6"


def rolling_time_weighted(records: list[dict], key: str, window: int) -> list[float]:
    """At each record, Σ value·step_time_s / Σ step_time_s over the last `window` records.

    For tokens_per_sec that is Σ tokens / Σ time, the window's true throughput; for mfu, the window's MFU.
    """
    rolling, weighted, seconds = [], 0.0, 0.0
    for i, record in enumerate(records):
        weighted += record[key] * record["step_time_s"]
        seconds += record["step_time_s"]
        if i >= window:
            old = records[i - window]
            weighted -= old[key] * old["step_time_s"]
            seconds -= old["step_time_s"]
        rolling.append(weighted / seconds)
    return rolling


def _new_axes(title: str, ylabel: str):
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _plot_per_step_and_rolling(axes, run: RunLog, key: str, scale: float, window: int, label: str) -> None:
    """Each step's value (warm-up steps in grey) and the rolling mean over measured steps."""
    steps = [record for record in run.steps if record.get(key) is not None]
    warmup = [record for record in steps if record.get("warmup", False)]
    measured = [record for record in steps if not record.get("warmup", False)]
    if warmup:
        axes.plot([r["step"] for r in warmup], [r[key] * scale for r in warmup], ".", color=WARMUP_COLOR,
                  label="warm-up steps (excluded)")
    axes.plot([r["step"] for r in measured], [r[key] * scale for r in measured], alpha=0.35, label=f"{label}, per step")
    if measured:
        rolling = rolling_time_weighted(measured, key, window)
        axes.plot([r["step"] for r in measured], [value * scale for value in rolling], linewidth=2,
                  label=f"{label}, rolling {window} steps")
    axes.legend()


def _subtitle(run: RunLog) -> str:
    device = run.summary.get("device") if run.summary else None
    return f"{run.run_dir.name} — {device or run.config.get('device') or 'device unknown'}"


def write_plots(run: RunLog, window: int) -> list[Path]:
    """Write throughput.png, mfu.png (when the log has MFU) and loss.png into the run directory; return their paths."""
    written = []

    figure, axes = _new_axes(f"Throughput — {_subtitle(run)}", "tokens/s")
    _plot_per_step_and_rolling(axes, run, "tokens_per_sec", 1.0, window, "tokens/s")
    written.append(_save(figure, run.run_dir / "throughput.png"))

    if any(record.get("mfu") is not None for record in run.steps):
        figure, axes = _new_axes(f"Model FLOPs utilisation — {_subtitle(run)}", "MFU (%)")
        _plot_per_step_and_rolling(axes, run, "mfu", 100.0, window, "MFU")
        written.append(_save(figure, run.run_dir / "mfu.png"))

    figure, axes = _new_axes(f"Loss — {_subtitle(run)}", "cross-entropy (nats/token)")
    train = [record for record in run.steps if record.get("loss") is not None]
    axes.plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.6, label="train (per step)")
    if run.evals:
        finite = [r for r in run.evals if r.get("val_loss") is not None]  # null: a non-finite loss
        axes.plot([r["step"] for r in finite], [r["val_loss"] for r in finite], "o-", label="validation")
    axes.legend()
    written.append(_save(figure, run.run_dir / "loss.png"))
    return written


def write_prediction_plot(run_dir: Path, summary: dict[str, Any]) -> Path | None:
    """prediction.png: the predicted step time stacked by category beside the measured step time; None if no
    prediction was logged."""
    prediction, measured_tps = summary["prediction"], summary["tokens_per_sec"]
    if prediction is None or not measured_tps:
        return None
    tokens_per_step = prediction["tokens_per_sec"] * prediction["step_seconds"]
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    bottom = 0.0
    for category, seconds in prediction["breakdown"].items():
        share = seconds / prediction["step_seconds"]
        axes.bar(["predicted"], [seconds * 1e3], bottom=bottom,
                 label=f"{category} {seconds * 1e3:,.2f} ms ({share:.0%})")
        bottom += seconds * 1e3
    measured_ms = tokens_per_step / measured_tps * 1e3
    axes.bar(["measured"], [measured_ms], color=WARMUP_COLOR, label=f"measured {measured_ms:,.2f} ms")
    profile = prediction["profile"]
    axes.set_ylabel("milliseconds per optimizer step")
    axes.set_title(f"Where a step's time goes — {run_dir.name}\npredicted on the {profile['kind']} profile of "
                   f"{profile['device']} ({profile['date'][:10]}), error {summary['prediction_error']:+.1%}",
                   fontsize=8)
    axes.legend(fontsize=8)
    return _save(figure, run_dir / "prediction.png")


def write_tornado_plot(serving: dict[str, Any], out_dir: Path, name: str = "tornado.png") -> Path:
    """One bar per uncertain input: cost per day (left) and Wh per query (right) with that input alone at its low
    and at its high value, around the central plan, largest effect on top (serving["tornado"], sorted by cost by
    plan.uncertainty; the right panel by its own effect). An input that moves neither figure (the grid's carbon
    intensity moves CO2 only) has a name and no bar; an end with no plan has no bar either."""
    panels = (("usd_per_day", serving["usd_per_day"]["central"], "USD per day"),
              ("wh_per_query", serving["wh_per_query"]["central"], "Wh per query"))
    figure = Figure(figsize=(12, 0.9 + 0.35 * len(serving["tornado"])), layout="constrained")
    for index, (metric, central, label) in enumerate(panels):
        def swing(entry: dict[str, Any]) -> float:
            ends = [entry[f"{end}_{metric}"] for end in ("low", "high") if entry.get(f"{end}_{metric}") is not None]
            return max(ends) - min(ends) if len(ends) == 2 else 0.0

        entries = serving["tornado"] if index == 0 else sorted(serving["tornado"], key=lambda entry: -swing(entry))
        entries = entries[::-1]  # the largest effect on top
        axes, labelled = figure.add_subplot(1, 2, index + 1), set()
        for row, entry in enumerate(entries):
            for end, color in (("low", "tab:blue"), ("high", "tab:red")):
                value = entry.get(f"{end}_{metric}")
                if value is None:  # no plan meets the targets with this input at this end
                    continue
                axes.barh(row, value - central, left=central, color=color,
                          label=None if end in labelled else f"{end} input value")
                labelled.add(end)
        axes.axvline(central, color="black", linewidth=1)
        axes.set_yticks(range(len(entries)), [entry["input"] for entry in entries])
        axes.set_xlabel(label)
        axes.set_title(f"What moves {label} (one input at a time)", fontsize=9)
        axes.grid(alpha=0.3, axis="x")
        axes.legend(fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(figure, out_dir / name)


def write_training_comparison_plot(comparison: dict[str, Any], out_dir: Path) -> Path:
    """train_compare.png: wall time and cloud cost of the same training on each device, log-scale bars
    (a refused device, whose training state does not fit, has no bar)."""
    rows = [row for row in comparison["rows"] if not row["refused"]]
    labels = [f"{row['key']}\n{row['devices']:,} x {row['profile']['kind']}" for row in rows]
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    for index, (key, unit, title) in enumerate((("days", "days", "wall time"), ("usd_cloud", "USD", "cloud cost"))):
        axes = figure.add_subplot(1, 2, index + 1)
        bars = axes.bar(labels, [row[key] for row in rows], color="tab:blue")
        axes.bar_label(bars, [f"{row[key]:,.3g}" for row in rows], fontsize=8)
        axes.set_yscale("log")
        axes.set_ylabel(f"{title} ({unit}, log scale)")
        axes.grid(alpha=0.3, axis="y")
    model = comparison["model"]
    figure.suptitle(f"Training {model['name']} on {comparison['tokens']:,.3g} tokens, per device", fontsize=10)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(figure, out_dir / "train_compare.png")


def write_levers_plot(comparison: dict[str, Any], out_dir: Path) -> Path:
    """levers.png: the change in cost per day of each optimisation lever against the baseline plan
    (levers.compare); a lever with no plan is named with its reason cut short."""
    rows = comparison["levers"][::-1]
    base = comparison["baseline"]["usd_per_day"]
    figure, axes = _new_axes(f"Cost per day of each lever against the baseline (${base:,.0f}/day)", "")
    for row, entry in enumerate(rows):
        if "error" in entry:
            axes.text(0, row, f" no plan: {entry['error'][:60]}", va="center", fontsize=7, color=WARMUP_COLOR)
            continue
        change = entry["change_usd_per_day"]
        axes.barh(row, change, color="tab:green" if change < 0 else "tab:red")
        axes.text(change, row, f" {change:+,.0f} ({entry['change_fraction']:+.0%})", va="center", fontsize=8)
    axes.axvline(0, color="black", linewidth=1)
    axes.set_yticks(range(len(rows)), [entry["lever"] for entry in rows])
    axes.set_xlabel("change in USD per day (negative: cheaper)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(figure, out_dir / "levers.png")


def write_scaling_plot(rows: list[ScalingRow], path: Path) -> Path:
    """scaling.png: tokens/s per card at each world size (bars) and the scaling efficiency against the smallest
    world size (line, right axis; 100% is perfect data-parallel scaling)."""
    figure, axes = _new_axes("Tokens/s per card against world size", "tokens/s per card")
    axes.set_xlabel("world size (processes)")
    labels = [f"{row.world_size}\n{row.mode}" for row in rows]
    bars = axes.bar(labels, [row.tokens_per_sec_per_card for row in rows], color="tab:blue")
    axes.bar_label(bars, [f"{row.tokens_per_sec_per_card:,.0f}" for row in rows], fontsize=8)
    efficiency = axes.twinx()
    efficiency.plot(labels, [100 * row.efficiency for row in rows], "o-", color="tab:red")
    efficiency.set_ylabel("scaling efficiency (%)", color="tab:red")
    efficiency.set_ylim(0, max(110, 110 * max(row.efficiency for row in rows)))
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path
