"""Extrapolation: from efficiencies measured on your card to a large model on a fleet of accelerators.

Three efficiencies carry what was measured on the user's device to the target:

    training MFU      achieved model FLOP/s / peak, while training         (train.py run directory)
    prefill MFU       the same while encoding prompts                     (sample.py --profile-json)
    decode bandwidth  bytes a decode step must read / step time / peak bandwidth   (same file)

Each is "measured (from PATH)" when read from a run directory or a profile file, and "assumed"
when given by hand or left at its default. Everything else about the target comes from the FLOP
model (`profiling.flops`) and the accelerator table (`profiling.hardware`).

Serving, per model replica of `tp` devices of one server (tensor parallel):

    memory   weights (params × bytes per serving dtype) + KV cache (batch × context × KV bytes per token)
             must fit in tp × device memory × usable_memory_fraction; tp is the smallest power of two that fits
    roofline time = max(FLOPs / (tp × peak × MFU), bytes / (tp × bandwidth × bandwidth utilisation))
    prefill  batch × prefill FLOPs(prompt); reads the weights once
    decode   one step for the batch at the mean context prompt + output/2:
             batch × decode FLOPs per token(context); reads weights + batch × context × KV bytes per token
    a batch of queries takes prefill + output_tokens × decode step; replicas = ⌈peak queries/s / replica queries/s⌉

The fleet (replicas × tp devices) is paid and powered around the clock: cost per day =
devices × 24 h × device-hour price; energy per day = devices × 24 h × board power × load factor × PUE.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt.errors import GptmeterError
from gpt.config import PRESETS, GPTConfig
from profiling import cost, flops, hardware
from profiling.hardware import Accelerator
from profiling.prices import require_positive
from profiling.rundir import Input, Measurements, read_measurements


class ScaleError(GptmeterError, ValueError):
    """An extrapolation that cannot be made; the message is one line naming the problem and the fix."""


# --------------------------------------------------------------------------- target model and device


def device_spec(key: str) -> Accelerator:
    """A hardware-table entry with the figures an extrapolation needs (peaks, bandwidth, memory, power)."""
    entry = hardware.accelerator(key)
    missing = [name for name in ("memory_bandwidth", "memory_bytes", "board_power_w") if getattr(entry, name) is None]
    if missing or not entry.peak_flops:
        targets = [k for k, e in hardware.ACCELERATORS.items() if e.peak_flops and e.memory_bytes]
        raise ScaleError(f"{key!r} has no datasheet {', '.join(missing) or 'peak'} to extrapolate to; "
                         f"choose one of {', '.join(targets)}")
    return entry


def resolve_model(name: str | None = None, shape: dict[str, int] | None = None) -> GPTConfig:
    """A preset by name, or an explicit shape (n_layer, n_embd, n_head, n_kv_head, block_size, vocab_size)."""
    if name is not None:
        if name not in PRESETS:
            raise ScaleError(f"unknown model {name!r}; known presets: {', '.join(PRESETS)} "
                             "(or give --layers --width --heads [--kv-heads --context --vocab])")
        return GPTConfig.from_preset(name)
    try:
        return GPTConfig(**{k: v for k, v in (shape or {}).items() if v is not None})
    except (TypeError, ValueError) as error:
        raise ScaleError(f"bad model shape: {error}") from None


# --------------------------------------------------------------------------- measured vs assumed


# Defaults when nothing was measured; each is printed as "assumed (default)".
ASSUMED_TRAINING_MFU = 0.40  # llm.c / modded-nanogpt GPT-2 on H100 (GUIDE section 4)
ASSUMED_PREFILL_MFU = 0.50  # prompts are large matmuls, a little better than training
ASSUMED_DECODE_BANDWIDTH_UTILISATION = 0.60  # well-tuned decoders reach 60-80% of the copy bandwidth


@dataclass(frozen=True)
class Efficiencies:
    training_mfu: Input
    prefill_mfu: Input
    decode_bandwidth_utilisation: Input


def choose_efficiencies(
    measured: Measurements,
    training_mfu: float | None = None,
    prefill_mfu: float | None = None,
    decode_bandwidth_utilisation: float | None = None,
) -> Efficiencies:
    """Given by hand beats measured beats the assumed default; the training MFU stands in for prefill if needed."""

    def choose(given: float | None, flag: str, found: Input | None, default: float) -> Input:
        if given is not None:
            if not 0 < given <= 1:
                raise ScaleError(f"{flag} is a fraction in (0, 1], got {given}")
            return Input(given, f"assumed ({flag})")
        return found or Input(default, "assumed (default)")

    prefill_found = measured.prefill_mfu
    if prefill_found is None and measured.training_mfu is not None:
        prefill_found = Input(measured.training_mfu.value, measured.training_mfu.source + ", training MFU")
    return Efficiencies(
        training_mfu=choose(training_mfu, "--training-mfu", measured.training_mfu, ASSUMED_TRAINING_MFU),
        prefill_mfu=choose(prefill_mfu, "--prefill-mfu", prefill_found, ASSUMED_PREFILL_MFU),
        decode_bandwidth_utilisation=choose(decode_bandwidth_utilisation, "--decode-bandwidth-utilisation",
                                            measured.decode_bandwidth_utilisation,
                                            ASSUMED_DECODE_BANDWIDTH_UTILISATION),
    )


# --------------------------------------------------------------------------- roofline and memory fit


@dataclass(frozen=True)
class Roofline:
    seconds: float
    compute_s: float
    memory_s: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "bandwidth"


def roofline(flops: float, bytes_read: float, peak_flops: float, bandwidth: float, mfu: float,
             bandwidth_utilisation: float) -> Roofline:
    """The slower of the compute time and the memory time, each at its measured efficiency."""
    compute_s = flops / (peak_flops * mfu)
    memory_s = bytes_read / (bandwidth * bandwidth_utilisation)
    return Roofline(max(compute_s, memory_s), compute_s, memory_s)


@dataclass(frozen=True)
class MemoryFit:
    tensor_parallel: int
    weight_bytes: float
    kv_cache_bytes: float
    usable_bytes_per_device: float


def fit_replica(weight_bytes: float, kv_cache_bytes: float, memory_bytes: float, devices_per_server: int,
                usable_memory_fraction: float, what: str) -> MemoryFit:
    """The smallest power-of-two tensor-parallel group of one server that holds the weights and the KV cache."""
    usable = memory_bytes * usable_memory_fraction
    need = weight_bytes + kv_cache_bytes
    tp = 1
    while tp <= devices_per_server:
        if need <= tp * usable:
            return MemoryFit(tp, weight_bytes, kv_cache_bytes, usable)
        tp *= 2
    raise ScaleError(
        f"{what} needs {need / 1e9:,.1f} GB (weights {weight_bytes / 1e9:,.1f} GB + KV cache "
        f"{kv_cache_bytes / 1e9:,.1f} GB) but one server of {devices_per_server} devices offers "
        f"{devices_per_server * usable / 1e9:,.1f} GB usable; lower --batch or the context, "
        "use a smaller --dtype, or pick a device with more memory"
    )


# --------------------------------------------------------------------------- serving and training plans


@dataclass(frozen=True)
class ServingInputs:
    batch: int = 32  # concurrent sequences per replica
    prompt_tokens: int = 0  # tokens read per query before generating
    output_tokens: int = 700  # tokens generated per query ("--tokens-per-query")
    queries_per_day: float = 1e8
    peak_to_average: float = 1.0  # fleet sized for peak = average × this
    dtype: str = "bf16"  # weights, KV cache and matmuls
    devices_per_server: int = 8
    usable_memory_fraction: float = 0.9  # the rest: activations, workspace, fragmentation

    def __post_init__(self) -> None:
        for name in ("batch", "output_tokens", "queries_per_day", "peak_to_average", "devices_per_server",
                     "usable_memory_fraction"):
            require_positive(name.replace("output_tokens", "tokens_per_query"), getattr(self, name))
        if self.prompt_tokens < 0:
            raise ScaleError(f"prompt tokens must not be negative, got {self.prompt_tokens}")
        if self.usable_memory_fraction > 1:
            raise ScaleError(f"usable memory fraction is in (0, 1], got {self.usable_memory_fraction}")


@dataclass(frozen=True)
class ServingPlan:
    tensor_parallel: int
    weight_gb: float
    kv_cache_gb: float
    prefill: Roofline  # one batch of prompts
    decode_step: Roofline  # one token for every sequence of the batch
    replica_tokens_per_sec: float  # generated tokens/s of one replica during decoding
    replica_queries_per_sec: float
    replicas: int
    devices: int
    usd_per_day: float
    usd_per_query: float
    usd_per_million_tokens: float  # per million generated tokens
    kwh_per_day: float
    wh_per_query: float
    kg_co2_per_day: float
    cost_breakdown_usd_per_day: dict[str, float] = field(default_factory=dict)


def plan_serving(config: GPTConfig, device: Accelerator, efficiencies: Efficiencies, inputs: ServingInputs,
                 priced: cost.PricedDevice) -> ServingPlan:
    context = inputs.prompt_tokens + inputs.output_tokens
    if context > config.block_size:
        raise ScaleError(f"a query of {context} tokens exceeds the model's context of {config.block_size}; "
                         "lower --prompt-tokens or --tokens-per-query")
    resident_weights = flops.param_count(config) * flops.bytes_per_element(inputs.dtype)
    weights_read = flops.decode_weight_bytes(config, inputs.dtype)
    kv_per_token = flops.kv_cache_bytes_per_token(config, inputs.dtype)
    fit = fit_replica(resident_weights, inputs.batch * context * kv_per_token, device.memory_bytes,
                      inputs.devices_per_server, inputs.usable_memory_fraction,
                      f"one replica in {inputs.dtype} at batch {inputs.batch} × {context} tokens")
    tp = fit.tensor_parallel
    peak, bandwidth = tp * device.peak(inputs.dtype), tp * device.memory_bandwidth
    mfu, bw_util = efficiencies.prefill_mfu.value, efficiencies.decode_bandwidth_utilisation.value
    prompt = inputs.prompt_tokens
    prefill = roofline(inputs.batch * flops.prefill_flops(config, prompt) if prompt else 0.0,
                       weights_read if prompt else 0.0, peak, bandwidth, mfu, bw_util)
    mean_context = max(1, round(prompt + inputs.output_tokens / 2))
    step = roofline(inputs.batch * flops.decode_flops_per_token(config, mean_context),
                    flops.decode_bytes_per_step(config, mean_context, inputs.batch, inputs.dtype),
                    peak, bandwidth, mfu, bw_util)
    batch_seconds = prefill.seconds + inputs.output_tokens * step.seconds
    replica_qps = inputs.batch / batch_seconds
    peak_qps = inputs.queries_per_day / cost.SECONDS_PER_DAY * inputs.peak_to_average
    replicas = math.ceil(peak_qps / replica_qps)
    devices = replicas * tp
    hour = priced.device_hour
    usd_per_day = cost.fleet_usd_per_day(devices, hour)
    kwh_per_day = cost.energy_kwh(priced.kw_per_device, devices * cost.SECONDS_PER_DAY)
    return ServingPlan(
        tensor_parallel=tp,
        weight_gb=resident_weights / 1e9,
        kv_cache_gb=fit.kv_cache_bytes / 1e9,
        prefill=prefill,
        decode_step=step,
        replica_tokens_per_sec=inputs.batch / step.seconds,
        replica_queries_per_sec=replica_qps,
        replicas=replicas,
        devices=devices,
        usd_per_day=usd_per_day,
        usd_per_query=usd_per_day / inputs.queries_per_day,
        usd_per_million_tokens=usd_per_day / (inputs.queries_per_day * inputs.output_tokens) * 1e6,
        kwh_per_day=kwh_per_day,
        wh_per_query=kwh_per_day * 1000 / inputs.queries_per_day,
        kg_co2_per_day=kwh_per_day * priced.grid_kg_co2_per_kwh,
        cost_breakdown_usd_per_day={part: devices * 24 * usd for part, usd in hour.parts().items()},
    )


def plan_training(config: GPTConfig, device: Accelerator, mfu: float, tokens: float, n_devices: int, dtype: str,
                  priced: cost.PricedDevice) -> cost.TrainingCost:
    """Model FLOPs at the full context (3 × forward, PaLM) over peak × MFU."""
    total = flops.training_flops_per_token(config) * require_positive("train_tokens", tokens)
    return cost.training_cost(total, device.peak(dtype), mfu, n_devices, priced.device_hour,
                              priced.kw_per_device, priced.grid_kg_co2_per_kwh)


# --------------------------------------------------------------------------- the whole extrapolation


CHINCHILLA_TOKENS_PER_PARAM = 20  # compute-optimal training data (Hoffmann et al., 2022)


@dataclass(frozen=True)
class ScaleRequest:
    """What `scale` is asked: a target model on a target device, and every input the user chose (None = default)."""

    device: str
    model: str | None = None  # a preset name, or None with `shape`
    shape: dict[str, int | None] = field(default_factory=dict)  # n_layer, n_embd, n_head, n_kv_head, block_size, vocab_size
    dtype: str = "bf16"
    sources: tuple[Path, ...] = ()  # train.py run directories and sample.py profile files
    training_mfu: float | None = None
    prefill_mfu: float | None = None
    decode_bandwidth_utilisation: float | None = None
    batch: int | None = None
    prompt_tokens: int | None = None
    tokens_per_query: int | None = None
    queries_per_day: float | None = None
    peak_to_average: float | None = None
    devices_per_server: int | None = None
    usable_memory_fraction: float | None = None
    train_tokens: float | None = None
    train_devices: int | None = None
    prices: cost.PriceChoice = field(default_factory=cost.PriceChoice)


def extrapolate(request: ScaleRequest) -> dict[str, Any]:
    """Training and serving of the target model on the target device; every input listed with its source."""
    if request.model is None and not request.shape.get("n_layer"):
        raise ScaleError("name a target model: --model PRESET, or --layers N --width D --heads H")
    config = resolve_model(request.model, None if request.model else request.shape)
    device = device_spec(request.device)
    dtype = flops.dtype_name(request.dtype)
    efficiencies = choose_efficiencies(read_measurements(list(request.sources)), request.training_mfu,
                                       request.prefill_mfu, request.decode_bandwidth_utilisation)
    priced = cost.price_device(request.prices, device.key, device.board_power_w)
    params = flops.param_count(config)
    inputs: dict[str, dict[str, Any]] = {name: {"value": entry.value, "unit": "", "source": entry.source}
                                         for name, entry in vars(efficiencies).items()}

    def given(name: str, default: float, unit: str = "") -> float:
        value = getattr(request, name)
        source = "assumed (default)" if value is None else f"assumed (--{name.replace('_', '-')})"
        inputs[name] = {"value": default if value is None else value, "unit": unit, "source": source}
        return inputs[name]["value"]

    serving = ServingInputs(
        batch=int(given("batch", ServingInputs.batch, "sequences")),
        prompt_tokens=int(given("prompt_tokens", ServingInputs.prompt_tokens, "tokens")),
        output_tokens=int(given("tokens_per_query", ServingInputs.output_tokens, "tokens")),
        queries_per_day=given("queries_per_day", ServingInputs.queries_per_day, "1/day"),
        peak_to_average=given("peak_to_average", ServingInputs.peak_to_average),
        dtype=dtype,
        devices_per_server=int(given("devices_per_server", ServingInputs.devices_per_server)),
        usable_memory_fraction=given("usable_memory_fraction", ServingInputs.usable_memory_fraction),
    )
    train_tokens = given("train_tokens", CHINCHILLA_TOKENS_PER_PARAM * params, "tokens")
    train_devices = int(given("train_devices", 1024, "devices"))
    inputs |= priced.inputs
    plan = plan_serving(config, device, efficiencies, serving, priced)
    training = plan_training(config, device, efficiencies.training_mfu.value, train_tokens, train_devices, dtype, priced)
    return {
        "model": {"name": request.model or "custom", "params": params, **config.to_dict()},
        "device": {"key": device.key, "name": device.name, "dtype": dtype, "peak_flops": device.peak(dtype),
                   "memory_bandwidth_bytes_per_s": device.memory_bandwidth, "memory_bytes": device.memory_bytes,
                   "board_power_w": device.board_power_w, "source": device.source},
        "inputs": inputs,
        "measured": sorted(name for name, entry in inputs.items() if entry["source"].startswith("measured")),
        "assumed": sorted(name for name, entry in inputs.items() if entry["source"].startswith("assumed")),
        "device_hour": priced.device_hour.to_dict(),
        "training": asdict(training),
        "serving": asdict(plan) | {"prefill": _roofline_dict(plan.prefill),
                                   "decode_step": _roofline_dict(plan.decode_step)},
    }


def _roofline_dict(line: Roofline) -> dict[str, Any]:
    return asdict(line) | {"bound": line.bound}


def format_extrapolation(result: dict[str, Any]) -> str:
    model, device, serving, training = result["model"], result["device"], result["serving"], result["training"]
    lines = [
        f"{model['name']} ({model['params'] / 1e9:,.2f}B params, {model['n_layer']} layers, width {model['n_embd']}) "
        f"on {device['name']} ({device['dtype']}, {device['peak_flops'] / 1e12:,.0f} TFLOP/s, "
        f"{device['memory_bandwidth_bytes_per_s'] / 1e12:,.2f} TB/s, {device['memory_bytes'] / 1e9:,.0f} GB)",
        "",
        "serving",
        f"  replica        {serving['tensor_parallel']} devices (weights {serving['weight_gb']:,.1f} GB + KV cache "
        f"{serving['kv_cache_gb']:,.1f} GB)",
        f"  decode step    {serving['decode_step']['seconds'] * 1e3:,.2f} ms for the batch, "
        f"{serving['decode_step']['bound']}-bound; {serving['replica_tokens_per_sec']:,.0f} tokens/s per replica",
        f"  prefill        {serving['prefill']['seconds'] * 1e3:,.2f} ms per batch of prompts"
        + (f", {serving['prefill']['bound']}-bound" if serving["prefill"]["seconds"] else ""),
        f"  fleet          {serving['replicas']:,} replicas = {serving['devices']:,} devices",
        f"  cost           ${serving['usd_per_day']:,.0f}/day = ${serving['usd_per_query']:.5f}/query = "
        f"${serving['usd_per_million_tokens']:,.3f} per million generated tokens",
        "  breakdown/day  " + ", ".join(f"{k} ${v:,.0f}" for k, v in serving["cost_breakdown_usd_per_day"].items()),
        f"  energy         {serving['kwh_per_day']:,.0f} kWh/day = {serving['wh_per_query']:.3f} Wh/query, "
        f"{serving['kg_co2_per_day'] / 1000:,.1f} t CO2/day",
        "",
        "training",
        f"  {training['flops']:.3e} FLOPs = {training['device_hours']:,.0f} device-hours = "
        f"{training['days']:,.1f} days on {training['n_devices']:,} devices; ${training['usd']:,.0f}, "
        f"{training['kwh'] / 1000:,.0f} MWh",
        "",
        "inputs (measured or assumed)",
    ]
    width = max(len(name) for name in result["inputs"])
    lines += [f"  {name:<{width}}  {entry['value']:<12g} {entry['unit']:<9} {entry['source']}"
              for name, entry in result["inputs"].items()]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "scale",
        help="extrapolate measured efficiencies to a large model on a fleet: training and serving cost",
        description="Carry the MFU and decode bandwidth utilisation measured on your device (--from) to a target "
        "model on a target device: training FLOPs, time and cost; serving devices per replica, tokens/s, fleet "
        "size, cost per day, per query and per million tokens, energy. Unmeasured inputs are labelled assumed.",
    )
    target = parser.add_argument_group("target model (a preset, or an explicit shape)")
    target.add_argument("--model", metavar="PRESET", help=f"one of {', '.join(PRESETS)}")
    target.add_argument("--layers", type=int, help="transformer blocks")
    target.add_argument("--width", type=int, help="model width n_embd")
    target.add_argument("--heads", type=int, help="query heads")
    target.add_argument("--kv-heads", type=int, help="key/value heads (default: --heads)")
    target.add_argument("--context", type=int, help="context length, tokens (default 1024)")
    target.add_argument("--vocab", type=int, help="vocabulary size (default 50257)")
    parser.add_argument("--device", required=True, metavar="KEY", help="target device key of the hardware table")
    parser.add_argument("--dtype", default="bf16", help="serving and training dtype: weights, KV cache, peak (bf16)")
    measured = parser.add_argument_group("efficiencies (measured with --from; given by hand = assumed)")
    measured.add_argument("--from", dest="sources", action="append", type=Path, default=[], metavar="PATH",
                          help="train.py run directory and/or sample.py --profile-json file; may repeat")
    measured.add_argument("--training-mfu", type=float, help=f"fraction (default {ASSUMED_TRAINING_MFU})")
    measured.add_argument("--prefill-mfu", type=float, help=f"fraction (default {ASSUMED_PREFILL_MFU})")
    measured.add_argument("--decode-bandwidth-utilisation", type=float,
                          help=f"fraction (default {ASSUMED_DECODE_BANDWIDTH_UTILISATION})")
    traffic = parser.add_argument_group("serving")
    traffic.add_argument("--queries-per-day", type=float, help=f"default {ServingInputs.queries_per_day:g}")
    traffic.add_argument("--tokens-per-query", type=int, help=f"generated tokens (default {ServingInputs.output_tokens})")
    traffic.add_argument("--prompt-tokens", type=int, help="prompt tokens per query (default 0)")
    traffic.add_argument("--batch", type=int, help=f"sequences decoded together (default {ServingInputs.batch})")
    traffic.add_argument("--peak-to-average", type=float, help="fleet sized for average × this (default 1.0)")
    traffic.add_argument("--devices-per-server", type=int, help="devices one tensor-parallel replica may span (8)")
    traffic.add_argument("--usable-memory-fraction", type=float, help="of device memory for weights + KV (0.9)")
    train = parser.add_argument_group("training")
    train.add_argument("--train-tokens", type=float, help="training tokens (default 20 × params, Chinchilla)")
    train.add_argument("--train-devices", type=int, help="devices training together (default 1024)")
    cost.add_price_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def request_from(args: argparse.Namespace) -> ScaleRequest:
    """The command line's answers as a typed request."""
    shape = {"n_layer": args.layers, "n_embd": args.width, "n_head": args.heads, "n_kv_head": args.kv_heads,
             "block_size": args.context, "vocab_size": args.vocab}
    chosen = {name: getattr(args, name) for name in (
        "model", "dtype", "training_mfu", "prefill_mfu", "decode_bandwidth_utilisation", "batch", "prompt_tokens",
        "tokens_per_query", "queries_per_day", "peak_to_average", "devices_per_server", "usable_memory_fraction",
        "train_tokens", "train_devices")}
    return ScaleRequest(device=args.device, shape=shape, sources=tuple(args.sources),
                        prices=cost.price_choice(args), **chosen)


def run(args: argparse.Namespace) -> int:
    result = extrapolate(request_from(args))
    print(json.dumps(result, indent=2) if args.json else format_extrapolation(result))
    return 0
