"""The serving planner: a replica's tensor-parallel degree and batch chosen against latency targets and memory,
the fleet they need for the traffic, and an uncertainty band with its tornado.

A replica is `tp` devices of one server (powers of two). For each `tp` the largest batch whose weights + KV cache
(at --weights-dtype / --kv-dtype) fit, and whose time to first token and per-user decode speed meet --ttft-s and
--min-user-tokens-per-sec, with continuous batching's prefill work on the same devices and two ring all-reduces per
layer over the server's interconnect; then the `tp` needing the fewest devices for the peak traffic. Every assumed
or reference input that moves cost, energy or CO2 carries a low, central and high value, each with its source
(`band_inputs`); re-running the plan with each alone at either end gives the tornado, and with all at the ends that
lower or raise a figure, its band (`uncertainty`). Step times are predictions (`profiling.predict`) on the target
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

# Where the traffic's defaults come from. The prompt is what a serving step prefills per query; LMSYS-Chat-1M is
# the largest published log of a ChatGPT-like service's traffic. Not verified offline: an assumption until checked.
PROMPT_TOKENS = 70
PROMPT_SOURCE = ("assumption (published figure not verified offline): LMSYS-Chat-1M (Zheng et al., ICLR 2024; 1M "
                 "conversations with 25 chat LLMs, Apr-Aug 2023) reports a mean of 69.5 tokens per user prompt")
PROMPT_HIGH, PROMPT_HIGH_SOURCE = 1020, (
    "assumption (published figure not verified offline): Splitwise (Patel et al., ISCA 2024), Azure LLM inference "
    "trace 'conversation', median prompt about 1,020 tokens: a conversation's history re-read with each query")
OUTPUT_LOW, OUTPUT_LOW_SOURCE = 215, (
    "assumption (published figure not verified offline): LMSYS-Chat-1M reports a mean of 214.5 tokens per response")


@dataclass(frozen=True)
class ServingInputs:
    prompt_tokens: int = PROMPT_TOKENS  # tokens read per query before generating (PROMPT_SOURCE)
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
    kv_context_tokens: int | None = None  # KV slots each sequence reserves (a traffic file's long end); None:
    # prompt + output tokens. Never fewer than those.

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
        if self.kv_context_tokens is not None:
            require_positive("kv_context_tokens", self.kv_context_tokens)
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
        # The KV slots each sequence holds: its prompt and output, or a traffic file's long end if that is longer.
        self.context = max(inputs.prompt_tokens + inputs.output_tokens, inputs.kv_context_tokens or 0)
        if self.context > config.block_size:
            if inputs.kv_context_tokens is not None and inputs.kv_context_tokens == self.context:
                raise ScaleError(f"the traffic's long queries ({self.context} tokens, its 99th percentile) exceed "
                                 f"the model's context of {config.block_size}; shorten them in the --traffic file")
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


# --------------------------------------------------------------------------- the band and its tornado

@dataclass(frozen=True)
class BandInput:
    """One uncertain input: its low, central and high value, each with a source or the word "assumption", and
    what it changes: a field of ServingInputs ("serving") or of the price choice ("price", re-priced)."""

    name: str  # as the inputs list and the tornado print it
    applies_to: str  # "serving" or "price"
    field: str  # the ServingInputs or cost.PriceChoice field it sets
    low: float
    central: float
    high: float
    sources: dict[str, str]  # "low", "central", "high" -> source

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.name, "applies_to": self.applies_to, "field": self.field, "low": self.low,
                "central": self.central, "high": self.high, "sources": self.sources,
                # one line, as the tornado's `source` always read
                "source": "; ".join(f"{end} {getattr(self, end):g}: {self.sources[end]}" for end in ("low", "high"))}


def _ends(central: float, low: tuple[float, str], high: tuple[float, str]) -> tuple[float, str, float, str]:
    """A published (or assumed) low and high around `central`; an end on the wrong side of it (the central value
    was given beyond that range) becomes half or twice the central value, labelled an assumption."""
    (low_value, low_source), (high_value, high_source) = low, high
    if not low_value < central:
        low_value, low_source = central / 2, "assumption: half the central value"
    if not high_value > central:
        high_value, high_source = central * 2, "assumption: twice the central value"
    return low_value, low_source, high_value, high_source


def band_inputs(central: ServingInputs, config: GPTConfig | None = None, device: Accelerator | None = None,
                priced: cost.PricedDevice | None = None, choice: cost.PriceChoice | None = None,
                sources: dict[str, str] | None = None) -> dict[str, BandInput]:
    """Every assumed or reference input that moves cost per day, Wh per query or CO2, with its low and high value
    and a source for each (docs/cost.md lists them). Without `priced` and `choice` only the plan's own inputs;
    the price inputs need both (they are re-priced). `sources` names where each central value came from."""
    sources = sources or {}
    entries: list[BandInput] = []

    def add(name: str, applies_to: str, field_: str, central_value: float, low: float, low_source: str,
            high: float, high_source: str, central_source: str | None = None) -> None:
        entries.append(BandInput(name, applies_to, field_, low, central_value, high, {
            "low": low_source, "central": sources.get(name, central_source or "the plan's input"),
            "high": high_source}))

    context = config.block_size if config is not None else None
    add("step_time_factor", "serving", "step_time_factor", central.step_time_factor,
        0.8, "assumption: predicted step times 20% too slow (the predictor's error on a GPU is not measured here)",
        1.25, "assumption: predicted step times 25% too fast", "the predictor's step times as they are")
    add("price_factor", "serving", "price_factor", central.price_factor,
        0.6, "assumption: committed-use and spot discounts on the device-hour price",
        1.5, "assumption: on-demand premiums over the table's price", "the price table's device-hour")
    add("peak_to_average", "serving", "peak_to_average", central.peak_to_average,
        1.0, "assumption: a fleet sized for the average traffic",
        max(2.0, 2 * central.peak_to_average), "assumption: a fleet sized for twice the peak")
    add("allreduce_latency_s", "serving", "allreduce_latency_s", central.allreduce_latency_s,
        5e-6, "assumption: NCCL's small-message all-reduce inside a server, fast end",
        30e-6, "assumption: NCCL's small-message all-reduce inside a server, slow end")
    add("usable_memory_fraction", "serving", "usable_memory_fraction", central.usable_memory_fraction,
        0.8, "assumption: more memory kept for activations, workspace and fragmentation",
        0.95, "assumption: a tight memory plan")
    # Traffic: the prompt from none at all to a conversation's history, the answer from a short chat reply to twice
    # the central length; neither past the model's context with the other at its central value.
    high, high_source = ((PROMPT_HIGH, PROMPT_HIGH_SOURCE) if PROMPT_HIGH > central.prompt_tokens else
                         (2 * central.prompt_tokens, "assumption: twice the central value"))
    if context is not None and high > context - central.output_tokens:
        high, high_source = context - central.output_tokens, f"{high_source}, capped at the model's context less the output"
    add("prompt_tokens", "serving", "prompt_tokens", central.prompt_tokens,
        0, "no prompt: generated tokens only (what Goldstein, Dec 2022, priced)", high, high_source)
    low, low_source = ((OUTPUT_LOW, OUTPUT_LOW_SOURCE) if OUTPUT_LOW < central.output_tokens else
                       (max(1, central.output_tokens // 2), "assumption: half the central value"))
    high, high_source = 2 * central.output_tokens, "assumption: long answers, twice the central value"
    if context is not None and high > context - central.prompt_tokens:
        high, high_source = context - central.prompt_tokens, f"{high_source}, capped at the model's context less the prompt"
    add("tokens_per_query", "serving", "output_tokens", central.output_tokens, low, low_source, high, high_source)
    if central.tensor_parallel is None and device is not None and device.key in hardware.INTERCONNECTS:
        per_server = central.devices_per_server
        add("devices_per_server", "serving", "devices_per_server", per_server,
            max(1, per_server // 2), "assumption: a server half as large (HGX boards hold 4 or 8 GPUs)",
            2 * per_server, "assumption: an NVLink domain twice as large at the same per-device bandwidth (as the "
            "tensor-parallel lever assumes)")
    if priced is not None and choice is not None:
        def price_input(name: str) -> tuple[float, str] | None:
            entry = priced.inputs.get(name)
            return None if entry is None else (entry["value"], sources.get(name, entry["source"]))

        if (utilisation := price_input("utilisation")) is not None:
            value, source = utilisation
            entries.append(BandInput("utilisation", "price", "utilisation", min(0.7, value), value, 1.0, {
                "low": "assumption: 30% of paid device-hours lost to failures, maintenance, spares and idle capacity"
                if value > 0.7 else "the central value (already at or below the assumed low end)",
                "central": source, "high": "every paid device-hour serves: the ceiling"}))
        if (pue := price_input("pue")) is not None:
            low, low_source = ((1.10, "Google's fleet-wide PUE 1.10, Q2 2021 (as reported by CNBC, 13 Apr 2022)")
                               if pue[0] > 1.10 else (1.0, "the ideal: no facility overhead"))
            high, high_source = ((1.8, "assumption: an older air-cooled enterprise site") if pue[0] < 1.8 else
                                 (1.2 * pue[0], "assumption: 1.2 x the central value"))
            entries.append(BandInput("pue", "price", "pue", low, pue[0], high,
                                     {"low": low_source, "central": pue[1], "high": high_source}))
        if (load := price_input("power_load_factor")) is not None:
            low, low_source = ((0.5, "assumption: a lightly loaded fleet draws about half its board power")
                               if load[0] > 0.5 else (load[0] / 2, "assumption: half the central value"))
            entries.append(BandInput("power_load_factor", "price", "power_load_factor", low, load[0], 1.0, {
                "low": low_source, "central": load[1],
                "high": "the board power itself (datasheet maximum): the ceiling"}))
        if (grid := price_input("grid_kg_co2_per_kwh")) is not None:
            low, low_source, high, high_source = _ends(
                grid[0], (0.030, "Norway 2023, 30 g CO2/kWh, a hydro grid (Ember, via Statista, Jul 2024)"),
                (0.713, "India 2023, 713 g CO2/kWh, a coal-heavy grid (Ember, via Statista, Jul 2024)"))
            entries.append(BandInput("grid_kg_co2_per_kwh", "price", "grid_kg_co2_per_kwh", low, grid[0], high,
                                     {"low": low_source, "central": grid[1], "high": high_source}))
        for name, (low, high, why) in {
                "lifetime_years": (4.0, 6.0, "4-6 year accelerator depreciation is usual"),
                "operations_fraction_per_year": (0.05, 0.20, "maintenance, network share, space and staff"),
                "electricity_usd_per_kwh": (0.05, 0.15, "cheap hydro or nuclear power to a high retail tariff"),
        }.items():
            found = price_input(name)
            if found is None:  # a rented fleet: inside the rental's price
                continue
            low, low_source, high, high_source = _ends(found[0], (low, f"assumption: {why}, low end"),
                                                       (high, f"assumption: {why}, high end"))
            entries.append(BandInput(name, "price", name, low, found[0], high,
                                     {"low": low_source, "central": found[1], "high": high_source}))
    return {entry.name: entry for entry in entries}


# The inputs `scale` lists that carry no band, and why: each is either the question asked, a requirement, a
# datasheet figure whose uncertainty another banded input stands for, or not part of serving.
NOT_BANDED = {
    "device_profile": "the profile's uncertainty is step_time_factor's",
    "queries_per_day": "the traffic asked about: the question, not an uncertain input (cost grows with it)",
    "ttft_s": "a latency target: the service's requirement (scale --compare relaxes it)",
    "min_user_tokens_per_sec": "a latency target: the service's requirement (scale --compare relaxes it)",
    "tensor_parallel": "fixed on the command line: a choice, not an uncertainty",
    "interconnect_bytes_per_s": "a datasheet link: its uncertainty is step_time_factor's",
    "inter_node_bytes_per_s": "training only",
    "board_power_w": "the datasheet's maximum: what is drawn of it is power_load_factor",
    "usd_per_device_hour": "price_factor scales the device-hour price",
    "purchase_usd": "price_factor scales the device-hour price",
    "traffic": "the file's means are prompt_tokens and tokens_per_query, which are banded",
    "kv_context_tokens": "the traffic file's long end: a memory reservation, not an uncertain input",
    **{name: "training, not serving" for name in ("train_tokens", "train_devices", "train_micro_batch",
                                                  "train_grad_accum")},
}

BAND_METRICS = {"usd_per_day": "usd_per_day", "wh_per_query": "wh_per_query", "devices_band": "devices",
                "kg_co2_per_day_band": "kg_co2_per_day"}  # output key -> ServingPlan field


def uncertainty(config: GPTConfig, device: Accelerator, profile: DeviceProfile, central: ServingInputs,
                priced: cost.PricedDevice, choice: cost.PriceChoice | None = None,
                sources: dict[str, str] | None = None) -> dict[str, Any]:
    """The tornado (each input alone at its low and at its high value, the plan re-run, re-priced for a price
    input) and the bands: for each of cost per day, Wh per query, devices and CO2, the plan with every input at
    whichever end lowered that figure, and at whichever end raised it."""
    entries = band_inputs(central, config, device, priced, choice, sources)

    def plan(changes: dict[str, float]) -> ServingPlan | None:
        """The plan with `changes` (input name -> value), or None where no plan meets the targets and memory."""
        serving = {entries[name].field: value for name, value in changes.items()
                   if entries[name].applies_to == "serving"}
        for field_ in ("prompt_tokens", "output_tokens", "devices_per_server"):
            if field_ in serving:
                serving[field_] = int(serving[field_])
        changed = replace(central, **serving)
        if changed.prompt_tokens + changed.output_tokens > config.block_size:
            # Two long ends together (each fits alone): the prompt is cut to fit, as sample.py crops a prompt
            # to the context's last tokens.
            changed = replace(changed, prompt_tokens=config.block_size - changed.output_tokens)
        prices = {entries[name].field: value for name, value in changes.items() if entries[name].applies_to == "price"}
        repriced = priced if not prices else cost.price_device(replace(choice, **prices), device.key,
                                                              device.board_power_w)
        try:
            return plan_serving(config, device, profile, changed, repriced)
        except ScaleError:  # the ends together can miss a target that each alone meets
            return None

    base = plan({})
    tornado, ends_of = [], {}
    for name, entry in entries.items():
        at_low, at_high = plan({name: entry.low}), plan({name: entry.high})
        ends_of[name] = ((entry.low, at_low), (entry.high, at_high))
        row = entry.to_dict()
        for metric, attribute in (("usd_per_day", "usd_per_day"), ("wh_per_query", "wh_per_query"),
                                  ("kg_co2_per_day", "kg_co2_per_day"), ("devices", "devices")):
            for end, found in (("low", at_low), ("high", at_high)):
                row[f"{end}_{metric}"] = getattr(found, attribute) if found else None
        tornado.append(row)

    def swing(row: dict[str, Any], metric: str) -> float:
        centre = getattr(base, metric)
        return abs((row[f"high_{metric}"] if row[f"high_{metric}"] is not None else centre)
                   - (row[f"low_{metric}"] if row[f"low_{metric}"] is not None else centre))

    # By the swing in cost per day; inputs that move energy only (a rented fleet's PUE) follow, by their Wh swing.
    tornado.sort(key=lambda row: (-swing(row, "usd_per_day") / base.usd_per_day,
                                  -swing(row, "wh_per_query") / base.wh_per_query))
    bands: dict[str, Any] = {}
    for key, attribute in BAND_METRICS.items():
        lowest, highest = {}, {}
        for name, ends in ends_of.items():
            known = [(getattr(found, attribute), value) for value, found in ends if found is not None]
            known.append((getattr(base, attribute), entries[name].central))  # an end with no plan: the central
            lowest[name], highest[name] = min(known)[1], max(known)[1]
        low, high = plan(lowest), plan(highest)
        bands[key] = {"low": getattr(low, attribute, None), "central": getattr(base, attribute),
                      "high": getattr(high, attribute, None)}
    return bands | {"tornado": tornado}
