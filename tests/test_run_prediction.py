"""Every run checks the predictor: train.py's summary, sample.py's profile file and the report carry the
prediction made on this device's cached profile beside the measurement, or say that there is no profile."""

import json
from pathlib import Path

import pytest
import torch

import sample
import train
from gpt.config import GPTConfig
from profiling import device_profile, predict
from profiling.__main__ import main as profiling_main
from profiling.hardware import device_name
from profiling.rundir import summarize_run

# A profile that is not this CPU's real one: the predictions it gives are known by construction, so the test
# checks the wiring (the right work predicted, the error computed against what was measured), not the CPU.
MATMUL, ATTENTION, PER_ELEMENT = 4e9, 1e9, 2e-10


def _flat(rate: float) -> list:
    return [[[rate] * 2 for _ in range(2)] for _ in range(2)]


def fake_profile() -> device_profile.DeviceProfile:
    from profiling.flops import MEMORY_PASSES

    return device_profile.DeviceProfile(
        device=device_name(torch.device("cpu")), device_class="cpu", kind="measured", dtype="fp32",
        date="2026-11-23T00:00:00+00:00", source="test", peak_flops=8e9, peak_flops_source="test",
        memory_bandwidth=5e9, matmul={"dims": [1, 4096], "flops_per_sec": _flat(MATMUL)},
        attention={"backend": "sdpa", "batch_heads": [1, 4096], "seq": [1, 4096], "head_dim": [8, 256],
                   "flops_per_sec": {v: _flat(ATTENTION) for v in ("causal", "causal_backward", "decode")}},
        memory={kind: {"elements": [1, 10**9], "seconds": [PER_ELEMENT, PER_ELEMENT * 1e9]} for kind in MEMORY_PASSES}
        | {"stream_copy": {"bytes": 2**27, "bytes_per_sec": 5e9}},
        adamw={"seconds_per_parameter": 1e-9, "seconds_per_tensor": 1e-6},
        overhead={"per_call_s": {"inference": 1e-5, "training": 2e-5},
                  "fixed_s": {"forward": 1e-4, "train_micro_step": 1e-4, "token": 1e-4, "prefill": 1e-4,
                              "train_step": 1e-4},
                  "overlap": False},
    )


@pytest.fixture
def cached_profile():
    """The fake profile in this session's cache, where `calibrate` would put the real one; removed afterwards."""
    profile = fake_profile()
    path = device_profile.save_profile(profile, device_profile.cache_path(profile.device, profile.dtype))
    yield profile
    path.unlink()


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(Path(json.__file__).read_text() * 3)
    return path


TRAIN = ["--block-size", "32", "--batch-size", "4", "--grad-accum", "2", "--eval-iters", "1", "--no-progress",
         "--max-iters", "5"]


def _summary(run: Path) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == "summary"][-1]


def test_training_records_the_prediction_beside_the_measurement(corpus, tmp_path, cached_profile, capsys):
    run = tmp_path / "run"
    assert train.main(["--data", str(corpus), "--out-dir", str(run), *TRAIN]) == 0
    assert "predicted" in capsys.readouterr().err
    config = GPTConfig(**json.loads((run / "config.json").read_text())["model"])
    expected = predict.predict_train(config, 4, 32, 2, cached_profile)
    summary = _summary(run)
    assert summary["predicted_tokens_per_sec"] == pytest.approx(expected.tokens_per_sec, rel=1e-12)
    assert summary["prediction"]["breakdown"] == pytest.approx(expected.breakdown, rel=1e-12)
    assert summary["prediction_error"] == pytest.approx(expected.tokens_per_sec / summary["tokens_per_sec"] - 1)
    # One process: the share of step time left unexplained is the same gap, 1 - predicted / measured seconds.
    assert summary["unexplained_step_fraction"] == pytest.approx(1 - expected.step_seconds /
                                                                 (summary["measured_time_s"] / summary["measured_steps"]))
    for line in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()):
        if line["kind"] == "step":
            assert line["unexplained_step_fraction"] == pytest.approx(1 - expected.step_seconds / line["step_time_s"])
    # The report compares with the whole run recomputed from the step lines, and draws the breakdown.
    report = summarize_run(run)
    assert report["prediction_error"] == pytest.approx(expected.tokens_per_sec / report["tokens_per_sec"] - 1)
    assert profiling_main(["report", str(run), "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s, predicted" in out and "predicted matmul" in out and "measured profile of" in out
    assert (run / "prediction.png").stat().st_size > 0


def test_without_a_profile_the_run_says_how_to_make_one(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(["--data", str(corpus), "--out-dir", str(run), *TRAIN]) == 0
    note = (f"no profile of {device_name('cpu')}: run python -m profiling calibrate --device cpu --dtype fp32"
            " at the same thread count")
    assert note in capsys.readouterr().err
    summary = _summary(run)
    # The peaks cache a quick grid of a few points; that is not a profile to predict with.
    assert summary["predicted_tokens_per_sec"] is None and summary["prediction_note"] == note
    assert profiling_main(["report", str(run), "--no-cost", "--no-plots"]) == 0
    assert summary["prediction_note"] in capsys.readouterr().out


def test_sampling_records_prefill_and_decode_predictions(tmp_path, cached_profile, capsys):
    path = tmp_path / "profile.json"
    argv = ["--init", "random", "--layers", "2", "--width", "64", "--heads", "4", "--prompt", "def f(x):",
            "--num-samples", "2", "--max-new-tokens", "12", "--temperature", "0", "--profile-json", str(path)]
    assert sample.main(argv) == 0
    assert "predicted" in capsys.readouterr().err
    written = json.loads(path.read_text())
    config = GPTConfig(**written["model"])
    batch, prompt, new = written["batch"], written["prompt_tokens"], written["new_tokens"]
    prefill = predict.predict_prefill(config, batch, prompt, cached_profile, new)  # the cache holds prompt + new
    decode = predict.predict_decode(config, batch, prompt, new, cached_profile)
    assert written["prefill_predicted_tokens_per_sec"] == pytest.approx(prefill.tokens_per_sec, rel=1e-12)
    assert written["decode_predicted_tokens_per_sec"] == pytest.approx(decode.tokens_per_sec, rel=1e-12)
    assert written["decode_prediction_error"] == pytest.approx(
        decode.tokens_per_sec / written["decode_tokens_per_sec"] - 1)
    assert written["decode_prediction"]["profile"]["kind"] == "measured"


def test_a_damaged_cached_profile_does_not_stop_a_run(tmp_path, capsys):
    profile = fake_profile()
    path = device_profile.cache_path(profile.device, profile.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    try:
        assert sample.main(["--init", "random", "--max-new-tokens", "3", "--profile-json",
                            str(tmp_path / "p.json")]) == 0
    finally:
        path.unlink()
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["decode_predicted_tokens_per_sec"] is None
    assert written["prediction_note"].startswith(f"no profile of {device_name('cpu')}: run python -m profiling "
                                                 "calibrate")
