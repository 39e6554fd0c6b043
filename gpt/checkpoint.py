"""Checkpoints that survive crashes: written to a temporary file, fsynced, then renamed into place.

A run directory holds `ckpt.pt` (everything needed to resume bit-exactly: weights,
optimizer, step, RNG and data-sampler states, configurations) and `meta.json` (a
human-readable summary of the same checkpoint). A crash while writing leaves the
previous `ckpt.pt` untouched, because `os.replace` swaps the name only after the new
file is completely on disk.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from gpt.errors import GptmeterError
from gpt.files import atomic_write, write_json
from gpt.rundir import holds_run

CHECKPOINT_FORMAT = "gptmeter-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "ckpt.pt"


class CheckpointError(GptmeterError, RuntimeError):
    """A checkpoint is missing, damaged or not ours; the message says what to do."""


def save_checkpoint(out_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus the format marker) to out_dir/ckpt.pt and a summary to out_dir/meta.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda handle: torch.save(payload, handle))
    summary = {key: payload[key] for key in ("format", "format_version", "step", "tokenizer", "model_config") if key in payload}
    summary["val_loss"] = payload.get("val_loss")
    write_json(out_dir / "meta.json", summary)
    return path


def checkpoint_path(out_dir_or_file: Path) -> Path:
    """Accept a run directory or a checkpoint file (a path ending in .pt)."""
    path = Path(out_dir_or_file)
    return path if path.suffix == ".pt" and not path.is_dir() else path / CHECKPOINT_NAME


def load_checkpoint(out_dir_or_file: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; CheckpointError with a remedy for every way it can fail."""
    path = checkpoint_path(out_dir_or_file)
    if not path.exists():
        overwrite = " --overwrite" if holds_run(path.parent) else ""  # a run that ended before its first checkpoint
        raise CheckpointError(
            f"no checkpoint at {path}; train one first with: python train.py --out-dir {path.parent}{overwrite}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}); "
            "restore it from a backup or retrain (a half-written file is never left under this name by gptmeter)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gptmeter checkpoint; pass the out-dir of a gptmeter training run")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this gptmeter reads "
            f"version {CHECKPOINT_VERSION}; use the gptmeter release that wrote it"
        )
    weights = payload.get("model") or {}
    bad = sum(int((~tensor.isfinite()).sum()) for tensor in weights.values() if tensor.is_floating_point())
    if bad:
        raise CheckpointError(
            f"{path} holds {bad:,} non-finite weights (a diverged run saved it); retrain with a lower --learning-rate"
        )
    return payload
