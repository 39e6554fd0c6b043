"""Predict the wall time of a training step, a prefill or a decode step as a sum over the model's operations.

    step time = Σ over operations (profiling.flops listings) of the device profile's time for that
                operation at its shape (profiling.device_profile), plus the profile's fixed costs

and tokens/s and MFU follow from it. What each mode covers, matching what the tools measure:

    train    `Trainer.train_step`: grad_accum × (forward + backward over batch × seq_len tokens), then
             gradient clipping, AdamW and zeroing the gradients; tokens/s = batch · seq_len · grad_accum / step.
             On world_size data-parallel ranks, per card, plus the collectives, the wrappers' copies and the
             measured harness (profiling.collectives)
    prefill  `GPT.generate` up to the first new token, as sample.py times it: its KV cache allocated for the
             prompt and the new tokens, the prompt's forward pass (logits at every position, keys and values into
             the cache) and the first draw with its end-of-text check; tokens/s = batch · P / time. Its calls
             cost the profile's prefill per-call figure: a prefill runs once, after other work, not in the
             decode loop's warm caches
    decode   the rest of `generate` for N new tokens, as sample.py times it: N one-token forwards and N−1
             draws, each with sample.py's end-of-text check (flops.draw_operations), counted as batch · (N−1)
             tokens; step_seconds is the mean per token. Each forward's attention reads the cache slots that
             hold tokens, P+1 … P+N (gpt.generate's KVCache.window in eager mode)

MFU is model FLOPs (PaLM convention, profiling.flops) over the profile's peak.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from gpt.config import PRESETS, GPTConfig
from gpt.errors import GptmeterError
from gpt.files import dumps_json
from profiling import collectives, flops, hardware
from profiling.device_profile import DeviceProfile, resolve_profile
from profiling.flops import Op

CATEGORIES = ("matmul", "attention", "memory_bound", "optimizer", "overhead", "communication")


class PredictError(GptmeterError, ValueError):
    """A prediction that cannot be made as asked; the message names the fix."""


@dataclass(frozen=True)
class Prediction:
    mode: str  # train, prefill or decode
    tokens_per_sec: float
    step_seconds: float  # one optimizer step, one prefill, or the mean time per generated token
    mfu: float  # model FLOPs per second over the profile's peak
    breakdown: dict[str, float]  # seconds of step_seconds by CATEGORIES
    profile: dict[str, Any]  # DeviceProfile.summary()
    flops_per_step: float  # model FLOPs of step_seconds' work

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _category(op: Op) -> str:
    if op.kind in ("matmul", "attention"):
        return op.kind
    return "optimizer" if op.kind == "adamw" else "memory_bound"


def price(ops: list[Op], profile: DeviceProfile, phase: str) -> dict[str, float]:
    """Seconds of `ops` on `profile` in `phase` ("training", "inference" or "prefill": whose per-call cost), by
    category."""
    breakdown = dict.fromkeys(CATEGORIES, 0.0)
    for op in ops:
        device, overhead = profile.op_seconds(op, phase)
        breakdown[_category(op)] += device
        breakdown["overhead"] += overhead
    return breakdown


def _add(total: dict[str, float], part: dict[str, float], times: float = 1.0) -> None:
    for key, value in part.items():
        total[key] += times * value


def _check(config: GPTConfig, **positive: int) -> None:
    for name, value in positive.items():
        if not isinstance(value, int) or value <= 0:
            raise PredictError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")


def _prediction(mode: str, seconds: dict[str, float], tokens: float, model_flops: float,
                profile: DeviceProfile) -> Prediction:
    step = sum(seconds.values())
    return Prediction(mode, tokens / step, step, model_flops / step / profile.peak_flops, seconds, profile.summary(),
                      model_flops)


DEVICES_PER_SERVER = 8  # an HGX/DGX server's GPUs: the intra-server ring of a reference cluster


def reference_cluster(device_class: str, devices_per_server: int = DEVICES_PER_SERVER) -> collectives.Cluster:
    """The hardware table's links of a device class: a ring inside a server over its NVLink or PCIe link
    (`hardware.INTERCONNECTS`; a class without one has one device per server), and each device's network link
    between servers (`hardware.inter_node`: InfiniBand per GPU on DGX systems, sourced, else an assumption)."""
    link = hardware.INTERCONNECTS.get(device_class)
    intra = collectives.Link(link.bytes_per_s, collectives.REFERENCE_LATENCY_S, link.source) if link else None
    network = hardware.inter_node(device_class)
    inter = collectives.Link(network.bytes_per_s, collectives.INTER_NODE_LATENCY_S, network.source)
    return collectives.Cluster(devices_per_server if intra else 1, intra, inter)


def communication_seconds(config: GPTConfig, world_size: int, grad_accum: int, sharded: bool,
                          profile: DeviceProfile, devices_per_server: int = DEVICES_PER_SERVER,
                          cluster: collectives.Cluster | None = None) -> float:
    """The collectives of one data-parallel optimizer step (profiling.collectives): over `cluster` when given;
    else from the profile's measured table if it has one; else, on a reference profile, over the hardware
    table's links (`reference_cluster`: a ring inside a server, two levels beyond it)."""
    if world_size == 1:
        return 0.0
    if cluster is None and profile.collectives is not None:
        table = profile.collectives
        return collectives.data_parallel_seconds(
            config, world_size, grad_accum, sharded, lambda op, size: collectives.table_seconds(table, op, size,
                                                                                                world_size))
    if cluster is None:
        if profile.kind != "reference" or profile.device_class not in hardware.INTERCONNECTS:
            raise PredictError(f"the {profile.kind} profile of {profile.device} has no collectives; measure them: "
                               f"torchrun --standalone --nproc_per_node {world_size} -m profiling calibrate")
        cluster = reference_cluster(profile.device_class, devices_per_server)
    return collectives.data_parallel_seconds(
        config, world_size, grad_accum, sharded,
        lambda op, size: collectives.cluster_seconds(op, size, world_size, cluster))


