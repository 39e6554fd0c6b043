"""Does the predictor hold on this machine? Measure models of many shapes through the tools' own code, compare.

For each shape, workload and batch (training, prefill and decode at batch 1 and 16 by default):

  measured     training: tokens/s of `gpt.trainer.Trainer.train_step` (train.py's step: forward, backward,
               clipping, AdamW), the fastest of a few steps after warm-up. Prefill and decode: `GPT.generate`
               timed at the edges sample.py's `profiling.live.GenerationProfiler` uses, the fastest of a few
               calls, with sample.py's end-of-text check (for an id no model draws, so that every call
               generates all its tokens). Each case keeps its fastest of --sweeps passes over every shape
               (run_benchmark). The clock is the process's CPU time at one thread
               (profiling.microbench.host_clock), and the fastest run is kept, as calibration does: on a
               shared machine other jobs only add time.
               The tools' own wall-clock figures (median) are kept beside them in the JSON
  predictor    `profiling.predict` on this device's profile (python -m profiling calibrate, or --profile)
  constant     the method `profiling scale` used before the predictor: the efficiency measured on one model
               (--anchor, the default `tiny` preset that train.py trains) carried unchanged to every other
               shape — MFU for training and prefill, and for decoding the compute and bandwidth efficiencies
               against `profiling.scale.roofline`

and prints both predictions' error (predicted − measured) / measured next to the measurement, then how far the
machine's speed moved from before to after the measurements (`probe_machine`: a matmul, a skinny one with its
weight from memory, the streaming copy, a small op's per-call cost), which a neighbour's load on a shared machine
moves.

With --world-size N, data-parallel training instead (bench/distributed.py): train.py itself, in one process
and under torchrun with N gloo processes (DDP, FSDP), tokens/s per card against `predict_train(world_size=N)`
on a profile whose collectives and harness were measured under torchrun.

    flock /tmp/gptmeter-heavy.lock python -m bench.extrapolate [--profile FILE] [--threads 1] [--json FILE]
    flock /tmp/gptmeter-heavy.lock python -m bench.extrapolate --world-size 2 [--profile FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench import distributed
from bench._memory import skip_reason, training_bytes
from gpt.cli import HelpFormatter, fail, positive_int
from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from gpt.files import write_json
from gpt.host_memory import keep_freed_memory
from gpt.memory import generation_bytes
from gpt.model import GPT
from gpt.warmup import plan_warmup, warm_up
from profiling import flops, microbench
from profiling.device_profile import DeviceProfile, calibrate, load_profile
from profiling.live import GenerationProfiler
from profiling.microbench import SAMPLE_TEMPERATURE, host_clock, never_drawn_end_of_text, timing_trainer
from profiling.predict import predict_decode, predict_prefill, predict_train
from profiling.scale import roofline

VOCAB, CONTEXT = 257, 128  # the byte tokenizer's vocabulary, the tiny preset's context
# Six shapes from 0.13M to 25M parameters (about 200x); "tiny" is the preset train.py trains by default.
SHAPES = {
    "L2-d64": dict(n_layer=2, n_head=2, n_embd=64),
    "L2-d128": dict(n_layer=2, n_head=4, n_embd=128),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128),
    "L4-d256": dict(n_layer=4, n_head=4, n_embd=256),
    "L6-d384": dict(n_layer=6, n_head=6, n_embd=384),
    "L8-d512": dict(n_layer=8, n_head=8, n_embd=512),
}
PROMPT_TOKENS, NEW_TOKENS = 64, 32


def shape_config(name: str) -> GPTConfig:
    return GPTConfig(vocab_size=VOCAB, block_size=CONTEXT, attention="sdpa", **SHAPES[name])


@dataclass(frozen=True)
class Row:
    shape: str
    params: int
    workload: str  # train, prefill or decode
    batch: int
    measured: float  # tokens/s, by the bench's clock (process CPU time at one thread), fastest run
    wall: float  # tokens/s by the tools' own wall clock (median), other jobs' load included
    predicted: float  # tokens/s, the predictor
    constant: float | None  # tokens/s, the constant-efficiency method (None for the anchor itself)
    breakdown: dict[str, float]  # the predictor's seconds per step by category

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured

    @property
    def constant_error(self) -> float | None:
        return None if self.constant is None else (self.constant - self.measured) / self.measured


# ----------------------------------------------------------------------------- measuring through the tools' code


@dataclass(frozen=True)
class Measured:
    """Tokens/s by the bench's clock (microbench.host_clock: CPU time at one thread) and by the tools' wall clock."""

    tokens_per_sec: float
    wall_tokens_per_sec: float


def measure_training(config: GPTConfig, batch: int, steps: int) -> Measured:
    """Tokens/s of `Trainer.train_step` on random tokens: the fastest of `steps` after two warm-up steps."""
    trainer = timing_trainer(config, "cpu", "fp32", batch)
    for _ in range(2):
        trainer.train_step()
    clock = host_clock(torch.get_num_threads())[1]
    times, wall = [], []
    for _ in range(steps):
        started = clock()
        wall.append(trainer.train_step().step_time_s)
        times.append(clock() - started)
    tokens = batch * config.block_size
    return Measured(tokens / min(times), tokens / statistics.median(wall))


def measure_generation(config: GPTConfig, batch: int, repeats: int) -> tuple[Measured, Measured]:
    """Prefill and decode tokens/s of `GPT.generate` (fastest of `repeats`), timed at sample.py's edges.

    The profiler's wall-clock figures are kept; the bench's clock marks the same edges: the call, the
    first new token (end of prefill), the end of the call.
    """
    torch.manual_seed(0)
    model = GPT(config).eval()
    idx = torch.randint(config.vocab_size, (batch, PROMPT_TOKENS))
    clock = host_clock(torch.get_num_threads())[1]
    prefill, decode, wall_prefill, wall_decode = [], [], [], []
    for seed in range(repeats):
        generator = torch.Generator().manual_seed(seed)
        profiler = GenerationProfiler(config, torch.device("cpu"), "fp32", batch, PROMPT_TOKENS, board_watts=1.0)
        warm_up(model, idx, plan_warmup(PROMPT_TOKENS, NEW_TOKENS, config.block_size, every_key=False),
                SAMPLE_TEMPERATURE)  # as sample.py
        edges = []

        def on_tokens(columns: torch.Tensor) -> None:
            first = not edges[1:]
            if first:
                edges.append(clock())  # the prefill ends where the profiler reads its clock, before its bookkeeping
            profiler.on_tokens(columns.size(1))
            if first:
                edges.append(clock())  # and decoding starts after it

        edges.append(clock())
        profiler.start()
        model.generate(idx, NEW_TOKENS, temperature=SAMPLE_TEMPERATURE, generator=generator, on_tokens=on_tokens,
                       eos_token=never_drawn_end_of_text(config))  # sample.py's check, never ending early
        edges.append(clock())
        profiler.stop()
        profile = profiler.profile(config.to_dict())
        profiler.close()
        prefill.append(batch * PROMPT_TOKENS / (edges[1] - edges[0]))
        decode.append(batch * (NEW_TOKENS - 1) / (edges[3] - edges[2]))
        wall_prefill.append(profile["prefill_tokens_per_sec"])
        wall_decode.append(profile["decode_tokens_per_sec"])
    median = statistics.median
    return Measured(max(prefill), median(wall_prefill)), Measured(max(decode), median(wall_decode))


# ----------------------------------------------------------------------------- the constant-efficiency method


@dataclass(frozen=True)
class Anchor:
    """What the anchor model measured, as efficiencies the old method carries to every shape."""

    training_mfu: dict[int, float]  # per batch
    prefill_mfu: dict[int, float]
    decode_compute: dict[int, float]  # roofline compute time at 100% / measured step time
    decode_bandwidth: dict[int, float]


def _decode_roof(config: GPTConfig, batch: int, profile: DeviceProfile):
    context = PROMPT_TOKENS + NEW_TOKENS // 2
    return roofline(batch * flops.decode_flops_per_token(config, context),
                    flops.decode_bytes_per_step(config, context, batch, "fp32"), profile.peak_flops,
                    profile.memory_bandwidth, 1.0, 1.0)


def constant_prediction(anchor: Anchor, config: GPTConfig, workload: str, batch: int, profile: DeviceProfile) -> float:
    peak = profile.peak_flops
    if workload == "train":
        return anchor.training_mfu[batch] * peak / flops.training_flops_per_token(config)
    if workload == "prefill":
        return anchor.prefill_mfu[batch] * peak * PROMPT_TOKENS / flops.prefill_flops(config, PROMPT_TOKENS, False)
    roof = _decode_roof(config, batch, profile)
    step = roofline(roof.compute_s * peak, roof.memory_s * profile.memory_bandwidth, peak, profile.memory_bandwidth,
                    anchor.decode_compute[batch], anchor.decode_bandwidth[batch])
    return batch / step.seconds


def make_anchor(config: GPTConfig, measured: dict[tuple[str, int], float], profile: DeviceProfile) -> Anchor:
    peak = profile.peak_flops
    training, prefill, compute, bandwidth = {}, {}, {}, {}
    for (workload, batch), tokens_per_sec in measured.items():
        if workload == "train":
            training[batch] = tokens_per_sec * flops.training_flops_per_token(config) / peak
        elif workload == "prefill":
            prefill[batch] = tokens_per_sec * flops.prefill_flops(config, PROMPT_TOKENS, False) / PROMPT_TOKENS / peak
        else:
            roof, step = _decode_roof(config, batch, profile), batch / tokens_per_sec
            compute[batch], bandwidth[batch] = roof.compute_s / step, roof.memory_s / step
    return Anchor(training, prefill, compute, bandwidth)


# ----------------------------------------------------------------------------- the benchmark


def predicted(config: GPTConfig, workload: str, batch: int, profile: DeviceProfile):
    if workload == "train":
        return predict_train(config, batch, config.block_size, 1, profile)
    if workload == "prefill":
        return predict_prefill(config, batch, PROMPT_TOKENS, profile, NEW_TOKENS)
    return predict_decode(config, batch, PROMPT_TOKENS, NEW_TOKENS, profile)


def case_skip_reason(name: str, config: GPTConfig, batch: int) -> str | None:
    """Why a (shape, batch) case would not fit in this machine's free memory, or None (bench/_memory.py)."""
    cpu = torch.device("cpu")
    return (skip_reason(f"{name} training at batch {batch}", training_bytes(config, batch, "fp32"), cpu)
            or skip_reason(f"{name} generation at batch {batch}",
                           generation_bytes(config, batch, PROMPT_TOKENS + NEW_TOKENS, 4), cpu))


