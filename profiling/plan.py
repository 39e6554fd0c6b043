"""The serving planner: a replica's tensor-parallel degree and batch chosen against latency targets and memory,
the fleet they need for the traffic, and an uncertainty band with its tornado.

A replica is `tp` devices of one server (powers of two). For each `tp` the largest batch whose weights + KV cache
(at --weights-dtype / --kv-dtype) fit, and whose time to first token and per-user decode speed meet --ttft-s and
--min-user-tokens-per-sec, with continuous batching's prefill work on the same devices and two ring all-reduces per
layer over the server's interconnect; then the `tp` needing the fewest devices for the peak traffic. Five uncertain
inputs give a band and a tornado by re-running it. Step times are predictions (`profiling.predict`) on the target
device's profile; docs/cost.md has the formulas.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from profiling import cost, flops, hardware, predict
from profiling.device_profile import DeviceProfile, reference_profile
from profiling.hardware import Accelerator
from profiling.predict import Prediction
from profiling.prices import PriceError, require_positive


class ScaleError(GptmeterError, ValueError):
    """An extrapolation that cannot be made; the message is one line naming the problem and the fix."""


SERVING_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}  # stored bytes per element
# MLCommons MLPerf Inference v4.0, Llama-2-70B server scenario: time to first token at most 2 s and time per
# output token at most 200 ms (5 tokens/s per user), 2024.
LATENCY_SOURCE = "MLPerf Inference v4.0 Llama-2-70B server constraints (TTFT 2 s, TPOT 200 ms), MLCommons 2024"
MAX_BATCH = 4096  # the search's ceiling: sequences one replica decodes together


@dataclass(frozen=True)
class ServingInputs:
    prompt_tokens: int = 0  # tokens read per query before generating
    output_tokens: int = 700  # tokens generated per query ("--tokens-per-query")
    queries_per_day: float = 1e8
    peak_to_average: float = 1.0  # fleet sized for peak = average × this
    dtype: str = "bf16"  # the matmuls: the profile the steps are priced on
    weights_dtype: str = "bf16"  # stored weights: memory, and on a reference profile the bytes a matmul reads
    kv_dtype: str = "bf16"  # stored KV cache: memory only
    ttft_s: float = 2.0  # time to first token at most this (LATENCY_SOURCE)
    min_user_tokens_per_sec: float = 5.0  # each user's decode speed at least this (LATENCY_SOURCE)
    devices_per_server: int = 8
    usable_memory_fraction: float = 0.9  # the rest: activations, workspace, fragmentation
    allreduce_latency_s: float = 10e-6  # fixed cost of one all-reduce inside a server (assumption)
    step_time_factor: float = 1.0  # predicted times × this: the predictor's uncertainty in the band
    price_factor: float = 1.0  # device-hour price × this: the price's uncertainty in the band
    tensor_parallel: int | None = None  # devices per replica; None: the planner chooses

    def __post_init__(self) -> None:
        for name in ("output_tokens", "queries_per_day", "peak_to_average", "devices_per_server",
                     "usable_memory_fraction", "ttft_s", "min_user_tokens_per_sec", "step_time_factor",
                     "price_factor"):
            require_positive(name.replace("output_tokens", "tokens_per_query"), getattr(self, name))
        if self.prompt_tokens < 0 or self.allreduce_latency_s < 0:
            raise ScaleError("prompt tokens and the all-reduce latency must not be negative")
        if self.usable_memory_fraction > 1:
            raise ScaleError(f"usable memory fraction is in (0, 1], got {self.usable_memory_fraction}")
        if self.peak_to_average < 1:
            raise ScaleError(f"--peak-to-average is peak over average traffic, at least 1, got {self.peak_to_average}; "
                             "pass 1 for a fleet sized for the average")
        if self.tensor_parallel is not None:
            require_positive("tensor_parallel", self.tensor_parallel)
        for name in ("weights_dtype", "kv_dtype"):
            if getattr(self, name) not in SERVING_BYTES:
                raise ScaleError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of "
                                 f"{', '.join(SERVING_BYTES)}")


@functools.lru_cache(maxsize=32)
def _reference(device_key: str, dtype: str, weight_bytes: float | None, matmul_dtype: str | None) -> DeviceProfile:
    return reference_profile(device_key, dtype, weight_bytes, matmul_dtype)


def weights_profile(profile: DeviceProfile, device: Accelerator, weights_dtype: str) -> tuple[DeviceProfile, str]:
    """The profile serving steps are priced on with weights stored at `weights_dtype`, and how they enter it.

    A reference profile is rebuilt: fp8 weights on a device whose datasheet has an fp8 peak run fp8 matmuls (weights
    and activations 1 byte, the fp8 peak); any other narrower dtype is weight-only (the matmul reads the stored
    bytes, computes at the profile's dtype). A measured profile holds no such matmuls: there the dtype sets memory
    only."""
    stored = SERVING_BYTES[weights_dtype]
    if stored == flops.bytes_per_element(profile.dtype):
        return profile, f"{weights_dtype} weights: matmuls at the profile's {profile.dtype}"
    if profile.kind != "reference":
        return profile, (f"{weights_dtype} weights set memory only: the measured {profile.dtype} profile has no "
                         f"{weights_dtype} matmuls")
    if weights_dtype == "fp8" and "fp8" in device.peak_flops:
        return (_reference(device.key, profile.dtype, None, "fp8"),
                f"fp8 matmuls at the datasheet fp8 peak ({device.peak('fp8') / 1e12:,.0f} TFLOP/s, reference), "
                "weights and activations 1 byte")
    return (_reference(device.key, profile.dtype, stored, None),
            f"weight-only {weights_dtype}: matmuls read {stored:g} bytes per weight and compute at {profile.dtype}"
            + (" (no fp8 peak on this datasheet)" if weights_dtype == "fp8" else ""))


@dataclass(frozen=True)
class Phase:
    """A predicted time on one replica, and where it goes (seconds by category, already divided over tp)."""

    seconds: float
    breakdown: dict[str, float]
    mfu: float  # of the replica's tp devices


def allreduce_seconds(config: GPTConfig, tokens: int, tp: int, link_bytes_per_s: float, latency_s: float,
                      activation_bytes: float) -> float:
    """Two ring all-reduces per layer (after attention, after the MLP) of tokens × width activations:
    each moves 2(tp−1)/tp of the tensor over every device's link, plus a fixed latency."""
    if tp == 1:
        return 0.0
    per_allreduce = 2 * (tp - 1) / tp * tokens * config.n_embd * activation_bytes / link_bytes_per_s + latency_s
    return 2 * config.n_layer * per_allreduce


def _on_replica(prediction: Prediction | None, tp: int, factor: float, allreduce_s: float) -> Phase:
    if prediction is None:
        return Phase(0.0, {}, 0.0)
    scale = factor / tp
    breakdown = {k: v * scale for k, v in prediction.breakdown.items()} | {"all_reduce": allreduce_s}
    seconds = sum(breakdown.values())
    return Phase(seconds, breakdown, prediction.mfu * prediction.step_seconds / (tp * seconds))


@dataclass(frozen=True)
class ReplicaPoint:
    """One replica of `tp` devices decoding `batch` sequences under continuous batching.

    Every decode iteration (one token for each sequence) also prefills the prompts of the batch / output_tokens
    queries that arrive to replace the finished ones, on the same devices. A new query waits at most one
    iteration, then its prompt is prefilled: time to first token = prefill of one prompt + one iteration."""

    tensor_parallel: int
    batch: int
    decode_step: Phase
    prefill: Phase  # one prompt
    iteration_s: float
    ttft_s: float
    user_tokens_per_sec: float
    queries_per_sec: float


class Planner:
    """Replica points of one model on one device, their memory limit, and the best batch per tp."""

    def __init__(self, config: GPTConfig, device: Accelerator, profile: DeviceProfile, inputs: ServingInputs):
        self.config, self.device, self.inputs = config, device, inputs
        self.profile, self.weights_note = weights_profile(profile, device, inputs.weights_dtype)
        self.context = inputs.prompt_tokens + inputs.output_tokens
        if self.context > config.block_size:
            raise ScaleError(f"a query of {self.context} tokens exceeds the model's context of {config.block_size}; "
                             "lower --prompt-tokens or --tokens-per-query")
        self.weight_bytes = flops.param_count(config) * SERVING_BYTES[inputs.weights_dtype]
        self.kv_bytes_per_token = (flops.kv_cache_bytes_per_token(config, "bf16") / 2 * SERVING_BYTES[inputs.kv_dtype])
        link = hardware.INTERCONNECTS.get(device.key)
        self.link_bytes_per_s = link.bytes_per_s if link else None
        self._steps: dict[int, Prediction] = {}
        # Decode time is linear in the context: the step at the mean context is the generation's mean step.
        self.mean_context = max(inputs.prompt_tokens, 1) + inputs.output_tokens // 2
        self.prefill_one = (predict.predict_prefill(config, 1, inputs.prompt_tokens, self.profile)
                            if inputs.prompt_tokens else None)

    def max_batch(self, tp: int) -> int:
        usable = tp * self.device.memory_bytes * self.inputs.usable_memory_fraction
        return max(0, int((usable - self.weight_bytes) // (self.context * self.kv_bytes_per_token)))

    def tensor_parallel_degrees(self) -> list[int]:
        """Powers of two within a server; beyond 1 only where the hardware table has the server's link. A degree
        the inputs fix is the only one."""
        forced = self.inputs.tensor_parallel
        if forced is not None:
            if forced > self.inputs.devices_per_server or (forced > 1 and not self.link_bytes_per_s):
                raise ScaleError(f"--tensor-parallel {forced} needs {forced} linked devices in one server; this one "
                                 f"has {self.inputs.devices_per_server if self.link_bytes_per_s else 1}: raise "
                                 "--devices-per-server or lower --tensor-parallel")
            return [forced]
        degrees, tp = [], 1
        while tp <= self.inputs.devices_per_server and (tp == 1 or self.link_bytes_per_s):
            degrees.append(tp)
            tp *= 2
        return degrees

    def point(self, tp: int, batch: int) -> ReplicaPoint:
        inputs, factor = self.inputs, self.inputs.step_time_factor
        if batch not in self._steps:
            self._steps[batch] = predict.predict_decode_step(self.config, batch, self.mean_context, self.profile)
        elem = flops.bytes_per_element(self.profile.dtype)

        def comm(tokens: int) -> float:
            return allreduce_seconds(self.config, tokens, tp, self.link_bytes_per_s or 1.0,
                                     inputs.allreduce_latency_s, elem) * factor

        step = _on_replica(self._steps[batch], tp, factor, comm(batch))
        prefill = _on_replica(self.prefill_one, tp, factor, comm(inputs.prompt_tokens))
        iteration = step.seconds + batch / inputs.output_tokens * prefill.seconds
        return ReplicaPoint(tp, batch, step, prefill, iteration, prefill.seconds + iteration, 1 / iteration,
                            batch / (inputs.output_tokens * iteration))

    def meets(self, point: ReplicaPoint) -> str | None:
        """The latency target `point` misses, or None."""
        if point.ttft_s > self.inputs.ttft_s:
            return "ttft"
        if point.user_tokens_per_sec < self.inputs.min_user_tokens_per_sec:
            return "user_tokens_per_sec"
        return None

    def best(self, tp: int) -> tuple[ReplicaPoint, str] | tuple[None, str]:
        """The largest batch on `tp` devices meeting both latency targets and memory, and the limit that bound it.

        Iteration time grows with the batch, so the feasible batches are 1..b*: a binary search finds b*."""
        ceiling = min(self.max_batch(tp), MAX_BATCH)
        if ceiling < 1:
            return None, "memory"
        first = self.point(tp, 1)
        if (missed := self.meets(first)) is not None:
            return None, missed
        low, high = 1, ceiling
        while low < high:
            middle = (low + high + 1) // 2
            if self.meets(self.point(tp, middle)) is None:
                low = middle
            else:
                high = middle - 1
        if low == ceiling:
            return self.point(tp, low), "memory" if ceiling < MAX_BATCH else "max_batch"
        return self.point(tp, low), self.meets(self.point(tp, low + 1)) or "memory"


@dataclass(frozen=True)
class ServingPlan:
    tensor_parallel: int
    batch: int
    limited_by: str  # memory, ttft, user_tokens_per_sec or max_batch: what stopped the batch growing
    ttft_s: float
    user_tokens_per_sec: float
    weight_gb: float
    kv_cache_gb: float
    prefill: Phase  # one prompt
    decode_step: Phase  # one token for every sequence of the batch, at the generation's mean context
    replica_tokens_per_sec: float  # generated tokens/s of one replica, prefill work included
    replica_queries_per_sec: float
    replicas: int
    devices: int
    utilisation: float  # average traffic over the fleet's capacity
    usd_per_day: float
    usd_per_query: float
    usd_per_million_tokens: float  # per million generated tokens
    kwh_per_day: float
    wh_per_query: float
    kg_co2_per_day: float
    candidates: dict[int, str] = field(default_factory=dict)  # tp -> "batch B, D devices" or why it was refused
    weights: str = ""  # how --weights-dtype entered the step times (weights_profile)


def _no_plan(planner: Planner, refusals: dict[int, str]) -> ScaleError:
    inputs = planner.inputs
    if all(reason == "memory" for reason in refusals.values()):
        return ScaleError(
            f"the weights ({planner.weight_bytes / 1e9:,.1f} GB in {inputs.weights_dtype}) and one query's KV cache fit "
            f"no server: {max(refusals)} {planner.device.key} devices offer "
            f"{max(refusals) * planner.device.memory_bytes * inputs.usable_memory_fraction / 1e9:,.1f} GB usable; "
            "use --weights-dtype int8/int4, a device with more memory, or more --devices-per-server")
    tp = max(tp for tp, reason in refusals.items() if reason != "memory")
    point = planner.point(tp, 1)
    if refusals[tp] == "ttft":
        return ScaleError(f"even at batch 1 on {tp} devices the time to first token is {point.ttft_s:.3g} s, over "
                          f"--ttft-s {inputs.ttft_s:g}; raise --ttft-s, lower --prompt-tokens or pick a faster device")
    return ScaleError(f"even at batch 1 on {tp} devices a user gets {point.user_tokens_per_sec:.3g} tokens/s, under "
                      f"--min-user-tokens-per-sec {inputs.min_user_tokens_per_sec:g}; lower it, or pick a faster device")


def plan_serving(config: GPTConfig, device: Accelerator, profile: DeviceProfile, inputs: ServingInputs,
                 priced: cost.PricedDevice) -> ServingPlan:
    """Choose tp and batch (the fewest devices for the peak traffic; the smaller tp on a tie), then size the fleet."""
    planner = Planner(config, device, profile, inputs)
    peak_qps = inputs.queries_per_day / cost.SECONDS_PER_DAY * inputs.peak_to_average
    chosen, refusals, candidates = None, {}, {}
    for tp in planner.tensor_parallel_degrees():
        point, limit = planner.best(tp)
        if point is None:
            refusals[tp] = limit
            candidates[tp] = f"refused: {limit} at batch 1"
            continue
        devices = math.ceil(peak_qps / point.queries_per_sec) * tp
        candidates[tp] = f"batch {point.batch} ({limit}), {devices} devices"
        if chosen is None or devices < chosen[2]:
            chosen = (point, limit, devices)
    if chosen is None:
        raise _no_plan(planner, refusals)
    point, limit, devices = chosen
    tp = point.tensor_parallel
    usd_per_day = cost.fleet_usd_per_day(devices, priced.device_hour) * inputs.price_factor
    kwh_per_day = cost.energy_kwh(priced.kw_per_device, devices * cost.SECONDS_PER_DAY)
    capacity = devices // tp * point.queries_per_sec
    return ServingPlan(
        tensor_parallel=tp,
        batch=point.batch,
        limited_by=limit,
        ttft_s=point.ttft_s,
        user_tokens_per_sec=point.user_tokens_per_sec,
        weight_gb=planner.weight_bytes / 1e9,
        kv_cache_gb=point.batch * planner.context * planner.kv_bytes_per_token / 1e9,
        prefill=point.prefill,
        decode_step=point.decode_step,
        replica_tokens_per_sec=point.batch / point.iteration_s,
        replica_queries_per_sec=point.queries_per_sec,
        replicas=devices // tp,
        devices=devices,
        utilisation=inputs.queries_per_day / cost.SECONDS_PER_DAY / capacity,
        usd_per_day=usd_per_day,
        usd_per_query=usd_per_day / inputs.queries_per_day,
        usd_per_million_tokens=usd_per_day / (inputs.queries_per_day * inputs.output_tokens) * 1e6,
        kwh_per_day=kwh_per_day,
        wh_per_query=kwh_per_day * 1000 / inputs.queries_per_day,
        kg_co2_per_day=kwh_per_day * priced.grid_kg_co2_per_kwh,
        candidates=candidates,
        weights=planner.weights_note,
    )


OWNERSHIPS = {"cloud": "rented", "tco": "owned"}  # --pricing basis -> the fleet it prices


def operating_costs(devices: int, choice: cost.PriceChoice, device: Accelerator) -> dict[str, Any]:
    """The fleet's USD per day by part, rented and owned side by side, whichever basis `choice` picked as the
    headline; each side with the price inputs it used, or the error that kept it from being priced."""
    sides: dict[str, Any] = {"headline": OWNERSHIPS[choice.pricing]}
    for basis, fleet in OWNERSHIPS.items():
        try:
            priced = cost.price_device(replace(choice, pricing=basis), device.key, device.board_power_w)
        except PriceError as error:
            sides[fleet] = {"basis": basis, "error": str(error)}
            continue
        inputs = {name: entry | {"kind": cost.kind_of(entry["source"])} for name, entry in priced.inputs.items()}
        sides[fleet] = {"basis": basis, **cost.fleet_day_parts(devices, priced.device_hour), "inputs": inputs}
    return sides


# Each uncertain input of the plan: its low and high value (the central one is the plan's own) and why.
def band_inputs(central: ServingInputs) -> dict[str, tuple[float, float, str]]:
    return {
        "step_time_factor": (0.8, 1.25, "assumption: predicted step times within -20%/+25%"),
        "price_factor": (0.6, 1.5, "assumption: device-hour price from committed-use discounts to on-demand premiums"),
        "peak_to_average": (1.0, max(2.0, 2 * central.peak_to_average),
                            "assumption: a fleet sized for the average to one sized for twice the peak"),
        "allreduce_latency_s": (5e-6, 30e-6, "assumption: NCCL intra-server all-reduce latency"),
        "usable_memory_fraction": (0.8, 0.95, "assumption: memory left for activations and fragmentation"),
    }


def uncertainty(config: GPTConfig, device: Accelerator, profile: DeviceProfile, central: ServingInputs,
                priced: cost.PricedDevice) -> dict[str, Any]:
    """The tornado (each input alone at its low and high value, the plan re-run) and the band: the plan with
    every input at whichever end lowered cost, and at whichever end raised it."""
    def plan(**changes: float) -> ServingPlan:
        return plan_serving(config, device, profile, replace(central, **changes), priced)

    def plan_or_none(**changes: float) -> ServingPlan | None:
        try:
            return plan(**changes)
        except ScaleError:  # the ends together can miss a target that each alone meets
            return None

    def usd(**changes: float) -> float | None:
        """Cost per day, or None where no plan meets the latency targets and memory at that value."""
        found = plan_or_none(**changes)
        return found.usd_per_day if found else None

    base = plan()
    tornado, cheap, dear = [], {}, {}
    for name, (low, high, source) in band_inputs(central).items():
        at_low, at_high = usd(**{name: low}), usd(**{name: high})
        tornado.append({"input": name, "low": low, "central": getattr(central, name), "high": high,
                        "source": source, "low_usd_per_day": at_low, "high_usd_per_day": at_high})
        ends = [(cost_, value) for cost_, value in ((at_low, low), (at_high, high)) if cost_ is not None]
        ends += [(base.usd_per_day, getattr(central, name))]  # an end with no plan is left at the central value
        cheap[name], dear[name] = min(ends)[1], max(ends)[1]
    tornado.sort(key=lambda entry: -abs((entry["high_usd_per_day"] or base.usd_per_day)
                                        - (entry["low_usd_per_day"] or base.usd_per_day)))
    low, high = plan_or_none(**cheap), plan_or_none(**dear)

    def band(name: str) -> dict[str, float | None]:
        return {"low": getattr(low, name, None), "central": getattr(base, name), "high": getattr(high, name, None)}

    return {"usd_per_day": band("usd_per_day"), "wh_per_query": band("wh_per_query"),
            "devices_band": band("devices"), "tornado": tornado}
