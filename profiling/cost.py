"""The cost model: from the price of a device-hour and a measured throughput to dollars and kilowatt-hours.

A device-hour is either rented (a cloud price, energy and operations included) or owned
(total cost of ownership). Owned, one *busy* hour costs

    hardware   = purchase_usd / (lifetime_years × 8766 h × utilisation)
    operations = operations_fraction_per_year × purchase_usd / (8766 h × utilisation)
    energy     = board_power_w / 1000 × power_load_factor × pue × electricity_usd_per_kwh

utilisation spreads the idle hours' amortisation over the busy ones; energy is counted for busy
hours only (idle draw is left out). From a device-hour and a throughput:

    usd_per_token = usd_per_device_hour / (3600 × tokens_per_sec_per_device)
    usd_per_query = usd_per_token × tokens_per_query
    usd_per_day   = usd_per_query × queries_per_day
    kwh_per_token = facility_kw_per_device / (3600 × tokens_per_sec_per_device)

and training a model on D tokens takes model FLOPs / (peak FLOP/s × MFU) device-seconds.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from profiling.prices import (
    FACILITY, Facility, PriceError, Sourced, device_price, load_overrides, require_fraction, require_positive,
)

HOURS_PER_YEAR = 365.25 * 24
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86_400.0


# --------------------------------------------------------------------------- a device-hour


@dataclass(frozen=True)
class DeviceHourCost:
    """The price of one busy device-hour, broken down; cloud prices are all `hardware_usd`."""

    hardware_usd: float
    energy_usd: float
    operations_usd: float
    basis: str  # "cloud" or "tco"

    @property
    def total_usd(self) -> float:
        return self.hardware_usd + self.energy_usd + self.operations_usd

    def parts(self) -> dict[str, float]:
        """USD per device-hour by part; a cloud price is one part, with energy and operations inside it."""
        if self.basis == "cloud":
            return {"cloud rental (energy, operations included)": self.hardware_usd}
        return {"hardware": self.hardware_usd, "energy": self.energy_usd, "operations": self.operations_usd}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total_usd": self.total_usd, "parts": self.parts()}


@dataclass(frozen=True)
class OwnershipInputs:
    purchase_usd: float
    lifetime_years: float
    utilisation: float  # busy hours / owned hours, in (0, 1]
    board_power_w: float
    power_load_factor: float  # mean draw / board power while busy
    pue: float
    electricity_usd_per_kwh: float
    operations_fraction_per_year: float

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            require_positive(name, value)
        for name in ("utilisation", "power_load_factor"):
            require_fraction(name, getattr(self, name))
        if self.pue < 1:
            raise PriceError(f"pue is facility energy over IT energy, at least 1, got {self.pue}")


def facility_kw(board_power_w: float, power_load_factor: float, pue: float) -> float:
    """Wall power of one busy device, cooling and power delivery included."""
    return require_positive("board_power_w", board_power_w) / 1000 * power_load_factor * pue


def cloud_device_hour(usd_per_hour: float, utilisation: float = 1.0) -> DeviceHourCost:
    require_positive("usd_per_device_hour", usd_per_hour)
    require_fraction("utilisation", utilisation)
    return DeviceHourCost(usd_per_hour / utilisation, 0.0, 0.0, "cloud")


def owned_device_hour(inputs: OwnershipInputs) -> DeviceHourCost:
    busy_hours_per_year = HOURS_PER_YEAR * inputs.utilisation
    kw = facility_kw(inputs.board_power_w, inputs.power_load_factor, inputs.pue)
    return DeviceHourCost(
        hardware_usd=inputs.purchase_usd / (inputs.lifetime_years * busy_hours_per_year),
        energy_usd=kw * inputs.electricity_usd_per_kwh,
        operations_usd=inputs.operations_fraction_per_year * inputs.purchase_usd / busy_hours_per_year,
        basis="tco",
    )


# --------------------------------------------------------------------------- fleets, energy


def fleet_usd_per_day(n_devices: float, device_hour: DeviceHourCost) -> float:
    """A fleet paid around the clock."""
    return require_positive("devices", n_devices) * 24 * device_hour.total_usd


def fleet_day_parts(n_devices: float, device_hour: DeviceHourCost) -> dict[str, float]:
    """USD per day of a fleet paid around the clock, by part: hardware (the rental, or an owned device's
    depreciation), energy, maintenance/operations, and their total. A rental's energy and operations are inside its
    price, so those parts are 0 and the total is the rental."""
    day = require_positive("devices", n_devices) * 24
    return {"hardware": day * device_hour.hardware_usd, "energy": day * device_hour.energy_usd,
            "operations": day * device_hour.operations_usd, "total": day * device_hour.total_usd}


def energy_kwh(kw_per_device: float, device_seconds: float) -> float:
    return kw_per_device * device_seconds / SECONDS_PER_HOUR


# --------------------------------------------------------------------------- serving


def _times(*factors: float | None) -> float | None:
    """The product, or None when any factor is unknown."""
    product = 1.0
    for factor in factors:
        if factor is None:
            return None
        product *= factor
    return product


@dataclass(frozen=True)
class ServingCost:
    usd_per_token: float
    usd_per_million_tokens: float
    kwh_per_million_tokens: float | None
    usd_per_query: float | None
    wh_per_query: float | None
    usd_per_day: float | None
    device_hours_per_day: float | None
    kwh_per_day: float | None
    kg_co2_per_day: float | None


def serving_cost(
    device_hour: DeviceHourCost,
    tokens_per_sec_per_device: float,
    kw_per_device: float | None,
    tokens_per_query: float | None = None,
    queries_per_day: float | None = None,
    grid_kg_co2_per_kwh: float = FACILITY.grid_kg_co2_per_kwh.value,
) -> ServingCost:
    """Cost and energy per token, per query (with tokens_per_query) and per day (with queries_per_day too).

    Energy figures are None when kw_per_device is (no board power known).
    """
    require_positive("tokens_per_sec", tokens_per_sec_per_device)
    require_positive("grid_kg_co2_per_kwh", grid_kg_co2_per_kwh)
    device_seconds_per_token = 1.0 / tokens_per_sec_per_device
    usd_per_token = device_hour.total_usd * device_seconds_per_token / SECONDS_PER_HOUR
    kwh_per_token = None if kw_per_device is None else energy_kwh(kw_per_device, device_seconds_per_token)
    per_query = per_day = None
    if tokens_per_query is not None:
        per_query = require_positive("tokens_per_query", tokens_per_query)
    if queries_per_day is not None:
        if per_query is None:
            raise PriceError("queries_per_day needs tokens_per_query too")
        per_day = per_query * require_positive("queries_per_day", queries_per_day)
    return ServingCost(
        usd_per_token=usd_per_token,
        usd_per_million_tokens=usd_per_token * 1e6,
        kwh_per_million_tokens=_times(kwh_per_token, 1e6),
        usd_per_query=None if per_query is None else usd_per_token * per_query,
        wh_per_query=_times(kwh_per_token, per_query, 1000),
        usd_per_day=None if per_day is None else usd_per_token * per_day,
        device_hours_per_day=None if per_day is None else per_day * device_seconds_per_token / SECONDS_PER_HOUR,
        kwh_per_day=_times(kwh_per_token, per_day),
        kg_co2_per_day=_times(kwh_per_token, per_day, grid_kg_co2_per_kwh),
    )


# --------------------------------------------------------------------------- training


def approximate_training_flops(params: float, tokens: float) -> float:
    """6·N·D: forward (2N per token) plus backward (4N), attention left out — how published totals are quoted."""
    return 6.0 * require_positive("params", params) * require_positive("tokens", tokens)


@dataclass(frozen=True)
class TrainingCost:
    flops: float
    device_hours: float
    days: float  # wall-clock on n_devices
    n_devices: int
    usd: float
    kwh: float
    kg_co2: float


def training_cost(
    flops: float,
    peak_flops_per_sec: float,
    mfu: float,
    n_devices: int,
    device_hour: DeviceHourCost,
    kw_per_device: float,
    grid_kg_co2_per_kwh: float = FACILITY.grid_kg_co2_per_kwh.value,
) -> TrainingCost:
    require_positive("flops", flops)
    require_positive("peak_flops", peak_flops_per_sec)
    require_fraction("mfu", mfu)
    require_positive("devices", n_devices)
    device_hours = flops / (peak_flops_per_sec * mfu) / SECONDS_PER_HOUR
    kwh = energy_kwh(kw_per_device, device_hours * SECONDS_PER_HOUR)
    return TrainingCost(
        flops=flops,
        device_hours=device_hours,
        days=device_hours / n_devices / 24,
        n_devices=n_devices,
        usd=device_hours * device_hour.total_usd,
        kwh=kwh,
        kg_co2=kwh * grid_kg_co2_per_kwh,
    )


def implied_mfu(flops: float, n_devices: int, days: float, peak_flops_per_sec: float) -> float:
    """The MFU a reported run must have had: FLOPs / (devices × seconds × peak)."""
    return flops / (n_devices * days * SECONDS_PER_DAY * peak_flops_per_sec)


def kind_of(source: str) -> str:
    """measured, assumed or reference, from an input's source label."""
    if source.startswith("measured"):
        return "measured"
    if source.startswith(("assumed", "assumption", "given on the command line")):
        return "assumed"
    return "reference"


