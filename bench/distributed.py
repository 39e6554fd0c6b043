"""Data-parallel training against the predictor: train.py under torchrun on this CPU (gloo), tokens/s per card.

For each model shape and batch (bench.extrapolate's shapes; sequences per card), three runs of train.py's own code, one
after another, every rank at one thread (OMP_NUM_THREADS=1, what torchrun gives a rank by default) on random
tokens of the byte vocabulary:

    single  python train.py
    ddp     torchrun --standalone --nproc_per_node N train.py
    fsdp    the same with --fsdp

  measured   per-card tokens/s of the fastest step after the meter's warm-up steps (metrics.jsonl `step` lines
             with `warmup` false: tokens / step_time_s, rank 0's clock), as the single-process bench keeps the
             fastest; the run's own figure (the summary's tokens_per_sec: the same steps, time-weighted) beside it
  predicted  `profiling.predict.predict_train(..., world_size, sharded)` on a profile whose collectives and
             harness were measured under torchrun at that world size (`calibrate_profile`)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from profiling import flops
from profiling.device_profile import DeviceProfile, load_profile
from profiling.meter import WARMUP_STEPS
from profiling.predict import predict_train

ROOT = Path(__file__).resolve().parent.parent
MODES = ("single", "ddp", "fsdp")
TIMEOUT_S = 600  # per subprocess; train.py's collectives time out after 120 s, so a stuck rank ends sooner


@dataclass(frozen=True)
class Row:
    shape: str
    params: int
    mode: str  # single, ddp or fsdp
    world_size: int
    batch: int  # sequences per card
    measured: float  # tokens/s per card, fastest step after warm-up
    whole_run: float  # tokens/s per card, the run's summary (warm-up excluded, time-weighted)
    predicted: float  # tokens/s per card, the predictor
    breakdown: dict[str, float]  # the predictor's seconds per step by category

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured


def environment() -> dict[str, str]:
    """One thread a process, and this checkout's code first on the path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def launcher(world_size: int) -> list[str]:
    if world_size == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world_size)]


def run(command: list[str], what: str, cwd: Path) -> str:
    """Run `command`; a failure is a GptmeterError with the end of its output."""
    try:
        done = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GptmeterError(f"{what} did not finish within {TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise GptmeterError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout


def calibrate_profile(world_size: int, out: Path) -> DeviceProfile:
    """This CPU's profile at one thread, then its collectives and harness under torchrun at `world_size`, as
    docs/profiling.md says to make them; written to `out` (and cached, as calibrate does)."""
    run([sys.executable, "-m", "profiling", "calibrate", "--device", "cpu"], "python -m profiling calibrate", ROOT)
    run([*launcher(world_size), "-m", "profiling", "calibrate", "--device", "cpu", "--out", str(out)],
        f"torchrun --nproc_per_node {world_size} -m profiling calibrate", ROOT)
    return load_profile(out)


def write_tokens(folder: Path, tokens: int = 200_000) -> None:
    """A train.bin/val.bin pair of random byte-tokenizer ids (uint16), as train.py --data reads them."""
    rng = np.random.default_rng(0)
    rng.integers(0, 256, tokens, dtype=np.uint16).tofile(folder / "train.bin")
    rng.integers(0, 256, tokens // 10, dtype=np.uint16).tofile(folder / "val.bin")


def train_command(shape: GPTConfig, batch: int, steps: int, world_size: int, sharded: bool, data: Path,
                  out: Path) -> list[str]:
    """train.py on `shape` (byte tokenizer, vocabulary padded to the shape's) for `steps` steps after the meter's
    warm-up, evaluating and checkpointing once, at the end."""
    steps += WARMUP_STEPS
    return [*launcher(world_size), str(ROOT / "train.py"), "--layers", str(shape.n_layer), "--heads",
            str(shape.n_head), "--width", str(shape.n_embd), "--block-size", str(shape.block_size),
            "--vocab-size", str(shape.vocab_size),
            "--tokenizer", "bytes", "--data", str(data), "--dropout", "0", "--device", "cpu", "--dtype", "float32",
            "--attention", "sdpa", "--batch-size", str(batch), "--max-iters", str(steps), "--eval-iters", "1",
            "--eval-interval", str(10 * steps), "--checkpoint-interval", str(10 * steps), "--no-progress",
            "--out-dir", str(out), *(["--fsdp"] if sharded else [])]


def read_run(out: Path, shape: GPTConfig) -> tuple[float, float]:
    """(fastest step's, summary's) tokens/s per card of the run in `out`, checked to have trained `shape`."""
    model = json.loads((out / "config.json").read_text())["model"]
    if model != shape.to_dict():
        raise GptmeterError(f"train.py built {model}, not the bench's {shape.to_dict()}; update train_command")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if line["kind"] == "step" and not line["warmup"]]
    summary = [line for line in lines if line["kind"] == "summary"][-1]
    if not steps:
        raise GptmeterError(f"every step of the run in {out} was warm-up; raise --steps")
    return max(step["tokens"] / step["step_time_s"] for step in steps), summary["tokens_per_sec"]


def run_benchmark(profile: DeviceProfile, shapes: dict[str, GPTConfig], batches: list[int], world_size: int,
                  steps: int, progress=print) -> list[Row]:
    """Every (shape, batch, mode), predicted on `profile` first (a profile without collectives fails before any
    run), then measured by train.py."""
    cases = [(name, config, batch, mode, *((1, False) if mode == "single" else (world_size, mode == "fsdp")))
             for name, config in shapes.items() for batch in batches for mode in MODES]
    predictions = [predict_train(config, batch, config.block_size, 1, profile, world, sharded)
                   for _, config, batch, _, world, sharded in cases]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gptmeter-distributed-") as scratch:
        scratch = Path(scratch)
        (scratch / "data").mkdir()
        write_tokens(scratch / "data")
        for (name, config, batch, mode, world, sharded), prediction in zip(cases, predictions):
            out = scratch / f"{name}-b{batch}-{mode}"
            run(train_command(config, batch, steps, world, sharded, scratch / "data", out),
                f"train.py ({name}, batch {batch}, {mode})", scratch)
            measured, whole_run = read_run(out, config)
            rows.append(Row(name, flops.param_count(config), mode, world, batch, measured, whole_run,
                            prediction.tokens_per_sec, prediction.breakdown))
            progress(f"measured {name} b{batch} {mode}: {measured:,.0f} tokens/s per card "
                     f"(whole run {whole_run:,.0f}), predicted {prediction.tokens_per_sec:,.0f}")
    return rows


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'shape':<9} {'params':>11} {'mode':<6} {'procs':>5} {'batch':>5} {'measured':>10} {'whole run':>10} "
             f"{'predictor':>10} {'error':>7}"]
    for row in rows:
        lines.append(f"{row.shape:<9} {row.params:>11,} {row.mode:<6} {row.world_size:>5} {row.batch:>5} "
                     f"{row.measured:>10,.0f} {row.whole_run:>10,.0f} {row.predicted:>10,.0f} "
                     f"{100 * row.error:>+6.1f}%")
    lines.append("")
    for mode in MODES:
        errors = [abs(row.error) for row in rows if row.mode == mode]
        if errors:
            lines.append(f"{mode}: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%} "
                         f"over {len(errors)} runs")
    return "\n".join(lines)
