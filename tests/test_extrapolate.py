"""The small-to-large extrapolation machinery runs end to end on CPU (tiny shapes, loose bounds)."""

import torch

from bench.extrapolate import CPU_PAIRS, run_benchmark


def test_cpu_extrapolation_runs_and_lands_in_the_right_range():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steady timings while other tests share the cores
    try:
        results = run_benchmark(torch.device("cpu"), None, CPU_PAIRS, torch.float32, train_batch=4, decode_batch=1,
                                repeats=3)
    finally:
        torch.set_num_threads(threads)
    by_workload = {result.workload: result for result in results}
    training, decode = by_workload["training"], by_workload["decode"]
    # The large model is slower than the small one, predicted and measured.
    assert training.large_measured < training.small_measured and training.large_predicted < training.small_measured
    assert decode.large_measured < decode.small_measured and decode.large_predicted < decode.small_measured
    # Tiny CPU models carry fixed per-step overhead that the FLOP and byte roofs do not scale, so the
    # prediction is pessimistic; the bounds only catch a broken pipeline (a wrong factor of FLOPs or bytes).
    assert abs(training.relative_error) < 0.6, training
    assert -0.9 < decode.relative_error < 1.0, decode
