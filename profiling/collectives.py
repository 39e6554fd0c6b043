"""Collective communication: measured over message sizes under torchrun, or from a link's bandwidth, and priced
for a data-parallel training step.

A data-parallel step adds, on top of one card's compute (profiling.predict):

    DDP   one all-reduce of every gradient per optimizer step (gradient accumulation syncs on the last micro-step
          only), in DDP's buckets (1 MiB first, then 25 MiB: torch's defaults)
    FSDP  per micro-step an all-gather of each block's weights before its forward and again before its backward
          (the root unit, embeddings and final norm, once: FSDP2 keeps the root gathered from its forward to its
          backward), and per optimizer step a reduce-scatter of each unit's gradients

priced without overlap with compute: an upper bound where the backend overlaps (NCCL on GPUs overlaps DDP's
all-reduce with the backward), what gloo does on a CPU (FSDP2 issues every collective synchronously there).

Around the collectives the wrappers copy (`data_parallel_copies`, priced on the profile's copy table like any
memory-bound operation): DDP copies each gradient into its bucket and back (gradient_as_bucket_view is off by
default); FSDP2 copies a unit's shard into the all-gather's buffer and the gathered tensor out into the
parameters, and the gradients into the reduce-scatter's buffer. What remains of a distributed step, the
hooks, Python and DTensor dispatch, the trainer's scalar all-reduces, is the harness (`harness_seconds`),
measured at width 8 under torchrun (profiling.harness).

Times come from a measured table (`python -m profiling calibrate` under torchrun, at its world size; the time of
an S-byte message is interpolated between measured sizes, and beyond the largest at its bandwidth), or from a
ring over a link (bytes/s per device, one direction) with a fixed latency per hop:

    all-reduce                  2(N−1)/N · S / link + 2(N−1) · latency
    all-gather, reduce-scatter   (N−1)/N · S / link +  (N−1) · latency      (S: the whole, gathered tensor)

Beyond one server (N = n servers × g devices, `Cluster`), two levels, as NCCL runs them on servers with one NIC
per GPU (rail-optimised fabrics: DGX, HGX):

    all-reduce      reduce-scatter of S inside each server (ring over the intra-server link, g devices), then an
                    all-reduce of each device's S/g share across the n servers over its own NIC, then an
                    all-gather of S inside the server:
                    2(g−1)/g · S / intra + 2(g−1) · latency_intra  +  2(n−1)/n · (S/g) / inter + 2⌈log2 n⌉ · latency_inter
    reduce-scatter  inside, then across servers on the S/g share:  (g−1)/g · S / intra + (g−1) · latency_intra
                    + (n−1)/n · (S/g) / inter + ⌈log2 n⌉ · latency_inter;  all-gather the same, in the other order

The across-servers stage moves a ring's bytes (each device sends and receives its share 2(n−1)/n times) with the
latency of a tree, ⌈log2 n⌉ hops each way: NCCL's double binary trees (NCCL 2.4, NVIDIA blog "Massively scale
your deep learning training with NCCL 2.4", Feb 2019), which it picks across many servers because a ring's
2(n−1) hops grow linearly. With n = 1 this is the ring above; with g = 1 (no intra-server link), the across-servers
stage alone. The slowest stage is not overlapped with the other: the stages run one after another.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from profiling.flops import Op, bytes_per_element, param_count

OPS = ("all_reduce", "all_gather", "reduce_scatter")
SIZES = tuple(4 ** k for k in range(5, 14))  # bytes of the whole tensor: 1 KiB … 64 MiB
DDP_BUCKET_BYTES = 25 * 2 ** 20  # torch DDP's default bucket_cap_mb
DDP_FIRST_BUCKET_BYTES = 2 ** 20  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES: the last gradients, synced first
MODES = ("ddp", "fsdp")
# Per ring hop inside a server on a reference profile. Assumption, not a cited measurement: NCCL's small-message
# all-reduce on one 8-GPU NVLink server takes some tens of microseconds, a couple per hop.
REFERENCE_LATENCY_S = 2e-6
# Per hop between servers (NIC, switch, NCCL's per-step cost). Assumption, not a cited measurement.
INTER_NODE_LATENCY_S = 5e-6


class CommunicationError(GptmeterError, ValueError):
    """A distributed prediction without the figures it needs; the message says how to get them."""


@dataclass(frozen=True)
class Link:
    """A ring's per-device bandwidth (bytes/s, one direction) and fixed latency per hop (s), with their source."""

    bytes_per_s: float
    latency_s: float
    source: str


