"""Device profiles: what one device does with each kind of operation, and the one owner of their JSON format.

A profile prices one operation (`profiling.flops.Op`) at its own shape:

    matmul        FLOP/s measured over an (M, N, K) grid, interpolated in log space (multilinear in log M,
                  log N, log K of log FLOP/s; a shape outside the grid takes the nearest edge's throughput)
    attention     FLOP/s over (batch·heads, sequence, head size) per variant: causal forward, its backward,
                  one decode query against a KV cache
    memory-bound  seconds over element counts per kind (LayerNorm, GELU, add, copy, embedding,
                  cross-entropy, sampling, the KV cache's write and zero-filled allocation, and their
                  backwards), piecewise linear in log-log; past the largest size, time grows in proportion
                  to the size (the largest size's bandwidth). LayerNorm and the embedding, which work row
                  by row, are measured at several row widths and interpolated log-linearly in the width
    adamw         seconds per parameter + seconds per parameter tensor (the optimizer phase of a step); a
                  measured profile's seconds per parameter is a grid over the tensor's size and the model's
                  parameter count (log-log, clamped at its edges): the update makes several passes over each
                  tensor, which stay in cache for small tensors, and its whole state outgrows the caches
    overhead      a fixed cost per operation call (Python, dispatch, kernel launch) and per forward /
                  training micro-step / generated token / prefill, beyond what the tables above contain; a
                  prefill's calls have their own cost, measured as sample.py runs a prefill: once, after
                  other work, not in a loop that keeps the host's caches warm

"measured" profiles come from `calibrate` on the device itself. "reference" profiles are built for a
datasheet entry of `profiling.hardware` from its peaks and bandwidth and cited published efficiencies
(`REFERENCE_FIGURES`), with the same tables filled by a roofline: an operation takes the longer of its
FLOPs at the efficient peak and its bytes at the achievable bandwidth. Host overhead on a GPU overlaps
the device's work (`overhead["overlap"]`), so there an operation costs max(device time, host time per call).

Which profile a prediction uses (`resolve_profile`): an explicit file; else a measured profile of that
device class, committed under profiling/profiles/ or in the user's cache; else the reference profile.
A CPU profile is never used for a GPU, nor the other way round.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt.errors import GptmeterError
from gpt.files import cache_root, writable_folder, write_json
from profiling import flops, hardware
from profiling.flops import MEMORY_PASSES, Op

FORMAT = "gptmeter-device-profile"
# 2: large matmuls timed with at least microbench.MIN_TIMED_ROWS rows, decode attention on a masked KV cache read
#    from a window (microbench._decode_call). Version 1 priced large matmuls too slow and decode attention too
#    fast, so it is refused (recalibrate).
# 3: memory-bound operations timed on operands rotated through a window (not cache-hot), LayerNorm and the
#    embedding at several row widths, the KV cache's allocation ("zeros"). Version 2 priced a small model's
#    memory-bound work up to 2x too fast.
# 4: a torchrun calibration's collectives table also holds the harness of a DDP and an FSDP step
#    (collectives["harness"], profiling.harness), which a distributed prediction adds.
# 5: memory["stream_copy"], a plain copy between two 128 MiB buffers, is the measured bandwidth roof
#    (memory_bandwidth on devices without a datasheet figure, and the bandwidth `hardware` shows). Version 4
#    took the largest transposed copy of the memory table, 3-5x slower on the 2-core VM.
# 6: matmul["cold"]["in_model_excess"] on CPUs: how much slower skinny matmuls with weights from memory run inside
#    a model than in the cold table's loop (in_model_excess); and the window curve moves every model's skinny
#    matmuls towards the cold table, not only those of models past the warm window. Version 5 priced the batch-1
#    decode of an 8-layer 512-wide model 19-27% and of a 6-layer 384-wide one 15% too fast on the 2-core VM.
# 7: overhead["per_call_s"]["prefill"] and fixed_s["prefill"] solved from `GPT.generate`'s prefill timed once
#    after sample.py's warm-up, as it runs, at two depths (_solve_prefill). Version 6 took them from a loop of
#    whole generate calls, where everything stays in the CPU's caches, and priced a 2-layer 64-wide model's
#    batch-1 prefill 18-31% too fast on the 2-core VM.
# 8: matmul["cold"]["in_model_excess"] is {"rows": IN_MODEL_ROWS, "excess": [...]}, measured on batch-1 and
#    batch-16 decode forwards and interpolated over a product's rows. Version 7 measured batch 1 only, and the
#    cold table's 16-row products, measured apart, moved the 25M model's batch-16 decode 638-734 tokens/s over
#    five calibrations (567-623 measured).
# 9: in_model_excess measured on one 768-wide model of 6 layers (twice, tens of seconds apart, the faster kept),
#    on a matmul grid whose dims double from 256 up (512 and 2048 added). Version 8 took the difference of 1- and
#    3-layer 1536-wide models (0.00-0.15) and predicted the 25M model's batch-16 decode 9-19% too fast in eight
#    bench runs of eight.
# 10: calibrated under gpt.host_memory.keep_freed_memory, as the tools now run: glibc keeps freed blocks instead of
#    returning them to the system. Without it a fresh process faulted its activations' pages in again on every
#    step (560 faults, 0.6 ms of a 0.13M model's 5 ms batch-16 prefill), so version 9 profiles measured a
#    different process. And a memory-bound call's results are held over the calls of its operand window
#    (microbench._memory_work), so that it writes into memory not just freed: version 9 priced the 0.13M
#    model's batch-16 training step and prefill 9-19% too fast in four bench runs.
# 11: matmul["hot"], the skinny products with weights from a 4 MiB window (microbench.HOT_BYTES), the window
#    curve's cache-hot end: a decode step's matmuls (flops.Op variant "decode") move from it, not from the 64 MiB
#    table, towards the cold table, and count the KV cache in what passes through the caches. On the 2-core VM of
#    2026-12-04 the 64 MiB window lay past the last-level cache (a 1-row 1024-wide product 9.9 GFLOP/s there,
#    26.5 over 4 MiB), and version 10 priced the decode of the small models as if their weights came from
#    memory: 13-37% too slow.
# 12: the prefill's per-call and fixed costs solved from a 32-wide model's prefills (PREFILL_SHAPE), not a 96-wide
#    one's, whose products the 64 MiB table priced above what they took in cache: on the 2-core VM of 2026-12-04
#    version 11 solved the per-call cost to 0.0-0.8 us and priced a 0.12M-parameter model's batch-1 prefill
#    17-23% too fast in every bench run of the day.
FORMAT_VERSION = 12
PROFILES_DIR = Path(__file__).parent / "profiles"  # measured profiles committed with the code, one per device class
CACHE_DIR = "device_profiles"  # under gpt.data.cache_root()


class ProfileError(GptmeterError, ValueError):
    """A device profile that cannot be read or used; the message names the fix."""


@dataclass
class DeviceProfile:
    device: str  # as the device reports itself (hardware.device_name), or the datasheet name
    device_class: str  # "cpu", or the key of profiling.hardware's table ("h100-sxm", ...)
    kind: str  # "measured" or "reference"
    dtype: str  # compute dtype the tables hold ("fp32", "bf16", ...)
    date: str  # ISO 8601 (UTC) of the measurement, or of the reference figures' compilation
    source: str  # how the profile was made: the command, or the datasheet and citations
    peak_flops: float  # matmul FLOP/s MFU is reported against: datasheet, or the CPU's best measured matmul
    peak_flops_source: str
    memory_bandwidth: float  # bytes/s: datasheet, or the measured streaming copy (memory["stream_copy"])
    matmul: dict[str, Any]  # {"dims": [...], "flops_per_sec": [[[...]]]} indexed [M][N][K]
    attention: dict[str, Any]  # {"backend", "batch_heads", "seq", "head_dim", "flops_per_sec": {variant: nested}}
    memory: dict[str, dict[str, list]]  # kind -> {"elements": [...], "seconds": [...]}
    adamw: dict[str, Any]  # seconds_per_parameter, seconds_per_tensor, grid {tensor_elements, parameters, seconds...}
    # per_call_s {inference, training, prefill}, fixed_s {forward, train_micro_step, token, prefill, train_step},
    # overlap
    overhead: dict[str, Any]
    software: dict[str, str] = field(default_factory=dict)  # torch, triton, python versions
    threads: int | None = None  # CPU threads PyTorch used
    tf32: bool | None = None  # CUDA: float32 matmuls allowed to use TF32 while measuring
    clock: str | None = None  # what timed the measurements: CUDA events, wall, or process CPU time (microbench)
    citations: dict[str, str] = field(default_factory=dict)  # reference figure -> value, source, date
    # measured under torchrun: profiling.collectives.measure, with "harness" from profiling.harness.measure
    collectives: dict[str, Any] | None = None
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def summary(self) -> dict[str, Any]:
        """What a prediction prints about the profile it used."""
        return {"kind": self.kind, "device": self.device, "device_class": self.device_class, "dtype": self.dtype,
                "date": self.date, "source": self.source, "threads": self.threads}

    # ------------------------------------------------------------------------- pricing one operation

    def device_seconds(self, op: Op) -> float:
        """Seconds of one call of `op` from the tables, without the per-call overhead."""
        if op.kind == "matmul":
            return op.flops / self._matmul_rate(op)
        if op.kind == "attention":
            table = self.attention["flops_per_sec"].get(op.variant)
            if table is None:
                raise ProfileError(f"profile of {self.device} has no attention variant {op.variant!r}; recalibrate")
            batch_heads, queries, keys, head_dim = op.shape
            axes = [self.attention["batch_heads"], self.attention["seq"], self.attention["head_dim"]]
            return op.flops / _grid_value(table, axes, (batch_heads, keys, head_dim))
        if op.kind == "adamw":
            params, grid = sum(op.shape), self.adamw.get("grid")
            if grid is None:
                return params * self.adamw["seconds_per_parameter"] + len(op.shape) * self.adamw["seconds_per_tensor"]
            axes = [grid["tensor_elements"], grid["parameters"]]
            per_parameter = lambda size: _grid_value(grid["seconds_per_parameter"], axes, (size, params))  # noqa: E731
            tensors = len(op.shape) * self.adamw["seconds_per_tensor"]
            return sum(size * per_parameter(size) for size in op.shape) + tensors
        table = self.memory.get(op.kind)
        if table is None:
            raise ProfileError(f"profile of {self.device} has no memory-bound kind {op.kind!r}; recalibrate")
        cold = self.memory.get(op.kind + "_cold")
        if cold is not None and op.working_set > self.matmul["window_bytes"]:  # as _matmul_rate's skinny products
            return _log_blend(_size_curve(table["elements"], table["seconds"], op.shape[0]),
                              _size_curve(cold["elements"], cold["seconds"], op.shape[0]),
                              self._coldness(op.working_set))
        if "widths" not in table:
            return _size_curve(table["elements"], table["seconds"], op.shape[0])
        # timed at several row widths: log-linear in the width between the two size curves around it, clamped
        if len(op.shape) < 2:
            raise ValueError(f"{op.kind} op {op.name!r} needs its row width: shape (elements, width)")
        lower, upper, weight = _bracket(table["widths"], op.shape[1])
        curve = lambda i: _size_curve(table["elements"], table["seconds"][i], op.shape[0])  # noqa: E731
        return _log_blend(curve(lower), curve(upper), weight)

    def _matmul_rate(self, op: Op) -> float:
        """FLOP/s at the op's shape; a skinny product is interpolated (log FLOP/s) towards the cold table, slowed by
        its in-model excess, as far as `_coldness` says at the bytes that pass through the caches between its
        calls; without a window curve, only a model whose weights outgrow the warm window. A decode step's
        products start from the hot table (weights a step old, cache-hot), the others from the warm one."""
        dims = self.matmul["dims"]
        warm = _grid_value(self.matmul["flops_per_sec"], [dims] * 3, op.shape)
        cold = self.matmul.get("cold")
        if not cold or op.shape[0] > cold["rows"][-1]:
            return warm
        hot = self.matmul.get("hot")
        start = warm  # where the blend towards the cold table starts
        if hot is not None and op.variant == "decode":
            start = _grid_value(hot["flops_per_sec"], [hot["rows"], dims, dims], op.shape)
        if "window_curve" not in self.matmul and op.working_set <= self.matmul["window_bytes"]:
            return start  # without the curve, weights within the warm window count as cached
        cold_rate = _grid_value(cold["flops_per_sec"], [cold["rows"], dims, dims], op.shape)
        cold_rate /= 1.0 + self._in_model_excess(op.shape[0])  # slower among a model's operations
        weight = self._coldness(op.working_set)
        return _log_blend(start, cold_rate, weight)

    def _in_model_excess(self, rows: int) -> float:
        """The cold table's in-model excess (in_model_excess) at a product of `rows` rows: measured at a few row
        counts, interpolated log-linearly in rows between them, clamped at their ends; 0 where not measured."""
        excess = self.matmul["cold"].get("in_model_excess")
        if excess is None:
            return 0.0
        lower, upper, weight = _bracket(excess["rows"], rows)
        return (1 - weight) * excess["excess"][lower] + weight * excess["excess"][upper]

    def _coldness(self, working_set: int) -> float:
        """0 for weights that stay in cache, 1 at the cold window: how far the measured skinny-matmul slowdown
        (`window_curve`, from its smallest window up) has gone at `working_set` bytes of weights, or log-linear
        in bytes from the warm window when no curve was measured.

        The curve's smallest window is its cache-hot end: on the 2-core VM the warm table, though read over
        64 MiB, ran as fast as that end while the curve had already fallen to the cold figure at 64 MiB, so
        measuring from the warm window priced a 100 MB model's decode as if its weights were cached."""
        cold = self.matmul["cold"]["window_bytes"]
        curve = self.matmul.get("window_curve")
        if working_set >= cold:
            return 1.0
        if not curve:
            return _bracket([self.matmul["window_bytes"], cold], working_set)[2]
        rate = lambda size: _grid_value(curve["flops_per_sec"], [curve["bytes"]], (size,))  # noqa: E731
        hot = curve["flops_per_sec"][0]
        slowdown, full = math.log(hot / rate(working_set)), math.log(hot / rate(cold))
        return min(max(slowdown / full, 0.0), 1.0) if full > 0 else 0.0

    def per_call_seconds(self, phase: str) -> float:
        """Host seconds per operation call in `phase`: "training", "inference" (a decode step's forward) or
        "prefill" (a generate call's prompt pass and first draw; the inference figure on profiles that did not
        measure it: reference profiles, whose per-call figure is a launch latency either way)."""
        per_call = self.overhead["per_call_s"]
        if phase == "prefill":
            return per_call.get("prefill", per_call["inference"])
        return per_call[phase]

    def op_seconds(self, op: Op, phase: str) -> tuple[float, float]:
        """(device seconds, overhead seconds) of all `op.count` calls of `op` in `phase` (per_call_seconds)."""
        device = self.device_seconds(op)
        per_call = self.per_call_seconds(phase)
        if op.kind == "adamw":
            return op.count * device, 0.0  # its per-tensor cost is already in the fit
        if self.overhead.get("overlap"):  # the host issues the next call while the device works
            return op.count * device, op.count * max(0.0, per_call - device)
        return op.count * device, op.count * per_call