def run_benchmark(profile: DeviceProfile, shapes: list[str], batches: list[int], anchor_shape: str,
                  steps: int, repeats: int, progress=print, sweeps: int = 1) -> list[Row]:
    """Measure every shape `sweeps` times, every other sweep in reverse order, and keep each case's fastest.

    A neighbour's job on a shared machine slows everything for tens of seconds at a time: on the 2-core VM, one
    run measured the three batch-1 cases of one shape 10-20% slower than three other runs did, while two
    calibrations of the same code priced the median case within 2% of each other (2026-12-03,
    docs/benchmarks.md). Calibration keeps the faster of two passes where this shows; the bench keeps the
    fastest of `sweeps` passes, minutes apart.
    """
    order = [anchor_shape] + [name for name in shapes if name != anchor_shape]

    def measure_shape(name: str) -> dict[tuple[str, int], Measured]:
        config = shape_config(name)
        found = {}
        for batch in batches:
            skipped = case_skip_reason(name, config, batch)
            if skipped:  # the case is left out of the rows, with the reason printed
                progress(skipped)
                continue
            found[("train", batch)] = measure_training(config, batch, steps)
            found[("prefill", batch)], found[("decode", batch)] = measure_generation(config, batch, repeats)
        progress(f"measured {name}: " + ", ".join(f"{w} b{b} {v.tokens_per_sec:,.0f}" for (w, b), v in found.items()))
        return found

    # The first shape measured in a process runs up to 2x slower than the same shape measured second, despite
    # each case's own warm-up steps (docs/benchmarks.md): that first pass warms the process and is discarded.
    progress("warming the process up (this pass is discarded):")
    measure_shape(order[0])
    measured = {name: measure_shape(name) for name in order}
    for sweep in range(1, sweeps):
        progress(f"sweep {sweep + 1} of {sweeps} (each case keeps its fastest):")
        for name in order[::-1] if sweep % 2 else order:
            for key, again in measure_shape(name).items():
                if again.tokens_per_sec > measured[name][key].tokens_per_sec:
                    measured[name][key] = again
    anchor = make_anchor(shape_config(anchor_shape), {key: value.tokens_per_sec
                                                      for key, value in measured[anchor_shape].items()}, profile)
    rows = []
    for name in shapes:
        config = shape_config(name)
        for (workload, batch), found in measured[name].items():
            prediction = predicted(config, workload, batch, profile)
            constant = None if name == anchor_shape else constant_prediction(anchor, config, workload, batch, profile)
            rows.append(Row(name, flops.param_count(config), workload, batch, found.tokens_per_sec,
                            found.wall_tokens_per_sec, prediction.tokens_per_sec, constant, prediction.breakdown))
    return rows