def _ring_share(op: str, world_size: int) -> tuple[float, int]:
    """(fraction of the tensor each device sends, hops) of a ring collective over `world_size` devices."""
    steps = world_size - 1
    return (2 * steps / world_size, 2 * steps) if op == "all_reduce" else (steps / world_size, steps)


def link_seconds(op: str, nbytes: float, world_size: int, link: Link) -> float:
    """A ring collective of an `nbytes` tensor over `link` (module docstring)."""
    if world_size == 1:
        return 0.0
    share, hops = _ring_share(op, world_size)
    return share * nbytes / link.bytes_per_s + hops * link.latency_s


@dataclass(frozen=True)
class Cluster:
    """Servers of `per_server` devices: a ring inside each over `intra` (None when a server holds one device), and
    across servers each device's own `inter` link (module docstring)."""

    per_server: int
    intra: Link | None
    inter: Link

    def __post_init__(self) -> None:
        if not isinstance(self.per_server, int) or self.per_server < 1:
            raise CommunicationError(f"devices per server must be a positive whole number, got {self.per_server!r}")
        if self.per_server > 1 and self.intra is None:
            raise CommunicationError(f"{self.per_server} devices per server need an intra-server link")

    def servers(self, world_size: int) -> int:
        """Servers a job of `world_size` devices spans (the last one may be partly used)."""
        return max(1, math.ceil(world_size / self.per_server))


def cluster_seconds(op: str, nbytes: float, world_size: int, cluster: Cluster) -> float:
    """A collective of an `nbytes` tensor over `world_size` devices of `cluster`: a ring inside one server, two
    levels beyond it (module docstring)."""
    if world_size == 1:
        return 0.0
    if world_size <= cluster.per_server:
        return link_seconds(op, nbytes, world_size, cluster.intra)
    g, n = cluster.per_server, cluster.servers(world_size)
    inside = link_seconds(op, nbytes, g, cluster.intra) if g > 1 else 0.0
    share, _ = _ring_share(op, n)
    tree_hops = (2 if op == "all_reduce" else 1) * math.ceil(math.log2(n))
    return inside + share * nbytes / g / cluster.inter.bytes_per_s + tree_hops * cluster.inter.latency_s


def table_seconds(table: dict[str, Any], op: str, nbytes: float, world_size: int) -> float:
    """A measured collective's time at `nbytes`, by linear interpolation between measured sizes; below the
    smallest, the smallest's time (latency-bound); above the largest, at the largest's bandwidth. The table is
    measured at one world size: another is refused (rings scale neither in bandwidth nor latency linearly on a
    shared CPU)."""
    if world_size == 1:
        return 0.0
    if world_size != table["world_size"]:
        raise CommunicationError(
            f"the profile's collectives were measured at world size {table['world_size']}, not {world_size}; "
            f"measure them there: torchrun --standalone --nproc_per_node {world_size} -m profiling calibrate")
    sizes, seconds = table["ops"][op]["bytes"], table["ops"][op]["seconds"]
    if nbytes <= sizes[0]:
        return seconds[0]
    for low, high, t_low, t_high in zip(sizes, sizes[1:], seconds, seconds[1:]):
        if nbytes <= high:
            return t_low + (t_high - t_low) * (nbytes - low) / (high - low)
    return seconds[-1] * nbytes / sizes[-1]


def ddp_buckets(total_bytes: float) -> list[float]:
    """Bytes of each of DDP's gradient buckets: the first 1 MiB, then 25 MiB each (tensor boundaries ignored)."""
    first = min(total_bytes, DDP_FIRST_BUCKET_BYTES)
    whole, rest = divmod(total_bytes - first, DDP_BUCKET_BYTES)
    return [first] + [DDP_BUCKET_BYTES] * int(whole) + ([rest] if rest else [])


def fsdp_units(config: GPTConfig) -> tuple[int, int]:
    """Parameters of one block and of the root unit (embeddings and final norm): what FSDP2 gathers as one."""
    final_norm = config.n_embd * (1 + int(config.bias))
    block = (param_count(config, embeddings=False) - final_norm) // config.n_layer
    return block, param_count(config) - config.n_layer * block


