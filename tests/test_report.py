"""The run report against a synthetic run directory whose figures are computed by hand."""

import json
import shutil
import subprocess
import sys

import pytest

from profiling.__main__ import main
from profiling.report import format_summary
from profiling.rundir import RunDirError, summarize_run

PEAK = 1e12
FLOPS_PER_TOKEN = 6_000_000
TOKENS = 4096
# (step time s, watts) of the measured steps; two warm-up steps of 3 s come first
MEASURED = [(0.5, 300.0), (0.4, 310.0), (0.5, 300.0), (0.25, None), (0.2, 320.0), (0.25, 330.0)]


def step_line(step, seconds, watts, warmup, source="nvml-energy-counter"):
    tokens_per_sec = TOKENS / seconds
    return {
        "kind": "step", "step": step, "loss": 5.0 - 0.1 * step, "lr": 6e-4, "tokens": TOKENS,
        "tokens_per_sec": tokens_per_sec, "elapsed_s": 10.0 * step, "step_time_s": seconds,
        "flops_per_token": FLOPS_PER_TOKEN, "mfu": FLOPS_PER_TOKEN * tokens_per_sec / PEAK, "hfu": None,
        "watts": watts, "joules_per_token": None if watts is None else watts / tokens_per_sec,
        "energy_source": None if watts is None else source, "warmup": warmup,
    }


def write_run(run_dir, source="nvml-energy-counter", summary=True):
    run_dir.mkdir()
    config = {"model": {"n_layer": 2, "n_head": 2, "n_embd": 64}, "train": {"batch_size": 4}, "device": "cpu",
              "dtype": "float32", "params": 123_456}
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = [{"kind": "eval", "step": 0, "val_loss": 5.5}]
    lines += [step_line(step, 3.0, 250.0, True, source) for step in (1, 2)]
    lines += [step_line(step, t, w, False, source) for step, (t, w) in enumerate(MEASURED, start=3)]
    lines += [{"kind": "eval", "step": 4, "val_loss": 4.2}, {"kind": "eval", "step": 8, "val_loss": 4.4}]
    if summary:
        lines.append({"kind": "summary", "device": "NVIDIA H100 80GB HBM3", "peak_flops": PEAK,
                      "peak_flops_source": "made-up datasheet", "measured_peak_flops": 0.8 * PEAK})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


def test_summary_matches_hand_computation(tmp_path):
    summary = summarize_run(write_run(tmp_path / "run"), window=3)
    seconds = sum(t for t, _ in MEASURED)  # 2.1 s for 6 × 4096 tokens
    assert summary["steps"] == 8 and summary["warmup_steps"] == 2 and summary["last_step"] == 8
    assert summary["tokens"] == 8 * TOKENS and summary["measured_tokens"] == 6 * TOKENS
    assert summary["tokens_per_sec"] == pytest.approx(6 * TOKENS / seconds)
    assert summary["window_tokens_per_sec"] == pytest.approx(3 * TOKENS / 0.7)
    assert summary["mfu"] == pytest.approx(FLOPS_PER_TOKEN * 6 * TOKENS / seconds / PEAK)
    assert summary["window_mfu"] == pytest.approx(FLOPS_PER_TOKEN * 3 * TOKENS / 0.7 / PEAK)
    assert summary["mfu_measured_peak"] == pytest.approx(summary["mfu"] / 0.8)
    assert summary["hfu"] is None
    energy = 0.5 * 300 + 0.4 * 310 + 0.5 * 300 + 0.2 * 320 + 0.25 * 330  # the step without watts is left out
    assert summary["energy_j"] == pytest.approx(energy)
    assert summary["joules_per_token"] == pytest.approx(energy / (5 * TOKENS))
    assert summary["watts"] == pytest.approx(energy / 1.85)
    assert summary["energy_source"] == "nvml-energy-counter" and summary["energy_is_estimate"] is False
    assert (summary["best_val_loss"], summary["best_val_step"]) == (4.2, 4)
    assert summary["device"] == "NVIDIA H100 80GB HBM3" and summary["peak_flops_source"] == "made-up datasheet"

    table = format_summary(summary)
    assert f"{6 * TOKENS / seconds:,.0f}" in table
    assert f"{100 * summary['mfu']:.1f} %" in table and "measured peak 800.0 GFLOP/s" in table
    assert "4.2000 at step 4" in table and "measured: nvml-energy-counter" in table


def test_estimated_energy_is_labelled_and_a_run_without_summary_line_still_reports(tmp_path):
    run_dir = write_run(tmp_path / "run", source="estimate: 65 W board power x CPU utilisation", summary=False)
    summary = summarize_run(run_dir)
    assert summary["energy_is_estimate"] is True and summary["device"] == "cpu"
    assert summary["peak_flops"] is None and summary["mfu_measured_peak"] is None
    assert "ESTIMATE, not measured: estimate: 65 W" in format_summary(summary)


def test_cli_prints_table_or_json_and_writes_nonempty_pngs(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    assert "tokens/s, whole run" in capsys.readouterr().out
    for name in ("throughput.png", "mfu.png", "loss.png"):
        data = (run_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000

    assert main(["report", str(run_dir), "--json", "--no-plots", "--window", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["window_tokens_per_sec"] == pytest.approx(3 * TOKENS / 0.7) and printed["plots"] == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: shutil.rmtree(d), "does not exist"),
        (lambda d: (shutil.rmtree(d), d.write_text("x")), "is a file, not a run directory"),
        (lambda d: (d / "metrics.jsonl").unlink(), "has no metrics.jsonl"),
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: (d / "config.json").write_text("{model"), "config.json is not valid JSON"),
        (lambda d: (d / "metrics.jsonl").write_text(""), "has no step records yet"),
        (lambda d: (d / "metrics.jsonl").write_text('{"kind": "eval", "step": 0, "val_loss": 5}\n'),
         "has no step records yet"),
        (lambda d: (d / "metrics.jsonl").write_text("step,loss\n1,5.0\n"), "line 1 of"),
        (lambda d: (d / "metrics.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "cannot read .* as text"),
        (lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2}\n'), "not a gptmeter metrics record"),
        (lambda d: (d / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\n'), "lacks tokens, step_time_s"),
    ],
)
def test_bad_run_dirs_give_one_line_errors(tmp_path, capsys, damage, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text(json.dumps(step_line(1, 1.0, None, False)) + "\n")
    damage(run_dir)
    with pytest.raises(RunDirError, match=message):
        summarize_run(run_dir)
    assert main(["report", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message.split()[0] in error


def test_command_line_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "profiling", "report", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"python -m profiling report: error: run directory {tmp_path / 'missing'} does not " \
                            "exist; pass the --out-dir of a train.py run\n"


def test_a_torn_last_line_from_a_killed_run_is_skipped(tmp_path):
    run_dir = write_run(tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "step", "step": 9, "lo')
    assert summarize_run(run_dir)["steps"] == 8
