"""Extrapolation: a large model on a fleet of accelerators, its step times predicted on the target device.

Every step time is a prediction (`profiling.predict`) on the target device's profile
(`profiling.device_profile.resolve_profile`): a measured profile of that device class when one was
committed or calibrated, else its *reference* profile (datasheet × cited published efficiencies).
Nothing measured on another device class is carried over: a `--from` run or profile file made on
this CPU contributes only the predictor's own error there, shown as a confidence figure.

Serving, per model replica of `tp` devices of one server (tensor parallel):

    memory   weights (params × bytes per serving dtype) + KV cache (batch × context × KV bytes per token)
             must fit in tp × device memory × usable_memory_fraction; tp is the smallest power of two that fits
    prefill  predict_prefill(batch, prompt) on one device's profile / (tp × tensor-parallel efficiency)
    decode   predict_decode(batch, prompt, output tokens): the mean step over the whole generation, the same way
             divided over the tp devices (the all-reduces between them are not modelled: the efficiency
             input, assumed 1.0 by default, is where to account for them)
    a batch of queries takes prefill + output_tokens × decode step; replicas = ⌈peak queries/s / replica queries/s⌉

Training: predict_train(micro-batch × context, gradient accumulation) on the profile gives the MFU of the
target model on the target device (optimizer update included, unsharded); total model FLOPs (3 × forward,
PaLM) / (peak × that MFU) is the device time. Communication between devices is not modelled.

The fleet (replicas × tp devices) is paid and powered around the clock: cost per day =
devices × 24 h × device-hour price; energy per day = devices × 24 h × board power × load factor × PUE.

Every input is listed with its kind: **measured** (read from a file, with its path), **reference**
(a datasheet, a price table or a reference profile, with its source) or **assumed** (a default or a
value given on the command line).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt.files import dumps_json
from gpt.errors import GptmeterError
from gpt.config import PRESETS, GPTConfig
from profiling import cost, flops, hardware, predict
from profiling.hardware import Accelerator
from profiling.prices import require_positive
from profiling.device_profile import DeviceProfile, resolve_profile
from profiling.predict import Prediction
from profiling.rundir import Measurements, read_measurements


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
    """The slower of the compute time and the memory time, each at one constant efficiency.

    This is the method the predictor replaced; bench.extrapolate keeps it to show both side by side."""
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
    tensor_parallel_efficiency: float = 1.0  # replica speed-up over one device / tp

    def __post_init__(self) -> None:
        for name in ("batch", "output_tokens", "queries_per_day", "peak_to_average", "devices_per_server",
                     "usable_memory_fraction", "tensor_parallel_efficiency"):
            require_positive(name.replace("output_tokens", "tokens_per_query"), getattr(self, name))
        if self.prompt_tokens < 0:
            raise ScaleError(f"prompt tokens must not be negative, got {self.prompt_tokens}")
        for name in ("usable_memory_fraction", "tensor_parallel_efficiency"):
            if getattr(self, name) > 1:
                raise ScaleError(f"{name.replace('_', ' ')} is in (0, 1], got {getattr(self, name)}")
        if self.peak_to_average < 1:
            raise ScaleError(f"--peak-to-average is peak over average traffic, at least 1, got {self.peak_to_average}; "
                             "pass 1 for a fleet sized for the average")


@dataclass(frozen=True)
class Phase:
    """A predicted time on one replica, and where it goes (seconds by category, already divided over tp)."""

    seconds: float
    breakdown: dict[str, float]
    mfu: float  # of the replica's tp devices


def _on_replica(prediction: Prediction | None, tp: int, efficiency: float) -> Phase:
    if prediction is None:
        return Phase(0.0, {}, 0.0)
    scale = 1 / (tp * efficiency)
    return Phase(prediction.step_seconds * scale, {k: v * scale for k, v in prediction.breakdown.items()},
                 prediction.mfu * efficiency)


@dataclass(frozen=True)
class ServingPlan:
    tensor_parallel: int
    weight_gb: float
    kv_cache_gb: float
    prefill: Phase  # one batch of prompts
    decode_step: Phase  # one token for every sequence of the batch, mean over the generation
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


def plan_serving(config: GPTConfig, device: Accelerator, profile: DeviceProfile, inputs: ServingInputs,
                 priced: cost.PricedDevice) -> ServingPlan:
    context = inputs.prompt_tokens + inputs.output_tokens
    if context > config.block_size:
        raise ScaleError(f"a query of {context} tokens exceeds the model's context of {config.block_size}; "
                         "lower --prompt-tokens or --tokens-per-query")
    resident_weights = flops.param_count(config) * flops.bytes_per_element(inputs.dtype)
    kv_per_token = flops.kv_cache_bytes_per_token(config, inputs.dtype)
    fit = fit_replica(resident_weights, inputs.batch * context * kv_per_token, device.memory_bytes,
                      inputs.devices_per_server, inputs.usable_memory_fraction,
                      f"one replica in {inputs.dtype} at batch {inputs.batch} × {context} tokens")
    tp, efficiency = fit.tensor_parallel, inputs.tensor_parallel_efficiency
    prompt = inputs.prompt_tokens
    prefill = _on_replica(predict.predict_prefill(config, inputs.batch, prompt, profile) if prompt else None,
                          tp, efficiency)
    # A query without a prompt starts from one token (sample.py's end-of-text), as the predictor needs one.
    step = _on_replica(predict.predict_decode(config, inputs.batch, max(prompt, 1), inputs.output_tokens, profile),
                       tp, efficiency)
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


@dataclass(frozen=True)
class TrainingInputs:
    tokens: float
    n_devices: int
    micro_batch: int = 1  # sequences of the full context per device per micro-step
    grad_accum: int = 16  # micro-steps per optimizer update


def plan_training(config: GPTConfig, profile: DeviceProfile, inputs: TrainingInputs,
                  priced: cost.PricedDevice) -> tuple[cost.TrainingCost, Prediction]:
    """Model FLOPs at the full context (3 × forward, PaLM) over peak × the MFU predicted for one device's step."""
    step = predict.predict_train(config, inputs.micro_batch, config.block_size, inputs.grad_accum, profile)
    total = flops.training_flops_per_token(config) * require_positive("train_tokens", inputs.tokens)
    return cost.training_cost(total, profile.peak_flops, step.mfu, inputs.n_devices, priced.device_hour,
                              priced.kw_per_device, priced.grid_kg_co2_per_kwh), step


