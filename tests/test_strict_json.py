"""Strict JSON: whatever gptmeter writes parses with a parser that rejects NaN and Infinity, and reads back."""

import json
import math

import pytest

from gpt.files import dumps_json, write_json
from profiling.__main__ import main as profiling_main
from profiling.rundir import summarize_run
from tests.test_report import write_run


def strict(text: str):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))


def test_non_finite_numbers_become_null_with_a_reason(tmp_path):
    value = {"loss": math.nan, "rates": [math.inf, 1.5], "inner": {"low": -math.inf, "ok": 2}, "n": 3}
    assert strict(dumps_json(value)) == {"loss": None, "loss_nonfinite": "nan", "rates": [None, 1.5],
                                         "inner": {"low": None, "low_nonfinite": "-inf", "ok": 2}, "n": 3}
    write_json(tmp_path / "x.json", value)
    assert strict((tmp_path / "x.json").read_text())["inner"]["low_nonfinite"] == "-inf"


def test_cli_json_with_overflowing_inputs_is_strict(capsys):
    status = profiling_main(["cost", "--device", "h100-sxm", "--tokens-per-sec", "1e-300",
                             "--usd-per-device-hour", "1e300", "--json"])
    result = strict(capsys.readouterr().out)
    assert status == 0 and result["usd_per_million_tokens"] is None
    assert result["usd_per_million_tokens_nonfinite"] == "inf"
    assert profiling_main(["hardware", "--peak-tflops", "1e308", "--json"]) == 0
    assert strict(capsys.readouterr().out)["device"]["flops_nonfinite"] == "inf"


def test_the_report_reads_a_null_validation_loss(tmp_path):
    run = write_run(tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as handle:  # what a diverged evaluation logs
        handle.write(dumps_json({"kind": "eval", "step": 9, "val_loss": math.nan}) + "\n")
    summary = summarize_run(run)
    assert summary["best_val_loss"] == 4.2 and summary["best_val_step"] == 4
    assert profiling_main(["report", str(run), "--no-cost", "--json"]) == 0
