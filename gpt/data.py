"""Training data: find the text, tokenise it once into a cached memory map, serve random windows.

The default corpus is the Python standard library's own source code: it is on every
machine that runs this program, it is real text nobody here wrote, and a small model
learns its shape (indentation, `def`, `self.`) within minutes. Test suites inside the
standard library are left out, so the corpus is the library itself (about 12 MB).

Splits are by file: a file's path decides, through a hash, whether it is held out for
validation, so the split never depends on file order, machine, or which files exist.

Token files say what they hold: `meta.json` beside `train.bin`/`val.bin` names the ids'
dtype, the vocabulary size and the tokenizer (gptmeter writes it for every cache, and
`write_token_meta` for files you make). Bare files (nanoGPT's format) are read as the
tokenizer's dtype (uint16 below 65,536 ids, else uint32) only after checks that catch a
file of wider ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gpt.errors import GptmeterError
from gpt.files import atomic_write, cache_root, writable_cache_root, write_json
from gpt.tokenizer import Tokenizer

VALIDATION_PERCENT = 5
TOKEN_META = "meta.json"
TOKEN_DTYPES = ("uint16", "uint32", "int32", "int64")  # dtypes a meta.json may name
BINARY_SNIFF_BYTES = 8192  # a NUL byte this early marks a file as binary (git's rule)
TEXT_SUFFIXES = {".txt", ".py", ".md", ".rst", ".json", ".csv", ".html", ".c", ".h", ".js", ".toml", ".yaml", ".yml"}
_STDLIB_EXCLUDED_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


class DataError(GptmeterError, ValueError):
    """The data cannot be used as given; the message says what to do."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids below 65,536 (nanoGPT's .bin format); larger vocabularies need uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_token_meta(folder: Path, dtype: str, tokenizer: Tokenizer, **extra) -> None:
    """Describe the train.bin/val.bin in `folder`: their dtype (one of TOKEN_DTYPES) and tokenizer."""
    if dtype not in TOKEN_DTYPES:
        raise DataError(f"token dtype {dtype!r} is not one of {', '.join(TOKEN_DTYPES)}")
    meta = {"dtype": dtype, "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.name, **extra}
    write_json(Path(folder) / TOKEN_META, meta)


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


def read_bytes(path: Path, limit: int = -1) -> bytes:
    """The first `limit` bytes of a data file (all by default); DataError if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror}); make it readable or leave it out of --data") from None


def binary_offset(path: Path) -> int | None:
    """Offset of a NUL byte in the first BINARY_SNIFF_BYTES of `path`, or None if there is none (text)."""
    offset = read_bytes(path, BINARY_SNIFF_BYTES).find(b"\0")
    return None if offset < 0 else offset


def refuse_binary(files: list[Path]) -> None:
    """DataError for the first file that looks binary: such bytes are not text to learn from."""
    for path in files:
        offset = binary_offset(path)
        if offset is not None:
            raise DataError(
                f"{path} looks binary (a NUL byte at offset {offset}); point --data at text, "
                "or pass --allow-binary to train on its bytes anyway"
            )


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
    digest = hashlib.sha1(f"v2|{tokenizer.name}|{tokenizer.vocab_size}|{root.resolve()}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _tokenise_files(files: list[Path], tokenizer: Tokenizer, label: str, replaced: dict[str, int]) -> np.ndarray:
    """Token ids of `files`, each followed by end-of-text; counts invalid UTF-8 per file into `replaced`."""
    pieces: list[np.ndarray] = []
    dtype = token_dtype(tokenizer.vocab_size)
    for path in tqdm(files, desc=f"tokenising {label}", unit="file", leave=False, disable=len(files) < 20):
        ids, count = tokenizer.encode_file(read_bytes(path))
        if count:
            replaced[str(path)] = count
        pieces.append(np.asarray(ids + [tokenizer.eos_token], dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def _cached_token_files(root: Path, files: list[Path], tokenizer: Tokenizer, name: str) -> Path:
    """Tokenise once into <cache>/data/<name>-<fingerprint>/{train,val}.bin and return that folder."""
    folder = cache_root() / "data" / f"{name}-{tokenizer.name}-{_corpus_fingerprint(root, files, tokenizer)}"
    if (folder / TOKEN_META).exists():
        return folder
    writable_cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    splits = split_files(root, files)
    replaced: dict[str, int] = {}
    if not splits["val"] or not splits["train"]:  # too few files to split by file: hold out the tail instead
        tokens = _tokenise_files(files, tokenizer, name, replaced)
        cut = len(tokens) - max(1, len(tokens) * VALIDATION_PERCENT // 100)
        arrays = {"train": tokens[:cut], "val": tokens[cut:]}
    else:
        arrays = {split: _tokenise_files(paths, tokenizer, f"{name} {split}", replaced) for split, paths in splits.items()}
    for split, array in arrays.items():
        atomic_write(folder / f"{split}.bin", array.tofile)
    write_token_meta(folder, arrays["train"].dtype.name, tokenizer, files=len(files), replaced=replaced,
                     **{f"{s}_tokens": len(a) for s, a in arrays.items()})  # written last: marks the cache complete
    return folder


# ----------------------------------------------------------------------------- batches


@dataclass
class TokenData:
    """Train and validation token streams (memory-mapped) and where they came from."""

    train: np.ndarray
    val: np.ndarray
    source: str
    warnings: tuple[str, ...] = ()  # what the user should know about the data (e.g. invalid UTF-8 replaced)

    def check_fits(self, block_size: int) -> None:
        for split in ("train", "val"):
            tokens = len(getattr(self, split))
            if tokens <= block_size:
                raise DataError(
                    f"the {split} split of {self.source} has {tokens} tokens, too few for one window of "
                    f"{block_size + 1}; give more text or a smaller --block-size"
                )

    def batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator, device: torch.device,
        rank: int = 0, world_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: inputs x (B, T) and targets y (B, T), y shifted one token ahead.

        With world_size > 1 every rank draws the same global batch of batch_size * world_size windows from
        the same generator and keeps its own slice, so the ranks together read what one process with the
        global batch would.
        """
        tokens = self.train if split == "train" else self.val
        starts = torch.randint(len(tokens) - block_size, (batch_size * world_size,), generator=generator).tolist()
        starts = starts[rank * batch_size : (rank + 1) * batch_size]
        windows = np.stack([tokens[s : s + block_size + 1].astype(np.int64) for s in starts])
        windows = torch.from_numpy(windows)
        if device.type == "cuda":  # page-locked memory lets the copy overlap with compute
            windows = windows.pin_memory().to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]


