"""Run directories are owned: numbered defaults, refusal without --resume/--overwrite, the lock, stale temporaries."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sample
import train
from gpt.files import PathError
from gpt.rundir import LOCK_NAME, OutDirError, RunLock, claim_run_dir, new_numbered_run, newest_run
from profiling.rundir import load_run

REPO = Path(__file__).resolve().parent.parent
TINY_RUN = ["--block-size", "32", "--batch-size", "2", "--eval-iters", "1", "--max-iters", "2", "--no-progress"]


def fake_run(folder: Path, step: int = 1) -> Path:
    """A folder holding the files of a finished run (contents are only compared, not parsed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ckpt.pt").write_bytes(b"checkpoint %d" % step)
    (folder / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": step}) + "\n")
    return folder


def test_default_folders_are_numbered_and_readers_take_the_newest(tmp_path):
    parent = tmp_path / "out" / "tiny"
    first, second = new_numbered_run(parent), new_numbered_run(parent)
    assert (first.name, second.name) == ("run-001", "run-002")
    fake_run(first)
    assert newest_run(parent) == first  # run-002 holds nothing yet
    fake_run(second)
    assert newest_run(parent) == second
    assert newest_run(second) == second and newest_run(tmp_path / "none") == tmp_path / "none"
    fake_run(parent)  # a run of the layout before numbered folders, directly in out/tiny: older than run-NNN
    assert newest_run(parent) == second
    assert newest_run(fake_run(tmp_path / "flat")) == tmp_path / "flat"


def test_a_folder_holding_a_run_is_refused_and_left_intact(tmp_path):
    run = fake_run(tmp_path / "run")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    with pytest.raises(OutDirError, match="--resume to continue it or --overwrite"):
        claim_run_dir(run, tmp_path, resume=False, overwrite=False)
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.name != LOCK_NAME} == before
    with pytest.raises(OutDirError, match="only one"):
        claim_run_dir(run, tmp_path, resume=True, overwrite=True)


def test_overwrite_moves_the_old_run_aside_without_losing_it(tmp_path):
    run = fake_run(tmp_path / "run")
    lock, note = claim_run_dir(run, tmp_path, resume=False, overwrite=True)
    lock.release()
    assert [path.name for path in run.iterdir()] == [LOCK_NAME]
    (aside,) = tmp_path.glob("run.old-*")
    assert (aside / "ckpt.pt").read_bytes() == b"checkpoint 1" and str(aside) in note


def test_the_lock_excludes_a_second_writer_and_dies_with_its_process(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gpt.rundir import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(run)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutDirError, match=f"pid {holder.pid}"):
            RunLock(run).acquire()
        with pytest.raises(OutDirError, match="another process"):
            claim_run_dir(run, tmp_path, resume=False, overwrite=False)
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run: its lock file stays, its lock does not
        holder.wait()
    assert (run / LOCK_NAME).exists()
    with RunLock(run).acquire():
        pass


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "ckpt.pt.4242.tmp").write_bytes(b"half a checkpoint")
    (run / "notes.tmp").write_text("not ours")
    lock, note = claim_run_dir(run, tmp_path, resume=True, overwrite=False)
    lock.release()
    assert not (run / "ckpt.pt.4242.tmp").exists() and (run / "notes.tmp").exists()
    assert "1 temporary file" in note and (run / "ckpt.pt").read_bytes() == b"checkpoint 1"


def test_output_folders_that_cannot_be_written_are_refused_before_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PathError, match="is a file"):
        claim_run_dir(tmp_path / "file", tmp_path, resume=False, overwrite=False)
    with pytest.raises(PathError, match="--out-dir"):
        claim_run_dir(None, tmp_path / "file" / "tiny", resume=False, overwrite=False)
    with pytest.raises(OutDirError, match="no checkpoint"):
        claim_run_dir(tmp_path / "empty", tmp_path, resume=True, overwrite=False)
    assert not (tmp_path / "empty").exists()


def test_a_default_run_that_fails_early_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", str(tmp_path / "missing.txt"), "--no-progress"])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert list((tmp_path / "out" / "tiny").iterdir()) == []


def test_running_the_default_command_twice_keeps_both_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(Path(json.__file__).read_text() * 3)
    for _ in range(2):
        assert train.main(["--data", "corpus.txt", *TINY_RUN]) == 0
    runs = sorted((tmp_path / "out" / "tiny").iterdir())
    assert [run.name for run in runs] == ["run-001", "run-002"]
    for run in runs:  # each run's log holds its own steps only
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["kind"] == "step"]
        assert steps == [1, 2]
    assert load_run(tmp_path / "out" / "tiny").run_dir == runs[1]
    capsys.readouterr()
    assert sample.main(["--prompt", "import ", "--max-new-tokens", "3"]) == 0  # default --out-dir out/tiny
    assert capsys.readouterr().out.startswith("import ")
    for path in runs[1].iterdir():  # an emptied newest folder is skipped: the next newest run is read
        path.unlink()
    assert sample.main(["--prompt", "import ", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("import ")


def test_a_run_without_a_checkpoint_is_pointed_to_overwrite(tmp_path):
    from gpt.checkpoint import CheckpointError, load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"--out-dir \S+run$"):
        load_checkpoint(run)
    (run / "config.json").write_text("{}")  # a run that stopped before its first checkpoint
    with pytest.raises(CheckpointError, match="--overwrite"):
        load_checkpoint(run)
    lock, _ = claim_run_dir(run, tmp_path, resume=False, overwrite=True)  # and that hint works
    lock.release()