# ----------------------------------------------------------------------------- interpolation


def _bracket(axis: list[float], value: float) -> tuple[int, int, float]:
    """Indices of the grid points around `value` and the weight of the upper one, in log space, clamped."""
    if value <= axis[0]:
        return 0, 0, 0.0
    if value >= axis[-1]:
        return len(axis) - 1, len(axis) - 1, 0.0
    upper = bisect.bisect_right(axis, value)
    lower = upper - 1
    weight = (math.log(value) - math.log(axis[lower])) / (math.log(axis[upper]) - math.log(axis[lower]))
    return lower, upper, weight


def _log_blend(low: float, high: float, weight: float) -> float:
    """The point `weight` of the way from `low` to `high` in log space (0: low, 1: high)."""
    return math.exp((1 - weight) * math.log(low) + weight * math.log(high))


def _grid_value(table: list, axes: list[list[float]], point: tuple[int, ...]) -> float:
    """Multilinear interpolation of log(table) at log(point) on a regular grid; clamped at the edges."""
    brackets = [_bracket(axis, value) for axis, value in zip(axes, point)]
    total = 0.0
    for corner in range(2 ** len(axes)):
        weight, cell = 1.0, table
        for dim, (lower, upper, upper_weight) in enumerate(brackets):
            high = (corner >> dim) & 1
            weight *= upper_weight if high else 1.0 - upper_weight
            cell = cell[upper if high else lower]
        if weight:
            total += weight * math.log(cell)
    return math.exp(total)


