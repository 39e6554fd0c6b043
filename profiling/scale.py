"""Extrapolation: a large model on a fleet of accelerators, its step times predicted on the target device.

Every step time is a prediction (`profiling.predict`) on the target device's profile
(`profiling.device_profile.resolve_profile`): a measured profile of that device class when one was
committed or calibrated, else its *reference* profile (datasheet × cited published efficiencies).
Nothing measured on another device class is carried over: a `--from` run or profile file made on
this CPU contributes only the predictor's own error there, shown as a confidence figure.

Serving: the planner of `profiling.plan` (tensor-parallel degree, batch, fleet, band and tornado).

Training: predict_train(micro-batch × context, gradient accumulation, world size = the training devices) on the
profile gives the MFU per device of the target model on the target device: one device's step (optimizer update
included, unsharded) plus the data-parallel gradient all-reduce of every optimizer step (`training_cluster`: the
profile's measured collectives at that world size, else the hardware table's links: a ring over NVLink inside a
server, InfiniBand between servers; profiling.collectives has the formula). Total model FLOPs (3 × forward,
PaLM) / (peak × that MFU) is the device time. Tensor and pipeline parallelism are not modelled.

The fleet (replicas × tp devices) is paid and powered around the clock: cost per day =
devices × 24 h × device-hour price; energy per day = devices × 24 h × board power × load factor × PUE.

Every input is listed with its kind: **measured** (read from a file, with its path), **reference**
(a datasheet, a price table or a reference profile, with its source) or **assumed** (a default or a
value given on the command line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt.config import PRESETS, GPTConfig
from profiling import collectives, cost, flops, hardware, predict
from profiling.device_profile import DeviceProfile, resolve_profile
from profiling.hardware import Accelerator
from profiling.plan import (LATENCY_SOURCE, PROMPT_SOURCE, ScaleError, ServingInputs, ServingPlan, operating_costs,
                            plan_serving, uncertainty)
from profiling.predict import Prediction
from profiling.prices import require_positive
from profiling.rundir import Measurements, read_measurements
from profiling.traffic import PERCENTILE, read_traffic


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
class TrainingInputs:
    tokens: float
    n_devices: int
    micro_batch: int = 1  # sequences of the full context per device per micro-step
    grad_accum: int = 16  # micro-steps per optimizer update
    devices_per_server: int = predict.DEVICES_PER_SERVER  # the intra-server ring of the gradient all-reduce


def training_cluster(profile: DeviceProfile, inputs: TrainingInputs) -> collectives.Cluster | None:
    """The links the gradient all-reduce of `inputs.n_devices` devices runs over: None where the profile's
    measured collectives were measured at that world size (they are used), else the hardware table's
    (`predict.reference_cluster`), for a measured profile too: a table measured at another world size does not
    scale to this one."""
    table = profile.collectives
    if inputs.n_devices == 1 or (table is not None and table["world_size"] == inputs.n_devices):
        return None
    return predict.reference_cluster(profile.device_class, inputs.devices_per_server)


def communication(profile: DeviceProfile, inputs: TrainingInputs, step: Prediction) -> dict[str, Any]:
    """What the gradient all-reduce of a training plan assumed, for the output: per step, the links, the share."""
    cluster = training_cluster(profile, inputs)
    seconds = step.breakdown["communication"]
    summary: dict[str, Any] = {"seconds_per_step": seconds, "share_of_step": seconds / step.step_seconds,
                               "world_size": inputs.n_devices, "collective": "DDP all-reduce of every float32 "
                               "gradient once per optimizer step, in 25 MiB buckets, not overlapped with compute"}
    if inputs.n_devices == 1:
        return summary | {"links": "one device: none"}
    if cluster is None:
        return summary | {"links": f"measured: the profile's {profile.collectives['backend']} collectives at world "
                                   f"size {inputs.n_devices}"}
    return summary | {"devices_per_server": cluster.per_server, "servers": cluster.servers(inputs.n_devices),
                      "intra_server": None if cluster.intra is None else asdict(cluster.intra),
                      "inter_server": asdict(cluster.inter)}


def plan_training(config: GPTConfig, profile: DeviceProfile, inputs: TrainingInputs,
                  priced: cost.PricedDevice) -> tuple[cost.TrainingCost, Prediction]:
    """Model FLOPs at the full context (3 × forward, PaLM) over peak × the MFU predicted per device for a
    data-parallel step of `inputs.n_devices` devices (one device's step plus the gradient all-reduce)."""
    require_positive("devices_per_server", inputs.devices_per_server)
    step = predict.predict_train(config, inputs.micro_batch, config.block_size, inputs.grad_accum, profile,
                                 world_size=inputs.n_devices, devices_per_server=inputs.devices_per_server,
                                 cluster=training_cluster(profile, inputs))
    total = flops.training_flops_per_token(config) * require_positive("train_tokens", inputs.tokens)
    return cost.training_cost(total, profile.peak_flops, step.mfu, inputs.n_devices, priced.device_hour,
                              priced.kw_per_device, priced.grid_kg_co2_per_kwh), step


# --------------------------------------------------------------------------- the whole extrapolation


CHINCHILLA_TOKENS_PER_PARAM = 20  # compute-optimal training data (Hoffmann et al., 2022)


@dataclass(frozen=True)
class ScaleRequest:
    """What `scale` is asked: a target model on a target device, and every input the user chose (None = default)."""

    device: str
    model: str | None = None  # a preset name, or None with `shape`
    shape: dict[str, int | None] = field(default_factory=dict)  # n_layer, n_embd, n_head, n_kv_head, block_size, vocab_size
    dtype: str = "bf16"
    device_profile: Path | None = None  # a calibrate --out file of the target device class
    sources: tuple[Path, ...] = ()  # train.py run directories and sample.py profile files: confidence only
    weights_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    ttft_s: float | None = None
    min_user_tokens_per_sec: float | None = None
    prompt_tokens: int | None = None
    tokens_per_query: int | None = None
    queries_per_day: float | None = None
    peak_to_average: float | None = None
    devices_per_server: int | None = None
    usable_memory_fraction: float | None = None
    allreduce_latency_s: float | None = None
    tensor_parallel: int | None = None  # None: the planner chooses
    traffic: Path | None = None  # a distribution of (prompt, output, share) classes instead of the two means
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


@dataclass(frozen=True)
class Target:
    """A request resolved: the model, the device, the profile its steps are priced on, the device-hour price."""

    config: GPTConfig
    device: Accelerator
    profile: DeviceProfile
    priced: cost.PricedDevice


def resolve(request: ScaleRequest) -> Target:
    if request.model is None and not request.shape.get("n_layer"):
        raise ScaleError("name a target model: --model PRESET, or --layers N --width D --heads H")
    conflicting = [SHAPE_FLAGS[name] for name, value in request.shape.items() if value is not None]
    if request.model is not None and conflicting:
        raise ScaleError(f"--model {request.model} fixes the whole shape, so {' '.join(conflicting)} would be "
                         "ignored; drop them, or drop --model and give the shape: --layers N --width D --heads H")
    config = resolve_model(request.model, None if request.model else request.shape)
    device = device_spec(request.device)
    profile = resolve_profile(device.key, request.device_profile, flops.dtype_name(request.dtype))
    return Target(config, device, profile, cost.price_device(request.prices, device.key, device.board_power_w))


def _given(inputs: dict[str, dict[str, Any]], request: ScaleRequest, name: str, default: float,
           unit: str = "") -> float:
    """The request's value of `name`, or `default`; recorded in `inputs` with its source."""
    value = getattr(request, name)
    source = "assumed (default)" if value is None else f"assumed (--{name.replace('_', '-')})"
    inputs[name] = {"value": default if value is None else value, "unit": unit, "source": source}
    return inputs[name]["value"]


def _traffic_means(request: ScaleRequest, inputs: dict[str, dict[str, Any]],
                   config: GPTConfig | None) -> tuple[int, int, int] | None:
    """With --traffic: its mean prompt and output (whole tokens) and the KV context of its long end, recorded in
    `inputs` with their source; the file's longest class checked against the model's context."""
    if request.traffic is None:
        return None
    if request.prompt_tokens is not None or request.tokens_per_query is not None:
        raise ScaleError("--traffic gives the prompt and output lengths; drop --prompt-tokens and --tokens-per-query, "
                         "or drop --traffic")
    found = read_traffic(request.traffic)
    if config is not None:
        longest = max(found.classes, key=lambda row: row.context)
        if longest.context > config.block_size:
            raise ScaleError(f"{request.traffic}: a class of {longest.prompt_tokens} + {longest.output_tokens} tokens "
                             f"exceeds the model's context of {config.block_size}; shorten it or drop it")
    where = f"assumed (--traffic {request.traffic}: share-weighted mean of {len(found.classes)} classes)"
    prompt, output = round(found.mean_prompt_tokens), max(1, round(found.mean_output_tokens))
    kv = found.context_percentile()
    inputs["traffic"] = {"value": str(request.traffic), "unit": "", "source": f"assumed (--traffic): "
                         f"{len(found.classes)} classes of prompt and output tokens"}
    inputs["prompt_tokens"] = {"value": prompt, "unit": "tokens", "source": where}
    inputs["tokens_per_query"] = {"value": output, "unit": "tokens", "source": where}
    inputs["kv_context_tokens"] = {"value": kv, "unit": "tokens", "source": f"assumed (--traffic {request.traffic}: "
                                   f"the {PERCENTILE * 100:.0f}th percentile of prompt + output by share, reserved per sequence)"}
    return prompt, output, kv


def serving_inputs(request: ScaleRequest, inputs: dict[str, dict[str, Any]] | None = None,
                   config: GPTConfig | None = None) -> ServingInputs:
    """The planner's inputs: the request's values, the defaults for what it left unset (recorded in `inputs`);
    with --traffic, the prompt and output means and the KV context it implies for `config`."""
    inputs = {} if inputs is None else inputs

    def given(name: str, default: float, unit: str = "") -> float:
        return _given(inputs, request, name, default, unit)

    traffic = _traffic_means(request, inputs, config)
    if traffic is None:
        prompt = int(given("prompt_tokens", ServingInputs.prompt_tokens, "tokens"))
        output = int(given("tokens_per_query", ServingInputs.output_tokens, "tokens"))
    else:
        prompt, output, _ = traffic
    serving = ServingInputs(
        prompt_tokens=prompt,
        output_tokens=output,
        queries_per_day=given("queries_per_day", ServingInputs.queries_per_day, "1/day"),
        peak_to_average=given("peak_to_average", ServingInputs.peak_to_average),
        dtype=flops.dtype_name(request.dtype),
        weights_dtype=request.weights_dtype,
        kv_dtype=request.kv_dtype,
        ttft_s=given("ttft_s", ServingInputs.ttft_s, "s"),
        min_user_tokens_per_sec=given("min_user_tokens_per_sec", ServingInputs.min_user_tokens_per_sec, "tokens/s"),
        devices_per_server=int(given("devices_per_server", ServingInputs.devices_per_server)),
        usable_memory_fraction=given("usable_memory_fraction", ServingInputs.usable_memory_fraction),
        allreduce_latency_s=given("allreduce_latency_s", ServingInputs.allreduce_latency_s, "s"),
        tensor_parallel=request.tensor_parallel,
        kv_context_tokens=None if traffic is None else traffic[2],
    )
    for name in ("ttft_s", "min_user_tokens_per_sec"):
        if getattr(request, name) is None:
            inputs[name]["source"] = f"reference: {LATENCY_SOURCE}"
    if request.prompt_tokens is None and request.traffic is None:
        inputs["prompt_tokens"]["source"] = f"assumed (default): {PROMPT_SOURCE}"
    if request.tensor_parallel is not None:
        given("tensor_parallel", request.tensor_parallel, "devices")
    return serving


def plan_request(request: ScaleRequest) -> ServingPlan:
    """The central serving plan of a request (no band, no training): what `--compare` re-runs per lever."""
    target = resolve(request)
    return plan_serving(target.config, target.device, target.profile, serving_inputs(request, None, target.config),
                        target.priced)


def extrapolate(request: ScaleRequest) -> dict[str, Any]:
    """Training and serving of the target model on the target device; every input listed with its kind."""
    target = resolve(request)
    config, device, profile, priced = target.config, target.device, target.profile, target.priced
    measured = read_measurements(list(request.sources))
    params = flops.param_count(config)
    summary = profile.summary()
    inputs: dict[str, dict[str, Any]] = {"device_profile": {
        "value": summary["device"], "unit": summary["dtype"],
        "source": f"{'measured' if profile.kind == 'measured' else 'reference'} profile, {summary['date']}: "
                  f"{summary['source']}"}}

    def given(name: str, default: float, unit: str = "") -> float:
        return _given(inputs, request, name, default, unit)

    serving = serving_inputs(request, inputs, config)
    link = hardware.INTERCONNECTS.get(device.key)
    if link is not None:
        inputs["interconnect_bytes_per_s"] = {"value": link.bytes_per_s, "unit": "B/s", "source": link.source}
    network = hardware.inter_node(device.key)
    inputs["inter_node_bytes_per_s"] = {"value": network.bytes_per_s, "unit": "B/s",
                                        "source": network.source}
    training_inputs = TrainingInputs(
        tokens=given("train_tokens", CHINCHILLA_TOKENS_PER_PARAM * params, "tokens"),
        n_devices=int(given("train_devices", 1024, "devices")),
        micro_batch=int(given("train_micro_batch", TrainingInputs.micro_batch, "sequences")),
        grad_accum=int(given("train_grad_accum", TrainingInputs.grad_accum, "micro-steps")),
        devices_per_server=serving.devices_per_server,
    )
    inputs |= priced.inputs
    for entry in inputs.values():
        entry["kind"] = cost.kind_of(entry["source"])
    plan = plan_serving(config, device, profile, serving, priced)
    band = uncertainty(config, device, profile, serving, priced, request.prices,
                       {name: entry["source"] for name, entry in inputs.items()})
    training, step = plan_training(config, profile, training_inputs, priced)
    traffic = {} if request.traffic is None else {"traffic": read_traffic(request.traffic).to_dict()}
    return traffic | {
        "model": {"name": request.model or "custom", "params": params, **config.to_dict()},
        "device": {"key": device.key, "name": device.name, "dtype": serving.dtype,
                   "peak_flops": device.peak(serving.dtype),
                   "memory_bandwidth_bytes_per_s": device.memory_bandwidth, "memory_bytes": device.memory_bytes,
                   "board_power_w": device.board_power_w, "source": device.source},
        "profile": summary,
        "inputs": inputs,
        **{kind: sorted(name for name, entry in inputs.items() if entry["kind"] == kind)
           for kind in ("measured", "reference", "assumed")},
        "confidence": _confidence(measured, device.key),
        "device_hour": priced.device_hour.to_dict(),
        "training": asdict(training) | {"predicted_mfu": step.mfu, "step": step.to_dict(),
                                        "communication": communication(profile, training_inputs, step)},
        "serving": asdict(plan) | band | {
            "operating_cost_usd_per_day": operating_costs(plan.devices, request.prices, device)},
    }
