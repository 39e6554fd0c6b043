"""Checkpoints that survive crashes: written to a temporary file or folder, fsynced, then renamed into place.

A run directory holds `ckpt.pt` (everything needed to resume bit-exactly: weights,
optimizer, step, RNG and data-sampler states, configurations) and `meta.json` (a
human-readable summary of the same checkpoint). A crash while writing leaves the
previous `ckpt.pt` untouched, because `os.replace` swaps the name only after the new
file is completely on disk.

An FSDP run (`--fsdp`) writes `ckpt.dcp/` instead, with `torch.distributed.checkpoint` (DCP):
every rank writes its own shards of the weights and optimizer state, `.metadata` maps each
tensor's slices to files, and `meta.json` inside holds everything that is not a tensor. DCP
reshards on load, so a checkpoint written by N ranks resumes on M. All ranks write into
`ckpt.dcp.tmp/`; rank 0 then adds meta.json, and swaps the folders with two renames
(`ckpt.dcp` -> `ckpt.dcp.old`, `ckpt.dcp.tmp` -> `ckpt.dcp`) before deleting the old one. A
save killed before the second rename leaves `ckpt.dcp.old`, which readers then take.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata

from gpt import distributed
from gpt.errors import GptmeterError
from gpt.config import GPTConfig
from gpt.files import atomic_write, fsync_directory, write_json
from gpt.model import GPT
from gpt.rundir import SHARDED_CHECKPOINT_NAME, holds_run, sharded_checkpoint

CHECKPOINT_FORMAT = "gptmeter-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "ckpt.pt"
SUMMARY_KEYS = ("format", "format_version", "step", "tokenizer", "model_config", "world_size", "mode")


class CheckpointError(GptmeterError, RuntimeError):
    """A checkpoint is missing, damaged or not ours; the message says what to do."""


def save_checkpoint(out_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus the format marker) to out_dir/ckpt.pt and a summary to out_dir/meta.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda handle: torch.save(payload, handle))
    _write_summary(out_dir, payload)
    return path


def _write_summary(out_dir: Path, payload: dict[str, Any]) -> None:
    summary = {key: payload[key] for key in SUMMARY_KEYS if key in payload}
    summary["val_loss"] = payload.get("val_loss")
    write_json(out_dir / "meta.json", summary)


def save_sharded_checkpoint(out_dir: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """Write out_dir/ckpt.dcp with DCP: `tensors` (sharded or whole) and `meta` (JSON). Every rank must call it."""
    final = Path(out_dir) / SHARDED_CHECKPOINT_NAME
    staging, previous = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    if distributed.is_main():  # leftovers of a killed save
        shutil.rmtree(staging, ignore_errors=True)
        if final.is_dir():
            shutil.rmtree(previous, ignore_errors=True)
    distributed.barrier()
    dcp.save(tensors, checkpoint_id=staging)  # each rank fsyncs its own files; returns once all have written
    if distributed.is_main():
        payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **meta}
        write_json(staging / "meta.json", payload)  # fsyncs the file and the folder
        if final.is_dir():
            os.replace(final, previous)
        os.replace(staging, final)
        fsync_directory(final.parent)
        shutil.rmtree(previous, ignore_errors=True)
        _write_summary(final.parent, payload)
    distributed.barrier()  # no rank leaves (and perhaps exits) before the checkpoint is in place
    return final


class _IndexUnpickler(pickle.Unpickler):
    """DCP pickles its `.metadata` index; this reads it allowing only the plain records an index is made of."""

    RECORD_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
    ALLOWED = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath")}

    def find_class(self, module: str, name: str) -> Any:
        if module in self.RECORD_MODULES or module == "torch" or (module, name) in self.ALLOWED:  # imported already
            found = super().find_class(module, name)
            record = module in self.RECORD_MODULES and isinstance(found, type)
            if record or isinstance(found, torch.dtype) or (module, name) in self.ALLOWED:
                return found
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a checkpoint index")


class _IndexReader(FileSystemReader):
    """DCP's file reader, reading the index without unpickling arbitrary objects, and refusing an index that
    lists non-tensor entries (DCP would unpickle those with torch.load(weights_only=False); ours have none)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        folder = Path(self.path)
        try:
            with open(folder / ".metadata", "rb") as handle:
                metadata = _IndexUnpickler(handle).load()
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as error:
            raise CheckpointError(f"{folder}/.metadata is unreadable or not a checkpoint index ({error}); restore "
                                  "the run from a backup or retrain") from None
        entries = getattr(metadata, "state_dict_metadata", None)
        tensors_only = isinstance(metadata, Metadata) and all(
            isinstance(entry, TensorStorageMetadata) for entry in entries.values())
        if not tensors_only:
            raise CheckpointError(f"{folder}/.metadata lists entries other than tensors, which gptmeter does not "
                                  "write; pass the out-dir of a gptmeter --fsdp run")
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def load_sharded_tensors(folder: Path, tensors: dict[str, Any], alone: bool = False) -> None:
    """Fill `tensors` (allocated, sharded or whole, the same keys on every rank) in place from a DCP checkpoint.

    `alone`: this process reads by itself, whether or not a process group exists.
    """
    try:
        dcp.load(tensors, storage_reader=_IndexReader(folder), no_dist=alone)
    except CheckpointException as error:
        raise CheckpointError(f"cannot read the sharded checkpoint {folder} ({str(error).splitlines()[0]}); "
                              "restore it from a backup or retrain") from None


