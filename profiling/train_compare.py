"""Why training needs GPUs: the time, energy and cost of training one model on one token count, per device.

Each device is priced on its own device profile (profiling.device_profile): this machine's CPU on the profile
measured here, a hardware-table GPU on its measured profile if one exists, else on its reference profile.
For each device:

    step         predict_train: one optimizer step of micro_batch × context × grad_accum tokens on each of the
                 devices, plus the gradient all-reduce that data parallelism adds (scale.plan_training: DDP's
                 all-reduce of every float32 gradient once per optimizer step, over the profile's measured
                 collectives at that world size, else the hardware table's links: a ring over NVLink/PCIe inside
                 an 8-device server, InfiniBand or an assumed network between servers; for the CPU one 2-thread
                 VM per server on an assumed 12.5 Gb/s network)
    time         model FLOPs (3 × forward, PaLM; profiling.flops) / (peak × predicted MFU) device-seconds,
                 spread over the devices. Assumed: the all-reduce moves the bytes of DDP's (ZeRO-1/2's
                 reduce-scatter + all-gather move the same); the per-micro-step weight all-gathers of the full
                 sharding that the memory count below assumes (FSDP/ZeRO-3) are not counted, nor tensor or
                 pipeline parallelism, a pipeline bubble or failures
    energy       device-hours × facility kW, facility kW = board power × load factor × PUE (profiling.cost)
    cost         device-hours × the cloud price of a device-hour, and × the owned (TCO) price
    CO2          energy × grid intensity

How many devices. The training state is 16 bytes per parameter (bf16/fp32 weights and gradients, fp32 Adam
moments and master weights: Rajbhandari et al. 2020, ZeRO, section 3.1), sharded evenly over the devices
(FSDP2 `fully_shard` / ZeRO-3). Every device also holds one micro-batch's activations with full activation
recomputation: each layer's 2-byte input (2·T·d per sequence per layer) plus one layer recomputed at a time
(34·T·d bytes per sequence: Korthikanti et al. 2022, table 2, without the 5·a·T² softmax term that a fused
attention kernel never stores). A device's memory (datasheet, or this machine's RAM for the CPU) × the usable
fraction must hold its share. The count is then, in this order: the one asked for (a row below the memory
minimum is refused, with the minimum in the reason), the fewest that finish within `days`, or the fewest
that hold the training state.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from profiling import cost, flops, hardware
from profiling.device_profile import DeviceProfile
from profiling.prices import DEVICE_PRICES, Sourced, load_overrides, require_positive
from profiling.plan import ServingInputs
from profiling.scale import TrainingInputs, communication, plan_training

STATE_BYTES_PER_PARAM = 16  # ZeRO (Rajbhandari et al. 2020) section 3.1: mixed-precision Adam, 2 + 2 + 12 bytes
RECOMPUTED_LAYER_BYTES_PER_TOKEN_PER_WIDTH = 34  # Korthikanti et al. 2022, table 2, 16-bit activations
MAX_DEVICES = 10**9  # the --days search's ceiling
SECONDS_PER_YEAR = cost.HOURS_PER_YEAR * cost.SECONDS_PER_HOUR

# A CPU has no datasheet entry or price: these describe one hardware thread (a cloud vCPU) of a current server
# CPU, scaled by the threads the measured profile used. Each is an assumption, overridable from the command line.
CPU_WATTS_PER_THREAD = Sourced(270 / 80, "W", "assumed: Intel Xeon Platinum 8380 TDP 270 W over its 80 threads "
                               "(Intel ARK), one thread's share", "2021-04")
CPU_USD_PER_THREAD_HOUR = Sourced(0.085 / 2, "USD/h", "assumed: AWS EC2 c6i.large (2 vCPU, Xeon Ice Lake) on-demand "
                                  "$0.085/h, us-east-1 Linux, per vCPU", "2026-05")
CPU_PURCHASE_USD_PER_THREAD = Sourced(8_099 / 80, "USD", "assumed: Intel Xeon Platinum 8380 recommended customer "
                                      "price $8,099 over its 80 threads (Intel ARK); server share not included",
                                      "2021-04")


class CompareError(GptmeterError, ValueError):
    """A comparison that cannot be made as asked; the message names the fix."""


@dataclass(frozen=True)
class DeviceRequest:
    key: str  # "cpu" (this machine's CPU) or a key of profiling.hardware's table
    count: int | None = None  # devices training together; None: from `days`, else the memory minimum

    def __post_init__(self) -> None:
        hardware.accelerator(self.key)  # an unknown key is an UnknownDeviceError listing the known ones
        if self.count is not None and (not isinstance(self.count, int) or self.count <= 0):
            raise CompareError(f"device count for {self.key} must be a positive whole number, got {self.count!r}")


@dataclass(frozen=True)
class CompareInputs:
    tokens: float  # training tokens
    days: float | None = None  # finish within this many days: sets the count of devices not given one
    micro_batch: int = TrainingInputs.micro_batch  # sequences of the full context per device per micro-step
    grad_accum: int = TrainingInputs.grad_accum  # micro-steps per optimizer update
    usable_memory_fraction: float = ServingInputs.usable_memory_fraction
    prices: Path | None = None  # TOML/JSON override of the price table (profiling.prices)
    cpu_watts: float | None = None  # this CPU's power while training, W (None: CPU_WATTS_PER_THREAD × threads)
    cpu_usd_per_hour: float | None = None  # rent of this CPU's share of a machine, USD/h
    cpu_purchase_usd: float | None = None  # purchase of this CPU's share, USD

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, (int, float)) or not math.isfinite(self.tokens) or self.tokens <= 0:
            raise CompareError(f"--tokens must be a positive number of training tokens, got {self.tokens!r}")
        if self.days is not None and not (math.isfinite(self.days) and self.days > 0):
            raise CompareError(f"--days must be a positive number of days, got {self.days!r}")
        for name in ("micro_batch", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise CompareError(f"--{name.replace('_', '-')} must be a positive whole number, "
                                   f"got {getattr(self, name)!r}")
        if not 0 < self.usable_memory_fraction <= 1:
            raise CompareError(f"usable memory fraction is in (0, 1], got {self.usable_memory_fraction}")
        for name in ("cpu_watts", "cpu_usd_per_hour", "cpu_purchase_usd"):
            if getattr(self, name) is not None:
                require_positive(name, getattr(self, name))


# --------------------------------------------------------------------------- memory


def memory_need(config: GPTConfig, micro_batch: int) -> dict[str, float]:
    """Bytes of the training state (to be sharded) and of one device's activations (see module docstring)."""
    sequence = micro_batch * config.block_size * config.n_embd
    return {"state_bytes": float(STATE_BYTES_PER_PARAM * flops.param_count(config)),
            "activation_bytes": float(sequence * (2 * config.n_layer + RECOMPUTED_LAYER_BYTES_PER_TOKEN_PER_WIDTH))}


