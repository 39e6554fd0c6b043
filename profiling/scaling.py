"""Scaling efficiency across runs of one workload at several world sizes: tokens/s per card against world size.

Efficiency at world size N = (tokens/s per card at N) / (tokens/s per card at the smallest world size given). With
--batch-size per card (train.py's meaning), perfect data-parallel scaling keeps tokens/s per card constant, so 100%
is perfect and the shortfall is what communication and stragglers cost. Each row also carries the share of
step time the single-card prediction leaves unexplained (profiling/rundir.py), which holds that cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpt.errors import GptmeterError


class ScalingError(GptmeterError, ValueError):
    """Runs that cannot be compared as one workload at several world sizes."""


# What must match for two runs to be the same workload per card: the model, the per-card batch, the dtype, device.
WORKLOAD_KEYS = ("params", "dtype", "device", "block_size", "batch_size", "grad_accum")


@dataclass(frozen=True)
class ScalingRow:
    run_dir: str
    world_size: int
    mode: str
    tokens_per_sec_per_card: float
    job_tokens_per_sec: float
    mfu_per_card: float | None
    efficiency: float  # tokens/s per card over the smallest world size's
    unexplained_step_fraction: float | None  # None without a prediction


def workload(summary: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run summary that define its per-card workload (WORKLOAD_KEYS)."""
    return {key: summary.get(key) for key in WORKLOAD_KEYS}


def scaling_rows(summaries: list[dict[str, Any]]) -> list[ScalingRow]:
    """One row per run, by world size, each against the smallest world size's tokens/s per card."""
    if len(summaries) < 2:
        raise ScalingError("scaling needs at least two runs; pass the run directories of one workload trained at "
                           "several world sizes (torchrun --nproc_per_node N train.py ...)")
    first = workload(summaries[0])
    for summary in summaries[1:]:
        differing = [key for key, value in workload(summary).items() if value != first[key]]
        if differing:
            raise ScalingError(f"{summary['run_dir']} differs from {summaries[0]['run_dir']} in "
                               f"{', '.join(differing)}; compare runs of one model, per-card batch, dtype and device")
    for summary in summaries:
        if not summary.get("tokens_per_sec"):
            raise ScalingError(f"{summary['run_dir']} has no measured steps after warm-up; train it longer")
    ordered = sorted(summaries, key=lambda summary: (summary["world_size"], summary["run_dir"]))
    baseline = ordered[0]["tokens_per_sec"]
    return [ScalingRow(run_dir=summary["run_dir"], world_size=summary["world_size"], mode=summary["mode"],
                       tokens_per_sec_per_card=summary["tokens_per_sec"],
                       job_tokens_per_sec=summary["tokens_per_sec"] * summary["world_size"],
                       mfu_per_card=summary["mfu"], efficiency=summary["tokens_per_sec"] / baseline,
                       unexplained_step_fraction=summary["unexplained_step_fraction"])
            for summary in ordered]
