"""Data-parallel process group under torchrun: join it, name this rank, agree across ranks, leave it.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain `python train.py`
sets none of them and runs as rank 0 of a world of 1 with no process group. Collectives time out after
COLLECTIVE_TIMEOUT, so a rank that dies makes the others fail instead of waiting forever.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=120)


def launched() -> bool:
    """True when torchrun (or anything setting its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> torch.device:
    """Join the group (NCCL on CUDA, gloo otherwise) if launched by torchrun; returns this rank's device."""
    if not launched() or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(_backend(device), timeout=COLLECTIVE_TIMEOUT)
    return device


def init_alone(device: torch.device) -> None:
    """A process group of one, for FSDP in a plain `python train.py` (no torchrun): an in-memory store, no port."""
    if not dist.is_initialized():
        dist.init_process_group(_backend(device), store=dist.HashStore(), rank=0, world_size=1,
                                timeout=COLLECTIVE_TIMEOUT)


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 alone writes logs, checkpoints and progress bars."""
    return rank() == 0


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over all ranks (gloo has no AVG, so SUM then divide)."""
    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size()


def agree(count: int, device: torch.device, sharded: bool) -> int:
    """One count for all ranks: the sum over shards, or the largest over replicas (which should all be equal)."""
    if world_size() == 1:
        return count
    box = torch.tensor(count, dtype=torch.float64, device=device)
    dist.all_reduce(box, op=dist.ReduceOp.SUM if sharded else dist.ReduceOp.MAX)
    return int(box.item())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any, so all ranks take the same branch."""
    if world_size() == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_from_main(obj):
    """Rank 0's `obj` on every rank (any picklable value)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
