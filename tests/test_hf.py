"""Hugging Face GPT-2 folders in and out, checked against `transformers` itself (a test-only dependency)."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: transformers must never reach for the network
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from gpt.checkpoint import load_checkpoint  # noqa: E402
from gpt.config import GPTConfig  # noqa: E402
from gpt.export import main as export_main  # noqa: E402
from gpt.hf import HFFormatError, load_pretrained, save_pretrained  # noqa: E402
from gpt.model import GPT  # noqa: E402
from gpt.rundir import run_tokenizer  # noqa: E402
from gpt.tokenizer import TokenizerUnavailable, folder_tokenizer  # noqa: E402

VOCAB = 400
SHAPE = dict(n_positions=32, n_embd=48, n_layer=2, n_head=4)
SAMPLE_TEXT = ("def main(argv):\n    return 0  # it's done, we'll see\n\n\tTabs\u00a0and é, ü, 日本語 🙂   "
               "She said: \"3.14159 isn't 22/7!\"\r\n")


def training_text() -> str:
    return Path(json.__file__).read_text() + SAMPLE_TEXT


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A random GPT2LMHeadModel saved by transformers, with a byte-level BPE trained by `tokenizers`."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("hf-gpt2")
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator([training_text()], vocab_size=VOCAB - 1, show_progress=False)
    tokenizer.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["<|endoftext|>"] = len(vocab)  # GPT-2's last id
    (folder / "vocab.json").write_text(json.dumps(vocab))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, **SHAPE)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def hf_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(idx).logits


def our_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(idx)[0]


def test_imported_model_gives_transformers_logits(hf_folder):
    idx = torch.randint(0, VOCAB, (2, 32))
    model = GPT.from_pretrained(hf_folder)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, one parameter
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_folder)
    assert model.num_params() == sum(p.numel() for p in reference.parameters())
    torch.testing.assert_close(our_logits(model, idx), hf_logits(hf_folder, idx), atol=1e-4, rtol=0)


def test_pytorch_bin_of_a_bare_gpt2model_with_mask_buffers_loads(hf_folder, tmp_path):
    """OpenAI's upload: names without "transformer.", causal-mask buffers beside the weights, a .bin file."""
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_folder)
    state = {name.removeprefix("transformer."): tensor for name, tensor in hf.state_dict().items()}
    state.pop("lm_head.weight", None)
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    torch.save(state, tmp_path / "pytorch_model.bin")
    shutil.copy(hf_folder / "config.json", tmp_path)
    idx = torch.randint(0, VOCAB, (1, 16))
    torch.testing.assert_close(our_logits(load_pretrained(tmp_path), idx), hf_logits(hf_folder, idx),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_export_round_trip_into_transformers(tmp_path, bias):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=bias))
    for parameter in model.parameters():  # non-zero everywhere, so a misplaced tensor cannot hide
        parameter.data.normal_(0, 0.2)
    model.save_pretrained(tmp_path / "out", eos_token=69)
    idx = torch.randint(0, 70, (2, 16))
    torch.testing.assert_close(hf_logits(tmp_path / "out", idx), our_logits(model, idx), atol=1e-4, rtol=0)
    torch.testing.assert_close(our_logits(GPT.from_pretrained(tmp_path / "out"), idx), our_logits(model, idx),
                               atol=0, rtol=0)


@pytest.fixture(scope="module")
def sharded_folder(hf_folder, tmp_path_factory) -> Path:
    """The same model saved by transformers in shards of at most 40 kB, with model.safetensors.index.json."""
    folder = tmp_path_factory.mktemp("hf-gpt2-sharded")
    transformers.GPT2LMHeadModel.from_pretrained(hf_folder).save_pretrained(folder, max_shard_size="40KB")
    shutil.copy(hf_folder / "config.json", folder)
    return folder


def test_sharded_safetensors_of_transformers_load(hf_folder, sharded_folder):
    assert not (sharded_folder / "model.safetensors").exists()
    assert len(list(sharded_folder.glob("model-*-of-*.safetensors"))) > 2
    idx = torch.randint(0, VOCAB, (2, 32))
    torch.testing.assert_close(our_logits(load_pretrained(sharded_folder), idx), hf_logits(hf_folder, idx),
                               atol=1e-4, rtol=0)