def _size_curve(sizes: list[int], seconds: list[float], size: int) -> float:
    """Seconds at `size`: log-log linear between measured sizes, the smallest's time below, linear above."""
    if size <= sizes[0]:
        return seconds[0]
    if size >= sizes[-1]:
        return seconds[-1] * size / sizes[-1]
    lower, upper, weight = _bracket(sizes, size)
    return _log_blend(seconds[lower], seconds[upper], weight)


# ----------------------------------------------------------------------------- files


def save_profile(profile: DeviceProfile, path: str | Path, named_by: str = "--out") -> Path:
    """Write `profile` as strict JSON; `named_by` is the flag or variable the path came from, for errors."""
    path = Path(path)
    writable_folder(path.parent, named_by)
    write_json(path, dataclasses.asdict(profile))
    return path


def load_profile(path: str | Path) -> DeviceProfile:
    """Read a profile written by `save_profile`; a missing, foreign or older file is a ProfileError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"device profile {path} does not exist; write one with: python -m profiling calibrate "
                           f"--out {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProfileError(f"cannot read device profile {path} ({error}); recalibrate with: "
                           "python -m profiling calibrate") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProfileError(f"{path} is not a gptmeter device profile; write one with: python -m profiling calibrate")
    if data.get("version") != FORMAT_VERSION:
        raise ProfileError(f"{path} is a version {data.get('version')} device profile, this gptmeter reads version "
                           f"{FORMAT_VERSION}; recalibrate with: python -m profiling calibrate")
    try:
        return DeviceProfile(**data)
    except TypeError as error:
        raise ProfileError(f"{path} is a damaged device profile ({error}); recalibrate") from None


def _file_stem(device: str, dtype: str) -> str:
    safe = "".join(ch if ch.isalnum() else "-" for ch in device.lower()).strip("-")
    return f"{'-'.join(filter(None, safe.split('-')))}-{flops.dtype_name(dtype)}"


def cache_path(device: str, dtype: str, quick: bool = False) -> Path:
    """Where `calibrate` caches the profile of the device called `device` (hardware.device_name).

    A quick-grid profile has its own file: it serves the ceilings view until a full calibration exists,
    never a prediction (`cached_profile` reads only the full one).
    """
    return cache_root() / CACHE_DIR / f"{_file_stem(device, dtype)}{'-quick' if quick else ''}.json"


def cached_profile(device: str, dtype: str) -> DeviceProfile | None:
    """The cached measured profile of the device called `device` (hardware.device_name) for `dtype`, if any."""
    path = cache_path(device, dtype)
    return load_profile(path) if path.exists() else None


def _profiles_of(paths: list[Path], device_class: str, dtype: str) -> list[DeviceProfile]:
    """The profiles of `device_class` and `dtype` among `paths`. Another device's file is not read further, so
    that an outdated or damaged profile of one device never stands in the way of another's; one of this
    device's is a ProfileError naming the fix."""
    found = []
    for path in paths:
        try:
            head = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # whose it is cannot be told: `calibrate` rewrites its own device's file
        if isinstance(head, dict) and (head.get("device_class"), head.get("dtype")) == (device_class, dtype):
            found.append(load_profile(path))
    return found


def _committed_profiles(device_class: str, dtype: str) -> list[DeviceProfile]:
    paths = sorted(PROFILES_DIR.glob("*.json")) if PROFILES_DIR.is_dir() else []
    return _profiles_of(paths, device_class, flops.dtype_name(dtype))


def _cached_profiles(device_class: str, dtype: str) -> list[DeviceProfile]:
    folder = cache_root() / CACHE_DIR
    paths = sorted(path for path in folder.glob("*.json") if not path.stem.endswith("-quick")) if folder.is_dir() else []
    return _profiles_of(paths, device_class, flops.dtype_name(dtype))


