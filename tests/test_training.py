"""Training: exact resume, checkpoints that survive damage, clean stops, and one-line errors from the CLIs."""

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sample
import train
from gpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpt import distributed
from gpt.config import GPTConfig
from gpt.data import load_data
from gpt.model import GPT
from gpt.rundir import claim_run_dir
from gpt.tokenizer import get_tokenizer
from gpt.trainer import Trainer, TrainConfig, TrainingStopped, learning_rate_at

REPO = Path(__file__).resolve().parent.parent
MODEL = dict(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=32)
SMALL_RUN = ["--block-size", "32", "--batch-size", "4", "--eval-iters", "2", "--no-progress"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    """About 60 kB of real Python text in one file."""
    path = tmp_path / "corpus.txt"
    path.write_text(Path(json.__file__).read_text() * 5)
    return path


def make_trainer(corpus: Path, out_dir: Path, **overrides) -> Trainer:
    settings = dict(batch_size=4, max_iters=6, eval_interval=3, eval_iters=2, checkpoint_interval=2,
                    warmup_iters=2, learning_rate=3e-3, min_lr=3e-4) | overrides
    tokenizer = get_tokenizer("bytes")
    return Trainer(GPTConfig(**MODEL, dropout=0.1), TrainConfig(**settings), load_data(str(corpus), tokenizer),
                   tokenizer.name, out_dir)


def step_losses(out_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if line["kind"] == "step"]


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(max_iters=100, warmup_iters=10, learning_rate=1.0, min_lr=0.1)
    assert learning_rate_at(0, config) == pytest.approx(0.1)
    assert learning_rate_at(9, config) == pytest.approx(1.0)
    assert learning_rate_at(55, config) == pytest.approx(0.55)  # half way down the cosine
    assert learning_rate_at(100, config) == pytest.approx(0.1)


def test_stopped_and_resumed_run_repeats_the_uninterrupted_losses(corpus, tmp_path):
    whole = make_trainer(corpus, tmp_path / "whole")
    whole.run()

    interrupted = make_trainer(corpus, tmp_path / "split")

    def stop_at_step_3(record):
        if record.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled between steps: save, then stop
        return {}

    with pytest.raises(TrainingStopped, match="SIGTERM at step 3") as stopped:
        interrupted.run(on_step=stop_at_step_3)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "split")["step"] == 3

    resumed = make_trainer(corpus, tmp_path / "split")
    resumed.resume(load_checkpoint(tmp_path / "split"))
    resumed.run()
    assert step_losses(tmp_path / "split") == step_losses(tmp_path / "whole")  # bit-exact, dropout included
    assert len(step_losses(tmp_path / "whole")) == 6


