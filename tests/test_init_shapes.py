"""train.py and sample.py --init random build any shape that `profiling predict` accepts: a preset with overrides."""

import json

import pytest

import sample
import train
from gpt.config import GPTConfig
from profiling import flops

SHAPE = ["--layers", "3", "--width", "48", "--heads", "4", "--kv-heads", "2", "--block-size", "24"]
EXPECTED = {"n_layer": 3, "n_embd": 48, "n_head": 4, "n_kv_head": 2, "block_size": 24}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(json.__doc__ * 40)
    return path


def test_train_builds_the_overridden_shape(corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(corpus), "--out-dir", str(out), "--max-iters", "2", "--batch-size", "2", "--eval-iters", "1",
            "--no-progress", *SHAPE]
    assert train.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert {key: config["model"][key] for key in EXPECTED} == EXPECTED
    # The model built has exactly the parameters the FLOP model counts for that shape (tiny preset, byte vocab).
    assert config["params"] == flops.param_count(GPTConfig.from_preset("tiny", vocab_size=257, **EXPECTED))


def test_sample_random_init_builds_the_overridden_shape(tmp_path, capsys):
    profile = tmp_path / "profile.json"
    assert sample.main(["--init", "random", *SHAPE, "--max-new-tokens", "3", "--profile-json", str(profile)]) == 0
    model = json.loads(profile.read_text())["model"]
    assert {key: model[key] for key in EXPECTED} == EXPECTED


def test_heads_alone_reset_the_kv_heads(tmp_path):
    profile = tmp_path / "profile.json"
    assert sample.main(["--init", "random", "--heads", "2", "--max-new-tokens", "2", "--profile-json",
                        str(profile)]) == 0
    model = json.loads(profile.read_text())["model"]
    assert model["n_head"] == model["n_kv_head"] == 2


@pytest.mark.parametrize("main, argv, message", [
    (train.main, ["--width", "100", "--heads", "3"], "n_embd (100) must be divisible by n_head (3)"),
    (train.main, ["--heads", "4", "--kv-heads", "3"], "must be a multiple of n_kv_head (3)"),
    (train.main, ["--init", "hf/gpt2"], "hf/gpt2 is not a folder; pass a Hugging Face GPT-2 folder"),
    (sample.main, ["--init", "hf/gpt2"], "hf/gpt2 is not a folder; pass a Hugging Face GPT-2 folder"),
    (sample.main, ["--layers", "2"], "shape a model for --init random; a checkpoint keeps its own shape"),
    (sample.main, ["--init", "random", "--layers", "0"], "must be positive"),
])
def test_bad_shapes_and_inits_are_one_line(main, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1 or err.startswith("usage:")  # argparse puts its usage lines before the error
