"""Tokenizers round-trip text, match published token ids, and never reach for the network."""

import pytest

from gpt.errors import GptmeterError
from gpt.tokenizer import TokenizerUnavailable, get_tokenizer

TEXT = 'def greet(name: str) -> str:\n    return f"héllo, {name} ✓"\n'


@pytest.mark.parametrize("name", ["bytes", "cl100k"])
def test_round_trip(name):
    tokenizer = get_tokenizer(name)
    ids = tokenizer.encode(TEXT)
    assert tokenizer.decode(ids) == TEXT
    assert max(ids) < tokenizer.vocab_size
    assert tokenizer.decode(ids + [tokenizer.eos_token]) == TEXT  # end-of-text decodes to nothing


def test_bytes_tokenizer_is_utf8():
    tokenizer = get_tokenizer("bytes")
    assert tokenizer.vocab_size == 257 and tokenizer.eos_token == 256
    assert tokenizer.encode("é") == [0xC3, 0xA9]


def test_cl100k_matches_chatgpt_ids():
    tokenizer = get_tokenizer("cl100k")
    assert tokenizer.encode("hello world") == [15339, 1917]  # OpenAI's cl100k_base ids
    assert tokenizer.eos_token == 100257 and tokenizer.vocab_size == 100277


def test_gpt2_without_vocab_files_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GPTMETER_GPT2_VOCAB_DIR", raising=False)
    with pytest.raises(TokenizerUnavailable, match="GPTMETER_GPT2_VOCAB_DIR"):
        get_tokenizer("gpt2")


def test_unknown_tokenizer():
    with pytest.raises(GptmeterError, match="bytes, cl100k, gpt2"):
        get_tokenizer("sentencepiece")


@pytest.mark.parametrize("name", ["bytes", "cl100k"])
def test_ids_of_a_padded_vocabulary_decode_to_nothing(name):
    tokenizer = get_tokenizer(name)
    ids = tokenizer.encode("x = 1")
    assert tokenizer.decode(ids[:2] + [tokenizer.vocab_size, tokenizer.vocab_size + 40] + ids[2:]) == "x = 1"
