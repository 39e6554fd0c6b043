"""Training data: find the text, tokenise it once into a cached memory map, serve random windows.

The default corpus is the Python standard library's own source code: it is on every
machine that runs this program, it is real text nobody here wrote, and a small model
learns its shape (indentation, `def`, `self.`) within minutes. Test suites inside the
standard library are left out, so the corpus is the library itself (about 12 MB).

Splits are by file: a file's path decides, through a hash, whether it is held out for
validation, so the split never depends on file order, machine, or which files exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gpt.errors import GptmeterError
from gpt.files import atomic_write, atomic_write_text
from gpt.tokenizer import Tokenizer

VALIDATION_PERCENT = 5
TEXT_SUFFIXES = {".txt", ".py", ".md", ".rst", ".json", ".csv", ".html", ".c", ".h", ".js", ".toml", ".yaml", ".yml"}
_STDLIB_EXCLUDED_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


class DataError(GptmeterError, ValueError):
    """The data cannot be used as given; the message says what to do."""


def cache_root() -> Path:
    """Folder for tokenised corpora (and other caches): $GPTMETER_CACHE_DIR or ~/.cache/gptmeter."""
    return Path(os.environ.get("GPTMETER_CACHE_DIR") or Path.home() / ".cache" / "gptmeter")


def token_dtype(vocab_size: int) -> type:
    """uint16 holds ids below 65,536 (nanoGPT's .bin format); larger vocabularies need uint32."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


# ----------------------------------------------------------------------------- finding text


def stdlib_source_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        path
        for path in root.rglob("*.py")
        if not _STDLIB_EXCLUDED_PARTS & set(path.relative_to(root).parts) and path.is_file()
    ]
    return root, sorted(files, key=lambda path: path.relative_to(root).as_posix())


def text_files_under(path: Path) -> tuple[Path, list[Path]]:
    """A file stands for itself; a folder for every text file below it, in sorted path order."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass --data with a text file or a folder of text files")
    if path.is_file():
        return path.parent, [path]
    files = sorted(
        (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        raise DataError(
            f"no text files ({', '.join(sorted(TEXT_SUFFIXES))}) under {path}; "
            "point --data at text or at a folder holding train.bin and val.bin"
        )
    return path, files


def is_validation_file(relative_path: str) -> bool:
    """Deterministic held-out choice: the path's SHA-1 decides, about VALIDATION_PERCENT% of files."""
    return int(hashlib.sha1(relative_path.encode()).hexdigest(), 16) % 100 < VALIDATION_PERCENT


def split_files(root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Train/val lists of files, chosen by `is_validation_file`."""
    val = [f for f in files if is_validation_file(f.relative_to(root).as_posix())]
    train = [f for f in files if f not in set(val)]
    return {"train": train, "val": val}


# ----------------------------------------------------------------------------- tokenising and caching


def _corpus_fingerprint(root: Path, files: list[Path], tokenizer: Tokenizer) -> str:
    """Key of a tokenised cache: the files' paths, sizes and times, and the tokenizer."""
    digest = hashlib.sha1(f"v1|{tokenizer.name}|{tokenizer.vocab_size}|{root.resolve()}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _tokenise_files(files: list[Path], tokenizer: Tokenizer, label: str) -> np.ndarray:
    pieces: list[np.ndarray] = []
    dtype = token_dtype(tokenizer.vocab_size)
    for path in tqdm(files, desc=f"tokenising {label}", unit="file", leave=False, disable=len(files) < 20):
        text = path.read_text(encoding="utf-8", errors="replace")
        pieces.append(np.asarray(tokenizer.encode(text) + [tokenizer.eos_token], dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def _cached_token_files(root: Path, files: list[Path], tokenizer: Tokenizer, name: str) -> Path:
    """Tokenise once into <cache>/data/<name>-<fingerprint>/{train,val}.bin and return that folder."""
    folder = cache_root() / "data" / f"{name}-{tokenizer.label}-{_corpus_fingerprint(root, files, tokenizer)}"
    if (folder / "meta.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    splits = split_files(root, files)
    if not splits["val"] or not splits["train"]:  # too few files to split by file: hold out the tail instead
        tokens = _tokenise_files(files, tokenizer, name)
        cut = len(tokens) - max(1, len(tokens) * VALIDATION_PERCENT // 100)
        arrays = {"train": tokens[:cut], "val": tokens[cut:]}
    else:
        arrays = {split: _tokenise_files(paths, tokenizer, f"{name} {split}") for split, paths in splits.items()}
    for split, array in arrays.items():
        atomic_write(folder / f"{split}.bin", array.tofile)
    meta = {"tokenizer": tokenizer.name, "files": len(files), **{f"{s}_tokens": len(a) for s, a in arrays.items()}}
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))  # written last: marks the cache complete
    return folder


# ----------------------------------------------------------------------------- batches


@dataclass
class TokenData:
    """Train and validation token streams (memory-mapped) and where they came from."""

    train: np.ndarray
    val: np.ndarray
    source: str

    def check_fits(self, block_size: int) -> None:
        for split in ("train", "val"):
            tokens = len(getattr(self, split))
            if tokens <= block_size:
                raise DataError(
                    f"the {split} split of {self.source} has {tokens} tokens, too few for one window of "
                    f"{block_size + 1}; give more text or a smaller --block-size"
                )

    def batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: inputs x (B, T) and targets y (B, T), y shifted one token ahead."""
        tokens = self.train if split == "train" else self.val
        starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).tolist()
        windows = np.stack([tokens[s : s + block_size + 1].astype(np.int64) for s in starts])
        windows = torch.from_numpy(windows)
        if device.type == "cuda":  # page-locked memory lets the copy overlap with compute
            windows = windows.pin_memory().to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]


def _open_bin_pair(folder: Path, tokenizer: Tokenizer) -> TokenData:
    dtype = token_dtype(tokenizer.vocab_size)
    arrays = {}
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        if path.stat().st_size % np.dtype(dtype).itemsize:
            raise DataError(f"{path} is not a whole number of {np.dtype(dtype).name} token ids; is it a token file?")
        arrays[split] = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)
        if len(arrays[split]) and int(arrays[split].max()) >= tokenizer.vocab_size:
            raise DataError(
                f"{path} holds token ids up to {int(arrays[split].max())}, beyond the {tokenizer.name} "
                f"vocabulary of {tokenizer.vocab_size}; pass the --tokenizer it was made with"
            )
    return TokenData(arrays["train"], arrays["val"], str(folder))


def load_data(data_path: str | None, tokenizer: Tokenizer) -> TokenData:
    """Tokens for training: the standard library by default, else --data (text, folder, or .bin pair)."""
    if data_path is None:
        root, files = stdlib_source_files()
        name, source = "stdlib", f"the Python standard library at {root}"
    else:
        path = Path(data_path).expanduser()
        if path.is_dir() and (path / "train.bin").is_file() and (path / "val.bin").is_file():
            return _open_bin_pair(path, tokenizer)
        root, files = text_files_under(path)
        name, source = path.name or "data", str(path)
    if sum(f.stat().st_size for f in files) == 0:
        raise DataError(f"the data at {source} is empty; give a file or folder with some text in it")
    folder = _cached_token_files(root, files, tokenizer, name)
    return dataclasses.replace(_open_bin_pair(folder, tokenizer), source=source)