# --------------------------------------------------------------------------- the whole extrapolation


CHINCHILLA_TOKENS_PER_PARAM = 20  # compute-optimal training data (Hoffmann et al., 2022)


def kind_of(source: str) -> str:
    """measured, assumed or reference, from an input's source label."""
    if source.startswith("measured"):
        return "measured"
    if source.startswith(("assumed", "given on the command line")):
        return "assumed"
    return "reference"


@dataclass(frozen=True)
class ScaleRequest:
    """What `scale` is asked: a target model on a target device, and every input the user chose (None = default)."""

    device: str
    model: str | None = None  # a preset name, or None with `shape`
    shape: dict[str, int | None] = field(default_factory=dict)  # n_layer, n_embd, n_head, n_kv_head, block_size, vocab_size
    dtype: str = "bf16"
    device_profile: Path | None = None  # a calibrate --out file of the target device class
    sources: tuple[Path, ...] = ()  # train.py run directories and sample.py profile files: confidence only
    batch: int | None = None
    prompt_tokens: int | None = None
    tokens_per_query: int | None = None
    queries_per_day: float | None = None
    peak_to_average: float | None = None
    devices_per_server: int | None = None
    usable_memory_fraction: float | None = None
    tensor_parallel_efficiency: float | None = None
    train_tokens: float | None = None
    train_devices: int | None = None
    train_micro_batch: int | None = None
    train_grad_accum: int | None = None
    prices: cost.PriceChoice = field(default_factory=cost.PriceChoice)


