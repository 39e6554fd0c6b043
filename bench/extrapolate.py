"""Does the extrapolation hold? Measure a small model, predict a larger one with scale.py, measure it, compare.

For each pair (small → large) on the current device:

  training  measure tokens/s of the small model; its MFU carried to the large model predicts
            tokens/s = MFU × peak / training FLOPs per token (the peak cancels on one device)
  decode    measure one decode step of the small model at batch b; the efficiencies it implies for the
            compute roof and the bandwidth roof (roof time at 100% / measured time) give the large
            model's step time through scale.roofline

and report (predicted − measured) / measured. The GPU pairs are gpt2 → gpt2-medium, gpt2-large,
gpt2-xl; on CPU tiny shapes run in seconds.

    python -m bench.extrapolate [--device cpu|cuda] [--hardware KEY] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from gpt.cli import fail, positive_int, resolve_device
from gpt.config import GPTConfig
from gpt.model import GPT
from profiling import flops
from profiling.hardware import Accelerator, measured_ceilings
from profiling.scale import device_spec, roofline

CPU_SHAPES = {
    "cpu-small": dict(vocab_size=257, block_size=64, n_layer=2, n_head=4, n_embd=128),
    "cpu-large": dict(vocab_size=257, block_size=64, n_layer=4, n_head=4, n_embd=256),
}
CPU_PAIRS = [("cpu-small", "cpu-large")]
GPU_PAIRS = [("gpt2", "gpt2-medium"), ("gpt2", "gpt2-large"), ("gpt2", "gpt2-xl")]


def _config(name: str) -> GPTConfig:
    return GPTConfig(**CPU_SHAPES[name]) if name in CPU_SHAPES else GPTConfig.from_preset(name)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(step, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _synchronise(device)
        started = time.perf_counter()
        step()
        _synchronise(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def measure_training_tokens_per_sec(config: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype,
                                    repeats: int) -> float:
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(config.vocab_size, (batch, config.block_size + 1), device=device)

    def step() -> None:
        with _autocast(device, dtype):
            _, loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch * config.block_size / _median_seconds(step, device, warmup=2, repeats=repeats)


@torch.no_grad()
def measure_decode_step_seconds(config: GPTConfig, batch: int, context: int, device: torch.device,
                                dtype: torch.dtype, repeats: int) -> float:
    """Median time of one KV-cache decode step for `batch` sequences that already hold `context - 1` tokens."""
    from gpt.model import KVCache

    model = GPT(config).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(config.vocab_size, (batch, context - 1), device=device)
    cache = KVCache(config, batch, capacity=context, device=device, dtype=dtype)
    model(prompt, cache=cache)
    token = prompt[:, -1:]

    def step() -> None:
        model(token, cache=cache)
        cache.pos.sub_(1)  # overwrite the same slot: every timed step sees the same context

    return _median_seconds(step, device, warmup=3, repeats=repeats)


@dataclass(frozen=True)
class Comparison:
    small: str
    large: str
    workload: str  # "training" or "decode"
    small_measured: float  # tokens/s
    large_predicted: float
    large_measured: float

    @property
    def relative_error(self) -> float:
        return (self.large_predicted - self.large_measured) / self.large_measured


def _decode_roof(config: GPTConfig, batch: int, context: int, spec: Accelerator, dtype: str):
    return roofline(batch * flops.decode_flops_per_token(config, context),
                    flops.decode_bytes_per_step(config, context, batch, dtype),
                    spec.peak(dtype), spec.memory_bandwidth, 1.0, 1.0)


def compare_pair(small: str, large: str, spec: Accelerator, device: torch.device, torch_dtype: torch.dtype,
                 train_batch: int, decode_batch: int, repeats: int) -> list[Comparison]:
    dtype = flops.dtype_name(torch_dtype)
    small_config, large_config = _config(small), _config(large)
    peak = spec.peak(dtype)

    small_tps = measure_training_tokens_per_sec(small_config, train_batch, device, torch_dtype, repeats)
    mfu = small_tps * flops.training_flops_per_token(small_config) / peak
    predicted_tps = mfu * peak / flops.training_flops_per_token(large_config)
    large_tps = measure_training_tokens_per_sec(large_config, train_batch, device, torch_dtype, repeats)
    results = [Comparison(small, large, "training", small_tps, predicted_tps, large_tps)]

    context = min(small_config.block_size, large_config.block_size) // 2
    small_step = measure_decode_step_seconds(small_config, decode_batch, context, device, torch_dtype, repeats)
    small_roof = _decode_roof(small_config, decode_batch, context, spec, dtype)
    large_roof = _decode_roof(large_config, decode_batch, context, spec, dtype)
    # The efficiencies the small model reached against each roof, carried to the large one.
    predicted = roofline(large_roof.compute_s * peak, large_roof.memory_s * spec.memory_bandwidth, peak,
                         spec.memory_bandwidth, small_roof.compute_s / small_step,
                         small_roof.memory_s / small_step)
    large_step = measure_decode_step_seconds(large_config, decode_batch, context, device, torch_dtype, repeats)
    results.append(Comparison(small, large, "decode", decode_batch / small_step, decode_batch / predicted.seconds,
                              decode_batch / large_step))
    return results


def measured_spec(device: torch.device) -> Accelerator:
    """This device as a table entry whose peak and bandwidth are its measured (cached) ceilings."""
    ceilings = measured_ceilings(device)
    return Accelerator("measured", ceilings.device_name, dict(ceilings.matmul_flops), ceilings.copy_bandwidth,
                       None, None, f"measured ceilings of {ceilings.device_name} ({ceilings.measured_at})")


def run_benchmark(device: torch.device, hardware_key: str | None, pairs: list[tuple[str, str]], torch_dtype: torch.dtype,
                  train_batch: int, decode_batch: int, repeats: int) -> list[Comparison]:
    torch.manual_seed(0)
    spec = device_spec(hardware_key) if hardware_key else measured_spec(device)
    return [result for small, large in pairs
            for result in compare_pair(small, large, spec, device, torch_dtype, train_batch, decode_batch, repeats)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extrapolate", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="where to measure: auto, cpu, cuda or cuda:N")
    parser.add_argument("--hardware", metavar="KEY", help="hardware-table key of this device for datasheet roofs "
                        "(default: its measured ceilings, python -m profiling hardware --measure)")
    parser.add_argument("--train-batch", type=positive_int, help="sequences per training step (default 8 on GPU, 4 on CPU)")
    parser.add_argument("--decode-batch", type=positive_int, default=1, help="sequences per decode step (default 1)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads (default 1: steady timings on a shared machine); ignored on GPU")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per measurement (median kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        fail("bench.extrapolate", str(error))
    on_gpu = device.type == "cuda"
    if not on_gpu:
        torch.set_num_threads(args.threads)
    results = run_benchmark(device, args.hardware, GPU_PAIRS if on_gpu else CPU_PAIRS,
                            torch.bfloat16 if on_gpu else torch.float32, args.train_batch or (8 if on_gpu else 4),
                            args.decode_batch, args.repeats)
    if args.json:
        print(json.dumps([asdict(r) | {"relative_error": r.relative_error} for r in results], indent=2))
    else:
        print(f"{'small':<10} {'large':<12} {'workload':<9} {'small tok/s':>12} {'predicted':>12} "
              f"{'measured':>12} {'error':>8}")
        for r in results:
            print(f"{r.small:<10} {r.large:<12} {r.workload:<9} {r.small_measured:>12,.0f} "
                  f"{r.large_predicted:>12,.0f} {r.large_measured:>12,.0f} {100 * r.relative_error:>+7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