def read_token_meta(folder: Path) -> dict | None:
    """The checked contents of folder/meta.json, or None for bare token files."""
    path = folder / TOKEN_META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {path} ({error}); rewrite it with gpt.data.write_token_meta or remove it") from None
    if not isinstance(meta, dict) or meta.get("dtype") not in TOKEN_DTYPES:
        raise DataError(f"{path} does not name the token dtype (\"dtype\": one of {', '.join(TOKEN_DTYPES)}); "
                        "add it, or remove the file to read bare uint16/uint32 ids")
    return meta


def _open_bin_pair(folder: Path, tokenizer: Tokenizer) -> TokenData:
    """Memory-map train.bin and val.bin as the dtype their meta.json names, or the tokenizer's for bare files."""
    meta = read_token_meta(folder)
    if meta and meta.get("tokenizer", tokenizer.name) != tokenizer.name:
        raise DataError(f"{folder} was tokenised with {meta['tokenizer']}; pass --tokenizer {meta['tokenizer']}")
    dtype = np.dtype(meta["dtype"]) if meta else token_dtype(tokenizer.vocab_size)
    arrays = {}
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise DataError(f"{path} has {size:,} bytes, not a whole number of {dtype.name} token ids "
                            f"({dtype.itemsize} bytes each); is it a token file?")
        tokens = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)
        if meta is None and len(tokens) >= 16 and not tokens[1::2].any() and tokens[0::2].any():
            raise DataError(
                f"every second {dtype.name} id in {path} is 0: it looks like wider ids (uint32 or int64) read as "
                f"{dtype.name}, the dtype expected for {tokenizer.name}; write {dtype.name} ids, or put a {TOKEN_META} "
                f'beside it naming the dtype, e.g. {{"dtype": "uint32", "tokenizer": "{tokenizer.name}"}}'
            )
        if len(tokens) and (int(tokens.max()) >= tokenizer.vocab_size or int(tokens.min()) < 0):
            raise DataError(
                f"{path} read as {dtype.name} holds token ids from {int(tokens.min())} to {int(tokens.max())}, outside "
                f"the {tokenizer.name} vocabulary of {tokenizer.vocab_size}; pass the --tokenizer it was made with, "
                f"or name its dtype in {TOKEN_META}"
            )
        arrays[split] = tokens
    return TokenData(arrays["train"], arrays["val"], str(folder))


def _replacement_warning(folder: Path, source: str, tokenizer: Tokenizer) -> tuple[str, ...]:
    replaced = (read_token_meta(folder) or {}).get("replaced") or {}
    if not replaced:
        return ()
    first = next(iter(replaced))
    return (f"{sum(replaced.values()):,} invalid UTF-8 sequences in {len(replaced)} file(s) of {source} (first: "
            f"{first}) were read as U+FFFD by the {tokenizer.name} tokenizer; --tokenizer bytes keeps the bytes",)


def load_data(data_path: str | None, tokenizer: Tokenizer, allow_binary: bool = False) -> TokenData:
    """Tokens for training: the standard library by default, else --data (text, folder, or .bin pair).

    Text files that look binary are refused unless `allow_binary`.
    """
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
    if not allow_binary:
        refuse_binary(files)
    folder = _cached_token_files(root, files, tokenizer, name)
    warnings = _replacement_warning(folder, source, tokenizer)
    return dataclasses.replace(_open_bin_pair(folder, tokenizer), source=source, warnings=warnings)