def resolve_profile(device_key: str | None = None, path: str | Path | None = None,
                    dtype: str = "bf16") -> DeviceProfile:
    """The profile a prediction for `device_key` uses: `path` > measured (committed, then cache) > reference.

    `device_key` is a key of profiling.hardware's table ("h100-sxm", ...); None means this machine (its CUDA
    GPU if it has one, else its CPU), and "cpu" this machine's CPU at its current thread count: only its
    own cached profile stands for it, since a CPU has no reference profile and CPUs differ. A GPU class
    takes a measured profile of that class (committed under profiles/, else cached), else its reference.
    """
    import torch

    dtype = flops.dtype_name(dtype)
    if path is not None:
        profile = load_profile(path)
        if device_key is not None and profile.device_class != device_key:
            raise ProfileError(f"{path} profiles {profile.device} ({profile.device_class}), not {device_key}; a "
                               "profile is never carried to another device class: drop --device or pick its file")
        return profile
    if device_key in (None, "cpu"):  # this machine: CPUs differ too much for one CPU's profile to stand for another
        device = torch.device("cuda" if device_key is None and torch.cuda.is_available() else "cpu")
        here = cached_profile(hardware.device_name(device), dtype)
        if here is not None:
            return here
        if device.type == "cpu":
            raise ProfileError(f"no measured {dtype} profile of this CPU ({hardware.device_name(device)}); run: "
                               f"python -m profiling calibrate --device cpu --dtype {dtype} (a CPU has no datasheet "
                               "to build a reference from)")
        device_key = hardware.detect_accelerator(device).key
    if device_key not in hardware.ACCELERATORS:
        raise ProfileError(f"unknown device {device_key!r}; choose one of {', '.join(hardware.ACCELERATORS)}")
    measured = _committed_profiles(device_key, dtype) + _cached_profiles(device_key, dtype)
    if measured:
        return measured[0]
    return reference_profile(device_key, dtype)


# ----------------------------------------------------------------------------- reference profiles

REFERENCE_DATE = "2026-11-23"

# Published efficiencies a reference profile is built from. Each is a fraction of the datasheet figure
# (or seconds), with where it was published. These were not fitted to the end-to-end figures in
# docs/benchmarks.md, which validate them.
REFERENCE_FIGURES: dict[str, dict[str, Any]] = {
    "gemm_efficiency": {
        "value": 0.70,
        "source": "large bf16/fp16 GEMM reaches about 70% of the dense datasheet peak on H100 SXM "
                  "(cuBLAS ~690-700 TFLOP/s of 989); A100 reaches ~75-80% of 312 TFLOP/s. Assumption "
                  "informed by NVIDIA's and third-party cuBLAS benchmarks; see docs/benchmarks.md",
    },
    "copy_bandwidth_fraction": {
        "value": 0.80,
        "source": "device-to-device copy (STREAM-like) reaches ~80-90% of datasheet HBM bandwidth on A100/H100; "
                  "assumption, see docs/benchmarks.md",
    },
    "kernel_launch_s": {
        "value": 5e-6,
        "source": "CUDA kernel launch latency ~2.5-5 us; assumption, see docs/benchmarks.md",
    },
    "eager_host_per_call_s": {
        "value": 20e-6,
        "source": "host time per eager PyTorch operator call (Python + dispatcher + launch), ~10-30 us; "
                  "assumption, see docs/benchmarks.md",
    },
    "attention_efficiency": {
        "value": 0.40,
        "source": "FlashAttention-2 causal forward, H100 bf16, hd128, 16k tokens per batch: ~335-380 TFLOP/s "
                  "of 989 (Dao 2023; Triton tutorial), i.e. ~0.35-0.45 of the dense peak; our own kernel is "
                  "unmeasured on GPUs",
    },
    "attention_backward_efficiency": {
        "value": 0.32,
        "source": "FlashAttention-2 backward, H100 bf16: ~300-320 TFLOP/s of 989 (GUIDE section 4 figures)",
    },
}

REFERENCE_DIMS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536]
REFERENCE_BATCH_HEADS = [1, 4, 16, 64, 256, 1024, 4096]
REFERENCE_SEQS = [1, 16, 64, 256, 1024, 4096, 16384]
REFERENCE_HEAD_DIMS = [32, 64, 128, 256]
REFERENCE_SIZES = [2**k for k in range(8, 34, 2)]


def _roofline_rate(flops_: float, bytes_: float, peak: float, bandwidth: float) -> float:
    return flops_ / max(flops_ / peak, bytes_ / bandwidth)


def reference_profile(accelerator_key: str, dtype: str = "bf16", weight_bytes: float | None = None,
                      matmul_dtype: str | None = None) -> DeviceProfile:
    """A profile of a datasheet device from its peaks, bandwidth and `REFERENCE_FIGURES` (see module docstring).

    Quantized serving weights: `weight_bytes` per element of every matmul's weight operand (K × N), read from memory
    at that size (weight-only int8/int4 dequantized into a `dtype` matmul); `matmul_dtype` prices the matmuls at the
    datasheet peak of that dtype with activations stored at its size too (fp8 tensor cores, weights and
    activations in fp8). Everything else stays at `dtype`."""
    dtype = flops.dtype_name(dtype)
    entry = hardware.accelerator(accelerator_key)
    if entry.key == "cpu" or entry.memory_bandwidth is None:
        raise ProfileError(f"{accelerator_key!r} has no datasheet to build a reference profile from; "
                           "calibrate it: python -m profiling calibrate")
    peak = entry.peak(dtype)
    figure = {name: spec["value"] for name, spec in REFERENCE_FIGURES.items()}
    bandwidth = entry.memory_bandwidth * figure["copy_bandwidth_fraction"]
    elem = flops.bytes_per_element(dtype)
    gemm = entry.peak(matmul_dtype or dtype) * figure["gemm_efficiency"]
    act = flops.bytes_per_element(matmul_dtype or dtype)
    weight = act if weight_bytes is None else weight_bytes
    dims = REFERENCE_DIMS
    matmul = [[[_roofline_rate(2 * m * n * k, (m * k + m * n) * act + k * n * weight, gemm, bandwidth) for k in dims]
               for n in dims] for m in dims]

    def attention_rate(variant: str, bh: int, seq: int, head_dim: int) -> float:
        efficiency = figure["attention_backward_efficiency" if variant == "causal_backward" else "attention_efficiency"]
        pairs = seq if variant == "decode" else seq * (seq + 1) / 2
        work = 4 * bh * head_dim * pairs * (2.5 if variant == "causal_backward" else 1)
        moved = bh * head_dim * (4 * seq if variant != "decode" else 2 + 2 * seq) * elem
        return _roofline_rate(work, moved, peak * efficiency, bandwidth)

    attention = {variant: [[[attention_rate(variant, bh, s, hd) for hd in REFERENCE_HEAD_DIMS]
                            for s in REFERENCE_SEQS] for bh in REFERENCE_BATCH_HEADS]
                 for variant in ("causal", "causal_backward", "decode")}
    memory = {kind: {"elements": REFERENCE_SIZES,
                     "seconds": [passes * size * elem / bandwidth for size in REFERENCE_SIZES]}
              for kind, passes in MEMORY_PASSES.items()}
    launch = figure["kernel_launch_s"]
    citations = {name: f"{spec['value']:g}: {spec['source']}" for name, spec in REFERENCE_FIGURES.items()}
    citations["datasheet"] = entry.source
    return DeviceProfile(
        device=entry.name, device_class=entry.key, kind="reference", dtype=dtype, date=REFERENCE_DATE,
        source=f"reference: datasheet ({entry.source}) x published efficiencies (REFERENCE_FIGURES)"
        + (f"; matmul weights read at {weight:g} bytes/element" if weight != elem else "")
        + (f", matmuls at the datasheet {matmul_dtype} peak" if matmul_dtype else ""),
        peak_flops=peak, peak_flops_source=f"datasheet: {entry.source}", memory_bandwidth=entry.memory_bandwidth,
        matmul={"dims": dims, "flops_per_sec": matmul},
        attention={"backend": "FlashAttention-2-style (published figures)", "batch_heads": REFERENCE_BATCH_HEADS,
                   "seq": REFERENCE_SEQS, "head_dim": REFERENCE_HEAD_DIMS, "flops_per_sec": attention},
        memory=memory,
        # fused AdamW over fp32 master weights: 8 four-byte passes per parameter (see flops.train_step_operations)
        adamw={"seconds_per_parameter": 8 * 4 / bandwidth, "seconds_per_tensor": 0.0},
        overhead={"per_call_s": {"inference": figure["eager_host_per_call_s"],
                                 "training": figure["eager_host_per_call_s"]},
                  "fixed_s": {"forward": 0.0, "train_micro_step": 0.0, "token": 0.0, "prefill": 0.0,
                              "train_step": 0.0},
                  "device_per_call_s": launch, "overlap": True},
        citations=citations,
    )