def predict_train(config: GPTConfig, batch: int, seq_len: int, grad_accum: int, profile: DeviceProfile,
                  world_size: int = 1, sharded: bool = False, devices_per_server: int = DEVICES_PER_SERVER,
                  cluster: collectives.Cluster | None = None) -> Prediction:
    """One optimizer step of `Trainer.train_step` (see module docstring) on each of `world_size` data-parallel
    ranks (DDP, or FSDP when `sharded`), `batch` sequences per rank; tokens/s and MFU are per card. The
    collectives are priced as `communication_seconds` says (`cluster`, else the profile's table, else the
    hardware table's links with `devices_per_server` per server)."""
    _check(config, batch=batch, seq_len=seq_len, grad_accum=grad_accum, world_size=world_size)
    if seq_len > config.block_size:
        raise PredictError(f"--seq-len {seq_len} exceeds the model's context of {config.block_size}; "
                           "lower it or raise --context")
    ops = flops.train_step_operations(config, batch, seq_len, grad_accum, profile.dtype)
    if world_size > 1:  # the wrappers' copies; FSDP's optimizer updates this rank's shards only
        ops += collectives.data_parallel_copies(config, world_size, grad_accum, sharded, profile.dtype)
        ops = collectives.sharded_optimizer(ops, world_size) if sharded else ops
    seconds = price(ops, profile, "training")
    fixed = profile.overhead["fixed_s"]
    seconds["overhead"] += grad_accum * fixed["train_micro_step"] + fixed["train_step"]
    seconds["communication"] = communication_seconds(config, world_size, grad_accum, sharded, profile,
                                                     devices_per_server, cluster)
    if world_size > 1 and profile.collectives is not None:  # measured with the table; none on reference profiles
        seconds["overhead"] += collectives.harness_seconds(profile.collectives, config, sharded)
    tokens = batch * seq_len * grad_accum
    return _prediction("train", seconds, tokens, tokens * flops.training_flops_per_token(config, seq_len), profile)


def _check_context(config: GPTConfig, tokens: int) -> None:
    if tokens > config.block_size:
        raise PredictError(f"{tokens} tokens exceed the model's context of {config.block_size}; "
                           "lower --prompt-tokens/--new-tokens or raise --context")


def predict_prefill(config: GPTConfig, batch: int, prompt_tokens: int, profile: DeviceProfile,
                    new_tokens: int = 1) -> Prediction:
    """The KV cache's allocation for the prompt and `new_tokens`, the prompt's forward pass and the first draw, as
    sample.py times its prefill."""
    _check(config, batch=batch, prompt_tokens=prompt_tokens, new_tokens=new_tokens)
    _check_context(config, prompt_tokens)
    ops = flops.prefill_operations(config, batch, prompt_tokens, profile.dtype, new_tokens)
    seconds = price(ops, profile, "prefill")
    seconds["overhead"] += profile.overhead["fixed_s"]["prefill"]
    model_flops = batch * flops.prefill_flops(config, prompt_tokens, causal=False)
    return _prediction("prefill", seconds, batch * prompt_tokens, model_flops, profile)