PROBE_COLD_BYTES = 512 * 2**20  # the skinny probe's weights, read from past the caches as a large model's are


@dataclass(frozen=True)
class Probe:
    """How fast the machine runs at one moment, by four fixed micro-benchmarks (microbench's own timing)."""

    matmul: float  # FLOP/s of a 256 x 1024 x 1024 product, its weight from the 64 MiB window
    skinny_matmul: float  # FLOP/s of a 16-row product, 1024 x 1024, its weight from 512 MiB
    copy: float  # bytes/s of the 128 MiB streaming copy
    calls: float  # calls/s of an add of 256 elements: the per-call cost (Python, dispatch) that small models pay


def probe_machine() -> Probe:
    """Timed before and after the measurements, so that a run shows how far a neighbour's load moved the machine
    between its calibration and the cases measured minutes later (one run measured every model 5-10% slower
    than two runs before it, 2026-12-03)."""
    cpu = torch.device("cpu")

    def product(rows: int, window: int) -> float:  # (rows x 1024) @ (1024 x 1024), timed whole
        return microbench.matmul_grid(cpu, "fp32", [1024], 2 * rows * 1024**2, window, rows=[rows])[0][0][0]

    pair = torch.randn(2, 256)
    return Probe(product(256, microbench.WARM_BYTES), product(16, PROBE_COLD_BYTES),
                 microbench.stream_copy(cpu, "fp32")["bytes_per_sec"],
                 1 / microbench.seconds_per_call(lambda: torch.add(pair[0], pair[1]), cpu))


