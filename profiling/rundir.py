"""The files a measured run leaves behind, and the one reader of each.

Two formats, both written by the command lines and read by `python -m profiling`:

- a **run directory** (train.py --out-dir): `config.json` (the resolved model and training settings,
  written at the start) and `metrics.jsonl` (one JSON object per line, `kind` = step, eval or summary;
  written by `gpt.trainer.Trainer.log`, the profiler's fields merged into each step line);
- a **profile file** (sample.py --profile-json): one JSON object marked `{"gptmeter_profile": 1, ...}`
  holding the prefill and decode figures of one generation (schema in docs/cost.md).

Whole-run figures are recomputed from the step lines (so a run cut short, without a summary line, still
reports), over the steps the meter did not flag as warm-up:

    tokens_per_sec = Σ tokens / Σ step_time_s
    mfu            = Σ (mfu_i · step_time_s_i) / Σ step_time_s      (= Σ model FLOPs / Σ time / peak)
    energy_j       = Σ (watts_i · step_time_s_i)                     over the steps with a power reading
    joules_per_token = energy_j / Σ tokens of those steps
    prediction_error = predicted tokens/s (the summary line's, on this device's profile) / tokens_per_sec − 1
    unexplained_step_fraction = 1 − predicted seconds for the measured tokens / measured seconds
                              = 1 − tokens_per_sec / predicted tokens/s = prediction_error / (1 + prediction_error)

The prediction is the single-card one (no communication), so in a distributed run the unexplained share of
step time holds the collectives, the wait for slower ranks and whatever else one card alone does not do; in
a single-process run it is the ordinary prediction gap as a share of step time (negative when the step ran
faster than predicted). The wait in collectives is not timed directly: docs/profiling.md says why.

`read_measurements` turns either kind of file into labelled inputs ("measured (from PATH)") for the
economics modules: a throughput to price, and the predictor's error on the device that ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt.errors import GptmeterError
from gpt.files import write_json
from gpt.rundir import CONFIG_FILE, METRICS_FILE, newest_run
from profiling.energy import is_estimate

PROFILE_MARKER = "gptmeter_profile"  # a sample.py --profile-json file holds {"gptmeter_profile": 1, ...}
PROFILE_VERSION = 1

KINDS = ("step", "eval", "summary")
STEP_FIELDS = ("step", "tokens", "step_time_s")
DEFAULT_WINDOW = 20


class MeasurementError(GptmeterError, ValueError):
    """A run directory or profile file that cannot be read; one line naming the problem and the fix."""


class RunDirError(MeasurementError):
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
    """Read and check a run directory (or a folder of numbered runs: its newest); RunDirError in one line."""
    run_dir = newest_run(Path(run_dir))
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


def unexplained_step_fraction(tokens_per_sec: float | None, predicted_tokens_per_sec: float | None) -> float | None:
    """The share of measured step time the prediction does not account for: for the same tokens,
    1 − predicted seconds / measured seconds = 1 − measured tokens/s / predicted tokens/s."""
    if not tokens_per_sec or not predicted_tokens_per_sec:
        return None
    return 1 - tokens_per_sec / predicted_tokens_per_sec


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
    finite_evals = [record for record in run.evals if record.get("val_loss") is not None]  # null: non-finite
    best_eval = min(finite_evals, key=lambda record: record["val_loss"], default=None)
    counted = [record for record in measured if record.get("flops_per_token") is not None]
    model_flops = sum(record["flops_per_token"] * record["tokens"] for record in counted)
    achieved_flops = model_flops / _sum(counted, "step_time_s") if counted else None
    measured_peak = _first_present("measured_peak_flops", run.summary, run.config)
    tokens_per_sec = _throughput(measured) if measured else None
    return {
        "run_dir": str(run.run_dir),
        "device": _first_present("device", run.summary, run.config),
        "dtype": _first_present("dtype", run.config, run.config.get("train")),
        "params": run.config.get("params"),
        "world_size": run.config.get("world_size", 1),  # runs before torchrun support were single-process
        "mode": run.config.get("mode", "single"),
        "block_size": (run.config.get("model") or {}).get("block_size"),
        "batch_size": (run.config.get("train") or {}).get("batch_size"),  # per card
        "grad_accum": (run.config.get("train") or {}).get("grad_accum"),
        "steps": len(run.steps),
        "last_step": run.steps[-1]["step"],
        "warmup_steps": len(run.steps) - len(measured),
        "tokens": _sum(run.steps, "tokens"),
        "measured_tokens": _sum(measured, "tokens"),
        "measured_time_s": _sum(measured, "step_time_s"),
        "elapsed_s": run.steps[-1].get("elapsed_s"),
        "tokens_per_sec": tokens_per_sec,
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
        **_prediction(run.summary, tokens_per_sec),
    }


def _prediction(summary: dict[str, Any] | None, tokens_per_sec: float | None) -> dict[str, Any]:
    """The run-end line's prediction, its error against the whole-run tokens/s, or why there is none."""
    prediction = (summary or {}).get("prediction")
    if not isinstance(prediction, dict) or not prediction.get("tokens_per_sec"):
        note = (summary or {}).get("prediction_note") or "no prediction in the log (an older run, or cut short)"
        return {"predicted_tokens_per_sec": None, "prediction_error": None, "unexplained_step_fraction": None,
                "prediction": None, "prediction_note": note}
    predicted = prediction["tokens_per_sec"]
    return {"predicted_tokens_per_sec": predicted,
            "prediction_error": predicted / tokens_per_sec - 1 if tokens_per_sec else None,
            "unexplained_step_fraction": unexplained_step_fraction(tokens_per_sec, predicted),
            "prediction": prediction, "prediction_note": None}