# --------------------------------------------------------------------------- command line


def add_price_arguments(parser: argparse.ArgumentParser) -> None:
    """The device-hour inputs shared by `cost` and `scale`; a value left unset comes from the price table."""
    group = parser.add_argument_group("device-hour price (defaults: profiling/prices.py, see docs/cost.md)")
    group.add_argument("--pricing", choices=("cloud", "tco"), default="cloud",
                       help="rent (on-demand price per device-hour) or own (total cost of ownership); default cloud")
    group.add_argument("--usd-per-device-hour", type=float, help="cloud price of one device for one hour, USD")
    group.add_argument("--purchase-usd", type=float, help="purchase price of one device, USD (tco)")
    group.add_argument("--lifetime-years", type=float, help="amortisation period, years (tco)")
    group.add_argument("--utilisation", type=float, default=1.0,
                       help="busy hours / paid hours, in (0, 1]; default 1.0 (assumed)")
    group.add_argument("--board-power-w", type=float, help="board power, W (default: the hardware table)")
    group.add_argument("--power-load-factor", type=float, help="mean draw / board power while busy")
    group.add_argument("--pue", type=float, help="facility energy / IT energy")
    group.add_argument("--electricity-usd-per-kwh", type=float, help="electricity price, USD/kWh (tco)")
    group.add_argument("--operations-fraction-per-year", type=float,
                       help="maintenance and operations per year as a fraction of the purchase price (tco)")
    group.add_argument("--grid-kg-co2-per-kwh", type=float, help="grid carbon intensity, kg CO2/kWh")
    group.add_argument("--prices", type=Path, metavar="FILE", help="TOML or JSON file overriding the price table")