def test_checkpoint_round_trip_is_bit_exact(corpus, tmp_path):
    trainer = make_trainer(corpus, tmp_path / "run", max_iters=2)
    trainer.run()
    payload = load_checkpoint(tmp_path / "run")
    model = GPT(GPTConfig(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["step"] == 2 and meta["tokenizer"] == "bytes"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    trainer = make_trainer(corpus, tmp_path / "run", max_iters=10)

    def poison_after_step_3(record):
        if record.step == 3:
            with torch.no_grad():
                trainer.model.transformer.ln_f.weight.fill_(float("nan"))
        return {}

    with pytest.raises(TrainingStopped, match="validation loss nan at step 3") as stopped:
        trainer.run(on_step=poison_after_step_3)  # the evaluation at step 3 sees the poisoned weights
    assert stopped.value.exit_code == 3 and "checkpoint of step 2" in str(stopped.value)
    payload = load_checkpoint(tmp_path / "run")
    assert payload["step"] == 2
    assert all(torch.isfinite(t).all() for t in payload["model"].values())


def test_a_diverging_run_keeps_its_last_finite_checkpoint_which_loads_and_samples(corpus, tmp_path):
    trainer = make_trainer(corpus, tmp_path / "run", max_iters=40, learning_rate=1e3, warmup_iters=0, grad_clip=0.0,
                           checkpoint_interval=1, eval_interval=1, eval_iters=1)
    with pytest.raises(TrainingStopped, match="diverged") as stopped:
        trainer.run()
    assert stopped.value.exit_code == 3
    payload = load_checkpoint(tmp_path / "run")
    assert f"checkpoint of step {payload['step']} " in str(stopped.value)
    assert math.isfinite(payload["val_loss"])
    assert all(torch.isfinite(t).all() for t in payload["model"].values())
    model = GPT(GPTConfig(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    out = model.eval().generate(torch.zeros(1, 1, dtype=torch.long), 20, temperature=1.0)
    assert out.shape == (1, 21) and int(out.max()) < 257
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line, parse_constant=pytest.fail) for line in metrics)  # strict JSON: no NaN or Infinity


def test_a_run_that_diverges_before_any_checkpoint_says_there_is_none(corpus, tmp_path):
    trainer = make_trainer(corpus, tmp_path / "run", max_iters=3)

    def poison(record):
        with torch.no_grad():
            trainer.model.lm_head.weight.fill_(float("inf"))
        return {}

    with pytest.raises(TrainingStopped, match="no checkpoint was written"):
        trainer.run(on_step=poison)
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_truncated_foreign_and_missing_checkpoints_are_named(tmp_path):
    save_checkpoint(tmp_path, {"step": 1, "tokenizer": "bytes", "model_config": MODEL})
    good = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "ckpt.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a gptmeter checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty-run")


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 1
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------- command lines


def run_main(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/no/such/place"], "does not exist"),
        (["--device", "tpu"], "unknown device"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
        (["--preset", "gpt5"], "invalid choice"),
        (["--tokenizer", "sentencepiece"], "invalid choice"),
        (["--attention", "fast"], "invalid choice"),
        (["--max-iters", "0"], "must be positive"),
        (["--learning-rate", "-1"], "must not be negative"),
        (["--batch-size", "many"], "whole number"),
        (["--resume", "--out-dir", "/no/such/run"], "no checkpoint"),
        (["--vocab-size", "100"], "smaller than the tokenizer's 257"),
        (["--fsdp", "--device", "cpu", "--dtype", "float16"], "--fsdp does not support --dtype float16"),
    ],
)
def test_train_cli_bad_input_gets_a_clear_error(argv, message, capsys):
    code, err = run_main(train.main, argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_train_cli_data_problems(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, err = run_main(train.main, ["--data", str(tmp_path / "empty.txt")], capsys)
    assert code == 2 and "empty" in err
    (tmp_path / "short.txt").write_text("x = 1\n" * 10)
    code, err = run_main(train.main, ["--data", str(tmp_path / "short.txt")], capsys)
    assert code == 2 and "too few" in err


def test_train_then_resume_then_sample_through_the_cli(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--data", str(corpus), "--out-dir", str(out), "--max-iters", "4", *SMALL_RUN]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["block_size"] == 32 and config["train"]["max_iters"] == 4 and config["tokenizer"] == "bytes"
    assert train.main(["--resume", "--out-dir", str(out), "--data", str(corpus), "--max-iters", "6",
                       "--no-progress"]) == 0
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in l
             and json.loads(l)["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        if record["kind"] == "step":
            assert {"step", "loss", "lr", "tokens_per_sec", "elapsed_s"} <= record.keys()
            assert math.isfinite(record["loss"]) and record["tokens_per_sec"] > 0
    capsys.readouterr()
    assert sample.main(["--out-dir", str(out), "--prompt", "import ", "--max-new-tokens", "20", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("import ")
    assert "prefill:" in captured.err and "decode:" in captured.err and "prefill" not in captured.out


def test_sample_cli_errors_and_prompt_cropping(tmp_path, capsys):
    code, err = run_main(sample.main, ["--out-dir", str(tmp_path)], capsys)
    assert code == 2 and "no checkpoint" in err and "python train.py" in err
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    code, err = run_main(sample.main, ["--out-dir", str(tmp_path)], capsys)
    assert code == 2 and "truncated or corrupt" in err
    code, err = run_main(sample.main, ["--init", "random", "--prompt-file", str(tmp_path / "none.txt")], capsys)
    assert code == 2 and "--prompt-file" in err
    code, err = run_main(sample.main, ["--init", "random", "--top-p", "1.5"], capsys)
    assert code == 2 and "(0, 1]" in err
    long_prompt = "x" * 300  # the tiny preset's context is 128 tokens
    assert sample.main(["--init", "random", "--prompt", long_prompt, "--max-new-tokens", "3"]) == 0
    assert "keeping the last 128" in capsys.readouterr().err


def test_sample_cli_reads_a_piped_prompt(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("import os\n"))
    assert sample.main(["--init", "random", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("import os\n")


def test_sample_cli_checkpoint_with_unavailable_tokenizer(tmp_path, monkeypatch, capsys):
    save_checkpoint(tmp_path, {"step": 1, "tokenizer": "gpt2", "model_config": MODEL, "model": {}})
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "no-vocab"))
    monkeypatch.delenv("GPTMETER_GPT2_VOCAB_DIR", raising=False)
    code, err = run_main(sample.main, ["--out-dir", str(tmp_path)], capsys)
    assert code == 2 and "GPTMETER_GPT2_VOCAB_DIR" in err


def test_sigterm_to_a_training_process_saves_and_exits_cleanly(corpus, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), "--data", str(corpus), "--out-dir", str(out),
               "--max-iters", "100000", "--checkpoint-interval", "100000", *SMALL_RUN]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count('"kind": "step"') < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    last_line = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM" in last_line and "--resume" in last_line and "Traceback" not in err
    saved_step = load_checkpoint(out)["step"]
    logged = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert saved_step == max(r["step"] for r in logged if r["kind"] == "step") >= 3


def test_resume_refuses_shape_flags_and_applies_training_settings(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--data", str(corpus), "--out-dir", str(out), "--max-iters", "2", *SMALL_RUN]) == 0
    saved = (out / "ckpt.pt").read_bytes()
    for flag, value, named in [("--block-size", "64", "block size, 32"), ("--tokenizer", "cl100k", "tokenizer, bytes"),
                               ("--preset", "gpt2", "preset, tiny"), ("--vocab-size", "300", "vocabulary size, 257")]:
        code, err = run_main(train.main, ["--resume", "--out-dir", str(out), "--data", str(corpus), flag, value], capsys)
        assert code == 2 and named in err and "Traceback" not in err
        assert (out / "ckpt.pt").read_bytes() == saved
    capsys.readouterr()
    assert train.main(["--resume", "--out-dir", str(out), "--data", str(corpus), "--max-iters", "3",
                       "--learning-rate", "1e-3", "--dropout", "0.2", "--block-size", "32", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "learning_rate 0.004 -> 0.001" in err and "dropout 0.0 -> 0.2" in err and "max_iters 2 -> 3" in err
    payload = load_checkpoint(out)
    assert payload["step"] == 3 and payload["train_config"]["learning_rate"] == 1e-3
    assert payload["model_config"]["dropout"] == 0.2 and payload["model_config"]["block_size"] == 32


def test_an_impossible_batch_is_refused_up_front_with_its_estimate(corpus, tmp_path, capsys):
    code, err = run_main(train.main, ["--data", str(corpus), "--out-dir", str(tmp_path / "run"),
                                      "--batch-size", "100000000"], capsys)
    assert code == 2 and "GiB (a lower-bound estimate)" in err and "--batch-size" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    code, err = run_main(sample.main, ["--init", "random", "--num-samples", "1000000000"], capsys)
    assert code == 2 and "--num-samples" in err and "Traceback" not in err


def test_sample_checks_the_profile_path_before_generating(tmp_path, capsys):
    started = time.perf_counter()
    code, err = run_main(sample.main, ["--init", "random", "--max-new-tokens", "100000000",
                                       "--profile-json", str(tmp_path / "missing" / "p.json")], capsys)
    assert code == 2 and "does not exist" in err and time.perf_counter() - started < 20
    assert sample.main(["--init", "random", "--max-new-tokens", "2", "--profile-json", str(tmp_path / "p.json")]) == 0
    json.loads((tmp_path / "p.json").read_text(), parse_constant=pytest.fail)


@pytest.mark.parametrize("argv", [["train.py"], ["sample.py"], ["-m", "profiling", "scale"]])
def test_help_answers_without_importing_torch(argv):
    """`python -m profiling CMD --help` builds every subcommand's parser, so one probe covers them all."""
    run = (f"runpy.run_module('profiling', run_name='__main__')" if argv[0] == "-m"
           else f"runpy.run_path('{REPO / argv[0]}', run_name='__main__')")
    probe = (f"import sys, runpy; sys.argv = {[argv[-1], '--help']!r}\n"
             f"try:\n    {run}\n"
             "except SystemExit as e:\n    assert e.code == 0\n"
             "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def group_of_one():
    """A sharded Trainer without torchrun makes a process group of one; later tests must not inherit it."""
    yield
    distributed.teardown()


# FSDP checkpoints (ckpt.dcp/) in one process: a group of one, exact resume, a save cut short at every point.


def test_fsdp_alone_stops_and_resumes_bit_exactly(corpus, tmp_path, group_of_one, capsys):
    whole = make_trainer(corpus, tmp_path / "whole", fsdp=True)
    assert whole.mode == "fsdp" and whole.world_size == 1
    whole.run()
    assert not (tmp_path / "whole" / "ckpt.pt").exists()

    interrupted = make_trainer(corpus, tmp_path / "split", fsdp=True)

    def stop_at_step_3(record):
        if record.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}

    with pytest.raises(TrainingStopped, match="SIGTERM at step 3"):
        interrupted.run(on_step=stop_at_step_3)
    resumed = make_trainer(corpus, tmp_path / "split", fsdp=True)
    resumed.resume(load_checkpoint(tmp_path / "split", weights=False))
    resumed.run()
    # Weights, AdamW moments and the RNG states (dropout is on) all come back from the shards.
    assert step_losses(tmp_path / "split") == step_losses(tmp_path / "whole")
    # The mode fixes the checkpoint format, so a resume that would change it is refused.
    code, err = run_main(train.main, ["--resume", "--no-fsdp", "--out-dir", str(tmp_path / "split"),
                                      "--data", str(corpus), "--device", "cpu"], capsys)
    assert code == 2 and "--no-fsdp differs from the resumed run's mode" in err and "Traceback" not in err


def test_a_save_cut_short_at_any_point_leaves_a_loadable_checkpoint(corpus, tmp_path, group_of_one):
    out = tmp_path / "run"
    make_trainer(corpus, out, max_iters=2, fsdp=True).run()
    final, staging, previous = out / "ckpt.dcp", out / "ckpt.dcp.tmp", out / "ckpt.dcp.old"
    reference = load_checkpoint(out)
    assert reference["step"] == 2 and reference["mode"] == "fsdp"

    staging.mkdir()  # killed while the ranks wrote their shards: the staging folder has no meta.json
    (staging / "__0_0.distcp").write_bytes(b"half")
    assert load_checkpoint(out)["step"] == 2
    os.replace(final, previous)  # killed between the two renames
    loaded = load_checkpoint(out)
    assert loaded["step"] == 2
    for name, tensor in reference["model"].items():
        assert torch.equal(loaded["model"][name], tensor), name
    lock, _ = claim_run_dir(out, out.parent, resume=True, overwrite=False)  # still a run to resume
    lock.release()

    resumed = make_trainer(corpus, out, max_iters=4, fsdp=True)
    resumed.resume(load_checkpoint(out, weights=False))
    resumed.run()  # its next save clears both leftovers
    assert load_checkpoint(out)["step"] == 4
    assert sorted(path.name for path in out.iterdir() if path.name.startswith("ckpt")) == ["ckpt.dcp"]


def test_a_damaged_sharded_checkpoint_is_named(corpus, tmp_path, group_of_one):
    out = tmp_path / "run"
    make_trainer(corpus, out, max_iters=2, fsdp=True).run()
    shard = next((out / "ckpt.dcp").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read the sharded checkpoint"):
        load_checkpoint(out)
    meta = json.loads((out / "ckpt.dcp" / "meta.json").read_text())
    (out / "ckpt.dcp" / "meta.json").write_text(json.dumps(meta | {"model_config": {**MODEL, "n_embd": 64}}))
    with pytest.raises(CheckpointError, match="names or shapes differ from its own model configuration"):
        load_checkpoint(out)  # refused before any tensor is allocated
    marker = tmp_path / "executed"

    class Exploit:  # what a hostile .metadata could hold: DCP itself would run it with pickle.load
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (out / "ckpt.dcp" / ".metadata").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="posix.system has no place in a checkpoint index"):
        load_checkpoint(out)
    assert not marker.exists()
    shutil.rmtree(out / "ckpt.dcp")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(out)
