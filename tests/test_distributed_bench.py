"""bench.extrapolate --world-size: its refusals in one line, and (slow) the rows of train.py run in one process
and under torchrun on a tiny shape, predicted on a synthetic profile with a collectives table."""

import dataclasses
import json
import math

import pytest

from bench import distributed, extrapolate
from gpt.config import GPTConfig
from profiling.device_profile import save_profile
from tests.test_collectives import TABLE
from tests.test_predict import synthetic_profile


def test_threads_and_a_profile_without_collectives_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        extrapolate.main(["--world-size", "2", "--threads", "2", "--profile", "unused.json"])
    assert "drop --threads" in capsys.readouterr().err
    path = save_profile(dataclasses.replace(synthetic_profile(), threads=1), tmp_path / "profile.json")
    with pytest.raises(SystemExit):
        extrapolate.main(["--world-size", "2", "--profile", str(path), "--shapes", "L2-d64", "--batches", "1"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torchrun --standalone --nproc_per_node 2 -m profiling calibrate" in err


@pytest.mark.slow
def test_rows_of_one_process_ddp_and_fsdp_come_out_finite(tmp_path):
    profile = dataclasses.replace(synthetic_profile(), collectives=TABLE)
    shape = GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=32, attention="sdpa")
    rows = distributed.run_benchmark(profile, {"L1-d32": shape}, [2], 2, steps=2, progress=lambda _: None)
    assert [(row.mode, row.world_size) for row in rows] == [("single", 1), ("ddp", 2), ("fsdp", 2)]
    for row in rows:
        assert all(math.isfinite(value) and value > 0 for value in (row.measured, row.whole_run, row.predicted))
        assert math.isfinite(row.error)
    assert rows[2].breakdown["communication"] > rows[1].breakdown["communication"] > 0  # FSDP gathers and scatters
    assert "fsdp" in distributed.format_rows(rows).splitlines()[-1]
    json.dumps([dataclasses.asdict(row) for row in rows])