def predict_decode(config: GPTConfig, batch: int, prompt_tokens: int, new_tokens: int,
                   profile: DeviceProfile) -> Prediction:
    """Mean time per generated token over `new_tokens` tokens after a prompt, as sample.py measures decoding."""
    _check(config, batch=batch, prompt_tokens=prompt_tokens, new_tokens=new_tokens)
    if new_tokens < 2:
        raise PredictError("--new-tokens must be at least 2: the first token ends the prefill, decoding is the rest")
    _check_context(config, prompt_tokens + new_tokens)
    total = dict.fromkeys(CATEGORIES, 0.0)
    fixed = profile.overhead["fixed_s"]
    for context in range(prompt_tokens + 1, prompt_tokens + new_tokens + 1):  # eager: the stored slots only
        forward = flops.forward_operations(config, batch, 1, context, dtype=profile.dtype)
        _add(total, price(forward, profile, "inference"))
    total["overhead"] += new_tokens * fixed["forward"]
    steps = new_tokens - 1
    _add(total, price(flops.draw_operations(config, batch, profile.dtype), profile, "inference"), steps)
    total["overhead"] += steps * fixed["token"]
    per_token = {key: value / steps for key, value in total.items()}
    model_flops = batch * sum(flops.decode_flops_per_token(config, c)
                              for c in range(prompt_tokens + 1, prompt_tokens + steps + 1)) / steps
    return _prediction("decode", per_token, batch, model_flops, profile)


def predict_decode_step(config: GPTConfig, batch: int, context: int, profile: DeviceProfile) -> Prediction:
    """One decode step (a token for each of `batch` sequences) attending to `context` cached tokens.

    Decode time is linear in the context, so the step at the mean context is the mean step of a generation;
    the serving planner uses this one step instead of pricing every token of it."""
    _check(config, batch=batch, context=context)
    _check_context(config, context)
    fixed = profile.overhead["fixed_s"]
    ops = flops.decode_operations(config, batch, context, profile.dtype)
    seconds = price(ops, profile, "inference")
    seconds["overhead"] += fixed["forward"] + fixed["token"]
    return _prediction("decode", seconds, batch, batch * flops.decode_flops_per_token(config, context), profile)


# ----------------------------------------------------------------------------- python -m profiling predict


def model_config(preset: str | None, layers: int | None, width: int | None, heads: int | None,
                 kv_heads: int | None = None, context: int | None = None, vocab: int | None = None) -> GPTConfig:
    """A preset, or an explicit shape (GPT-2's context 1024 and vocabulary 50257 unless given)."""
    if preset is not None:
        if preset not in PRESETS:
            raise PredictError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return GPTConfig.from_preset(preset)
    if None in (layers, width, heads):
        raise PredictError("name a model: --preset NAME, or --layers L --width W --heads H")
    shape = dict(n_layer=layers, n_embd=width, n_head=heads, n_kv_head=kv_heads, block_size=context, vocab_size=vocab)
    try:
        return GPTConfig(**{key: value for key, value in shape.items() if value is not None})
    except ValueError as error:
        raise PredictError(f"bad model shape: {error}") from None


def predict(config: GPTConfig, mode: str, profile: DeviceProfile, batch: int, seq_len: int | None = None,
            grad_accum: int = 1, prompt_tokens: int | None = None, new_tokens: int | None = None,
            world_size: int = 1, sharded: bool = False) -> Prediction:
    """Dispatch on `mode`; a missing length is a PredictError naming its flag."""
    if mode == "train":
        return predict_train(config, batch, seq_len or config.block_size, grad_accum, profile, world_size, sharded)
    if world_size != 1:
        raise PredictError("--world-size applies to --mode train (data-parallel training); serving is per replica")
    if prompt_tokens is None:
        raise PredictError(f"--mode {mode} needs --prompt-tokens")
    if mode == "prefill":
        return predict_prefill(config, batch, prompt_tokens, profile, new_tokens or 1)
    if new_tokens is None:
        raise PredictError("--mode decode needs --new-tokens")
    return predict_decode(config, batch, prompt_tokens, new_tokens, profile)


