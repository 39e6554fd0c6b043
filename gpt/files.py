"""Durable writes (a crash or a full disk never leaves a half-written file under the real name) and strict JSON.

The new contents go to a temporary sibling, are fsynced, and only then renamed over the
target with `os.replace`, which swaps the name in one step; a reader (or the next run)
sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from gpt.errors import GptmeterError


class PathError(GptmeterError, ValueError):
    """An output path that cannot be written; the message names the flag or variable that set it."""


def cache_root() -> Path:
    """Folder for tokenised corpora and the hardware cache: $GPTMETER_CACHE_DIR or ~/.cache/gptmeter."""
    return Path(os.environ.get("GPTMETER_CACHE_DIR") or Path.home() / ".cache" / "gptmeter")


def writable_folder(folder: Path, named_by: str) -> Path:
    """Create `folder` if needed and check that files can be written in it, before any work is done.

    `named_by` is the flag or environment variable the path came from, for the message.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{named_by} {folder} is a file, not a folder; point {named_by} at a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PathError(f"cannot create {folder} ({error.strerror}); point {named_by} at a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PathError(f"{folder} is not writable; point {named_by} at a writable folder")
    return folder


def check_output_file(path: Path | None, flag: str) -> None:
    """Refuse an output file that could not be written (its folder missing or read-only), before any work."""
    if path is None:
        return
    path, folder = Path(path), Path(path).parent
    if path.is_dir():
        raise PathError(f"{flag} {path} is a folder; pass a file path such as {path / 'out.json'}")
    if not folder.is_dir():
        raise PathError(f"{flag} {path}: folder {folder} does not exist; create it or pass a path in an existing folder")
    if not os.access(folder, os.W_OK):
        raise PathError(f"{flag} {path}: folder {folder} is not writable; pass a path in a writable folder")


def writable_cache_root() -> Path:
    """cache_root(), created and checked writable."""
    return writable_folder(cache_root(), "GPTMETER_CACHE_DIR")


def fsync_directory(folder: Path) -> None:
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
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None; a dict key so emptied gains a `<key>_nonfinite` reason."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            cleaned[key] = _finite(item)
            if isinstance(item, float) and not math.isfinite(item):
                cleaned[f"{key}_nonfinite"] = str(item)  # "nan", "inf" or "-inf"
        return cleaned
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def dumps_json(value: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259): NaN and infinities become null, so every parser reads what gptmeter writes."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def write_json(path: Path, value: Any) -> None:
    """`value` as strict, indented JSON, written durably (see atomic_write)."""
    atomic_write_text(path, dumps_json(value, indent=2) + "\n")