def test_sharded_pytorch_bin_loads(hf_folder, tmp_path):
    """pytorch_model.bin.index.json over two .bin shards (how older large checkpoints were uploaded)."""
    state = transformers.GPT2LMHeadModel.from_pretrained(hf_folder).state_dict()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, held in halves.items():
        torch.save({name: state[name].clone() for name in held}, tmp_path / shard)
    weight_map = {name: shard for shard, held in halves.items() for name in held}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(hf_folder / "config.json", tmp_path)
    idx = torch.randint(0, VOCAB, (1, 16))
    torch.testing.assert_close(our_logits(load_pretrained(tmp_path), idx), hf_logits(hf_folder, idx),
                               atol=1e-4, rtol=0)


def _edit_index(change):
    def edit(folder: Path) -> None:
        path = folder / "model.safetensors.index.json"
        index = json.loads(path.read_text())
        change(index["weight_map"])
        path.write_text(json.dumps(index))

    return edit


def _remove_first_shard(folder: Path) -> None:
    (folder / "model-00001-of-00008.safetensors").unlink()


def _shard_outside_folder(weight_map: dict) -> None:
    weight_map["transformer.wte.weight"] = "../model-00001-of-00008.safetensors"


def _tensor_in_wrong_shard(weight_map: dict) -> None:
    weight_map["transformer.wte.weight"] = "model-00008-of-00008.safetensors"


@pytest.mark.parametrize("edit, message", [
    (_remove_first_shard, "model-00001-of-00008.safetensors is missing (model.safetensors.index.json lists it); "
                          "copy all 8 shard files"),
    (lambda f: (f / "model.safetensors.index.json").write_text('{"weight_map": {"a": '), "is not a valid index"),
    (lambda f: (f / "model.safetensors.index.json").write_text("[]"), "is not a valid index"),
    (_edit_index(_shard_outside_folder), "has no weight_map of tensor names to shard files in its folder"),
    (_edit_index(_tensor_in_wrong_shard), "model-00008-of-00008.safetensors lacks 'transformer.wte.weight'"),
    (_edit_index(lambda weight_map: weight_map.pop("transformer.h.1.mlp.c_fc.bias")),
     "lacks 1 tensor(s) GPT-2 needs, e.g. 'h.1.mlp.c_fc.bias'"),
])
def test_a_broken_sharded_folder_gets_a_one_line_error(sharded_folder, tmp_path, edit, message):
    assert len(list(sharded_folder.glob("model-*-of-00008.safetensors"))) == 8  # the names the edits use
    with pytest.raises(HFFormatError) as caught:
        load_pretrained(broken_copy(sharded_folder, tmp_path, edit))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_sharded_export_loads_into_transformers(tmp_path):
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=32))
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.2)
    limit = 20_000  # bytes; the largest tensor, c_fc's 32 x 128 fp32 weight, is 16,384
    written = save_pretrained(model, tmp_path / "out", eos_token=69, max_shard_bytes=limit)
    shards = sorted((tmp_path / "out").glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and not (tmp_path / "out" / "model.safetensors").exists()
    assert sorted(written) == sorted(["config.json", "model.safetensors.index.json", *(p.name for p in shards)])
    assert all(p.stat().st_size <= limit + 1_000 for p in shards)  # + the shard's JSON header
    idx = torch.randint(0, 70, (2, 16))
    torch.testing.assert_close(hf_logits(tmp_path / "out", idx), our_logits(model, idx), atol=1e-4, rtol=0)
    torch.testing.assert_close(our_logits(GPT.from_pretrained(tmp_path / "out"), idx), our_logits(model, idx),
                               atol=0, rtol=0)


def test_export_refuses_what_gpt2_cannot_hold_and_never_overwrites(tmp_path):
    gqa = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=1, n_head=4, n_kv_head=2, n_embd=32))
    with pytest.raises(HFFormatError, match="grouped-query"):
        save_pretrained(gqa, tmp_path / "gqa")
    assert not (tmp_path / "gqa").exists()
    plain = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=1, n_head=4, n_embd=32))
    save_pretrained(plain, tmp_path / "once")
    before = (tmp_path / "once" / "model.safetensors").read_bytes()
    with pytest.raises(HFFormatError, match="already holds a model"):
        save_pretrained(plain, tmp_path / "once")
    assert (tmp_path / "once" / "model.safetensors").read_bytes() == before


def broken_copy(hf_folder: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(hf_folder, folder)
    edit(folder)
    return folder


def _set_config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return edit


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _drop_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, folder / "model.safetensors")


