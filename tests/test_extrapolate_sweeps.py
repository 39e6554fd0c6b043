"""bench.extrapolate's sweeps: every shape measured once per sweep, every other sweep in reverse order, and each
case's fastest measurement kept (scripted measurements, no timing)."""

from bench import extrapolate
from tests.test_predict import synthetic_profile

SHAPES = {"A": dict(n_layer=1, n_head=1, n_embd=16), "B": dict(n_layer=2, n_head=1, n_embd=16)}
# tokens/s of every case of a shape, pass by pass: the anchor A's first pass is the discarded warm-up
PASSES = {"A": [999.0, 10.0, 30.0, 20.0], "B": [5.0, 1.0, 2.0]}
CASES = 3  # train, prefill and decode at one batch


def test_each_case_keeps_its_fastest_sweep_and_sweeps_alternate_order(monkeypatch):
    monkeypatch.setattr(extrapolate, "SHAPES", SHAPES)
    calls = []

    def measured(config) -> extrapolate.Measured:
        name = "A" if config.n_layer == 1 else "B"
        calls.append(name)
        value = PASSES[name][(calls.count(name) - 1) // CASES]
        return extrapolate.Measured(value, value / 2)

    monkeypatch.setattr(extrapolate, "measure_training", lambda config, batch, steps: measured(config))
    monkeypatch.setattr(extrapolate, "measure_generation",
                        lambda config, batch, repeats: (measured(config), measured(config)))
    rows = extrapolate.run_benchmark(synthetic_profile(), list(SHAPES), [1], "A", steps=1, repeats=1,
                                     progress=lambda _: None, sweeps=3)
    assert calls[::CASES] == ["A", "A", "B", "B", "A", "A", "B"]  # warm-up, sweep 1, sweep 2 reversed, sweep 3
    assert {(row.shape, row.workload): row.measured for row in rows} == {
        (shape, workload): fastest for shape, fastest in (("A", 30.0), ("B", 5.0))
        for workload in ("train", "prefill", "decode")}
    assert all(row.wall == row.measured / 2 for row in rows)  # the kept measurement's own wall figure


def test_the_machines_drift_is_each_probes_change_in_speed():
    before, after = extrapolate.Probe(100.0, 10.0, 50.0, 4.0), extrapolate.Probe(90.0, 10.0, 55.0, 3.0)
    line = extrapolate.format_drift(before, after)
    assert "matmul -10.0%" in line and "skinny matmul +0.0%" in line and "copy +10.0%" in line
    assert "calls -25.0%" in line