def data_parallel_seconds(config: GPTConfig, world_size: int, grad_accum: int, sharded: bool,
                          seconds_of: Callable[[str, float], float], param_bytes: int = 4) -> float:
    """Communication of one optimizer step of data-parallel training (module docstring); `seconds_of(op, nbytes)`
    prices one collective of the whole tensor. Parameters and gradients are `param_bytes` wide (float32 master
    weights under autocast, as train.py keeps them)."""
    if world_size == 1:
        return 0.0
    if not sharded:
        return sum(seconds_of("all_reduce", bucket) for bucket in ddp_buckets(param_count(config) * param_bytes))
    block, root = (units * param_bytes for units in fsdp_units(config))
    gathers = grad_accum * (2 * config.n_layer * seconds_of("all_gather", block) + seconds_of("all_gather", root))
    return gathers + config.n_layer * seconds_of("reduce_scatter", block) + seconds_of("reduce_scatter", root)


def data_parallel_copies(config: GPTConfig, world_size: int, grad_accum: int, sharded: bool,
                         dtype: object = "fp32") -> list[Op]:
    """The memory-bound copies DDP or FSDP2 make around the collectives of one optimizer step (module docstring),
    as operations of the "copy" kind, elements of float32 master weights and gradients."""
    if world_size == 1:
        return []
    elem = bytes_per_element(dtype)
    if not sharded:  # into the bucket (scaled by 1/world_size) and back into the gradients, float32
        return [Op("ddp_bucket_copy", "copy", (int(nbytes) // 4,), 0, 2 * int(nbytes), 2, "backward")
                for nbytes in ddp_buckets(4 * param_count(config))]
    block, root = fsdp_units(config)
    ops = []
    for name, elements, units, gathers in (("block", block, config.n_layer, 2), ("root", root, 1, 1)):
        shard, count = -(-elements // world_size), units * gathers * grad_accum  # gathers per micro-step
        ops += [Op(f"fsdp_{name}_gather_copy_in", "copy", (shard,), 0, 2 * shard * elem, count),
                Op(f"fsdp_{name}_gather_copy_out", "copy", (elements,), 0, 2 * elements * elem, count),
                Op(f"fsdp_{name}_reduce_copy_in", "copy", (elements,), 0, 2 * elements * 4, units, "backward")]
    return ops


def sharded_optimizer(ops: list[Op], world_size: int) -> list[Op]:
    """`ops` with the optimizer step over each rank's shard of every parameter tensor (FSDP: 1/world_size of
    each, rounded up: FSDP2 pads dim 0 to a multiple of the world size)."""
    return [dataclasses.replace(op, shape=tuple(-(-size // world_size) for size in op.shape),
                                bytes=-(-op.bytes // world_size)) if op.kind == "adamw" else op for op in ops]


def harness_seconds(table: dict[str, Any], config: GPTConfig, sharded: bool) -> float:
    """The harness of one data-parallel step of `config` (module docstring): the measured cost per step plus
    per block (profiling.harness)."""
    harness = table.get("harness")
    if harness is None:
        raise CommunicationError(f"the profile's collectives table has no harness measurement; measure it: "
                                 f"torchrun --standalone --nproc_per_node {table['world_size']} -m profiling calibrate")
    cost = harness["fsdp" if sharded else "ddp"]
    return cost["per_step_s"] + config.n_layer * cost["per_block_s"]


def measure(sizes: tuple[int, ...] = SIZES, repeats: int = 5, progress: bool = True) -> dict[str, Any]:
    """Time each collective over `sizes` (bytes of the whole float32 tensor) in the running process group: the
    median of `repeats` after one warm-up, every rank starting together. Call on every rank."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    # torch 2.13 renames the tensor forms (the old names warn); older torch has only the old ones
    all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    world, rank = dist.get_world_size(), dist.get_rank()
    results: dict[str, dict[str, list]] = {op: {"bytes": [], "seconds": []} for op in OPS}
    steps = [(op, size) for op in OPS for size in sizes]
    for op, size in tqdm(steps, desc="collectives", disable=not progress or rank != 0, unit="size"):
        elements = max(world, size // 4 // world * world)
        whole, part = torch.ones(elements), torch.ones(elements // world)
        run = {"all_reduce": lambda: dist.all_reduce(whole),
               "all_gather": lambda: all_gather(whole, part),
               "reduce_scatter": lambda: reduce_scatter(part, whole)}[op]
        timings = []
        for _ in range(repeats + 1):
            dist.barrier()
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        slowest = torch.tensor(statistics.median(timings[1:]))
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # a collective lasts as long as its slowest rank
        results[op]["bytes"].append(elements * 4)
        results[op]["seconds"].append(slowest.item())
    return {"backend": dist.get_backend(), "world_size": world, "ops": results}
