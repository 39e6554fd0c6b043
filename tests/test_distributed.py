"""torchrun data-parallel training on CPU: 2 gloo processes, launched the way a user launches them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def command(processes: int, *args: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, str(REPO / "train.py"), *RUN, *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def step_records(out_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == "step"]


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process_with_the_global_batch(corpus, tmp_path):
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
    process.communicate(timeout=TIME_LIMIT_S)
    assert process.returncode != 0
    assert time.monotonic() - started < TIME_LIMIT_S
