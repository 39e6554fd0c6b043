"""The predictor against the model's own training step and generation, on shapes calibration never measured.

A quick calibration (a few grid points) prices two shapes whose widths and depths are off its grid; the
bound (40%) only catches gross breakage — a wrong factor of FLOPs, bytes or calls — without flaking on a
busy machine. The 15% target is held by `python -m bench.extrapolate` (docs/benchmarks.md). As there, each case
keeps the faster of two sweeps, each on a new model: on the 2-core VM of 2026-12-04 one model of a 2-layer
192-wide shape decoded at 2,700 tokens/s and the next, built the same way in the same process, at 4,470.

Both models' weights (1.1 and 3.9 MB) stay within a last-level cache, and neither shape is one that calibration
times (its prefill model is 32 wide). A model whose weights fill the cache to its edge is the predictor's weak
spot (docs/benchmarks.md): on that VM a 2-layer 320-wide model (10 MB) measured its batch-4 decode 52% slower
than predicted in one full test suite, in isolation within 25%.
"""

import pytest
import torch

from bench import extrapolate
from profiling.device_profile import calibrate

pytestmark = pytest.mark.slow

SHAPES = {"L3-d80": dict(n_layer=3, n_head=4, n_embd=80), "L2-d192": dict(n_layer=2, n_head=3, n_embd=192)}


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the bench's clock is CPU time at one thread: steady while other tests run
    yield
    torch.set_num_threads(threads)


def test_predictions_within_40_percent_on_unmeasured_shapes(one_thread, monkeypatch):
    monkeypatch.setattr(extrapolate, "SHAPES", SHAPES)
    profile = calibrate("cpu", "fp32", progress=False, quick=True)
    hot, cold = profile.matmul["hot"], profile.matmul["cold"]  # the decode steps' table, over the skinny rows
    assert hot["rows"] == cold["rows"] and len(hot["flops_per_sec"]) == len(cold["flops_per_sec"])
    assert hot["window_bytes"] == profile.matmul["window_curve"]["bytes"][0] < profile.matmul["window_bytes"]
    rows = extrapolate.run_benchmark(profile, list(SHAPES), [4], "L3-d80", steps=3, repeats=3, progress=lambda _: None,
                                     sweeps=2)
    assert {(row.shape, row.workload) for row in rows} == {(s, w) for s in SHAPES for w in ("train", "prefill", "decode")}
    for row in rows:
        assert abs(row.error) < 0.4, row
        assert row.predicted > 0 and sum(row.breakdown.values()) > 0