def min_devices(need: dict[str, float], usable_bytes: float) -> int | None:
    """The fewest devices of `usable_bytes` each that hold the sharded state; None if activations alone exceed it."""
    room = usable_bytes - need["activation_bytes"]
    return None if room <= 0 else max(1, math.ceil(need["state_bytes"] / room))


def machine_memory_bytes() -> int:
    """This machine's RAM, which a CPU trains in."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory(key: str) -> tuple[float, str]:
    """Bytes of memory of one device, and where the figure comes from."""
    if key == "cpu":
        return float(machine_memory_bytes()), "measured: this machine's RAM (os.sysconf)"
    entry = hardware.accelerator(key)
    if entry.memory_bytes is None:
        raise CompareError(f"{key!r} has no memory size in the hardware table; choose a device that has one "
                           "(python -m profiling hardware)")
    return float(entry.memory_bytes), f"datasheet: {entry.source}"


# --------------------------------------------------------------------------- prices


def _cpu_figure(given: float | None, per_thread: Sourced, threads: int, name: str) -> tuple[float, dict[str, Any]]:
    if given is not None:
        return given, {"value": given, "unit": per_thread.unit, "source": f"given on the command line (--{name})"}
    value = per_thread.value * threads
    return value, {"value": value, "unit": per_thread.unit,
                   "source": f"{per_thread.source} ({per_thread.date}), x {threads} threads"}


def price_devices(key: str, inputs: CompareInputs, profile: DeviceProfile) -> tuple[cost.PricedDevice,
                                                                                   cost.PricedDevice]:
    """The device-hour rented (cloud) and owned (TCO), with every input's source; the CPU's from its assumptions."""
    if key != "cpu":
        priced_keys = load_overrides(inputs.prices)[1] if inputs.prices is not None else DEVICE_PRICES
        if key not in priced_keys:
            raise CompareError(f"no price for {key} (priced: {', '.join(sorted(priced_keys))}); add [devices.{key}] "
                               "with cloud_usd_per_hour and purchase_usd in --prices FILE, or leave it out of --devices")
        board = hardware.accelerator(key).board_power_w
        cloud, owned = (cost.price_device(cost.PriceChoice(pricing=pricing, prices=inputs.prices), key, board)
                        for pricing in ("cloud", "tco"))
        return cloud, owned
    threads = profile.threads or 1
    watts, watts_entry = _cpu_figure(inputs.cpu_watts, CPU_WATTS_PER_THREAD, threads, "cpu-watts")
    rent, rent_entry = _cpu_figure(inputs.cpu_usd_per_hour, CPU_USD_PER_THREAD_HOUR, threads, "cpu-usd-per-hour")
    buy, buy_entry = _cpu_figure(inputs.cpu_purchase_usd, CPU_PURCHASE_USD_PER_THREAD, threads, "cpu-purchase-usd")
    labels = {"board_power_w": watts_entry, "usd_per_device_hour": rent_entry, "purchase_usd": buy_entry}
    priced = []
    for pricing in ("cloud", "tco"):
        choice = cost.PriceChoice(pricing=pricing, usd_per_device_hour=rent, purchase_usd=buy, board_power_w=watts,
                                  prices=inputs.prices)
        device = cost.price_device(choice, None, watts)
        relabelled = {name: labels[name] for name in device.inputs if name in labels}
        priced.append(dataclasses.replace(device, inputs=device.inputs | relabelled))
    return priced[0], priced[1]


# --------------------------------------------------------------------------- one device, all devices


def _count(request: DeviceRequest, inputs: CompareInputs, fewest: int,
           days_on: Callable[[int], float]) -> tuple[int, str]:
    """How many devices, and the rule that chose them (see module docstring)."""
    if request.count is not None:
        return request.count, "given"
    if inputs.days is None:
        return fewest, "fewest that hold the training state"
    count = fewest
    for _ in range(60):  # the time need not fall exactly as 1/count once communication is predicted
        days = days_on(count)
        if days <= inputs.days:
            return count, f"fewest that finish within {inputs.days:g} days"
        if count >= MAX_DEVICES:
            break
        count = min(MAX_DEVICES, max(count + 1, math.ceil(count * days / inputs.days)))
    raise CompareError(f"no count up to {MAX_DEVICES:,} devices finishes within {inputs.days:g} days on "
                       f"{request.key}; raise --days")


def compare_device(config: GPTConfig, request: DeviceRequest, profile: DeviceProfile,
                   inputs: CompareInputs) -> dict[str, Any]:
    """One device's row: throughput, devices, time, energy, cost and CO2, each input labelled."""
    if profile.device_class != request.key:
        raise CompareError(f"the profile of {profile.device} ({profile.device_class}) cannot stand for "
                           f"{request.key}: a profile is never carried to another device class")
    cloud, owned = price_devices(request.key, inputs, profile)
    memory, memory_source = device_memory(request.key)
    need = memory_need(config, inputs.micro_batch)
    fewest = min_devices(need, memory * inputs.usable_memory_fraction)
    summary = profile.summary()
    labelled: dict[str, dict[str, Any]] = {
        "device_profile": {"value": summary["device"], "unit": summary["dtype"],
                           "source": f"{profile.kind} profile, {summary['date']}: {summary['source']}"},
        "memory_bytes": {"value": memory, "unit": "B", "source": memory_source},
        "usable_memory_fraction": {"value": inputs.usable_memory_fraction, "unit": "",
                                   "source": "assumed: the rest is workspace and fragmentation"},
        "inter_node_bytes_per_s": {"value": hardware.inter_node(request.key).bytes_per_s, "unit": "B/s",
                                   "source": hardware.inter_node(request.key).source},
    } | owned.inputs | cloud.inputs
    if request.key in hardware.INTERCONNECTS:  # the ring inside a server of the gradient all-reduce
        link = hardware.INTERCONNECTS[request.key]
        labelled["interconnect_bytes_per_s"] = {"value": link.bytes_per_s, "unit": "B/s", "source": link.source}
    labelled["utilisation"]["source"] = "assumed: every paid device-hour trains"
    for entry in labelled.values():
        entry["kind"] = cost.kind_of(entry["source"])
    row: dict[str, Any] = {"key": request.key, "device": profile.device, "profile": summary, "inputs": labelled,
                           "memory": need | {"device_bytes": memory, "min_devices": fewest}, "refused": None}
    if fewest is None:
        row["refused"] = (f"one micro-batch's activations ({need['activation_bytes'] / 1e9:,.1f} GB) exceed a "
                          f"{request.key}'s usable memory ({memory * inputs.usable_memory_fraction / 1e9:,.1f} GB); "
                          "lower --micro-batch")
        return row
    if request.count is not None and request.count < fewest:
        row["refused"] = (f"the training state ({need['state_bytes'] / 1e9:,.0f} GB) does not fit {request.count:,} "
                          f"x {memory / 1e9:,.0f} GB; needs at least {fewest:,} devices")
        return row

    def plan(count: int) -> tuple[cost.TrainingCost, Any]:
        return plan_training(config, profile, TrainingInputs(inputs.tokens, count, inputs.micro_batch,
                                                             inputs.grad_accum), cloud)

    count, rule = _count(request, inputs, fewest, lambda n: plan(n)[0].days)
    training, step = plan(count)
    seconds = training.days * cost.SECONDS_PER_DAY
    compute = step.step_seconds - step.breakdown["communication"]
    row["inputs"]["data_parallel_scaling"] = {  # the predicted share of a step that is not the all-reduce
        "value": compute / step.step_seconds, "unit": "", "kind": "assumed",
        "source": "assumed: one device's step with DDP's copies / (that + the gradient all-reduce), no overlap; "
                  "no tensor or pipeline parallelism, pipeline bubble or failure"}
    return row | {
        "devices": count, "devices_rule": rule, "tokens_per_sec_per_device": step.tokens_per_sec, "mfu": step.mfu,
        "flops": training.flops, "wall_seconds": seconds, "days": training.days,
        "years": seconds / SECONDS_PER_YEAR, "device_hours": training.device_hours, "kwh": training.kwh,
        "kg_co2": training.kg_co2, "usd_cloud": training.usd,
        "usd_owned": training.device_hours * owned.device_hour.total_usd,
        "kw_per_device": cloud.kw_per_device, "step": step.to_dict(),
        "communication": communication(profile, TrainingInputs(inputs.tokens, count, inputs.micro_batch,
                                                               inputs.grad_accum), step),
    }


