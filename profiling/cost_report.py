"""The cost page of `python -m profiling report`: a large model at scale, beside the run that checked the predictor.

`cost_page(run_dir, device_key)` predicts a target model on a target device with `scale.py` (the run, and a
profile file if given, contribute only the predictor's error on their device, as a confidence figure), and
returns a terminal table plus three PNG plots written into the run directory:

    cost_breakdown.png     cost per day of the target serving fleet, rented (one all-in cloud price) beside
                           owned (hardware, energy, operations): scale's operating_cost_usd_per_day
    devices_vs_traffic.png devices needed against queries per day
    cost_vs_model_size.png cost per million generated tokens for the GPT-2 sizes and GPT-3 175B
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from profiling import scale
from profiling.scale_cli import format_extrapolation

MODEL_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-175b")
TRAFFIC_QUERIES_PER_DAY = (1e5, 1e6, 1e7, 1e8, 1e9)


@dataclass(frozen=True)
class CostPage:
    text: str
    plots: list[Path]
    results: dict[str, Any]


def cost_page(run_dir: Path, device_key: str = "h100-sxm", model: str = "gpt3-175b",
              profile: Path | None = None, plots: bool = True) -> CostPage:
    """Extrapolate the run in `run_dir` (and optional sample.py profile) to `model` on `device_key`."""
    sources = (Path(run_dir),) + ((Path(profile),) if profile else ())
    request = scale.ScaleRequest(device=device_key, model=model, sources=sources)
    headline = scale.extrapolate(request)
    traffic = [scale.extrapolate(replace(request, queries_per_day=q))["serving"]["devices"]
               for q in TRAFFIC_QUERIES_PER_DAY]
    by_size = {name: scale.extrapolate(replace(request, model=name))["serving"]["usd_per_million_tokens"]
               for name in MODEL_SIZES}
    sides = headline["serving"]["operating_cost_usd_per_day"]  # the same fleet rented and owned
    pricing = {side["basis"]: {"rental" if side["basis"] == "cloud" else part: side[part]
                               for part in ("hardware", "energy", "operations") if side[part]}
               for side in (sides["rented"], sides["owned"]) if "error" not in side}
    results = {"headline": headline, "devices_vs_queries_per_day": dict(zip(TRAFFIC_QUERIES_PER_DAY, traffic)),
               "usd_per_day_by_pricing": pricing,
               "usd_per_million_tokens_by_model": by_size}
    written = _write_plots(Path(run_dir), results) if plots else []
    return CostPage(_table(results), written, results)


def _table(results: dict[str, Any]) -> str:
    lines = ["cost at scale (estimate; inputs and their sources below)", format_extrapolation(
        results["headline"]), "", "devices needed vs queries per day"]
    lines += [f"  {queries:>12,.0f}  {devices:>8,}" for queries, devices in results["devices_vs_queries_per_day"].items()]
    lines.append("serving cost per day, rented vs owned")
    for basis, breakdown in results["usd_per_day_by_pricing"].items():
        parts = ", ".join(f"{part} ${usd:,.0f}" for part, usd in breakdown.items())
        lines.append(f"  {basis:<6} ${sum(breakdown.values()):>14,.0f}  ({parts})")
    lines.append("cost per million generated tokens vs model size")
    lines += [f"  {name:<12}  ${usd:,.4f}" for name, usd in results["usd_per_million_tokens_by_model"].items()]
    return "\n".join(lines)


def _write_plots(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    headline = results["headline"]
    subtitle = f"{headline['model']['name']} on {headline['device']['name']} (estimate)"
    written = []

    figure, axes = pyplot.subplots(figsize=(6, 4))
    labels = {"cloud": "rented (cloud price)", "tco": "owned (total cost of ownership)"}
    for basis, breakdown in results["usd_per_day_by_pricing"].items():
        bottom = 0.0
        for part, usd in breakdown.items():
            axes.bar([labels[basis]], [usd], bottom=bottom, label=f"{part} ${usd:,.0f}")
            bottom += usd
    axes.set_ylabel("USD per day")
    axes.set_title(f"cost per day, {subtitle}", fontsize=9)
    axes.legend()
    written.append(_save(figure, run_dir / "cost_breakdown.png"))

    figure, axes = pyplot.subplots(figsize=(6, 4))
    traffic = results["devices_vs_queries_per_day"]
    axes.loglog(list(traffic), list(traffic.values()), marker="o")
    axes.set_xlabel("queries per day")
    axes.set_ylabel("devices")
    axes.set_title(f"devices needed, {subtitle}", fontsize=9)
    written.append(_save(figure, run_dir / "devices_vs_traffic.png"))

    figure, axes = pyplot.subplots(figsize=(6, 4))
    sizes = results["usd_per_million_tokens_by_model"]
    axes.bar(list(sizes), list(sizes.values()))
    axes.set_yscale("log")
    axes.set_ylabel("USD per million generated tokens")
    axes.set_title(f"cost per million tokens on {headline['device']['name']} (estimate)", fontsize=9)
    written.append(_save(figure, run_dir / "cost_vs_model_size.png"))
    return written


def _save(figure, path: Path) -> Path:
    from matplotlib import pyplot

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path

