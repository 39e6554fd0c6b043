"""Micro-benchmarks behind a device profile: each times one kind of operation over a grid of shapes.

Every figure is the fastest of a few batches of back-to-back calls on the tensors' own device (CUDA
events on that device's current stream, the host clock on a CPU), after one untimed warm-up call: on a
shared machine other jobs only ever add time (cache and memory traffic, preemption), so the fastest batch
is the steadiest estimate of what the device does.
A batch repeats a call until it lasts `MIN_BATCH_SECONDS`, so microsecond-scale calls are not lost in
the timer's resolution. A grid point whose work would exceed `max_flops` is measured with its first
dimension (rows, or batch × heads) shrunk until it fits; throughput is flat in that dimension once it
is large. A matmul keeps at least `MIN_TIMED_ROWS` rows whatever its work: below that, its weight is
reused too few times for it to be compute-bound, so fewer rows would be slower per FLOP.

This module only measures; `profiling.device_profile` turns the numbers into a profile.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from profiling.flops import bytes_per_element

MIN_BATCH_SECONDS = 2e-3
BATCHES = 5
# Matmul weights are read from a window of this many bytes ("warm": a small model's weights, which stay in a
# large last-level cache); skinny products are also measured with a much larger window (device_profile.Grid).
WARM_BYTES = 64 * 2**20
# A decode step's skinny products are also timed over this small window, the window curve's cache-hot end: in a
# decode loop a layer's weights were read one step ago, and a 64 MiB window lies past some hosts' last-level
# caches (on the 2-core VM of 2026-12-04 a 1-row 1024-wide product ran at 9.9 GFLOP/s over 64 MiB, 26.5 over
# 4 MiB).
HOT_BYTES = 4 * 2**20
# A product of M rows does 2·M FLOPs per weight element it reads; at 256 rows (128 FLOPs per fp32 byte) it is
# compute-bound on any device here. Shrinking the 4096-wide grid points to a few rows made them skinny, and
# every large model's matmuls were predicted ~50% too slow on the 2-core VM (docs/benchmarks.md).
MIN_TIMED_ROWS = 256
SAMPLE_TEMPERATURE = 0.8  # sample.py's default, at which the generation benchmarks draw


def never_drawn_end_of_text(config) -> int:
    """An end-of-text id for timing `GPT.generate` as sample.py runs it: the check runs every token (as with the
    tokenizer's id), but the id lies past the vocabulary, so no model draws it and every generation runs to
    its length."""
    return config.vocab_size


TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def host_clock(threads: int) -> tuple[str, Callable[[], float]]:
    """The clock a CPU measurement uses: the process's CPU time at one thread, else the wall clock.

    At one thread, CPU time equals wall time on an idle machine and does not count the time other jobs
    on a shared machine take the core away, which wall time does; with more threads it would add up
    every thread's time, so the wall clock is used.
    """
    return ("process CPU time", time.process_time) if threads == 1 else ("wall", time.perf_counter)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(work: Callable[[], object], device: torch.device, batches: int = BATCHES) -> float:
    """Seconds of one call of `work`: the fastest of `batches` batches of back-to-back calls (module docstring)."""
    clock = host_clock(torch.get_num_threads())[1]
    work()
    _synchronize(device)
    started = clock()
    work()
    _synchronize(device)
    once = max(clock() - started, 1e-7)
    calls = max(1, min(10_000, math.ceil(MIN_BATCH_SECONDS / once)))
    times = []
    for _ in range(batches):
        if device.type == "cuda":
            with torch.cuda.device(device):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(calls):
                    work()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3 / calls)
        else:
            started = clock()
            for _ in range(calls):
                work()
            times.append((clock() - started) / calls)
    return min(times)


def _shrink(first: int, work_of_one: float, max_flops: float, floor: int = 1) -> int:
    """The first dimension, halved until first × work_of_one fits in max_flops, never below `floor`."""
    while first > floor and first * work_of_one > max_flops:
        first //= 2
    return first


# ----------------------------------------------------------------------------- matmuls


def matmul_grid(device: torch.device, dtype: str, dims: list[int], max_flops: float, window: int,
                rows: list[int] | None = None, tick: Callable[[], None] = lambda: None) -> list:
    """FLOP/s of `F.linear` — (M × K) @ (K × N)ᵀ plus a bias — for M in `rows` (default `dims`) and N, K in `dims`.

    Successive calls read their weight from successive places of a `window`-byte buffer, so a weight is
    not still in cache from the previous call: in a model, every other layer's weights pass through the
    caches before a layer's own come round again, and a model whose weights exceed the last-level cache
    reads them from memory. Returns nested lists [iM][iN][iK].
    """
    torch_dtype = TORCH_DTYPES[dtype]
    element = torch.tensor([], dtype=torch_dtype).element_size()
    buffer = torch.randn(max(window // element, max(dims) ** 2), device=device, dtype=torch_dtype)
    table = []
    for m in rows or dims:
        plane = []
        for n in dims:
            cells = []
            for k in dims:
                timed_m = _shrink(m, 2 * n * k, max_flops, MIN_TIMED_ROWS)
                a = torch.randn(timed_m, k, device=device, dtype=torch_dtype)
                bias = torch.randn(n, device=device, dtype=torch_dtype)
                places = max(1, window // (element * n * k))  # weights that fit in the window, read in turn
                turn = iter(range(1 << 62))

                def call() -> torch.Tensor:
                    start = (next(turn) % places) * n * k
                    return F.linear(a, buffer[start : start + n * k].view(n, k), bias)

                cells.append(2 * timed_m * n * k / seconds_per_call(call, device))
                tick()
            plane.append(cells)
        table.append(plane)
    return table


def window_curve(device: torch.device, dtype: str, windows: list[int], size: int = 1024) -> list[float]:
    """FLOP/s of one skinny product (1 × size) @ (size × size)ᵀ with its weight read from windows of each size:
    how the time of reading weights grows as a model's weights outgrow each level of cache."""
    return [matmul_grid(device, dtype, [size], 2 * size * size, window, rows=[1])[0][0][0] for window in windows]


# ----------------------------------------------------------------------------- attention


def _qkv(batch_heads: int, seq: int, head_dim: int, device, dtype, grad: bool):
    """q, k, v of a causal pass laid out as the model has them: head-split views of wider rows."""
    q = torch.randn(batch_heads, seq, 1, head_dim, device=device, dtype=dtype).transpose(1, 2)
    k, v = torch.randn(2, batch_heads, seq, 1, head_dim, device=device, dtype=dtype).transpose(2, 3)
    if grad:
        q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    return q, k, v


def _decode_call(attend: Callable, batch_heads: int, keys: int, head_dim: int, device, dtype,
                 window: int) -> Callable[[], torch.Tensor]:
    """One query per sequence against `keys` cached keys, as `gpt.model.KVCache.attend` runs it: the whole
    cache behind a boolean mask. Successive calls read their keys and values from successive places of a
    `window`-byte pool: between two steps of one layer, the rest of the model passes through the caches,
    and a cache-hot KV cache made decode attention 2-3x faster than in a model (2-core VM, 2026-11-23)."""
    q = torch.randn(batch_heads, 1, 1, head_dim, device=device, dtype=dtype).transpose(1, 2)
    places = max(1, window // (2 * batch_heads * keys * head_dim * torch.tensor([], dtype=dtype).element_size()))
    pool = torch.randn(places, 2, batch_heads, 1, keys, head_dim, device=device, dtype=dtype)
    visible = torch.ones(1, keys, dtype=torch.bool, device=device)
    turn = iter(range(1 << 62))

    def call() -> torch.Tensor:
        keys_values = pool[next(turn) % places]
        return attend(q, keys_values[0], keys_values[1], visible)

    return call


def attention_grid(device: torch.device, dtype: str, attend: Callable, batch_heads: list[int], seqs: list[int],
                   head_dims: list[int], max_flops: float, tick: Callable[[], None] = lambda: None) -> dict:
    """FLOP/s (causal count, as `flops.forward_operations`) of `attend` per variant, nested [iBH][iSeq][iD].

    "causal": queries = keys = seq; "causal_backward": its backward (2.5 × the forward's FLOPs, the
    scores recomputed); "decode": one query per sequence against a KV cache of seq keys (`_decode_call`).
    """
    torch_dtype = TORCH_DTYPES[dtype]
    tables: dict[str, list] = {"causal": [], "causal_backward": [], "decode": []}
    for bh in batch_heads:
        rows = {variant: [] for variant in tables}
        for seq in seqs:
            cells = {variant: [] for variant in tables}
            for head_dim in head_dims:
                causal_flops = 4 * head_dim * seq * (seq + 1) // 2
                timed = _shrink(bh, 3.5 * causal_flops, max_flops)
                q, k, v = _qkv(timed, seq, head_dim, device, torch_dtype, grad=False)
                forward = seconds_per_call(lambda: attend(q, k, v), device)
                qg, kg, vg = _qkv(timed, seq, head_dim, device, torch_dtype, grad=True)
                out = attend(qg, kg, vg)
                grad_out = torch.randn_like(out)
                both = seconds_per_call(lambda: torch.autograd.grad(attend(qg, kg, vg), (qg, kg, vg), grad_out),
                                        device)
                cells["causal"].append(timed * causal_flops / forward)
                cells["causal_backward"].append(timed * 2.5 * causal_flops / max(both - forward, 0.1 * forward))
                timed = _shrink(bh, 4 * head_dim * seq, max_flops)
                decode = _decode_call(attend, timed, seq, head_dim, device, torch_dtype, WARM_BYTES)
                cells["decode"].append(timed * 4 * head_dim * seq / seconds_per_call(decode, device))
                tick()
            for variant in tables:
                rows[variant].append(cells[variant])
        for variant in tables:
            tables[variant].append(rows[variant])
    return tables


# ----------------------------------------------------------------------------- memory-bound operations

ROW = 256  # row width of the memory-bound micro-benchmarks whose cost does not depend on it
# LayerNorm and the embedding work row by row: at the same element count, 64-wide rows took 1.7x as long as
# 256-wide ones (2-core VM, 2026-12-02), and a 64-wide model has such rows. They are timed at these widths.
ROW_WIDTHS = (64, 256, 1024)
WIDTH_KINDS = ("layernorm", "embedding")
VOCAB_ROW = 1024  # vocabulary width for cross-entropy and sampling
MAX_OPERAND_SETS = 64  # operand copies a memory-bound micro-benchmark rotates through (see _memory_work)


def _memory_work(kind: str, elements: int, device: torch.device, dtype: torch.dtype, width: int = ROW,
                 window: int = WARM_BYTES) -> tuple[Callable, Callable | None]:
    """(forward, forward + backward) callables of one memory-bound kind over `elements` elements.

    Successive calls take their operands from successive sets of up to `MAX_OPERAND_SETS` copies filling
    `window` bytes, as the matmuls read their weights: in a model, an operation's inputs were written some
    operations earlier and the rest of the layer has passed through the caches since. Timed on cache-hot
    operands, a residual add of 65,536 elements took 7 us against 27 us inside a 64-wide model's forward
    (2-core VM, 2026-12-02); over a 32 MiB window, 30 us.

    Each call's results are also held for as many calls as there are sets, so that it writes them into memory
    last touched a window ago, as a model's operation writes into blocks that others freed long before. Given
    back at once, the next call's output took the same block, still in the core's cache: a log-softmax over
    2048 x 257 logits took 0.46 ms so and 0.66 ms with outputs held, against 0.69 ms inside a 64-wide model's
    training step; a residual add of 2048 x 128, 0.13 and 0.19 ms (2-core VM, 2026-12-03).
    """
    element = torch.tensor([], dtype=dtype).element_size()
    sets = max(1, min(MAX_OPERAND_SETS, window // max(1, 2 * elements * element)))
    forward, both = _memory_calls(kind, elements, device, dtype, width, window, sets)
    return _holding(forward, sets), None if both is None else _holding(both, sets)


def _holding(work: Callable[[], object], calls: int) -> Callable[[], None]:
    """`work`, its results kept alive over the next `calls` calls."""
    held: collections.deque = collections.deque(maxlen=calls)
    return lambda: held.append(work())


def _memory_calls(kind: str, elements: int, device: torch.device, dtype: torch.dtype, width: int, window: int,
                  sets: int) -> tuple[Callable, Callable | None]:
    """_memory_work's callables, their results given back."""
    from gpt.generate import sample_next_token

    element = torch.tensor([], dtype=dtype).element_size()
    turn = iter(range(1 << 62))

    def rotating(make: Callable[[], tuple]) -> Callable[[], tuple]:
        operands = [make() for _ in range(sets)]
        return lambda: operands[next(turn) % sets]

    def randn(*shape, grad=False):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=grad)

    rows = max(1, elements // width)
    if kind == "add":
        pair = rotating(lambda: (randn(elements), randn(elements)))
        return (lambda: torch.add(*pair())), None
    if kind == "copy":
        source = rotating(lambda: (randn(rows, 4, width // 4),))
        return (lambda: source()[0].transpose(0, 1).contiguous()), None
    if kind == "kv_write":  # as KVCache.attend: a head-split view of the qkv rows, index_copy_ along positions
        positions = torch.arange(rows, device=device)
        pair = rotating(lambda: (randn(1, rows, 3, 4, width // 4)[:, :, 1].transpose(1, 2),
                                 torch.zeros(1, 4, rows, width // 4, device=device, dtype=dtype)))

        def write() -> torch.Tensor:
            keys, cache = pair()
            return cache.index_copy_(2, positions, keys)

        return write, None
    if kind == "kv_write_decode":  # a decode step's one new position per (sequence, head), into caches that the
        # rest of the step has pushed out of the CPU's caches: 128-slot caches filling `window`, written in turn
        head_dim, slots = 64, 128
        rows = max(1, elements // head_dim)
        position = torch.tensor([slots - 1], device=device)
        places = max(1, window // (rows * slots * head_dim * element))
        pool = torch.zeros(places, 1, rows, slots, head_dim, device=device, dtype=dtype)
        keys = randn(1, 1, 3, rows, head_dim)[:, :, 1].transpose(1, 2)  # (1, rows, 1, head_dim), a qkv view

        def write_one() -> torch.Tensor:
            return pool[next(turn) % places].index_copy_(2, position, keys)

        return write_one, None
    if kind == "bias_grad":  # as a Linear's backward sums its output gradient (tokens, features) over the tokens
        grad = rotating(lambda: (randn(rows, width),))
        return (lambda: grad()[0].sum(0)), None
    if kind == "zeros":  # a KV cache allocated for a generate call: zero-filled new memory
        return (lambda: torch.zeros(elements, device=device, dtype=dtype)), None
    if kind in ("layernorm", "gelu"):
        weight, bias = randn(width, grad=True), randn(width, grad=True)
        inputs = rotating(lambda: (randn(rows, width, grad=True), torch.randn(rows, width, device=device, dtype=dtype)))
        if kind == "layernorm":
            op = lambda x: F.layer_norm(x, (width,), weight, bias)  # noqa: E731
        else:
            op = lambda x: F.gelu(x, approximate="tanh")  # noqa: E731

        def both() -> tuple:
            x, grad = inputs()
            return torch.autograd.grad(op(x), (x,), grad)

        return (lambda: op(inputs()[0])), both
    if kind == "embedding":
        table = randn(4096, width, grad=True)
        positions = randn(1024, width, grad=True)
        pos = torch.arange(rows, device=device) % 1024
        ids = rotating(lambda: (torch.randint(4096, (rows,), device=device),
                                torch.randn(rows, width, device=device, dtype=dtype)))
        op = lambda rows_ids: F.embedding(rows_ids, table) + F.embedding(pos, positions)  # noqa: E731

        def both() -> tuple:
            rows_ids, grad = ids()
            return torch.autograd.grad(op(rows_ids), (table, positions), grad)

        return (lambda: op(ids()[0])), both
    width = min(VOCAB_ROW, elements)
    rows = max(1, elements // width)
    if kind == "cross_entropy":
        logits = rotating(lambda: (randn(rows, width, grad=True), torch.randint(width, (rows,), device=device)))

        def loss() -> tuple:
            x, targets = logits()
            return x, F.cross_entropy(x.float(), targets)

        def both() -> tuple:
            x, value = loss()
            return torch.autograd.grad(value, (x,))

        return (lambda: loss()[1]), both
    if kind == "sample":
        logits = rotating(lambda: (randn(rows, width),))
        generator = torch.Generator(device=device).manual_seed(0)
        return (lambda: sample_next_token(logits()[0], 0.8, generator=generator)), None
    raise ValueError(f"no micro-benchmark for memory-bound kind {kind!r}")


BACKWARD_OF = {"layernorm": "layernorm_backward", "gelu": "gelu_backward", "cross_entropy": "cross_entropy_backward",
               "embedding": "embedding_backward"}
MEMORY_KINDS = ("add", "copy", "kv_write", "kv_write_decode", "zeros", "bias_grad", "layernorm", "gelu",
                "embedding", "cross_entropy", "sample")


def memory_steps(sizes: list[int]) -> int:
    """Progress ticks of `memory_tables` over `sizes`."""
    return len(sizes) * sum(len(ROW_WIDTHS) if kind in WIDTH_KINDS else 1 for kind in MEMORY_KINDS) + 1


def memory_tables(device: torch.device, dtype: str, sizes: Iterable[int], cold_window: int,
                  tick: Callable[[], None] = lambda: None) -> dict[str, dict[str, list]]:
    """Seconds per call of each memory-bound kind (and its backward) over element counts `sizes`: {kind:
    {"elements", "seconds"}}, and for the kinds timed at several row widths {"elements", "widths", "seconds"
    [i_width][i_size]}. A decode step's KV-cache write is also timed over `cold_window` bytes of caches
    ("kv_write_decode_cold"): a model whose weights pass through the CPU's caches between two steps of a layer
    leaves that layer's KV cache in memory, and its scattered one-position writes then took 4x as long (the 25M
    model at batch 16, 2-core VM, 2026-12-02)."""
    torch_dtype = TORCH_DTYPES[dtype]
    sizes = list(sizes)
    tables: dict[str, dict[str, list]] = {}
    for kind in MEMORY_KINDS:
        widths = ROW_WIDTHS if kind in WIDTH_KINDS else (ROW,)
        curves: dict[str, list[list[float]]] = {}
        for i, width in enumerate(widths):
            for elements in sizes:
                forward, both = _memory_work(kind, elements, device, torch_dtype, width)
                seconds = seconds_per_call(forward, device)
                curves.setdefault(kind, [[] for _ in widths])[i].append(seconds)
                if both is not None:
                    backward = max(seconds_per_call(both, device) - seconds, 0.1 * seconds)
                    curves.setdefault(BACKWARD_OF[kind], [[] for _ in widths])[i].append(backward)
                tick()
        for name, curve in curves.items():
            tables[name] = ({"elements": sizes, "widths": list(widths), "seconds": curve} if kind in WIDTH_KINDS
                            else {"elements": sizes, "seconds": curve[0]})
    tables["kv_write_decode_cold"] = {"elements": sizes, "seconds": [
        seconds_per_call(_memory_work("kv_write_decode", elements, device, torch_dtype, window=cold_window)[0], device)
        for elements in sizes]}
    tick()
    return tables


STREAM_BYTES = 2**27  # each buffer of the streaming copy: 128 MiB, beyond most caches


def stream_copy(device: torch.device, dtype: str, nbytes: int = STREAM_BYTES) -> dict[str, float]:
    """Bytes/s (read + written) of copying one preallocated buffer of `nbytes` into another: the device's
    streaming bandwidth, which decode bandwidth utilisation is reported against.

    Not the memory table's "copy": that one is a transposed copy, as the attention output makes it, whose
    strided reads at 8M elements ran at 5-7 GB/s on the 2-core VM where this copy ran at 23.5-24.2 GB/s
    (2026-12-03): as the bandwidth roof it put sample.py's decode at 330-410% of it.
    """
    source = torch.ones(nbytes // bytes_per_element(dtype), dtype=TORCH_DTYPES[dtype], device=device)
    target = torch.empty_like(source)
    seconds = seconds_per_call(lambda: target.copy_(source), device)
    return {"bytes": nbytes, "bytes_per_sec": 2 * nbytes / seconds}


# ----------------------------------------------------------------------------- the optimizer


def _optimizer_step_seconds(device: torch.device, tensors: int, elements: int, window: int = WARM_BYTES) -> float:
    """Seconds of what `gpt.trainer.Trainer.train_step` does after backward — clip the gradient norm, AdamW's
    step (the trainer's own `make_optimizer`), zero the gradients — over `tensors` tensors of `elements`.

    Successive steps update successive copies of the whole state (16 bytes per parameter: parameter, gradient,
    two moments) filling `window` bytes, up to MAX_OPERAND_SETS of them: in training, a forward and backward pass
    run between two optimizer steps, so the state is not cache-hot when the step comes round again.

    The tensors are matrices (one row each), so that make_optimizer decays them as it does a model's weight
    matrices, which hold nearly all its parameters; as vectors they went into its undecayed group, and the
    step took 4-10% less time than the decayed one (2-core VM, 2026-12-03)."""
    from gpt.trainer import TrainConfig, make_optimizer

    def state() -> tuple:
        params = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(1, elements, device=device))
                                        for _ in range(tensors))
        grads = [torch.randn(1, elements, device=device) for _ in range(tensors)]
        return params, grads, make_optimizer(params, TrainConfig(device=str(device)))

    states = [state() for _ in range(max(1, min(MAX_OPERAND_SETS, window // (16 * tensors * elements))))]
    turn = iter(range(1 << 62))

    def step() -> None:
        params, grads, optimizer = states[next(turn) % len(states)]
        for param, grad in zip(params, grads):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(params.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return seconds_per_call(step, device)


def adamw_fit(device: torch.device, cases: list[tuple[int, int]],
              tick: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Seconds per parameter and per parameter tensor of a training step's optimizer phase.

    Times `_optimizer_step_seconds` on `cases` of (tensors, elements per tensor), then fits
    seconds = a·parameters + b·tensors by least squares.
    """
    rows = []
    for tensors, elements in cases:
        rows.append((tensors * elements, tensors, _optimizer_step_seconds(device, tensors, elements)))
        tick()
    # Normal equations of the two-parameter least-squares fit, in plain floats.
    spp = sum(p * p for p, _, _ in rows)
    spt = sum(p * t for p, t, _ in rows)
    stt = sum(t * t for _, t, _ in rows)
    sps = sum(p * s for p, _, s in rows)
    sts = sum(t * s for _, t, s in rows)
    det = spp * stt - spt * spt
    per_param, per_tensor = (sps * stt - sts * spt) / det, (spp * sts - spt * sps) / det
    return {"seconds_per_parameter": max(per_param, 0.0), "seconds_per_tensor": max(per_tensor, 0.0)}


def adamw_per_parameter(device: torch.device, sizes: list[int], totals: list[int], seconds_per_tensor: float,
                        tick: Callable[[], None] = lambda: None) -> list[list[float]]:
    """Seconds per parameter of the optimizer phase, [i_size][i_total]: `totals` parameters in tensors of
    `sizes` elements (one tensor of `total` where a size exceeds it), the per-tensor cost taken off.

    AdamW makes several passes over each tensor: they stay in cache for small tensors, not for large ones
    (on the 2-core VM, 16.8M parameters took 3.5 ns each in 64 tensors, 5.0 ns in 4). And the whole state —
    parameters, gradients and two moments, 16 bytes per fp32 parameter — outgrows the caches as a model
    grows, which the small cases of `adamw_fit` never show."""
    table = []
    for size in sizes:
        row = []
        for total in totals:
            elements = min(size, total)
            tensors = total // elements
            seconds = _optimizer_step_seconds(device, tensors, elements)
            row.append(max(seconds - tensors * seconds_per_tensor, 0.1 * seconds) / (tensors * elements))
            tick()
        table.append(row)
    return table


# ----------------------------------------------------------------------------- whole tiny models


def timing_trainer(config, device: torch.device | str, dtype: str, batch: int = 1, **options):
    """A `gpt.trainer.Trainer` of `config` over random tokens, for timing `train_step`, which never writes the
    run directory; `options` go to its TrainConfig (e.g. fsdp=True)."""
    import numpy as np

    from gpt.data import TokenData
    from gpt.trainer import Trainer, TrainConfig

    stream = np.random.default_rng(0).integers(0, config.vocab_size, 64 * config.block_size * batch, dtype=np.int64)
    autocast = str(TORCH_DTYPES[dtype]).removeprefix("torch.")  # the trainer's name of the compute dtype
    train = TrainConfig(batch_size=batch, max_iters=10**9, device=str(device), dtype=autocast, **options)
    return Trainer(config, train, TokenData(stream, stream, "random tokens"), "bytes", Path("/nonexistent"))


def tiny_model_seconds(device: torch.device, dtype: str, config) -> dict[str, float]:
    """Seconds of the model's own code paths at a negligible size, where fixed costs are all there is.

    "inference": one forward of one token against a 4-token KV cache (a decode step's forward);
    "training": forward and backward of the loss over 1 × 4 tokens, as `Trainer.train_step` runs them;
    "token": one more generated token in `GPT.generate` (sampling at temperature 0.8 and checking for the end of
    text, as sample.py does);
    "train_step": `Trainer.train_step` itself at batch 1 × the context (the batch drawn, the learning rate set,
    the loss read back, clipping, AdamW), whose harness around the model's work is also a fixed cost.
    """
    from gpt.model import GPT

    model = GPT(config).to(device=device, dtype=TORCH_DTYPES[dtype])
    tokens = torch.randint(config.vocab_size, (1, 5), device=device)
    model.eval()
    inference = seconds_per_call(_decode_forward(model, tokens), device, batches=10)
    with torch.no_grad():
        generator = torch.Generator(device=device).manual_seed(0)
        eos = never_drawn_end_of_text(config)
        short = seconds_per_call(lambda: model.generate(tokens[:, :4], 1, SAMPLE_TEMPERATURE, generator=generator,
                                                        eos_token=eos), device, 10)
        long = seconds_per_call(lambda: model.generate(tokens[:, :4], 9, SAMPLE_TEMPERATURE, generator=generator,
                                                       eos_token=eos), device, 10)
    model.train()

    def train_micro_step() -> None:
        _, loss = model(tokens[:, :4], tokens[:, 1:])
        loss.backward()
        model.zero_grad(set_to_none=True)

    training = seconds_per_call(train_micro_step, device, batches=10)
    train_step = seconds_per_call(timing_trainer(config, device, dtype).train_step, device, batches=10)
    return {"inference": inference, "training": training, "token": (long - short) / 8, "train_step": train_step}


def _decode_forward(model, tokens: torch.Tensor) -> Callable[[], None]:
    """A decode step's forward of `model` (in eval mode) for each row of `tokens` (B, 5): one token, tokens[:, 4:],
    against a KV cache holding tokens[:, :4], written into the same slot at every call, so that every call sees
    the same 4-token context."""
    from gpt.model import KVCache

    weight = model.lm_head.weight
    cache = KVCache(model.config, tokens.size(0), capacity=5, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        model(tokens[:, :4], cache=cache)

    @torch.no_grad()
    def forward() -> None:
        model(tokens[:, 4:], cache=cache)
        cache.pos.sub_(1)

    return forward


DEPTHS = (1, 3)  # prefill_depth_seconds' models: the difference of their times is two layers' worth


def _at_depths(device: torch.device, dtype: str, config,
               depths: tuple[int, ...] = DEPTHS) -> dict[int, object]:
    """`config` at each of `depths` layers: {layers: GPT in eval mode on `device`}, seeded alike."""
    from gpt.model import GPT

    models = {}
    for layers in depths:
        torch.manual_seed(0)
        models[layers] = GPT(dataclasses.replace(config, n_layer=layers)).to(device=device,
                                                                             dtype=TORCH_DTYPES[dtype]).eval()
    return models


def decode_depth_seconds(device: torch.device, dtype: str, config, batch: int, depths: tuple[int, ...],
                         rounds: int = 3) -> dict[str, Any]:
    """Seconds of a decode forward of `config` for `batch` sequences at each of `depths` layers, to set against
    their operations' price (device_profile.in_model_excess). Several depths are timed in alternation `rounds`
    times, each keeping its fastest: a neighbour's job that slows the machine for seconds then slows all.
    Returns {"width", "batch", "layers": depths, "seconds": [seconds at each depth]}."""
    forwards = {layers: _decode_forward(model, torch.randint(config.vocab_size, (batch, 5), device=device))
                for layers, model in _at_depths(device, dtype, config, depths).items()}
    fastest = {layers: math.inf for layers in depths}
    for _ in range(rounds):
        for layers, forward in forwards.items():
            fastest[layers] = min(fastest[layers], seconds_per_call(forward, device))
    return {"width": config.n_embd, "batch": batch, "layers": list(depths),
            "seconds": [fastest[layers] for layers in depths]}


def prefill_depth_seconds(device: torch.device, dtype: str, config, prompt_tokens: int, new_tokens: int,
                          rounds: int = 5, repeats: int = 8) -> dict[str, Any]:
    """Seconds of `GPT.generate`'s prefill — from the call to its first new token, as sample.py times it — of
    `config` with 1 and 3 layers at batch 1, each prefill timed once, right after sample.py's warm-up
    (gpt.warmup): the fastest of `rounds` × `repeats`, the depths alternating every `repeats`.

    Timed once, not in a loop of calls, because that is how a prefill runs: after the warm-up's and the
    previous call's other work, which has taken the host's caches. On the 2-core VM a 2-layer 64-wide model's
    prefill of 64 tokens took 0.71-0.77 ms so, against 0.53 ms for its forward alone in a loop (2026-12-03).
    Returns {"width", "prompt_tokens", "new_tokens", "layers": DEPTHS, "seconds": [seconds at each depth]}.
    """
    from gpt.warmup import plan_warmup, warm_up

    clock = time.perf_counter if device.type == "cuda" else host_clock(torch.get_num_threads())[1]
    plan = plan_warmup(prompt_tokens, new_tokens, config.block_size, every_key=False)
    prompt = torch.randint(config.vocab_size, (1, prompt_tokens), device=device)
    models = _at_depths(device, dtype, config)
    fastest = {layers: math.inf for layers in DEPTHS}

    def once(model, seed: int) -> float:
        warm_up(model, prompt, plan, SAMPLE_TEMPERATURE)
        generator = torch.Generator(device=device).manual_seed(seed)
        ended = []

        def on_tokens(_columns: torch.Tensor) -> None:
            if not ended:
                _synchronize(device)
                ended.append(clock())

        _synchronize(device)
        started = clock()
        model.generate(prompt, new_tokens, SAMPLE_TEMPERATURE, generator=generator, on_tokens=on_tokens,
                       eos_token=never_drawn_end_of_text(config))
        return ended[0] - started

    for round_ in range(rounds):
        for layers, model in models.items():
            for repeat in range(repeats):
                fastest[layers] = min(fastest[layers], once(model, round_ * repeats + repeat))
    return {"width": config.n_embd, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "layers": list(DEPTHS), "seconds": [fastest[layers] for layers in DEPTHS]}