def format_drift(before: Probe, after: Probe) -> str:
    changes = ", ".join(f"{name.replace('_', ' ')} {getattr(after, name) / getattr(before, name) - 1:+.1%}"
                        for name in ("matmul", "skinny_matmul", "copy", "calls"))
    return f"machine from before to after the measurements (speed; negative: slower at the end): {changes}"


def format_rows(rows: list[Row], anchor_shape: str) -> str:
    lines = [f"{'shape':<9} {'params':>11} {'workload':<8} {'batch':>5} {'measured':>10} {'predictor':>10} "
             f"{'error':>7} {'constant':>10} {'error':>7}"]
    for row in rows:
        constant = f"{row.constant:>10,.0f} {100 * row.constant_error:>+6.1f}%" if row.constant else f"{'anchor':>10} {'':>7}"
        lines.append(f"{row.shape:<9} {row.params:>11,} {row.workload:<8} {row.batch:>5} {row.measured:>10,.0f} "
                     f"{row.predicted:>10,.0f} {100 * row.error:>+6.1f}% {constant}")
    errors = [abs(row.error) for row in rows]
    constant_errors = [abs(row.constant_error) for row in rows if row.constant is not None]
    lines += ["", f"predictor: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%} "
                  f"over {len(errors)} measurements",
              f"constant efficiency (carried from {anchor_shape}): median |error| "
              f"{statistics.median(constant_errors):.1%}, max {max(constant_errors):.1%}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extrapolate", formatter_class=HelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--profile", metavar="FILE", help="device profile to predict with (default: calibrate now, "
                        "with --threads, and write it beside --json)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for calibration and measurement (1: steadier on a shared machine)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="model shapes")
    parser.add_argument("--batches", nargs="+", type=positive_int, default=[1, 16], help="sequences per step")
    parser.add_argument("--anchor", choices=list(SHAPES), default="tiny",
                        help="shape whose efficiencies the constant-efficiency method carries")
    parser.add_argument("--steps", type=positive_int, default=5, help="timed training steps per point (fastest kept)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed generate calls per point (fastest kept)")
    parser.add_argument("--sweeps", type=positive_int, default=2,
                        help="passes over every shape, minutes apart, every other one in reverse order; each case "
                        "keeps its fastest (a neighbour's job on a shared machine slows whole passes)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every row (and the profile) as JSON")
    parser.add_argument("--world-size", type=positive_int, default=1,
                        help="N > 1: data-parallel training instead: train.py in one process, then under torchrun "
                        "with N gloo processes (DDP, then FSDP), tokens/s per card, --batches per card, --steps "
                        "steps a run after the meter's warm-up; the profile is calibrated under torchrun too "
                        "unless --profile names one with collectives measured at N (bench/distributed.py)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the tools run
    if args.world_size > 1:
        return distributed_main(args)
    torch.set_num_threads(args.threads)
    try:
        started = time.perf_counter()
        profile = load_profile(args.profile) if args.profile else calibrate("cpu", "fp32")
        calibration_seconds = None if args.profile else time.perf_counter() - started
        if profile.device_class != "cpu" or profile.threads != args.threads:
            raise GptmeterError(f"{args.profile} profiles {profile.device}, not this CPU at {args.threads} threads; "
                                "calibrate with the same --threads")
    except GptmeterError as error:
        fail("bench.extrapolate", str(error))
    before = probe_machine()
    rows = run_benchmark(profile, args.shapes, args.batches, args.anchor, args.steps, args.repeats,
                         progress=lambda line: print(line, file=sys.stderr), sweeps=args.sweeps)
    after = probe_machine()
    print(format_rows(rows, args.anchor))
    print(format_drift(before, after))
    if args.json:
        result = {"device": profile.device, "threads": args.threads, "calibration_wall_seconds": calibration_seconds,
                  "sweeps": args.sweeps, "probe": {"before": asdict(before), "after": asdict(after)},
                  "profile": asdict(profile),
                  "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "context": CONTEXT, "vocab": VOCAB,
                  "rows": [asdict(row) | {"error": row.error, "constant_error": row.constant_error} for row in rows]}
        write_json(args.json, result)
    return 0


def distributed_main(args: argparse.Namespace) -> int:
    """--world-size N: the data-parallel cases (bench/distributed.py)."""
    try:
        if args.threads != 1:
            raise GptmeterError("--world-size runs every process at one thread, as torchrun does; drop --threads")
        started = time.perf_counter()
        if args.profile:
            profile = load_profile(args.profile)
            if profile.device_class != "cpu" or profile.threads != 1:
                raise GptmeterError(f"{args.profile} profiles {profile.device}, not this CPU at one thread, as every "
                                    "process runs; calibrate with OMP_NUM_THREADS=1")
        else:
            with tempfile.TemporaryDirectory() as folder:
                profile = distributed.calibrate_profile(args.world_size, Path(folder) / "profile.json")
        calibration_seconds = None if args.profile else time.perf_counter() - started
        rows = distributed.run_benchmark(profile, {name: shape_config(name) for name in args.shapes}, args.batches,
                                         args.world_size, args.steps,
                                         progress=lambda line: print(line, file=sys.stderr))
    except GptmeterError as error:
        fail("bench.extrapolate", str(error))
    print(distributed.format_rows(rows))
    if args.json:
        write_json(args.json, {"device": profile.device, "world_size": args.world_size, "threads": 1,
                               "calibration_wall_seconds": calibration_seconds, "profile": asdict(profile),
                               "context": CONTEXT, "vocab": VOCAB, "timed_steps": args.steps,
                               "rows": [asdict(row) | {"error": row.error} for row in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
