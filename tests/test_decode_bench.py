"""The decode benchmark runs end to end on a toy shape: same greedy tokens as transformers, figures consistent."""

import json
import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from bench.decode import main  # noqa: E402


def test_decode_benchmark_runs_and_agrees_with_transformers(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["--shapes", "toy", "--batches", "1", "3", "--rounds", "2", "--new-tokens", "6",
                     "--threads", "1", "--json", str(tmp_path / "decode.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "decode.json").read_text())
    assert [row["batch"] for row in report["rows"]] == [1, 3]
    for row in report["rows"]:
        assert set(row["results"]) == {"gptmeter", "transformers"}
        for result in row["results"].values():
            assert result["greedy_tokens_equal_gptmeter"]  # same weights, same greedy tokens
            assert len(result["seconds"]) == 2
            assert result["tokens_per_sec"] == pytest.approx(row["batch"] * 6 / result["median_seconds"])
            per_round = [hf / ours for hf, ours in zip(row["results"]["transformers"]["seconds"], result["seconds"])]
            assert result["vs_transformers_rounds"] == pytest.approx(per_round)
            assert min(per_round) <= result["vs_transformers"] <= max(per_round)
            assert result["bandwidth_utilisation"] == pytest.approx(
                row["decode_bytes_per_step"] * 6 / result["median_seconds"] / row["copy_bandwidth_bytes_per_s"])
        assert row["results"]["transformers"]["vs_transformers"] == pytest.approx(1.0)
        assert row["decode_bytes_per_token"] * row["batch"] == pytest.approx(row["decode_bytes_per_step"])
    assert "gptmeter" in capsys.readouterr().out


def test_step_profile_counts_the_operators_of_one_step():
    from bench.decode import profile_step

    entry = profile_step("toy", batch=2, context=8, top=1000)
    calls = {op["name"]: op["calls_per_step"] for op in entry["operators"]}
    assert calls["aten::addmm"] == 4  # one layer: qkv, attention output, MLP in and out (with bias)
    assert calls["aten::linear"] == 5  # and the output head
    assert calls["aten::index_copy_"] == 2  # the new key and value, written into the cache
    assert entry["step_seconds"] > 0 and entry["weight_read_seconds"] > 0


def test_a_transformers_that_does_not_import_is_one_line_naming_the_fix(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(SystemExit) as stopped:
        main(["--shapes", "toy", "--batches", "1", "--rounds", "1", "--new-tokens", "2"])
    assert stopped.value.code != 0
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "transformers does not import" in message and "pip install -e '.[test]'" in message
