"""Collective communication: measured over message sizes under torchrun, or from a link's bandwidth, and priced
for a data-parallel training step.

A data-parallel step adds, on top of one card's compute (profiling.predict):

    DDP   one all-reduce of every gradient per optimizer step (gradient accumulation syncs on the last micro-step
          only), in DDP's buckets
    FSDP  per micro-step an all-gather of each block's weights before its forward and again before its backward,
          and per optimizer step a reduce-scatter of each block's gradients

priced without overlap with compute: an upper bound where the backend overlaps (NCCL on GPUs overlaps DDP's
all-reduce with the backward), close to what gloo does on a CPU whose cores are all computing.

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

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from profiling.flops import param_count

OPS = ("all_reduce", "all_gather", "reduce_scatter")
SIZES = tuple(4 ** k for k in range(5, 14))  # bytes of the whole tensor: 1 KiB … 64 MiB
DDP_BUCKET_BYTES = 25 * 2 ** 20  # torch DDP's default bucket_cap_mb
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


def _chunks(total: float, size: float) -> list[float]:
    whole, rest = divmod(total, size)
    return [size] * int(whole) + ([rest] if rest else [])


def data_parallel_seconds(config: GPTConfig, world_size: int, grad_accum: int, sharded: bool,
                          seconds_of: Callable[[str, float], float], param_bytes: int = 4) -> float:
    """Communication of one optimizer step of data-parallel training (module docstring); `seconds_of(op, nbytes)`
    prices one collective of the whole tensor. Parameters and gradients are `param_bytes` wide (float32 master
    weights under autocast, as train.py keeps them)."""
    if world_size == 1:
        return 0.0
    total = param_count(config)
    if not sharded:
        return sum(seconds_of("all_reduce", bucket) for bucket in _chunks(total * param_bytes, DDP_BUCKET_BYTES))
    final_norm = config.n_embd * (1 + int(config.bias))
    block = (param_count(config, embeddings=False) - final_norm) // config.n_layer
    units = [block * param_bytes] * config.n_layer + [(total - config.n_layer * block) * param_bytes]
    gathers = 2 * grad_accum * sum(seconds_of("all_gather", size) for size in units)
    return gathers + sum(seconds_of("reduce_scatter", size) for size in units)


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
