"""The price table: what a device costs to rent or own, and the facility figures around it.

Every number carries its source and the date it was read. Prices move every month; they are
defaults to be overridden (`--usd-per-device-hour`, `--purchase-usd`, ... or `--prices FILE`),
never facts. Board power, peak FLOP/s, bandwidth and memory are *not* here: they belong to the
accelerator table in `profiling.hardware`, which this module only refers to by device key.

An override file is TOML or JSON with the names below, for example

    electricity_usd_per_kwh = 0.12
    pue = 1.2
    [devices.h100-sxm]
    cloud_usd_per_hour = 2.10
    purchase_usd = 25000
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gpt.errors import GptmeterError


class PriceError(GptmeterError, ValueError):
    """A price input that cannot be used; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Sourced:
    """A number with where it came from; `source` starts with "assumption" when no public figure backs it."""

    value: float
    unit: str
    source: str
    date: str  # when the source was read or published (YYYY-MM)


@dataclass(frozen=True)
class DevicePrice:
    cloud_usd_per_hour: Sourced  # on-demand rental of one device, energy and operations included
    purchase_usd: Sourced  # one device bought, as part of a server (its share of the server not included)


@dataclass(frozen=True)
class Facility:
    """What owning a device costs around the device itself."""

    electricity_usd_per_kwh: Sourced
    pue: Sourced  # facility energy / IT energy
    lifetime_years: Sourced  # amortisation period of the purchase
    operations_fraction_per_year: Sourced  # maintenance, networking share, space, staff: × purchase price, per year
    power_load_factor: Sourced  # mean draw / board power while serving or training
    grid_kg_co2_per_kwh: Sourced


_LAMBDA_2026 = "on-demand list price, Lambda, as quoted by ozmarx.com/h100-vs-a100-training"
_MARKET_2026 = "mid-range of on-demand quotes, mercatus-ai.com/blog/cloud-gpu-pricing (specialty clouds)"

DEVICE_PRICES: dict[str, DevicePrice] = {
    "h100-sxm": DevicePrice(
        cloud_usd_per_hour=Sourced(2.49, "USD/h", _LAMBDA_2026, "2026-04"),
        purchase_usd=Sourced(27_500.0, "USD", "mid-point of $25,000-30,000 new, awesomeagents.ai/hardware/nvidia-h100",
                             "2026-05"),
    ),
    "h200": DevicePrice(
        cloud_usd_per_hour=Sourced(4.00, "USD/h", _MARKET_2026, "2026-05"),
        purchase_usd=Sourced(32_000.0, "USD", "assumption: H100 SXM price plus ~15% for the larger HBM3e stack",
                             "2026-05"),
    ),
    "a100-80gb": DevicePrice(
        cloud_usd_per_hour=Sourced(1.89, "USD/h", _LAMBDA_2026, "2026-04"),
        purchase_usd=Sourced(15_000.0, "USD", "upper end of $8,000-15,000 street price, "
                             "mercatus-ai.com/blog/a100-vs-h100-vs-h200", "2026-05"),
    ),
}

FACILITY = Facility(
    electricity_usd_per_kwh=Sourced(
        0.0806, "USD/kWh", "US industrial average retail price 2023, EIA Electric Power Annual (Oct 2024)", "2024-10"),
    pue=Sourced(1.58, "", "global average PUE 2023, Uptime Institute Global Data Center Survey 2023 "
                "(hyperscale AI sites report ~1.1-1.2)", "2023-07"),
    lifetime_years=Sourced(5.0, "years", "assumption: 4-6 year accelerator depreciation is usual", "2026-05"),
    operations_fraction_per_year=Sourced(
        0.10, "1/year", "assumption: no public breakdown; covers maintenance, network share, space, staff", "2026-05"),
    power_load_factor=Sourced(0.70, "", "Epoch AI, 'How much energy does ChatGPT use?' (Feb 2025): 70% of peak power",
                              "2025-02"),
    grid_kg_co2_per_kwh=Sourced(
        0.367, "kg/kWh", "US 2023 average, 0.81 lb CO2/kWh, EIA FAQ 'How much carbon dioxide is produced per kWh'",
        "2024-12"),
)

FACILITY_FIELDS = tuple(field.name for field in dataclasses.fields(Facility))
DEVICE_PRICE_FIELDS = tuple(field.name for field in dataclasses.fields(DevicePrice))


def device_price(device_key: str, table: dict[str, DevicePrice] | None = None) -> DevicePrice:
    table = DEVICE_PRICES if table is None else table
    if device_key not in table:
        raise PriceError(
            f"no price for device {device_key!r} (priced: {', '.join(sorted(table))}); "
            "pass --usd-per-device-hour or --purchase-usd, or add it with --prices FILE"
        )
    return table[device_key]


def require_positive(name: str, value: float) -> float:
    """The one check every price, volume and throughput passes: a finite number above zero."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise PriceError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def require_fraction(name: str, value: float) -> float:
    """A share such as a utilisation or an MFU: a number in (0, 1]."""
    if require_positive(name, value) > 1:
        raise PriceError(f"{name} is a fraction in (0, 1], got {value}")
    return float(value)


def _overridden(entry: Sourced, name: str, value, origin: str) -> Sourced:
    return Sourced(require_positive(name, value), entry.unit, f"override from {origin}", "")


def load_overrides(
    path: Path | str, facility: Facility = FACILITY, devices: dict[str, DevicePrice] | None = None
) -> tuple[Facility, dict[str, DevicePrice]]:
    """Apply a TOML or JSON override file on top of the shipped table; unknown names are errors."""
    path = Path(path)
    devices = dict(DEVICE_PRICES if devices is None else devices)
    try:
        text = path.read_text()
    except OSError as error:
        raise PriceError(f"cannot read price file {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise PriceError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {error}") from None
    if not isinstance(data, dict):
        raise PriceError(f"{path} must hold a table of prices, not a {type(data).__name__}")
    device_overrides = data.pop("devices", {})
    unknown = sorted(set(data) - set(FACILITY_FIELDS))
    if unknown:
        raise PriceError(f"{path}: unknown price name(s) {', '.join(unknown)}; known: "
                         f"{', '.join(FACILITY_FIELDS)}, and [devices.KEY] tables")
    facility = dataclasses.replace(
        facility, **{name: _overridden(getattr(facility, name), name, value, str(path)) for name, value in data.items()}
    )
    if not isinstance(device_overrides, dict):
        raise PriceError(f"{path}: 'devices' must be a table of [devices.KEY] entries")
    for key, fields in device_overrides.items():
        if not isinstance(fields, dict) or set(fields) - set(DEVICE_PRICE_FIELDS):
            raise PriceError(f"{path}: [devices.{key}] may hold only {', '.join(DEVICE_PRICE_FIELDS)}")
        if key in devices:
            base = devices[key]
        elif set(fields) == set(DEVICE_PRICE_FIELDS):
            base = DevicePrice(*(Sourced(0.0, unit, "", "") for unit in ("USD/h", "USD")))
        else:
            raise PriceError(f"{path}: new device {key!r} needs both {' and '.join(DEVICE_PRICE_FIELDS)}")
        devices[key] = dataclasses.replace(
            base, **{name: _overridden(getattr(base, name), name, value, str(path)) for name, value in fields.items()}
        )
    return facility, devices