def graphed(profile: DeviceProfile) -> DeviceProfile:
    """The profile of a run replayed as a CUDA graph (torch.compile mode="reduce-overhead"): the host issues
    nothing per kernel, so each call costs only the device's own launch gap (`kernel_launch_s`)."""
    if "device_per_call_s" not in profile.overhead:
        raise ProfileError(f"profile of {profile.device} has no device launch cost; CUDA graphs apply to GPU profiles")
    per_call = profile.overhead["device_per_call_s"]
    overhead = profile.overhead | {"per_call_s": {"inference": per_call, "training": per_call}, "graphed": True}
    return dataclasses.replace(profile, overhead=overhead, source=profile.source + "; replayed as a CUDA graph")


# ----------------------------------------------------------------------------- calibration


def software_versions() -> dict[str, str]:
    import torch

    versions = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    return versions


@dataclass(frozen=True)
class Grid:
    """The shapes `calibrate` measures. A shape between grid points is interpolated, one outside clamped."""

    dims: list[int]  # M, N and K of the matmuls
    max_flops: float  # work of one timed call; larger grid points are timed with a smaller first dimension
    batch_heads: list[int]
    seqs: list[int]
    head_dims: list[int]
    sizes: list[int]  # elements of the memory-bound operations
    adamw_cases: list[tuple[int, int]]  # (tensors, elements per tensor)
    adamw_sizes: list[int]  # tensor sizes (elements) of the optimizer's per-parameter grid
    adamw_totals: list[int]  # and its parameter counts
    cold_bytes: int = 512 * 2**20  # weight window of the cold skinny matmuls (microbench.matmul_grid)
    in_model_width: int | None = None  # width of the decode forwards in_model_excess times; None: not measured
    in_model_layers: int = 3  # and their layers (the CPU grid's: enough that the weights are past the caches)


GRIDS = {
    # 9³ warm + 4 × 9² cold + 4 × 9² hot matmuls (the skinny ones twice), 4³ attention shapes × 3 variants,
    # 6 sizes × 11 memory kinds (LayerNorm and the embedding at 3 row widths), the optimizer's grid, the fixed
    # costs and the in-model decode forwards: 99-100 s at one thread on the project's 2-vCPU VM (2026-12-04,
    # docs/benchmarks.md).
    # The matmul dims double from 256 up: with 1024 and 4096 alone, 16-row products of a 384- or 512-wide model
    # were priced 6-28% faster than they ran, timed alone at their own shapes (log-linear interpolation over a
    # bumpy surface; 2-core VM, 2026-12-03); with 512 and 2048 measured, within 6%.
    "cpu": Grid(dims=[1, 4, 16, 64, 256, 512, 1024, 2048, 4096], max_flops=3e8, batch_heads=[1, 8, 64, 512],
                seqs=[8, 32, 128, 512], head_dims=[16, 32, 64, 128], sizes=[2**k for k in (8, 11, 14, 17, 20, 23)],
                adamw_cases=[(64, 256), (8, 2**17), (16, 2**14), (2, 2**20)],
                adamw_sizes=[2**14, 2**17, 2**20, 2**22], adamw_totals=[2**20, 2**24],
                in_model_width=768, in_model_layers=6),
    "cuda": Grid(dims=[1, 4, 16, 64, 256, 1024, 4096, 16384], max_flops=2e12, batch_heads=[1, 8, 64, 512, 4096],
                 seqs=[16, 64, 256, 1024, 4096], head_dims=[32, 64, 128], sizes=[2**k for k in range(8, 31, 2)],
                 adamw_cases=[(256, 1024), (16, 2**22), (64, 2**18), (4, 2**25)],
                 adamw_sizes=[2**16, 2**20, 2**24, 2**26], adamw_totals=[2**24, 2**28]),
    # A handful of points in seconds: for tests, and what train.py and sample.py measure when nothing is cached.
    # It keeps one 1024³ matmul and a 32 MiB copy, so that the ceilings it shows (a CPU's MFU peak) are those of
    # shapes and sizes past the caches, not of the small ones.
    "quick": Grid(dims=[1, 32, 1024], max_flops=2.2e9, batch_heads=[1, 32], seqs=[8, 128], head_dims=[16, 64],
                  sizes=[2**8, 2**14, 2**20, 2**23], adamw_cases=[(32, 256), (4, 2**16), (8, 2**12)],
                  adamw_sizes=[2**14, 2**18], adamw_totals=[2**18],
                  cold_bytes=64 * 2**20, in_model_width=128),
}

COLD_MAX_ROWS = 64  # skinny matmuls (decode) are also measured with weights that come from memory

