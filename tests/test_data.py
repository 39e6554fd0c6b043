"""Data: the embedded corpus, deterministic splits, the token cache, .bin files, and clear errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt.data import DataError, is_validation_file, load_data, split_files, stdlib_source_files, write_token_meta
from gpt.errors import GptmeterError
from gpt.tokenizer import get_tokenizer

BYTES = get_tokenizer("bytes")


def test_stdlib_corpus_is_real_python_and_split_by_file():
    root, files = stdlib_source_files()
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert not any("test" in f.relative_to(root).parts for f in files)
    splits = split_files(root, files)
    assert 0.02 < len(splits["val"]) / len(files) < 0.10
    assert not set(splits["val"]) & set(splits["train"])
    reshuffled = split_files(root, sorted(files, key=lambda f: f.name))
    assert set(reshuffled["val"]) == set(splits["val"])  # order never changes the split


def test_validation_choice_depends_only_on_the_path():
    assert is_validation_file("json/decoder.py") == is_validation_file("json/decoder.py")
    chosen = sum(is_validation_file(f"pkg/module_{i}.py") for i in range(4000))
    assert 150 < chosen < 250  # about 5 %


def write_text_folder(folder, files=40, size=3000):
    folder.mkdir()
    for i in range(files):
        (folder / f"part_{i:02d}.txt").write_text(f"# part {i}\n" + "print('hello world')\n" * (size // 21))
    return folder


def test_text_folder_is_tokenised_once_and_cached(tmp_path):
    folder = write_text_folder(tmp_path / "corpus")
    first = load_data(str(folder), BYTES)
    cache = Path(os.environ["GPTMETER_CACHE_DIR"])
    cache_files = sorted(cache.rglob("*.bin"))
    modified = [p.stat().st_mtime_ns for p in cache_files]
    second = load_data(str(folder), BYTES)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    total = sum(len(f.read_bytes()) + 1 for f in folder.iterdir())  # +1: a separator after each file
    assert len(first.train) + len(first.val) == total
    assert (first.train == BYTES.eos_token).sum() + (first.val == BYTES.eos_token).sum() == 40
    assert cache_files and cache_files == sorted(cache.rglob("*.bin"))
    assert modified == [p.stat().st_mtime_ns for p in cache_files]  # the second load wrote nothing


def test_batches_are_shifted_windows_and_reproducible(tmp_path):
    data = load_data(str(write_text_folder(tmp_path / "corpus")), BYTES)
    x1, y1 = data.batch("train", 4, 16, torch.Generator().manual_seed(5), torch.device("cpu"))
    x2, y2 = data.batch("train", 4, 16, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 16) and torch.equal(x1[:, 1:], y1[:, :-1])


def test_bin_pair_is_read_as_uint16(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        rng.integers(0, 257, 500, dtype=np.uint16).tofile(tmp_path / f"{split}.bin")
    data = load_data(str(tmp_path), BYTES)
    assert len(data.train) == 500 and data.train.dtype == np.uint16
    assert np.array_equal(np.asarray(data.val), np.fromfile(tmp_path / "val.bin", dtype=np.uint16))


def test_bin_with_ids_beyond_the_vocabulary_names_the_tokenizer(tmp_path):
    for split in ("train", "val"):
        np.full(100, 5000, dtype=np.uint16).tofile(tmp_path / f"{split}.bin")
    with pytest.raises(DataError, match="--tokenizer"):
        load_data(str(tmp_path), BYTES)


def test_missing_empty_and_short_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nowhere"), BYTES)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_data(str(tmp_path / "empty.txt"), BYTES)
    (tmp_path / "short.txt").write_text("x = 1\n" * 30)
    data = load_data(str(tmp_path / "short.txt"), BYTES)
    with pytest.raises(DataError, match="too few"):
        data.check_fits(64)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="no text files"):
        load_data(str(tmp_path / "images"), BYTES)


# ----------------------------------------------------------------------------- inputs are what they claim


def write_bin_pair(folder, dtype, ids):
    folder.mkdir(exist_ok=True)
    for split in ("train", "val"):
        np.asarray(ids, dtype=dtype).tofile(folder / f"{split}.bin")
    return folder


@pytest.mark.parametrize("wider", [np.uint32, np.int64])
def test_bare_token_files_of_wider_ids_are_refused_naming_the_expected_dtype(tmp_path, wider):
    ids = np.random.default_rng(1).integers(1, 257, 400)
    folder = write_bin_pair(tmp_path / "bins", wider, ids)
    with pytest.raises(DataError, match="as uint16, the dtype expected for bytes"):
        load_data(str(folder), BYTES)


def test_token_files_whose_meta_names_the_dtype_read_exactly(tmp_path):
    ids = np.random.default_rng(2).integers(0, 257, 400)
    folder = write_bin_pair(tmp_path / "bins", np.uint32, ids)
    write_token_meta(folder, "uint32", BYTES)
    data = load_data(str(folder), BYTES)
    assert data.train.dtype == np.uint32 and np.array_equal(np.asarray(data.train), ids)
    with pytest.raises(DataError, match="--tokenizer bytes"):
        load_data(str(folder), get_tokenizer("cl100k"))


def test_a_byte_length_that_is_not_whole_ids_is_refused(tmp_path):
    folder = write_bin_pair(tmp_path / "bins", np.uint16, np.arange(100))
    with open(folder / "val.bin", "ab") as handle:
        handle.write(b"\x01")
    with pytest.raises(DataError, match="201 bytes, not a whole number of uint16"):
        load_data(str(folder), BYTES)


def test_the_byte_tokenizer_reads_bytes_as_bytes_and_binary_files_need_a_flag(tmp_path):
    blob = bytes(range(256)) * 40  # NUL bytes and invalid UTF-8
    (tmp_path / "blob.txt").write_bytes(blob)
    with pytest.raises(DataError, match="--allow-binary"):
        load_data(str(tmp_path / "blob.txt"), BYTES)
    data = load_data(str(tmp_path / "blob.txt"), BYTES, allow_binary=True)
    tokens = np.concatenate([np.asarray(data.train), np.asarray(data.val)])
    assert bytes(tokens[:-1].astype(np.uint8)) == blob and tokens[-1] == BYTES.eos_token
    assert data.warnings == ()  # nothing was replaced


def test_non_utf8_text_warns_with_the_count_of_replaced_characters(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café naïve résumé\n".encode("latin-1") * 200)
    data = load_data(str(tmp_path / "latin1.txt"), get_tokenizer("cl100k"))
    (warning,) = data.warnings
    assert "800 invalid UTF-8 sequences in 1 file(s)" in warning  # é, ï, é, é: 4 a line, 200 lines
    again = load_data(str(tmp_path / "latin1.txt"), get_tokenizer("cl100k"))  # from the cache: still said
    assert again.warnings == data.warnings
    assert load_data(str(tmp_path / "latin1.txt"), BYTES).warnings == ()


def test_an_unwritable_cache_dir_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "a.txt").write_text("print(1)\n" * 100)
    with pytest.raises(GptmeterError, match="GPTMETER_CACHE_DIR"):
        load_data(str(tmp_path / "a.txt"), BYTES)


def test_an_unreadable_data_file_is_one_clear_error(tmp_path, monkeypatch):
    import builtins

    secret = tmp_path / "secret.txt"
    secret.write_text("print(1)\n" * 100)
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # what a file without read permission does (chmod cannot stop root)
        if Path(file) == secret:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(DataError, match="cannot read .*secret.txt \\(Permission denied\\)"):
        load_data(str(secret), BYTES)