def _confidence(measured: Measurements, target_class: str) -> dict[str, Any]:
    """The predictor's error where the user measured, stated as such and never applied to the target."""
    errors = {phase: {"error": entry.value, "source": entry.source} for phase, entry in
              measured.prediction_errors.items()}
    if not errors:
        note = ("no --from measurement with a prediction in it: run train.py or sample.py --profile-json after "
                "python -m profiling calibrate to see the predictor's error on your device")
    else:
        note = (f"the predictor's error where it was checked ({measured.device or 'your device'}); a confidence "
                f"figure for the method, not a correction: {target_class} is predicted on its own profile")
    return {"errors": errors, "device": measured.device, "note": note}


SHAPE_FLAGS = {"n_layer": "--layers", "n_embd": "--width", "n_head": "--heads", "n_kv_head": "--kv-heads",
               "block_size": "--context", "vocab_size": "--vocab"}  # ScaleRequest.shape's fields and their flags


def extrapolate(request: ScaleRequest) -> dict[str, Any]:
    """Training and serving of the target model on the target device; every input listed with its kind."""
    if request.model is None and not request.shape.get("n_layer"):
        raise ScaleError("name a target model: --model PRESET, or --layers N --width D --heads H")
    conflicting = [SHAPE_FLAGS[name] for name, value in request.shape.items() if value is not None]
    if request.model is not None and conflicting:
        raise ScaleError(f"--model {request.model} fixes the whole shape, so {' '.join(conflicting)} would be "
                         "ignored; drop them, or drop --model and give the shape: --layers N --width D --heads H")
    config = resolve_model(request.model, None if request.model else request.shape)
    device = device_spec(request.device)
    dtype = flops.dtype_name(request.dtype)
    profile = resolve_profile(device.key, request.device_profile, dtype)
    measured = read_measurements(list(request.sources))
    priced = cost.price_device(request.prices, device.key, device.board_power_w)
    params = flops.param_count(config)
    summary = profile.summary()
    inputs: dict[str, dict[str, Any]] = {"device_profile": {
        "value": summary["device"], "unit": summary["dtype"],
        "source": f"{'measured' if profile.kind == 'measured' else 'reference'} profile, {summary['date']}: "
                  f"{summary['source']}"}}

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
        tensor_parallel_efficiency=given("tensor_parallel_efficiency", ServingInputs.tensor_parallel_efficiency),
    )
    training_inputs = TrainingInputs(
        tokens=given("train_tokens", CHINCHILLA_TOKENS_PER_PARAM * params, "tokens"),
        n_devices=int(given("train_devices", 1024, "devices")),
        micro_batch=int(given("train_micro_batch", TrainingInputs.micro_batch, "sequences")),
        grad_accum=int(given("train_grad_accum", TrainingInputs.grad_accum, "micro-steps")),
    )
    inputs |= priced.inputs
    for entry in inputs.values():
        entry["kind"] = kind_of(entry["source"])
    plan = plan_serving(config, device, profile, serving, priced)
    training, step = plan_training(config, profile, training_inputs, priced)
    return {
        "model": {"name": request.model or "custom", "params": params, **config.to_dict()},
        "device": {"key": device.key, "name": device.name, "dtype": dtype, "peak_flops": device.peak(dtype),
                   "memory_bandwidth_bytes_per_s": device.memory_bandwidth, "memory_bytes": device.memory_bytes,
                   "board_power_w": device.board_power_w, "source": device.source},
        "profile": summary,
        "inputs": inputs,
        **{kind: sorted(name for name, entry in inputs.items() if entry["kind"] == kind)
           for kind in ("measured", "reference", "assumed")},
        "confidence": _confidence(measured, device.key),
        "device_hour": priced.device_hour.to_dict(),
        "training": asdict(training) | {"predicted_mfu": step.mfu, "step": step.to_dict()},
        "serving": asdict(plan),
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def _where(phase: dict[str, Any]) -> str:
    """"matmul 80%, attention 12%, ..." of a predicted phase."""
    total = phase["seconds"]
    return ", ".join(f"{part} {seconds / total:.0%}" for part, seconds in phase["breakdown"].items()
                     if seconds / total >= 0.005)


def format_extrapolation(result: dict[str, Any]) -> str:
    model, device, serving, training = result["model"], result["device"], result["serving"], result["training"]
    profile, confidence = result["profile"], result["confidence"]
    decode, prefill = serving["decode_step"], serving["prefill"]
    lines = [
        f"{model['name']} ({model['params'] / 1e9:,.2f}B params, {model['n_layer']} layers, width {model['n_embd']}) "
        f"on {device['name']} ({device['dtype']}, {device['peak_flops'] / 1e12:,.0f} TFLOP/s, "
        f"{device['memory_bandwidth_bytes_per_s'] / 1e12:,.2f} TB/s, {device['memory_bytes'] / 1e9:,.0f} GB)",
        f"step times predicted on the {profile['kind']} profile of {profile['device']} ({profile['date'][:10]})",
        "",
        "serving",
        f"  replica        {serving['tensor_parallel']} devices (weights {serving['weight_gb']:,.1f} GB + KV cache "
        f"{serving['kv_cache_gb']:,.1f} GB)",
        f"  decode step    {_ms(decode['seconds'])} for the batch (mean over the generation), MFU "
        f"{decode['mfu']:.1%}; {serving['replica_tokens_per_sec']:,.0f} tokens/s per replica",
        f"                 where it goes: {_where(decode)}",
    ]
    if prefill["seconds"]:
        lines += [f"  prefill        {_ms(prefill['seconds'])} per batch of prompts, MFU {prefill['mfu']:.1%}",
                  f"                 where it goes: {_where(prefill)}"]
    step = training["step"]
    lines += [
        f"  fleet          {serving['replicas']:,} replicas = {serving['devices']:,} devices",
        f"  cost           ${serving['usd_per_day']:,.0f}/day = ${serving['usd_per_query']:.5f}/query = "
        f"${serving['usd_per_million_tokens']:,.3f} per million generated tokens",
        "  breakdown/day  " + ", ".join(f"{k} ${v:,.0f}" for k, v in serving["cost_breakdown_usd_per_day"].items()),
        f"  energy         {serving['kwh_per_day']:,.0f} kWh/day = {serving['wh_per_query']:.3f} Wh/query, "
        f"{serving['kg_co2_per_day'] / 1000:,.1f} t CO2/day",
        "",
        "training",
        f"  predicted MFU  {training['predicted_mfu']:.1%} (one device's optimizer step: {_ms(step['step_seconds'])}; "
        f"where it goes: {_where({'seconds': step['step_seconds'], 'breakdown': step['breakdown']})})",
        f"  {training['flops']:.3e} FLOPs = {training['device_hours']:,.0f} device-hours = "
        f"{training['days']:,.1f} days on {training['n_devices']:,} devices; ${training['usd']:,.0f}, "
        f"{training['kwh'] / 1000:,.0f} MWh",
        "",
        "confidence: " + confidence["note"],
    ]
    lines += [f"  {phase:<8} {entry['error']:+.1%}  [{entry['source']}]" for phase, entry in confidence["errors"].items()]
    lines += ["", "inputs (kind: measured, reference or assumed)"]
    width = max(len(name) for name in result["inputs"])
    lines += [f"  {name:<{width}}  {entry['kind']:<9} {entry['value']:<12} {entry['unit']:<9} {entry['source']}"
              if isinstance(entry["value"], str) else
              f"  {name:<{width}}  {entry['kind']:<9} {entry['value']:<12g} {entry['unit']:<9} {entry['source']}"
              for name, entry in result["inputs"].items()]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "scale",
        help="a large model on a fleet: training and serving cost from step times predicted on the target device",
        description="Predict the training step, prefill and decode times of a target model on a target device "
        "(its measured profile if one exists, else its reference profile: datasheet x published efficiencies), "
        "and turn them into training time and cost, and a serving fleet: devices per replica, tokens/s, fleet "
        "size, cost per day, per query and per million tokens, energy. Every input is labelled measured, "
        "reference or assumed. --from a run measured here adds the predictor's own error on this device as a "
        "confidence figure; nothing measured on one device class is carried to another.",
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
    parser.add_argument("--dtype", default="bf16", help="serving and training dtype: weights, KV cache, profile (bf16)")
    parser.add_argument("--profile", dest="device_profile", type=Path, metavar="FILE",
                        help="device profile of the target device class (python -m profiling calibrate --out); "
                        "default: a measured one committed or cached, else the reference profile")
    parser.add_argument("--from", dest="sources", action="append", type=Path, default=[], metavar="PATH",
                        help="train.py run directory and/or sample.py --profile-json file; may repeat. Only the "
                        "predictor's error there is read, as a confidence figure")
    traffic = parser.add_argument_group("serving")
    traffic.add_argument("--queries-per-day", type=float, help=f"default {ServingInputs.queries_per_day:g}")
    traffic.add_argument("--tokens-per-query", type=int, help=f"generated tokens (default {ServingInputs.output_tokens})")
    traffic.add_argument("--prompt-tokens", type=int, help="prompt tokens per query (default 0)")
    traffic.add_argument("--batch", type=int, help=f"sequences decoded together (default {ServingInputs.batch})")
    traffic.add_argument("--peak-to-average", type=float, help="fleet sized for average × this, at least 1 (default 1.0)")
    traffic.add_argument("--devices-per-server", type=int, help="devices one tensor-parallel replica may span (8)")
    traffic.add_argument("--usable-memory-fraction", type=float, help="of device memory for weights + KV (0.9)")
    traffic.add_argument("--tensor-parallel-efficiency", type=float,
                         help="a replica's speed-up over one device / its devices, in (0, 1] (default 1.0: "
                         "communication not modelled)")
    train = parser.add_argument_group("training")
    train.add_argument("--train-tokens", type=float, help="training tokens (default 20 × params, Chinchilla)")
    train.add_argument("--train-devices", type=int, help="devices training together (default 1024)")
    train.add_argument("--train-micro-batch", type=int,
                       help=f"sequences of the full context per device per micro-step (default {TrainingInputs.micro_batch})")
    train.add_argument("--train-grad-accum", type=int,
                       help=f"micro-steps per optimizer update (default {TrainingInputs.grad_accum})")
    cost.add_price_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def request_from(args: argparse.Namespace) -> ScaleRequest:
    """The command line's answers as a typed request."""
    shape = {"n_layer": args.layers, "n_embd": args.width, "n_head": args.heads, "n_kv_head": args.kv_heads,
             "block_size": args.context, "vocab_size": args.vocab}
    chosen = {name: getattr(args, name) for name in (
        "model", "dtype", "device_profile", "batch", "prompt_tokens", "tokens_per_query", "queries_per_day",
        "peak_to_average", "devices_per_server", "usable_memory_fraction", "tensor_parallel_efficiency",
        "train_tokens", "train_devices", "train_micro_batch", "train_grad_accum")}
    return ScaleRequest(device=args.device, shape=shape, sources=tuple(args.sources),
                        prices=cost.price_choice(args), **chosen)


def run(args: argparse.Namespace) -> int:
    result = extrapolate(request_from(args))
    print(dumps_json(result, indent=2) if args.json else format_extrapolation(result))
    return 0