# The model the fixed costs are measured on: 8 wide, so that only the per-call and per-step costs remain.
OVERHEAD_SHAPE = dict(vocab_size=8, block_size=16, n_head=1, n_embd=8)
# The model and prompt whose prefill _solve_prefill times: small, so that the host's costs show, with the byte
# tokenizer's vocabulary; a shape and a prompt length that bench.extrapolate's validation does not use. 32 wide,
# so that its products cost little beside its calls, and a table that misprices them moves the per-call cost
# little: on the 2-core VM of 2026-12-04 the 64 MiB table priced a 96-wide model's 48-row products above what
# they took with its 1 MB of weights in cache, and that model's depths solved to 0.6-0.9 us a call, a 32-wide
# model's to 3.5 us, a 48-wide one's to 2.8. Each
# generation runs to the end of the context, as the one before the timed prefill did: the longer the decoding
# before it, the slower a prefill (on the 2-core VM the 96-wide 1-layer model's took 0.51 ms after 8 new tokens,
# 0.55-0.58 ms after 64-80; 2026-12-03), and sample.py generates 300 by default.
PREFILL_SHAPE = dict(vocab_size=257, block_size=128, n_head=1, n_embd=32)
PREFILL_PROMPT_TOKENS, PREFILL_NEW_TOKENS = 48, 80


def _tables_and_calls(profile: DeviceProfile, ops: list[Op]) -> tuple[float, int]:
    """What the tables price `ops` at, and how many calls they make beyond AdamW (as op_seconds: AdamW's calls
    are in its fit)."""
    calls = sum(op.count for op in ops if op.kind != "adamw")
    return sum(op.count * profile.device_seconds(op) for op in ops), calls


def _per_call_and_fixed(low: tuple[float, int], high: tuple[float, int],
                        measured_low: float, measured_high: float) -> tuple[float, float]:
    """Solve measured(L) = tables(L) + per_call × calls(L) + fixed from two depths' (tables, calls) and
    measurements; each at least 0."""
    (tables_low, calls_low), (tables_high, calls_high) = low, high
    per_call = max(((measured_high - tables_high) - (measured_low - tables_low)) / (calls_high - calls_low), 0.0)
    return per_call, max(measured_low - tables_low - per_call * calls_low, 0.0)