@dataclass(frozen=True)
class PriceChoice:
    """The device-hour inputs a user chose; None means: take it from the price table (or the hardware table)."""

    pricing: str = "cloud"  # "cloud" (rent) or "tco" (own)
    usd_per_device_hour: float | None = None
    purchase_usd: float | None = None
    lifetime_years: float | None = None
    utilisation: float = 1.0
    board_power_w: float | None = None
    power_load_factor: float | None = None
    pue: float | None = None
    electricity_usd_per_kwh: float | None = None
    operations_fraction_per_year: float | None = None
    grid_kg_co2_per_kwh: float | None = None
    prices: Path | None = None  # a TOML or JSON file overriding the price table


def price_choice(args: argparse.Namespace) -> PriceChoice:
    """The flags of `add_price_arguments` as a typed choice."""
    return PriceChoice(**{name: getattr(args, name) for name in PriceChoice.__dataclass_fields__})


@dataclass(frozen=True)
class PricedDevice:
    """A device-hour price with the wall power and carbon intensity that go with it, and where each came from."""

    device_hour: DeviceHourCost
    kw_per_device: float | None  # None when no board power is known (cloud price, no device named)
    grid_kg_co2_per_kwh: float
    inputs: dict[str, dict[str, Any]]  # name -> {"value", "unit", "source"}


def price_device(choice: PriceChoice, device_key: str | None, board_power_w: float | None) -> PricedDevice:
    """Resolve the device-hour price from the user's choice, the override file and the shipped table."""
    facility: Facility = FACILITY
    devices = None
    if choice.prices is not None:
        facility, devices = load_overrides(choice.prices)
    inputs: dict[str, dict[str, Any]] = {}

    def pick(name: str, given: float | None, table_entry, unit: str = "") -> float:
        if given is not None:
            inputs[name] = {"value": require_positive(name, given), "unit": unit, "source": "given on the command line"}
        elif table_entry is not None and table_entry.value is not None:
            inputs[name] = {"value": table_entry.value, "unit": table_entry.unit,
                            "source": f"{table_entry.source} ({table_entry.date})".replace(" ()", "")}
        else:
            raise PriceError(f"no value for {name}: pass --{name.replace('_', '-')}")
        return inputs[name]["value"]

    def priced(field: str):
        return getattr(device_price(device_key, devices), field) if device_key else None

    grid = pick("grid_kg_co2_per_kwh", choice.grid_kg_co2_per_kwh, facility.grid_kg_co2_per_kwh, "kg/kWh")
    kw = None
    if choice.board_power_w is not None or board_power_w is not None or choice.pricing == "tco":
        table_power = Sourced(board_power_w, "W", "hardware table (profiling/hardware.py)", "")
        power = pick("board_power_w", choice.board_power_w, table_power, "W")
        load = pick("power_load_factor", choice.power_load_factor, facility.power_load_factor)
        pue = pick("pue", choice.pue, facility.pue)
        kw = facility_kw(power, load, pue)
    inputs["utilisation"] = {"value": choice.utilisation, "unit": "", "source": "assumed (--utilisation)"}
    if choice.pricing == "cloud":
        rate = choice.usd_per_device_hour
        usd = pick("usd_per_device_hour", rate, None if rate is not None else priced("cloud_usd_per_hour"), "USD/h")
        device_hour = cloud_device_hour(usd, choice.utilisation)
    else:
        device_hour = owned_device_hour(OwnershipInputs(
            purchase_usd=pick("purchase_usd", choice.purchase_usd,
                              None if choice.purchase_usd is not None else priced("purchase_usd"), "USD"),
            lifetime_years=pick("lifetime_years", choice.lifetime_years, facility.lifetime_years, "years"),
            utilisation=choice.utilisation,
            board_power_w=power,
            power_load_factor=load,
            pue=pue,
            electricity_usd_per_kwh=pick("electricity_usd_per_kwh", choice.electricity_usd_per_kwh,
                                         facility.electricity_usd_per_kwh, "USD/kWh"),
            operations_fraction_per_year=pick("operations_fraction_per_year", choice.operations_fraction_per_year,
                                              facility.operations_fraction_per_year, "1/year"),
        ))
    return PricedDevice(device_hour, kw, grid, inputs)