def _read_sharded(folder: Path, weights: bool) -> dict[str, Any]:
    """A DCP checkpoint as a ckpt.pt-like payload, in one process: meta.json, and whole weights if asked."""
    try:
        payload = json.loads((folder / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{folder / 'meta.json'} is unreadable ({type(error).__name__}); restore the run "
                              "from a backup or retrain") from None
    if weights and isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        entries = _IndexReader(folder).read_metadata().state_dict_metadata
        shapes = {key.removeprefix("model."): tuple(entry.size) for key, entry in entries.items()
                  if key.startswith("model.")}
        try:
            with torch.device("meta"):  # the shapes the saved config implies, checked before anything is allocated
                expected = {key: tuple(tensor.shape) for key, tensor in
                            GPT(GPTConfig(**payload["model_config"])).state_dict().items()}
        except (KeyError, TypeError):
            expected = None
        if shapes != expected:
            raise CheckpointError(f"{folder} holds weights whose names or shapes differ from its own model "
                                  "configuration (meta.json); restore the run from a backup or retrain")
        model = {key.removeprefix("model."): torch.empty(entry.size, dtype=entry.properties.dtype)
                 for key, entry in entries.items() if key.startswith("model.")}
        with warnings.catch_warnings():  # DCP warns that it reads in one process, which is the point here
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            load_sharded_tensors(folder, {"model": model}, alone=True)
        payload["model"] = model
    return payload


def checkpoint_path(out_dir_or_file: Path) -> Path:
    """Accept a run directory or a checkpoint file (a path ending in .pt)."""
    path = Path(out_dir_or_file)
    return path if path.suffix == ".pt" and not path.is_dir() else path / CHECKPOINT_NAME


def load_checkpoint(out_dir_or_file: Path, map_location: str | torch.device = "cpu",
                    weights: bool = True) -> dict[str, Any]:
    """Read and validate a checkpoint; CheckpointError with a remedy for every way it can fail.

    A run directory may hold ckpt.pt or an FSDP run's ckpt.dcp/; the latter is read in this one process
    into the same payload, whole weights under "model" (none when `weights` is False), no optimizer state.
    """
    path = checkpoint_path(out_dir_or_file)
    sharded = None if path.exists() else sharded_checkpoint(path.parent)
    if sharded is not None:
        path, payload = sharded, _read_sharded(sharded, weights)
    elif not path.exists():
        overwrite = " --overwrite" if holds_run(path.parent) else ""  # a run that ended before its first checkpoint
        raise CheckpointError(
            f"no checkpoint at {path}; train one first with: python train.py --out-dir {path.parent}{overwrite}")
    else:
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
    model = payload.get("model") or {}
    bad = sum(int((~tensor.isfinite()).sum()) for tensor in model.values() if tensor.is_floating_point())
    if bad:
        raise CheckpointError(
            f"{path} holds {bad:,} non-finite weights (a diverged run saved it); retrain with a lower --learning-rate"
        )
    return payload