def format_prediction(prediction: Prediction) -> str:
    profile = prediction.profile
    unit = {"train": "optimizer step", "prefill": "prefill", "decode": "generated token (mean)"}[prediction.mode]
    lines = [
        f"{prediction.mode}: {prediction.tokens_per_sec:,.1f} tokens/s, {prediction.step_seconds * 1e3:,.3f} ms per "
        f"{unit}, MFU {prediction.mfu:.1%}",
        f"profile: {profile['kind']} — {profile['device']} ({profile['dtype']}), {profile['date']}; {profile['source']}",
        "where the time goes:",
    ]
    for key in CATEGORIES:
        seconds = prediction.breakdown[key]
        lines.append(f"  {key:<13} {seconds * 1e3:>12,.3f} ms  {seconds / prediction.step_seconds:>6.1%}")
    return "\n".join(lines)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from gpt.cli import HelpFormatter, add_shape_arguments, positive_int

    parser = subparsers.add_parser(
        "predict", formatter_class=HelpFormatter,
        help="predict tokens/s of training, prefill or decoding for any model shape on a device profile",
        description="Predict the time of a training step, a prefill or decoding as the sum of the model's "
        "operations priced on a device profile: --profile FILE, else a measured profile of --device (committed "
        "or from python -m profiling calibrate), else the device's reference profile (datasheet + published "
        "efficiencies). See docs/profiling.md.",
    )
    model = parser.add_argument_group("model (a preset, or an explicit shape)")
    model.add_argument("--preset", choices=list(PRESETS), help="named shape (gpt/config.py)")
    add_shape_arguments(model, "--context", "--vocab")
    work = parser.add_argument_group("workload")
    work.add_argument("--mode", required=True, choices=["train", "prefill", "decode"], help="what to time")
    work.add_argument("--batch", type=positive_int, required=True, help="sequences per step")
    work.add_argument("--seq-len", type=positive_int, help="train: tokens per sequence (default: the context)")
    work.add_argument("--grad-accum", type=positive_int, default=1, help="train: micro-batches per optimizer step")
    work.add_argument("--world-size", type=positive_int, default=1,
                      help="train: data-parallel processes (torchrun --nproc_per_node); --batch is per process, "
                      "tokens/s and MFU per card; adds the gradient all-reduce (DDP) to the step: from the profile's "
                      "measured collectives, or on a reference profile a ring over NVLink/PCIe inside an 8-device "
                      "server and InfiniBand/network between servers (hardware table); and the wrappers' copies and, "
                      "on a measured profile, the harness measured with the collectives")
    work.add_argument("--fsdp", action="store_true",
                      help="train: FSDP instead of DDP: all-gathers of each block's weights (forward and backward, "
                      "every micro-step) and reduce-scatters of its gradients")
    work.add_argument("--prompt-tokens", type=positive_int, help="prefill/decode: prompt length in tokens")
    work.add_argument("--new-tokens", type=positive_int,
                      help="decode: tokens generated; the result is the mean per token, as sample.py measures it; "
                      "prefill: the tokens the KV cache is allocated for beyond the prompt (default 1)")
    where = parser.add_argument_group("device")
    where.add_argument("--device", metavar="KEY",
                       help="key of the hardware table (python -m profiling hardware), e.g. h100-sxm or cpu "
                       "(default: this machine)")
    where.add_argument("--profile", metavar="FILE", help="device profile JSON (python -m profiling calibrate --out)")
    where.add_argument("--dtype", help="compute dtype: fp32, tf32, bf16 or fp16 (default: bf16 on a GPU, fp32 on CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    config = model_config(args.preset, args.layers, args.width, args.heads, args.kv_heads, args.context, args.vocab)
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    if args.device is None and args.profile is None and args.dtype is None:
        import torch

        dtype = "bf16" if torch.cuda.is_available() else "fp32"
    profile = resolve_profile(args.device, args.profile, flops.dtype_name(dtype))
    result = predict(config, args.mode, profile, args.batch, args.seq_len, args.grad_accum, args.prompt_tokens,
                     args.new_tokens, args.world_size, args.fsdp)
    print(dumps_json(result.to_dict(), indent=2) if args.json else format_prediction(result))
    return 0