# --------------------------------------------------------------------------- profile files


def write_profile(path: Path, profile: dict[str, Any]) -> None:
    """Write a generation's figures as a profile file (the marker is added here, once)."""
    write_json(path, {PROFILE_MARKER: PROFILE_VERSION, **profile})


def read_profile(path: Path) -> dict[str, Any]:
    """A profile file's object; MeasurementError if it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MeasurementError(f"cannot read {path} as JSON ({error}); pass a sample.py --profile-json file") from None
    if not isinstance(data, dict) or data.get(PROFILE_MARKER) != PROFILE_VERSION:
        raise MeasurementError(
            f"{path} is not a gptmeter profile (no \"{PROFILE_MARKER}\": {PROFILE_VERSION}); "
            "write one with: python sample.py --profile-json PATH"
        )
    return data


# --------------------------------------------------------------------------- measured inputs


@dataclass(frozen=True)
class Input:
    value: float
    source: str  # "measured (from PATH)", "assumed (default)", "assumed (--flag)", "hardware table: ..."


@dataclass
class Measurements:
    """What `--from` files measured: a throughput to price, and the predictor's own error on that device."""

    tokens_per_sec: Input | None = None  # training tokens/s of a run, or decode tokens/s of a profile
    device: str | None = None
    prediction_errors: dict[str, Input] = field(default_factory=dict)  # "training"/"prefill"/"decode" -> error


def _error_input(error: Any, what: str, path: Path, device: str | None) -> Input | None:
    if error is None:
        return None
    if not isinstance(error, (int, float)):
        raise MeasurementError(f"{path}: {what} prediction error must be a number, got {error!r}")
    return Input(float(error), f"measured (from {path}): {what} predicted / measured − 1 on {device or 'its device'}")


def _read_run_dir(path: Path, found: Measurements) -> None:
    summary = summarize_run(path)
    if summary.get("tokens_per_sec"):
        found.tokens_per_sec = Input(summary["tokens_per_sec"], f"measured (from {path}), training tokens/s")
    found.device = found.device or summary.get("device")
    error = _error_input(summary.get("prediction_error"), "training", path, summary.get("device"))
    if error is not None:
        found.prediction_errors["training"] = error


def _read_profile(path: Path, found: Measurements) -> None:
    data = read_profile(path)
    if data.get("decode_tokens_per_sec"):
        found.tokens_per_sec = Input(float(data["decode_tokens_per_sec"]), f"measured (from {path}), decode tokens/s")
    found.device = data.get("device") or found.device
    for phase in ("prefill", "decode"):
        error = _error_input(data.get(f"{phase}_prediction_error"), phase, path, data.get("device"))
        if error is not None:
            found.prediction_errors[phase] = error


def read_measurements(paths: list[Path]) -> Measurements:
    """Throughput and the predictor's error from train.py run directories and sample.py profile files (later
    paths win)."""
    found = Measurements()
    for path in map(Path, paths):
        if path.is_dir():
            _read_run_dir(path, found)
        elif path.is_file():
            _read_profile(path, found)
        else:
            raise MeasurementError(f"{path} does not exist; pass a train.py --out-dir or a sample.py --profile-json file")
    return found
