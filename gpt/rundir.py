"""Run directories are owned by one run: choose, claim and lock the folder a training run writes into.

- The default folder is numbered per preset (`out/tiny/run-001`, `run-002`, ...), so running the
  same command twice starts a second run beside the first; readers given `out/tiny` take the newest.
- An explicit folder that already holds a run is refused unless the caller resumes it, or
  overwrites it: the old files are then moved aside to `DIR.old-<timestamp>`, never deleted.
- While a run writes, it holds an exclusive `fcntl` lock on `DIR/.lock`. The kernel drops the lock
  when the process exits, however it exits, so a killed run never leaves a stale lock behind.
- Temporary files of a save that was killed halfway (gpt.files.atomic_write's `NAME.<pid>.tmp`) are
  removed when the next run claims the folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

from gpt.errors import GptmeterError
from gpt.files import writable_folder

LOCK_NAME = ".lock"
CONFIG_FILE = "config.json"  # the resolved configuration, written when the run starts (Trainer.write_config)
METRICS_FILE = "metrics.jsonl"  # one JSON object per step, evaluation and run end (Trainer.log)
SHARDED_CHECKPOINT_NAME = "ckpt.dcp"  # an FSDP run's checkpoint folder (gpt/checkpoint.py)
RUN_FILES = ("ckpt.pt", "meta.json", CONFIG_FILE, METRICS_FILE, SHARDED_CHECKPOINT_NAME)  # any marks a run
RUN_PREFIX = "run-"
_NUMBERED = re.compile(rf"{RUN_PREFIX}(\d+)")
_TEMPORARY = re.compile(r".+\.\d+\.tmp")


class OutDirError(GptmeterError, ValueError):
    """A run directory cannot be used as asked; the message names the flag that resolves it."""


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def sharded_checkpoint(folder: Path) -> Path | None:
    """The run's DCP checkpoint folder: ckpt.dcp, else ckpt.dcp.old (a save cut between its renames), else None."""
    final = Path(folder) / SHARDED_CHECKPOINT_NAME
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / "meta.json").is_file():
            return candidate
    return None


def has_checkpoint(folder: Path) -> bool:
    """ckpt.pt, or an FSDP run's checkpoint folder."""
    return (folder / RUN_FILES[0]).is_file() or sharded_checkpoint(folder) is not None


def numbered_runs(folder: Path) -> list[Path]:
    """The `run-N` folders directly under `folder`, oldest (lowest N) first."""
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir()
             if path.is_dir() and (match := _NUMBERED.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


def newest_run(folder: Path) -> Path:
    """What a reader given `folder` should read: its newest run-N that holds a run, else the folder itself.

    Numbered runs win over run files directly in `folder`: those are an older run of the layout before
    numbered folders (out/tiny itself), and the numbered ones were written after it.
    """
    folder = Path(folder)
    runs = [path for path in numbered_runs(folder) if holds_run(path)]
    return runs[-1] if runs else folder


def new_numbered_run(parent: Path) -> Path:
    """Create and return the next `run-N` folder under `parent`; mkdir claims a number even against a racing run."""
    parent = writable_folder(parent, "--out-dir")
    taken = numbered_runs(parent)
    number = int(_NUMBERED.fullmatch(taken[-1].name).group(1)) + 1 if taken else 1
    while True:
        folder = parent / f"{RUN_PREFIX}{number:03d}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
        except OSError as error:
            raise OutDirError(f"cannot create run directory {folder} ({error.strerror}); pass a writable --out-dir") from None


class RunLock:
    """An exclusive lock on a run directory, held from `acquire` until `release` or the end of the process."""

    def __init__(self, folder: Path, created: bool = False) -> None:
        self.folder = Path(folder)
        self.created = created  # a new numbered folder: removed again on release if the run wrote nothing
        self._descriptor: int | None = None

    def acquire(self) -> "RunLock":
        path = self.folder / LOCK_NAME
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise OutDirError(
                f"another process (pid {holder}) is writing the run in {self.folder}; wait for it to finish "
                "or pass a different --out-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        if self._descriptor is None:
            return
        if self.created and [path.name for path in self.folder.iterdir()] == [LOCK_NAME]:
            (self.folder / LOCK_NAME).unlink()  # a run that failed before writing leaves no empty folder behind
            self.folder.rmdir()
        os.close(self._descriptor)  # closing the descriptor drops the flock
        self._descriptor = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete `NAME.<pid>.tmp` files a killed save left behind; call only while holding the folder's lock."""
    stale = [path for path in folder.iterdir() if path.is_file() and _TEMPORARY.fullmatch(path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _move_aside(folder: Path) -> Path:
    """Move every entry of `folder` except the lock into a new sibling `folder.old-<timestamp>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.old-{stamp}")
    suffix = 1
    while aside.exists():
        suffix += 1
        aside = folder.with_name(f"{folder.name}.old-{stamp}-{suffix}")
    aside.mkdir()
    for entry in folder.iterdir():
        if entry.name != LOCK_NAME:
            entry.rename(aside / entry.name)
    return aside


def claim_run_dir(out_dir: Path | None, default_parent: Path, resume: bool, overwrite: bool) -> tuple[RunLock, str]:
    """Pick, check and lock the folder a training run writes into; returns the held lock and a note for the user.

    out_dir None means the default: a new numbered run under `default_parent`, or with `resume`
    its newest run. The lock is held on return; the caller releases it when the run ends.
    """
    if resume and overwrite:
        raise OutDirError("--resume continues a run and --overwrite starts over; pass only one of them")
    if out_dir is None:
        if overwrite:
            raise OutDirError(f"--overwrite needs --out-dir: without it every run gets a new folder under {default_parent}")
        if resume:
            folder = newest_run(default_parent)
            if not holds_run(folder):
                raise OutDirError(f"no run to resume under {default_parent}; drop --resume to start one")
        else:
            folder = new_numbered_run(default_parent)
    else:
        folder = Path(out_dir)
    if resume and not has_checkpoint(folder):
        raise OutDirError(f"no checkpoint at {folder / RUN_FILES[0]} to resume; drop --resume to start a new run")
    writable_folder(folder, "--out-dir")
    lock = RunLock(folder, created=out_dir is None and not resume).acquire()
    try:
        note = ""
        stale = remove_stale_temporaries(folder)
        if stale:
            note = f"removed {len(stale)} temporary file(s) left by an interrupted save in {folder}"
        if holds_run(folder) and not resume:
            if not overwrite:
                how = "--resume to continue it or --overwrite" if has_checkpoint(folder) else "--overwrite"
                raise OutDirError(
                    f"{folder} already holds a run; pass {how} to start over (the old files are moved to "
                    f"{folder.name}.old-<time>), or choose another --out-dir"
                )
            note = f"moved the previous run in {folder} to {_move_aside(folder)}"
        return lock, note
    except BaseException:
        lock.release()
        raise
