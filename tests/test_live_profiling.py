"""The profiler inside train.py and sample.py, end to end: logged figures are self-consistent and feed scale."""

import json
from pathlib import Path

import pytest

import sample
import train
from gpt.config import GPTConfig
from profiling import flops
from profiling.__main__ import main as profiling_main

RUN = ["--block-size", "32", "--batch-size", "4", "--eval-iters", "2", "--no-progress", "--max-iters", "6",
       "--board-watts", "65"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("live")
    corpus = folder / "corpus.txt"
    corpus.write_text(Path(json.__file__).read_text() * 5)
    with pytest.MonkeyPatch.context() as patch:  # conftest's cache isolation is per test; this runs before it
        patch.setenv("GPTMETER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gptmeter-cache"))
        assert train.main(["--data", str(corpus), "--out-dir", str(folder / "run"), *RUN]) == 0
    return folder / "run"


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_step_lines_carry_the_analytic_flops_and_a_consistent_mfu(trained_run):
    config = GPTConfig(**json.loads((trained_run / "config.json").read_text())["model"])
    summary = records(trained_run, "summary")[-1]
    assert summary["peak_flops"] > 0 and "measured" in summary["peak_flops_source"]
    for step in records(trained_run, "step"):
        assert step["flops_per_token"] == flops.training_flops_per_token(config)
        expected = step["flops_per_token"] * step["tokens_per_sec"] / summary["peak_flops"]
        assert step["mfu"] == pytest.approx(expected, rel=1e-9)
        assert {"hfu", "watts", "joules_per_token", "energy_source"} <= step.keys()
    assert summary["energy_source"] == "rapl" or summary["energy_source"].startswith("estimate: 65 W")
    assert summary["joules_per_token"] > 0  # a CPU without RAPL still gets an energy figure, labelled an estimate
    measured = [s for s in records(trained_run, "step") if not s["warmup"]]
    whole_run = sum(s["tokens"] for s in measured) / sum(s["step_time_s"] for s in measured)
    assert summary["tokens_per_sec"] == pytest.approx(whole_run, rel=1e-9)
    assert summary["mfu"] == pytest.approx(summary["flops_per_token"] * whole_run / summary["peak_flops"], rel=1e-9)


def test_sample_profile_and_run_feed_cost_and_scale(trained_run, tmp_path, capsys):
    profile_path = tmp_path / "profile.json"
    assert sample.main(["--out-dir", str(trained_run), "--prompt", "def ", "--max-new-tokens", "8",
                        "--profile-json", str(profile_path)]) == 0
    profile = json.loads(profile_path.read_text())
    assert profile["gptmeter_profile"] == 1 and profile["new_tokens"] == 8 and profile["batch"] == 1
    assert 0 < profile["decode_bandwidth_utilisation"] < 1 and 0 < profile["prefill_mfu"] < 1
    assert "decode:" in capsys.readouterr().err

    assert profiling_main(["scale", "--model", "gpt3-175b", "--device", "h100-sxm", "--queries-per-day", "1e8",
                           "--tokens-per-query", "700", "--from", str(trained_run), "--from", str(profile_path),
                           "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Nothing measured on the CPU is an input for the H100; what the runs recorded of the predictor (if this
    # machine has a cached profile) is shown only as a confidence figure, sourced to its file.
    assert result["measured"] == []
    errors = result["confidence"]["errors"]
    assert set(errors) <= {"training", "prefill", "decode"}
    assert all(entry["source"].startswith("measured (from ") for entry in errors.values())
    assert result["serving"]["usd_per_day"] > 0
    assert profiling_main(["cost", "--from", str(profile_path), "--usd-per-device-hour", "1", "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)["tokens_per_sec_per_device"]
    assert priced == {"value": profile["decode_tokens_per_sec"],
                      "source": f"measured (from {profile_path}), decode tokens/s"}


def test_the_reported_peak_memory_excludes_the_ceiling_benchmark(monkeypatch):
    """Measuring ceilings allocates large buffers; the run's peak must not include them."""
    import torch

    from gpt.config import GPTConfig as Config
    from profiling import live

    from profiling.meter import peak_memory

    peak_with_buffers = []

    def measure_with_big_buffers(device):
        buffers = torch.ones(384 * 2**20, dtype=torch.uint8)  # stands in for the copy benchmark's buffers
        del buffers
        peak_with_buffers.append(peak_memory(device)[0])

    monkeypatch.setattr(live, "measured_ceilings", measure_with_big_buffers)
    profiler = live.TrainingProfiler(Config.from_preset("tiny"), torch.device("cpu"), "float32", batch=1, grad_accum=1,
                                    peak_tflops=1.0)
    profiler.on_step(type("Record", (), {"tokens": 10, "step_time_s": 0.1, "step": 1})())
    summary = profiler.summary()
    profiler.close()
    assert summary["peak_memory_kind"] == "process peak RSS"
    assert summary["peak_memory_bytes"] < peak_with_buffers[0] - 300 * 2**20
