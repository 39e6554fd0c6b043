"""The cost model against hand arithmetic, and its refusal of bad prices."""

import json

import pytest

from profiling import cost
from profiling.prices import DEVICE_PRICES, FACILITY, PriceError, load_overrides


def ownership(**changes) -> cost.OwnershipInputs:
    values = dict(purchase_usd=30_000, lifetime_years=5, utilisation=0.5, board_power_w=700, power_load_factor=0.5,
                  pue=1.2, electricity_usd_per_kwh=0.10, operations_fraction_per_year=0.1)
    return cost.OwnershipInputs(**(values | changes))


def test_owned_device_hour_by_hand():
    hour = cost.owned_device_hour(ownership())
    busy_hours_per_year = 365.25 * 24 * 0.5  # 4383
    assert hour.hardware_usd == pytest.approx(30_000 / (5 * busy_hours_per_year))  # 1.3689 $/h
    assert hour.operations_usd == pytest.approx(3_000 / busy_hours_per_year)  # 0.6845 $/h
    assert hour.energy_usd == pytest.approx(0.7 * 0.5 * 1.2 * 0.10)  # 0.042 $/h: kW × load × PUE × $/kWh
    assert hour.total_usd == pytest.approx(1.368925 + 0.684462 + 0.042, rel=1e-6)


def test_cloud_hour_spreads_idle_time_over_busy_time():
    assert cost.cloud_device_hour(2.0, utilisation=0.5).total_usd == 4.0


def test_serving_cost_per_token_query_and_day_by_hand():
    # $2/h at 1,000 tokens/s: one token costs 2 / 3.6e6 $; 700-token queries, a million a day.
    result = cost.serving_cost(cost.cloud_device_hour(2.0), 1_000, kw_per_device=0.5, tokens_per_query=700,
                               queries_per_day=1e6, grid_kg_co2_per_kwh=0.4)
    assert result.usd_per_token == pytest.approx(2 / 3.6e6)
    assert result.usd_per_million_tokens == pytest.approx(0.555556, rel=1e-6)
    assert result.usd_per_query == pytest.approx(700 * 2 / 3.6e6)
    assert result.usd_per_day == pytest.approx(388.8889, rel=1e-6)
    assert result.device_hours_per_day == pytest.approx(7e8 / 1_000 / 3600)  # 194.4 device-hours
    assert result.kwh_per_day == pytest.approx(194.4444 * 0.5, rel=1e-6)
    assert result.kg_co2_per_day == pytest.approx(194.4444 * 0.5 * 0.4, rel=1e-6)
    assert result.wh_per_query == pytest.approx(1000 * 0.5 * 700 / 1_000 / 3600)


def test_training_cost_by_hand():
    hour = cost.cloud_device_hour(2.0)
    result = cost.training_cost(1e21, peak_flops_per_sec=1e15, mfu=0.5, n_devices=8, device_hour=hour,
                                kw_per_device=1.0)
    assert result.device_hours == pytest.approx(2e6 / 3600)  # 1e21 / 5e14 FLOP/s = 2e6 device-seconds
    assert result.days == pytest.approx(2e6 / 3600 / 8 / 24)
    assert result.usd == pytest.approx(2 * 2e6 / 3600)
    assert result.kwh == pytest.approx(2e6 / 3600)
    assert cost.approximate_training_flops(1e9, 2e10) == 1.2e20
    assert cost.implied_mfu(1e21, 8, 1.0, 1e15) == pytest.approx(1e21 / (8 * 86_400 * 1e15))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_non_positive_inputs_are_refused(bad):
    with pytest.raises(PriceError, match="positive"):
        cost.cloud_device_hour(bad)
    with pytest.raises(PriceError, match="tokens_per_sec"):
        cost.serving_cost(cost.cloud_device_hour(1.0), bad, None)
    with pytest.raises(PriceError, match="queries_per_day"):
        cost.serving_cost(cost.cloud_device_hour(1.0), 10.0, None, 100, bad)
    with pytest.raises(PriceError, match="purchase_usd"):
        ownership(purchase_usd=bad)


def test_fractions_out_of_range_are_refused():
    with pytest.raises(PriceError, match="utilisation"):
        ownership(utilisation=1.5)
    with pytest.raises(PriceError, match="pue"):
        ownership(pue=0.9)
    with pytest.raises(PriceError, match="mfu"):
        cost.training_cost(1e20, 1e15, 1.2, 1, cost.cloud_device_hour(1.0), 1.0)


def test_price_table_names_a_source_and_date_for_every_number():
    entries = [getattr(FACILITY, name) for name in vars(FACILITY)]
    entries += [entry for price in DEVICE_PRICES.values() for entry in vars(price).values()]
    for entry in entries:
        assert entry.value > 0 and entry.source and entry.date, entry


def test_override_file_replaces_and_rejects(tmp_path):
    good = tmp_path / "prices.toml"
    good.write_text('pue = 1.1\n[devices.h100-sxm]\ncloud_usd_per_hour = 2.0\n')
    facility, devices = load_overrides(good)
    assert facility.pue.value == 1.1 and "override" in facility.pue.source
    assert devices["h100-sxm"].cloud_usd_per_hour.value == 2.0
    assert devices["h100-sxm"].purchase_usd == DEVICE_PRICES["h100-sxm"].purchase_usd
    unknown = tmp_path / "prices.json"
    unknown.write_text(json.dumps({"electricity_price": 0.1}))
    with pytest.raises(PriceError, match="unknown price name.*electricity_usd_per_kwh"):
        load_overrides(unknown)
    negative = tmp_path / "negative.toml"
    negative.write_text("electricity_usd_per_kwh = -0.1\n")
    with pytest.raises(PriceError, match="electricity_usd_per_kwh must be a positive number"):
        load_overrides(negative)


def test_price_device_labels_every_input():
    priced = cost.price_device(cost.PriceChoice(pricing="tco", purchase_usd=20_000), "h100-sxm", 700.0)
    assert priced.inputs["purchase_usd"]["source"] == "given on the command line"
    assert "EIA" in priced.inputs["electricity_usd_per_kwh"]["source"]
    assert priced.inputs["board_power_w"]["value"] == 700.0
    assert priced.kw_per_device == pytest.approx(0.7 * FACILITY.power_load_factor.value * FACILITY.pue.value)
    cloud = cost.price_device(cost.PriceChoice(), "h100-sxm", 700.0)
    assert cloud.device_hour.total_usd == DEVICE_PRICES["h100-sxm"].cloud_usd_per_hour.value
    with pytest.raises(PriceError, match="no price for device 'l4'.*--usd-per-device-hour"):
        cost.price_device(cost.PriceChoice(), "l4", 72.0)


def test_cost_parts_name_what_a_cloud_price_includes():
    cloud = cost.cloud_device_hour(2.0, utilisation=0.5)
    assert cloud.parts() == {"cloud rental (energy, operations included)": 4.0}
    owned = cost.DeviceHourCost(1.0, 0.25, 0.5, "tco")
    assert owned.parts() == {"hardware": 1.0, "energy": 0.25, "operations": 0.5}
    assert sum(owned.parts().values()) == owned.total_usd
