"""Scaling efficiency across runs at several world sizes, against synthetic runs whose figures are set by hand."""

import json
import re

import pytest

from profiling.__main__ import main
from profiling.rundir import summarize_run
from profiling.scaling import ScalingError, scaling_rows

TOKENS = 2048  # per card per step (train.py's --batch-size is per card)


def write_run(run_dir, world_size, step_time_s, batch_size=4, predicted_step_s=None):
    """A run of 5 steps at a fixed step time; the first is a warm-up step, left out of the figures. With
    `predicted_step_s`, a summary line holds a single-card prediction of that step time."""
    run_dir.mkdir(parents=True)
    config = {"model": {"n_layer": 2, "block_size": 64}, "train": {"batch_size": batch_size, "grad_accum": 1},
              "device": "cpu", "dtype": "float32", "params": 1000, "world_size": world_size,
              "mode": "ddp" if world_size > 1 else "single"}
    (run_dir / "config.json").write_text(json.dumps(config))
    steps = [{"kind": "step", "step": step, "loss": 4.0, "tokens": TOKENS, "step_time_s": step_time_s,
              "tokens_per_sec": TOKENS / step_time_s, "mfu": 0.01 / step_time_s, "warmup": step == 1}
             for step in range(1, 6)]
    if predicted_step_s is not None:
        prediction = {"tokens_per_sec": TOKENS / predicted_step_s, "step_seconds": predicted_step_s,
                      "breakdown": {"matmul": predicted_step_s},
                      "profile": {"kind": "measured", "device": "cpu", "date": "2026-12-01"}}
        steps.append({"kind": "summary", "prediction": prediction})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in steps))
    return run_dir


def test_the_step_time_a_single_card_prediction_leaves_unexplained_by_hand(tmp_path, capsys):
    # Predicted 0.1 s a step on one card. One process measures 0.08 s: the step ran faster, -25% unexplained.
    # Two measure 0.125 s: 1 - 0.1 / 0.125 = 20% of the step is communication and waiting; 0.125 / 0.1 - 1 = 25% is
    # the tokens/s error (predicted 20,480 against 16,384 measured), and 0.25 / 1.25 = 20% again.
    one = write_run(tmp_path / "runs" / "run-001", 1, 0.08, predicted_step_s=0.1)
    two = write_run(tmp_path / "runs" / "run-002", 2, 0.125, predicted_step_s=0.1)
    alone, pair = summarize_run(one), summarize_run(two)
    assert alone["unexplained_step_fraction"] == pytest.approx(-0.25)
    assert pair["unexplained_step_fraction"] == pytest.approx(0.2)
    assert pair["prediction_error"] == pytest.approx(0.25)
    assert [row.unexplained_step_fraction for row in scaling_rows([alone, pair])] == pytest.approx([-0.25, 0.2])
    assert main(["report", str(two), "--no-plots", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"world size +2 \(ddp\)", out)
    assert re.search(r"step time unexplained by one card's prediction +20\.0 %", out)
    assert main(["report", str(one), str(two), "--no-plots"]) == 0  # efficiency 16,384 / 25,600 = 64%
    rows = capsys.readouterr().out.splitlines()
    assert re.match(r"1 +single .* 100\.0% +-25\.0 %", rows[-2]) and re.match(r"2 +ddp .* 64\.0% +20\.0 %", rows[-1])
    assert main(["report", str(one), "--no-plots", "--no-cost"]) == 0
    assert "unexplained" not in capsys.readouterr().out  # one process: the prediction's error row says it


def test_efficiency_is_per_card_throughput_against_the_smallest_world_size(tmp_path):
    runs = [write_run(tmp_path / "run-002", 2, 0.125), write_run(tmp_path / "run-001", 1, 0.1),
            write_run(tmp_path / "run-003", 4, 0.2)]
    rows = scaling_rows([summarize_run(run) for run in runs])
    assert [row.world_size for row in rows] == [1, 2, 4]
    assert [row.tokens_per_sec_per_card for row in rows] == pytest.approx([20480, 16384, 10240])
    assert [row.job_tokens_per_sec for row in rows] == pytest.approx([20480, 32768, 40960])
    assert [row.efficiency for row in rows] == pytest.approx([1.0, 0.8, 0.5])
    assert [row.mfu_per_card for row in rows] == pytest.approx([0.1, 0.08, 0.05])
    assert [row.mode for row in rows] == ["single", "ddp", "ddp"]


def test_report_prints_the_table_and_draws_the_plot_where_the_runs_live(tmp_path, capsys):
    runs = [write_run(tmp_path / "runs" / "run-001", 1, 0.1), write_run(tmp_path / "runs" / "run-002", 2, 0.125)]
    assert main(["report", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "80.0%" in out and "32,768" in out
    assert (tmp_path / "runs" / "scaling.png").stat().st_size > 0
    assert main(["report", *map(str, runs), "--json", "--no-plots"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["efficiency"] for row in result["scaling"]] == pytest.approx([1.0, 0.8])


def test_runs_of_different_workloads_are_refused_in_one_line(tmp_path, capsys):
    small = write_run(tmp_path / "a", 1, 0.1, batch_size=4)
    large = write_run(tmp_path / "b", 2, 0.1, batch_size=8)
    with pytest.raises(ScalingError, match="batch_size"):
        scaling_rows([summarize_run(small), summarize_run(large)])
    assert main(["report", str(small), str(large)]) == 2
    assert "batch_size" in capsys.readouterr().err