def _solve_overhead(profile: DeviceProfile, timings: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Per-call and fixed costs from tiny models of 1 and 3 layers, beyond what the tables price.

    For each path, measured(L) = tables(L) + per_call × calls(L) + fixed: two depths give both unknowns.
    """
    from gpt.config import GPTConfig

    priced = lambda ops: _tables_and_calls(profile, ops)  # noqa: E731
    paths = {}
    for layers in timings:
        config = GPTConfig(n_layer=layers, **OVERHEAD_SHAPE)
        forward = flops.forward_operations(config, 1, 1, 5)
        train_forward = flops.forward_operations(config, 1, 4, loss=True)
        paths[layers] = {"inference": priced(forward),
                         "training": priced(train_forward + flops.backward_operations(config, train_forward, 1, 4)),
                         "token": priced(flops.decode_operations(config, 1, 5)),
                         "train_step": priced(flops.train_step_operations(config, 1, config.block_size))}
    low, high = sorted(timings)
    per_call, fixed = {}, {}
    for path in ("inference", "training"):
        per_call[path], fixed[path] = _per_call_and_fixed(paths[low][path], paths[high][path],
                                                          timings[low][path], timings[high][path])
    tables_token, calls_token = paths[low]["token"]
    token = timings[low]["token"] - tables_token - per_call["inference"] * calls_token - fixed["inference"]
    # the trainer's one-off work around a training step does not grow with depth: the mean of both depths
    train_step = sum(timings[layers]["train_step"] - paths[layers]["train_step"][0] - fixed["training"]
                     - per_call["training"] * paths[layers]["train_step"][1] for layers in timings) / len(timings)
    return {"per_call_s": per_call,
            "fixed_s": {"forward": fixed["inference"], "train_micro_step": fixed["training"], "token": max(token, 0.0),
                        "train_step": max(train_step, 0.0)},
            "overlap": False, "measured_on": {str(k): v for k, v in timings.items()}}


def _solve_prefill(profile: DeviceProfile, depths: dict[str, Any]) -> tuple[float, float]:
    """(seconds per call, fixed seconds) of a prefill beyond what the tables price, from
    microbench.prefill_depth_seconds: measured(L) = tables(L) + per_call × calls(L) + fixed at its two depths.

    The fixed part is generate's one-off work (its KV cache and output buffer, the decoding head, the first
    draw's set-up); both are larger than the decode loop's, as a prefill runs once, after other work.
    """
    from gpt.config import GPTConfig

    def priced(layers: int) -> tuple[float, int]:
        config = GPTConfig(n_layer=layers, attention="sdpa", **PREFILL_SHAPE | {"n_embd": depths["width"]})
        ops = flops.prefill_operations(config, 1, depths["prompt_tokens"], profile.dtype, depths["new_tokens"])
        return _tables_and_calls(profile, ops)

    low, high = (priced(layers) for layers in depths["layers"])
    return _per_call_and_fixed(low, high, *depths["seconds"])


def in_model_shape(width: int) -> dict[str, int]:
    """The model in_model_excess times: the fixed-cost model's vocabulary and context at `width`, a head per 64."""
    return OVERHEAD_SHAPE | {"n_embd": width, "n_head": max(1, width // 64)}


IN_MODEL_ROWS = (1, 16)  # the decode batches whose forwards in_model_excess times: rows of their products


def in_model_excess(profile: DeviceProfile, depths: dict[str, Any]) -> float:
    """How much slower than the cold table a model's skinny matmuls run, weights from memory, as a fraction of
    their price: from microbench.decode_depth_seconds at one batch, the time of the deepest model's decode
    forward beyond what `profile` prices it at (its operations with their per-call costs, and a forward's fixed
    cost; the cold table as measured), over its matmuls' price (at least 0). Measured against this
    calibration's own table at each batch, so that it also takes up how far that table's rows came out fast
    or slow: on the 2-core VM the 16-row products (N 1024, K 4096) were measured 47-55 GFLOP/s in five
    calibrations of one afternoon (2026-12-03).

    Inside a model a skinny matmul streams its weights between other operations, which have evicted the CPU's
    caches, and runs slower than in a loop of matmuls: on the 2-core VM an 8-layer 512-wide decode step's
    matmuls took 5.5-5.7 ms against 4.4-4.5 ms for the same 32 products back to back (2026-12-03). How much
    slower depends on the width (at batch 16 there, 0.07-0.09 at 1536 wide, 0.13-0.18 at 768), so the CPU grid
    measures a 768-wide model, a width of the models such a machine runs (GPT-2 small's), with 6 layers: 170 MB
    of weights, past the caches. One model, not the difference of two depths, which format 9 first took: the
    difference doubles a neighbour's noise, and the shallower model's 85 MB sometimes ran from the shared
    last-level cache, faster than the cold table (-0.17 to -0.23), which put the excess at 0.47-0.76.
    """
    from gpt.config import GPTConfig

    config = GPTConfig(n_layer=depths["layers"][-1], attention="sdpa", **in_model_shape(depths["width"]))
    ops = flops.forward_operations(config, depths["batch"], 1, 5)
    priced = sum(sum(profile.op_seconds(op, "inference")) for op in ops) + profile.overhead["fixed_s"]["forward"]
    matmuls = sum(op.count * profile.device_seconds(op) for op in ops if op.kind == "matmul")
    return max((depths["seconds"][-1] - priced) / matmuls, 0.0)


def in_model_pass(device, dtype: str, grid: Grid, tick: Callable[[], None]) -> list[dict[str, Any]]:
    """microbench.decode_depth_seconds of the grid's in-model decode forwards at each of IN_MODEL_ROWS's
    batches; none on grids without them (GPUs: the host's caches, which a GPU's kernels leave alone)."""
    from gpt.config import GPTConfig
    from profiling import microbench

    if not grid.in_model_width:
        return []
    config = GPTConfig(n_layer=1, attention="sdpa", **in_model_shape(grid.in_model_width))
    passes = []
    for batch in IN_MODEL_ROWS:
        passes.append(microbench.decode_depth_seconds(device, dtype, config, batch, (grid.in_model_layers,)))
        tick()
    return passes


def _fastest_depths(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two in_model_pass results (or other lists of decode_depth_seconds or prefill_depth_seconds results)
    merged: in each, each depth keeps the faster of its two times."""
    return [one | {"seconds": [min(a, b) for a, b in zip(one["seconds"], two["seconds"])]}
            for one, two in zip(first, second, strict=True)]


def _fastest_timings(first: dict[int, dict[str, float]], second: dict[int, dict[str, float]]
                     ) -> dict[int, dict[str, float]]:
    """Two tiny_model_seconds results per depth merged: each path keeps the faster of its two times."""
    return {layers: {path: min(seconds, second[layers][path]) for path, seconds in paths.items()}
            for layers, paths in first.items()}


def _faster(first: list, second: list) -> list:
    """Elementwise the larger throughput of two measurements of the same nested table."""
    if isinstance(first, list):
        return [_faster(a, b) for a, b in zip(first, second)]
    return max(first, second)


def calibrate(device: str, dtype: str, progress: bool = True, quick: bool = False) -> DeviceProfile:
    """Measure this device's profile over `GRIDS` (see module docstring) and cache it per device name.

    On CUDA it runs on that device (its current stream), with TF32 allowed exactly when `dtype` is "tf32",
    and resets the peak-memory statistics afterwards. `quick` measures a few points only (seconds; what
    `measured_ceilings` runs when nothing is cached); it is cached in its own file, for the ceilings view
    only: predictions wait for a full calibration.
    """
    import contextlib

    import torch
    from tqdm import tqdm

    from gpt.config import GPTConfig
    from gpt.model import sdpa_attention
    from profiling import microbench

    torch_device = torch.device(device)
    dtype = flops.dtype_name(dtype)
    on_cuda = torch_device.type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise ProfileError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    if not on_cuda and dtype != "fp32":
        raise ProfileError(f"CPU calibration measures fp32 only (the CPU tools run float32), not {dtype}; "
                           "use --dtype fp32")
    grid = GRIDS["quick" if quick else torch_device.type]
    steps = len(grid.dims) ** 2 * (len(grid.dims) + 5 * sum(m <= COLD_MAX_ROWS for m in grid.dims))
    steps += len(grid.batch_heads) * len(grid.seqs) * len(grid.head_dims)
    steps += microbench.memory_steps(grid.sizes) + 1 + len(grid.adamw_cases)
    steps += len(grid.adamw_sizes) * len(grid.adamw_totals) + bool(grid.in_model_width) * 2 * len(IN_MODEL_ROWS)
    steps += 3 * 2 + 2  # three passes of the fixed-cost models at two depths; two of the prefill depths
    guard = torch.cuda.device(torch_device) if on_cuda else contextlib.nullcontext()
    bar = tqdm(total=steps, desc=f"calibrating {dtype}", unit="shape", disable=not progress)
    with guard, hardware.tf32_matmuls(dtype == "tf32"), bar:
        tick = lambda: bar.update(1)  # noqa: E731

        def fixed_costs() -> dict[int, dict[str, float]]:
            timings = {}
            for layers in (1, 3):
                config = GPTConfig(n_layer=layers, attention="sdpa", **OVERHEAD_SHAPE)
                timings[layers] = microbench.tiny_model_seconds(torch_device, dtype, config)
                tick()
            return timings

        def prefill_depths() -> dict[str, Any]:
            config = GPTConfig(n_layer=1, attention="sdpa", **PREFILL_SHAPE)
            depths = microbench.prefill_depth_seconds(torch_device, dtype, config, PREFILL_PROMPT_TOKENS,
                                                      PREFILL_NEW_TOKENS)
            tick()
            return depths

        # A shared machine's speed moves by tens of percent for seconds at a time, and most of all for the small
        # calls that set the fixed costs (on the 2-core VM the per-call cost came out 13 us in one calibration of
        # 2026-12-04, 5 us in the one before): the fixed-cost models are timed at the start, the middle and the
        # end, and each time keeps its fastest; the prefill depths in the middle and at the end.
        timings = fixed_costs()
        matmul = microbench.matmul_grid(torch_device, dtype, grid.dims, grid.max_flops, microbench.WARM_BYTES,
                                        tick=tick)
        cold_rows = [m for m in grid.dims if m <= COLD_MAX_ROWS]
        cold = microbench.matmul_grid(torch_device, dtype, grid.dims, grid.max_flops, grid.cold_bytes,
                                      rows=cold_rows, tick=tick)
        hot = microbench.matmul_grid(torch_device, dtype, grid.dims, grid.max_flops, microbench.HOT_BYTES,
                                     rows=cold_rows, tick=tick)
        # from the hot window up to the cold one
        windows = [2**k for k in range(microbench.HOT_BYTES.bit_length() - 1, grid.cold_bytes.bit_length())]
        curve = microbench.window_curve(torch_device, dtype, windows)
        attention = microbench.attention_grid(torch_device, dtype, sdpa_attention, grid.batch_heads, grid.seqs,
                                              grid.head_dims, grid.max_flops, tick)
        memory = microbench.memory_tables(torch_device, dtype, grid.sizes, grid.cold_bytes, tick)
        memory["stream_copy"] = microbench.stream_copy(torch_device, dtype)
        tick()
        adamw = microbench.adamw_fit(torch_device, grid.adamw_cases, tick)
        adamw["grid"] = {"tensor_elements": grid.adamw_sizes, "parameters": grid.adamw_totals,
                         "seconds_per_parameter": microbench.adamw_per_parameter(
                             torch_device, grid.adamw_sizes, grid.adamw_totals, adamw["seconds_per_tensor"], tick)}
        # The skinny products read their weights from memory, which a neighbour's traffic on a shared machine
        # slows for seconds at a time (on the 2-core VM, a whole pass of them by 30% in one calibration of five):
        # they are measured a second time, tens of seconds after the first, and the faster of the two is kept;
        # so are the in-model decode forwards (in_model_pass), timed here and again at the end.
        in_model = in_model_pass(torch_device, dtype, grid, tick)
        timings = _fastest_timings(timings, fixed_costs())
        prefill = prefill_depths()
        skinny = len(cold_rows)
        matmul[:skinny] = _faster(matmul[:skinny], microbench.matmul_grid(
            torch_device, dtype, grid.dims, grid.max_flops, microbench.WARM_BYTES, rows=cold_rows, tick=tick))
        cold = _faster(cold, microbench.matmul_grid(torch_device, dtype, grid.dims, grid.max_flops, grid.cold_bytes,
                                                    rows=cold_rows, tick=tick))
        hot = _faster(hot, microbench.matmul_grid(torch_device, dtype, grid.dims, grid.max_flops, microbench.HOT_BYTES,
                                                  rows=cold_rows, tick=tick))
        curve = _faster(curve, microbench.window_curve(torch_device, dtype, windows))
        timings = _fastest_timings(timings, fixed_costs())
        prefill = _fastest_depths([prefill], [prefill_depths()])[0]
        depths = _fastest_depths(in_model, in_model_pass(torch_device, dtype, grid, tick))
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(torch_device)
    name = hardware.device_name(torch_device)
    best = max(value for plane in matmul for row in plane for value in row)
    entry = None
    if on_cuda:
        try:
            entry = hardware.detect_accelerator(torch_device)
        except hardware.UnknownDeviceError:  # a GPU outside the table still gets its measured profile
            entry = None
    streaming = memory["stream_copy"]["bytes_per_sec"]
    if entry is not None and dtype in entry.peak_flops:
        peak, peak_source = entry.peak(dtype), f"datasheet: {entry.source}"
        bandwidth = entry.memory_bandwidth or streaming
        device_class = entry.key
    else:
        peak = best
        peak_source = f"best measured {dtype} matmul of the calibration grid (no datasheet {dtype} peak for {name})"
        bandwidth = streaming
        device_class = "cpu" if not on_cuda else name
    profile = DeviceProfile(
        device=name, device_class=device_class, kind="measured", dtype=dtype, date=now_iso(),
        source=f"python -m profiling calibrate --device {torch_device.type} --dtype {dtype}"
               + (" (quick grid)" if quick else ""),
        peak_flops=peak, peak_flops_source=peak_source, memory_bandwidth=bandwidth,
        matmul={"dims": grid.dims, "flops_per_sec": matmul, "window_bytes": microbench.WARM_BYTES,
                "cold": {"rows": cold_rows, "flops_per_sec": cold, "window_bytes": grid.cold_bytes},
                "hot": {"rows": cold_rows, "flops_per_sec": hot, "window_bytes": microbench.HOT_BYTES},
                "window_curve": {"bytes": windows, "flops_per_sec": curve}},
        attention={"backend": "sdpa", "batch_heads": grid.batch_heads, "seq": grid.seqs,
                   "head_dim": grid.head_dims, "flops_per_sec": attention},
        memory=memory, adamw=adamw, overhead={},
        software=software_versions(), threads=torch.get_num_threads() if not on_cuda else None,
        tf32=(dtype == "tf32") if on_cuda else None,
        clock="CUDA events" if on_cuda else microbench.host_clock(torch.get_num_threads())[0],
        citations={"best_matmul_flops_per_sec": f"{best:.4g}",
                   "copy_bandwidth_bytes_per_sec": f"{streaming:.4g}"},
    )
    profile.overhead = _solve_overhead(profile, timings)
    profile.overhead["per_call_s"]["prefill"], profile.overhead["fixed_s"]["prefill"] = _solve_prefill(profile,
                                                                                                       prefill)
    profile.overhead["measured_on"]["prefill"] = prefill
    if depths:  # priced with the per-call costs just solved, which the tiny models' warm matmuls set
        profile.matmul["cold"]["in_model_excess"] = {
            "rows": list(IN_MODEL_ROWS), "excess": [in_model_excess(profile, measured) for measured in depths]}
    if on_cuda:  # the host issues calls while the GPU works: price max(device, host) per call
        profile.overhead["overlap"] = True
    save_profile(profile, cache_path(profile.device, profile.dtype, quick), "GPTMETER_CACHE_DIR")
    return profile


def as_ceilings(profile: DeviceProfile) -> hardware.Ceilings:
    """The view `python -m profiling hardware` shows of a measured profile: its fastest matmul and copy."""
    table, dims = profile.matmul["flops_per_sec"], profile.matmul["dims"]
    best, size = max((value, max(dims[i], dims[j], dims[k])) for i, plane in enumerate(table)
                     for j, row in enumerate(plane) for k, value in enumerate(row))
    copy = profile.memory["stream_copy"]
    return hardware.Ceilings(device_name=profile.device, matmul_flops={profile.dtype: best},
                             copy_bandwidth=copy["bytes_per_sec"], matmul_size=size, copy_bytes=2 * copy["bytes"],
                             torch_version=profile.software.get("torch", ""), measured_at=profile.date)


def cached_ceilings(name: str, dtype: str = "fp32") -> hardware.Ceilings | None:
    """The ceilings of the device called `name` from its cached calibrated `dtype` profile, if any, with the
    fastest matmul of every other dtype calibrated on it (`python -m profiling calibrate --dtype fp16`, ...)."""
    quick = cache_path(name, dtype, quick=True)
    profile = cached_profile(name, dtype) or (load_profile(quick) if quick.exists() else None)
    if profile is None:
        return None
    ceilings = as_ceilings(profile)
    for other in hardware.TABLE_DTYPES:
        extra = cached_profile(name, other) if other != profile.dtype else None
        if extra is not None:
            ceilings.matmul_flops[other] = as_ceilings(extra).matmul_flops[other]
    return ceilings


def measured_ceilings(device: Any, refresh: bool = False) -> hardware.Ceilings:
    """The ceilings of `device` (a torch device or its name): a view of its calibrated profile.

    The profile of the dtype the tools run (fp32 on a CPU, bf16 on a GPU) is read from the cache. If
    absent it is measured first: the full grid when `refresh` (`hardware --measure`), and on a GPU; on a
    CPU, the quick grid (seconds), until `python -m profiling calibrate` replaces it.
    """
    import torch

    device = torch.device(device)
    dtype = "bf16" if device.type == "cuda" else "fp32"
    ceilings = None if refresh else cached_ceilings(hardware.device_name(device), dtype)
    if ceilings is None:
        quick = device.type == "cpu" and not refresh
        ceilings = as_ceilings(calibrate(str(device), dtype, progress=not quick, quick=quick))
    return ceilings


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
