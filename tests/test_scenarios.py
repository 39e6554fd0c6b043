"""Published estimates recomputed from their own inputs land on the published figures."""

import pytest

from profiling.scenarios import SCENARIOS, ScenarioError, run_scenario

# (scenario, figure, published value, tolerance on the relative difference)
EXPECTED = [
    ("semianalysis-2023", "usd_per_day", 694_444, 0.001),
    ("semianalysis-2023", "usd_per_query", 0.0036, 0.01),
    ("goldstein-2022", "usd_per_day", 100_000, 0.001),
    ("goldstein-2022", "usd_per_query", 0.01, 0.001),
    ("gpt3-training", "flops", 3.14e23, 0.01),
    ("gpt4-training", "mfu_at_90_days", 0.36, 0.03),
    ("gpt4-training", "mfu_at_100_days", 0.32, 0.03),
    ("epoch-energy-per-query", "wh_per_query", 0.3, 0.01),
]


@pytest.mark.parametrize("name, figure, published, tolerance", EXPECTED)
def test_scenario_reproduces_its_published_figure(name, figure, published, tolerance):
    result = run_scenario(name)
    assert result["published"][figure] == published
    assert result[figure] == pytest.approx(published, rel=tolerance)
    assert result["relative_difference"][figure] == pytest.approx((result[figure] - published) / published)


def test_hand_arithmetic_of_two_scenarios():
    assert run_scenario("semianalysis-2023")["usd_per_day"] == 3_617 * 8 * 24 * 1.0
    assert run_scenario("goldstein-2022")["usd_per_query"] == pytest.approx(30 * 3.0 * 8 / 3600 / 20)


def test_every_scenario_names_a_source_and_a_published_figure():
    for name, scenario in SCENARIOS.items():
        result = run_scenario(name)
        assert scenario.source and scenario.description and result["published"] and result["inputs"]


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ScenarioError, match="unknown scenario 'x'; known: semianalysis-2023, goldstein-2022"):
        run_scenario("x")
