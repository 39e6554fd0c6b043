"""torchrun data-parallel (DDP) and sharded (FSDP2) training on CPU: 2 gloo processes, launched the way a user launches them."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt.checkpoint import load_checkpoint
from gpt.config import GPTConfig
from gpt.export import export_run
from profiling import device_profile, predict
from profiling.__main__ import main as profiling_main
from profiling.hardware import device_name
from profiling.rundir import summarize_run
from tests.test_run_prediction import fake_profile

REPO = Path(__file__).resolve().parent.parent
RUN = ["--block-size", "32", "--layers", "2", "--heads", "2", "--width", "32", "--dropout", "0",
       "--eval-iters", "1", "--eval-interval", "1000", "--warmup-iters", "2", "--learning-rate", "3e-3",
       "--device", "cpu", "--dtype", "float32", "--attention", "sdpa", "--no-progress"]
TIME_LIMIT_S = 90


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(Path(json.__file__).read_text() * 5)
    return path


def command(processes: int, *args: str, script: Path = REPO / "train.py") -> list[str]:
    """torchrun running `script` (train.py, or a test's wrapper around it) with the small model's flags."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, str(script), *RUN, *args]


MODES = {"ddp": [], "fsdp": ["--fsdp"]}


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def step_records(out_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == "step"]


@pytest.fixture
def rank_profile():
    """The test's fake device profile in the cache, under the name a torchrun rank (1 thread) looks up, so every
    run predicts its step on one card; removed afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OMP_NUM_THREADS=1, as environment() gives each rank
    try:
        name = device_name("cpu")
    finally:
        torch.set_num_threads(threads)
    profile = dataclasses.replace(fake_profile(), device=name)
    path = device_profile.save_profile(profile, device_profile.cache_path(name, profile.dtype))
    yield profile
    path.unlink()


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process_with_the_global_batch(corpus, tmp_path, rank_profile):
    common = ["--data", str(corpus), "--max-iters", "10", "--grad-accum", "2"]
    subprocess.run(command(2, *common, "--batch-size", "2", "--out-dir", str(tmp_path / "ddp")), check=True,
                   cwd=tmp_path, env=environment(), timeout=TIME_LIMIT_S, capture_output=True)
    subprocess.run([sys.executable, str(REPO / "train.py"), *RUN, *common, "--batch-size", "4",
                    "--out-dir", str(tmp_path / "one")], check=True, cwd=tmp_path, env=environment(),
                   timeout=TIME_LIMIT_S, capture_output=True)
    ddp, one = step_records(tmp_path / "ddp"), step_records(tmp_path / "one")
    assert len(ddp) == len(one) == 10
    for a, b in zip(ddp, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert all(r["world_size"] == 2 and r["mode"] == "ddp" for r in ddp)
    assert all(r["world_size"] == 1 and r["mode"] == "single" for r in one)
    for record in ddp:  # per card: this rank's tokens; the job's: both ranks'
        assert record["tokens"] == 2 * 2 * 32
        assert record["job_tokens_per_sec"] == pytest.approx(2 * record["tokens_per_sec"])
        assert "mfu" in record
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 4
    # Each step line and the summary carry the share of step time one card's prediction does not explain.
    predicted = predict.predict_train(GPTConfig(**config["model"]), 2, 32, 2, rank_profile).step_seconds
    for record in ddp:
        assert record["unexplained_step_fraction"] == pytest.approx(1 - predicted / record["step_time_s"])
    summary = [line for line in map(json.loads, (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines())
               if line["kind"] == "summary"][-1]
    measured_step_s = summary["measured_time_s"] / summary["measured_steps"]
    assert summary["unexplained_step_fraction"] == pytest.approx(1 - predicted / measured_step_s)
    assert summarize_run(tmp_path / "ddp")["unexplained_step_fraction"] == pytest.approx(1 - predicted / measured_step_s)


def worker_pids(launcher_pid: int) -> list[int]:
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@pytest.mark.slow
def test_killing_one_rank_ends_the_job_non_zero_within_the_time_limit(corpus, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(command(2, "--data", str(corpus), "--batch-size", "2", "--max-iters", "100000",
                                       "--out-dir", str(out)), cwd=tmp_path, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIME_LIMIT_S
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and (not metrics.exists() or '"kind": "step"' not in metrics.read_text()):
        time.sleep(0.2)
    workers = worker_pids(process.pid)
    assert len(workers) == 2, "torchrun should have started two workers"
    os.kill(workers[1], signal.SIGKILL)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=TIME_LIMIT_S)
    assert process.returncode != 0
    assert time.monotonic() - started < TIME_LIMIT_S
    # torchrun's failure summary names the signal and the process in one line
    assert f"Signal 9 (SIGKILL) received by PID {workers[1]}" in stderr, stderr
    assert_no_rank_was_killed_by_torchrun(stderr)


def assert_no_rank_was_killed_by_torchrun(stderr: str) -> None:
    """torchrun sends SIGTERM to the ranks still alive after a failure and SIGKILLs (with this warning) those
    that have not exited 30 s later: its absence means no surviving rank hung in a collective."""
    assert "forcefully exiting" not in stderr, stderr


CONSTANT_LR = ["--min-lr", "3e-3"]  # equal to --learning-rate: the schedule no longer depends on --max-iters


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_one_process_with_the_losses_of_an_uninterrupted_run(corpus, tmp_path):
    common = ["--data", str(corpus), "--grad-accum", "2", *CONSTANT_LR]  # accumulated, reduced once
    sharded, one = tmp_path / "fsdp", tmp_path / "one"
    subprocess.run(command(2, *common, "--fsdp", "--max-iters", "3", "--batch-size", "2", "--out-dir", str(sharded)),
                   check=True, cwd=tmp_path, env=environment(), timeout=TIME_LIMIT_S, capture_output=True)
    assert (sharded / "ckpt.dcp" / ".metadata").is_file() and not (sharded / "ckpt.pt").exists()
    # The same global batch of 4 on one process: DCP reshards the 2 ranks' checkpoint, the run stays in FSDP mode.
    single = [sys.executable, str(REPO / "train.py"), *RUN, *common, "--max-iters", "5", "--batch-size", "4"]
    subprocess.run([*single, "--resume", "--out-dir", str(sharded)], check=True, cwd=tmp_path, env=environment(),
                   timeout=TIME_LIMIT_S, capture_output=True)
    subprocess.run([*single, "--out-dir", str(one)], check=True, cwd=tmp_path, env=environment(),
                   timeout=TIME_LIMIT_S, capture_output=True)
    resumed, reference = step_records(sharded), step_records(one)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5]
    assert [(r["world_size"], r["mode"]) for r in resumed] == [(2, "fsdp")] * 3 + [(1, "fsdp")] * 2
    # float32 sums in another order (sharded reduce-scatter against one process): equal to 1e-5 relative.
    for a, b in zip(resumed, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # One process reads the sharded checkpoint whole, as sample.py and gpt.export do.
    whole, plain = load_checkpoint(sharded), load_checkpoint(one)
    assert whole["step"] == 5 and whole["world_size"] == 1 and whole["mode"] == "fsdp"
    assert whole["model"].keys() == plain["model"].keys()
    # AdamW divides by the gradient's running RMS, so rounding noise in near-zero gradients (the key bias, which
    # softmax ignores) moves weights by ~1e-6 after 5 steps at lr 3e-3: equal to 1e-5 absolute.
    for name, tensor in plain["model"].items():
        assert torch.allclose(whole["model"][name], tensor, rtol=0, atol=1e-5), name
    sample = subprocess.run([sys.executable, str(REPO / "sample.py"), "--out-dir", str(sharded), "--device", "cpu",
                             "--max-new-tokens", "4", "--temperature", "0"], cwd=tmp_path, env=environment(),
                            timeout=TIME_LIMIT_S, capture_output=True, text=True)
    assert sample.returncode == 0, sample.stderr
    assert export_run(sharded, tmp_path / "hf") == ["config.json", "model.safetensors"]
    assert profiling_main(["report", str(sharded), "--json", "--no-plots"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_to_torchrun_saves_one_loadable_checkpoint_and_exits_non_zero(corpus, tmp_path, mode):
    out = tmp_path / "run"
    process = subprocess.Popen(command(2, "--data", str(corpus), *MODES[mode], "--batch-size", "2", "--max-iters",
                                       "100000", "--out-dir", str(out)), cwd=tmp_path, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIME_LIMIT_S
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and (not metrics.exists() or '"kind": "step"' not in metrics.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # to torchrun, which forwards it to both workers
    _, stderr = process.communicate(timeout=TIME_LIMIT_S)
    assert process.returncode != 0
    assert stderr.count("stopped by SIGTERM") == 1, stderr  # rank 0 alone reports
    last_step = step_records(out)[-1]["step"]
    saved = load_checkpoint(out)
    assert saved["step"] == last_step and saved["world_size"] == 2 and saved["mode"] == mode
    assert not list(out.glob("*.tmp")) and not (out / "ckpt.dcp.old").exists()  # no save was left half-done


POISON_RANK_1 = r"""
import sys
import torch
import train
from gpt import distributed
from gpt.fsdp import local
from gpt.trainer import Trainer

step = Trainer.train_step


def poisoned(self):  # after step 4, one value of rank 1's weights (its shard, or its replica) becomes NaN
    record = step(self)
    if self.step == 1:  # what this rank holds
        held = sum(local(p).numel() for p in self.model.parameters())
        moments = sum(local(state["exp_avg"]).numel() for state in self.optimizer.state.values())
        sys.stderr.write(f"held: {held} {moments} {self.model.num_params()}\n")  # one write: lines stay whole
    if self.step == 4 and distributed.rank() == 1:
        with torch.no_grad():
            local(next(iter(self.model.parameters()))).view(-1)[0] = float("nan")
    return record


Trainer.train_step = poisoned
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_weights_held_per_rank_and_a_nan_on_one_rank_stops_every_rank_before_the_next_checkpoint(corpus, tmp_path,
                                                                                               mode):
    script, out = tmp_path / "poisoned_train.py", tmp_path / "run"
    script.write_text(POISON_RANK_1)
    finished = subprocess.run(command(2, "--data", str(corpus), *MODES[mode], "--batch-size", "2", "--max-iters",
                                      "8", "--checkpoint-interval", "2", "--out-dir", str(out), script=script),
                              cwd=tmp_path, env=environment(), timeout=TIME_LIMIT_S, capture_output=True, text=True)
    assert finished.returncode != 0
    assert "the run diverged: 1 non-finite weights after step 4; the checkpoint of step 2" in finished.stderr
    held = [[int(n) for n in found] for found in re.findall(r"held: (\d+) (\d+) (\d+)\n", finished.stderr)]
    (weights_0, moments_0, total), (weights_1, moments_1, _) = held
    if mode == "fsdp":  # each rank holds about half of the weights and of AdamW's moments; the halves make the whole
        assert weights_0 + weights_1 == moments_0 + moments_1 == total and max(weights_0, weights_1) < 0.6 * total
    else:  # each DDP rank holds a whole replica
        assert weights_0 == weights_1 == moments_0 == moments_1 == total
    assert load_checkpoint(out)["step"] == 2  # finite (load_checkpoint refuses NaN weights) and not replaced


RAISE_ON_RANK_1 = r"""
import sys
import train
from gpt import distributed
from gpt.trainer import Trainer

step = Trainer.train_step


def failing(self):  # rank 1 fails in the step after the step-2 checkpoint, as a rank whose input became unreadable
    if self.saved_step == 2 and distributed.rank() == 1:
        raise OSError("rank 1 cannot read its next batch (raised by the test)")
    return step(self)


Trainer.train_step = failing
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_an_exception_on_one_rank_ends_the_job_non_zero_and_keeps_the_last_checkpoint(corpus, tmp_path, mode):
    script, out = tmp_path / "failing_train.py", tmp_path / "run"
    script.write_text(RAISE_ON_RANK_1)
    started = time.monotonic()
    finished = subprocess.run(command(2, "--data", str(corpus), *MODES[mode], "--batch-size", "2", "--max-iters",
                                      "8", "--checkpoint-interval", "2", "--out-dir", str(out), script=script),
                              cwd=tmp_path, env=environment(), timeout=TIME_LIMIT_S, capture_output=True, text=True)
    assert finished.returncode != 0
    assert time.monotonic() - started < TIME_LIMIT_S
    assert "[rank1]: OSError: rank 1 cannot read its next batch (raised by the test)" in finished.stderr
    assert_no_rank_was_killed_by_torchrun(finished.stderr)  # rank 0 failed in its next collective, and exited
    assert [record["step"] for record in step_records(out)] == [1, 2]
    saved = load_checkpoint(out)
    assert saved["step"] == 2 and saved["mode"] == mode
    assert not list(out.glob("*.tmp")) and not (out / "ckpt.dcp.old").exists()
