"""Durable writes: a crash or a full disk never leaves a half-written file under the real name.

The new contents go to a temporary sibling, are fsynced, and only then renamed over the
target with `os.replace`, which swaps the name in one step; a reader (or the next run)
sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(handle) on a temporary sibling of `path`, fsync it, then rename it over `path`.

    The temporary name carries the process id, so two processes filling the same cache
    never write into one temporary file.
    """
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