# --------------------------------------------------------------------------- the published sanity check

# GPT-3 175B on 300B tokens: 3.14e23 training FLOPs (Brown et al. 2020, "Language Models are Few-Shot
# Learners", table D.1), and ~34 days on 1024 A100s at 140 TFLOP/s per GPU (Narayanan et al. 2021, "Efficient
# Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", section 5.1: an estimate, 8·T·P / (n·X)
# with activation recomputation counted, not a measured run).
PUBLISHED_GPT3 = {"model": "gpt3-175b", "tokens": 300e9, "device": "a100-80gb", "devices": 1024,
                  "flops": 3.14e23, "days": 34.0,
                  "source": "FLOPs: Brown et al. 2020, table D.1; days: Narayanan et al. 2021 (SC21) section 5.1 "
                            "estimate at 140 TFLOP/s per A100 with recomputation (MFU ~34%)"}


def gpt3_check(profile: DeviceProfile, prices: Path | None = None) -> dict[str, Any]:
    """GPT-3 175B × 300B tokens on 1024 A100s, predicted here beside the published figures."""
    config = GPTConfig.from_preset(PUBLISHED_GPT3["model"])
    check = CompareInputs(tokens=PUBLISHED_GPT3["tokens"], prices=prices)  # the default micro-batch, whatever was asked
    row = compare_device(config, DeviceRequest(PUBLISHED_GPT3["device"], PUBLISHED_GPT3["devices"]), profile, check)
    a100 = hardware.accelerator(PUBLISHED_GPT3["device"]).peak("bf16")
    implied = cost.implied_mfu(PUBLISHED_GPT3["flops"], PUBLISHED_GPT3["devices"], PUBLISHED_GPT3["days"], a100)
    return {"published": PUBLISHED_GPT3 | {"implied_mfu": implied},
            "six_n_d_flops": cost.approximate_training_flops(flops.param_count(config), PUBLISHED_GPT3["tokens"]),
            "predicted": {name: row.get(name) for name in ("flops", "days", "mfu", "devices", "usd_cloud", "kwh")}
            | {"profile": row["profile"], "communication_share": row["communication"]["share_of_step"]}}


def compare(config: GPTConfig, requests: list[DeviceRequest], inputs: CompareInputs,
            profiles: dict[str, DeviceProfile]) -> dict[str, Any]:
    """Every device's row and the GPT-3 check, on the profiles given (keyed by device key)."""
    return {"tokens": inputs.tokens, "days_limit": inputs.days,
            "micro_batch": inputs.micro_batch, "grad_accum": inputs.grad_accum,
            "rows": [compare_device(config, request, profiles[request.key], inputs) for request in requests],
            "gpt3_check": gpt3_check(profiles[PUBLISHED_GPT3["device"]], inputs.prices)}