@pytest.mark.parametrize("edit, message", [
    (lambda f: (f / "config.json").unlink(), "has no config.json"),
    (lambda f: (f / "model.safetensors").unlink(), "has no model.safetensors or pytorch_model.bin (nor a sharded index"),
    (_set_config(model_type="llama"), "'llama' model; only GPT-2"),
    (_set_config(activation_function="relu"), "activation_function = 'relu' is not supported"),
    (_set_config(n_layer=3), "lacks 12 tensor(s) GPT-2 needs, e.g. 'h.2.attn.c_attn.bias'"),
    (_set_config(n_embd=64), "has shape"),
    (_truncate, "truncated or not a safetensors file"),
    (_drop_tensor, "lacks 1 tensor(s) GPT-2 needs, e.g. 'h.1.mlp.c_fc.bias'"),
])
def test_a_broken_folder_gets_a_one_line_error(hf_folder, tmp_path, edit, message):
    with pytest.raises(HFFormatError) as caught:
        load_pretrained(broken_copy(hf_folder, tmp_path, edit))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_folder_tokenizer_encodes_like_transformers(hf_folder):
    reference = transformers.GPT2Tokenizer.from_pretrained(hf_folder)
    tokenizer = folder_tokenizer(hf_folder)
    text = training_text()[:5000] + SAMPLE_TEXT
    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert (tokenizer.vocab_size, tokenizer.eos_token) == (VOCAB, VOCAB - 1)


def test_folder_tokenizer_refuses_merges_out_of_id_order(hf_folder, tmp_path):
    def swap_two_merges(folder: Path) -> None:
        lines = (folder / "merges.txt").read_text().splitlines()
        lines[1], lines[2] = lines[2], lines[1]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n")

    with pytest.raises(TokenizerUnavailable, match="do not follow merges.txt"):
        folder_tokenizer(broken_copy(hf_folder, tmp_path, swap_two_merges))


def test_fine_tune_sample_and_export_from_the_command_lines(hf_folder, tmp_path, capsys):
    import sample
    import train

    data = tmp_path / "corpus.txt"
    data.write_text(training_text() * 2)
    run, model_folder = tmp_path / "run", shutil.copytree(hf_folder, tmp_path / "model")
    assert train.main(["--init", str(model_folder), "--data", str(data), "--out-dir", str(run), "--max-iters", "3",
                       "--batch-size", "2", "--eval-interval", "3", "--eval-iters", "1", "--no-progress",
                       "--device", "cpu"]) == 0
    shutil.rmtree(model_folder)  # the run keeps its own copy of the tokenizer: moving the model folder breaks nothing
    assert sample.main(["--out-dir", str(run), "--prompt", "def", "--max-new-tokens", "5", "--device", "cpu"]) == 0
    assert run_tokenizer(run, load_checkpoint(run)["tokenizer"]).encode(SAMPLE_TEXT) == \
        folder_tokenizer(hf_folder).encode(SAMPLE_TEXT)
    assert sample.main(["--init", str(hf_folder), "--prompt", "def", "--max-new-tokens", "5",
                        "--device", "cpu"]) == 0
    assert export_main([str(run), str(tmp_path / "exported")]) == 0
    assert {p.name for p in (tmp_path / "exported").iterdir()} == {"config.json", "model.safetensors",
                                                                 "vocab.json", "merges.txt"}
    trained = GPT(GPTConfig(**load_checkpoint(run)["model_config"]))
    trained.load_state_dict(load_checkpoint(run)["model"])
    idx = torch.randint(0, VOCAB, (1, 12))
    torch.testing.assert_close(hf_logits(tmp_path / "exported", idx), our_logits(trained, idx), atol=1e-4, rtol=0)
    assert export_main([str(run), str(tmp_path / "sharded"), "--max-shard-size", "0.05"]) == 0  # 50 kB shards
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    torch.testing.assert_close(hf_logits(tmp_path / "sharded", idx), our_logits(trained, idx), atol=1e-4, rtol=0)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--init", str(tmp_path / "missing"), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "is not a folder" in capsys.readouterr().err
    merges = (run / "tokenizer" / "merges.txt").read_text()
    (run / "tokenizer" / "merges.txt").write_text(merges.rstrip("\n").rsplit("\n", 1)[0] + "\n")  # one merge fewer
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--out-dir", str(run), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "not the bpe-" in capsys.readouterr().err
    (run / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--out-dir", str(run), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "has no merges.txt" in capsys.readouterr().err
    shutil.rmtree(run / "tokenizer")
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--out-dir", str(run), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "has no copy of it; copy that folder's vocab.json and merges.txt into" in capsys.readouterr().err
