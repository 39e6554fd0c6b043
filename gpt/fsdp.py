"""Sharded data parallelism (FSDP2) applied to an unchanged GPT from the outside.

`fully_shard` goes on each transformer block, then on the root (embeddings, final LayerNorm
and the tied head), as torchtitan does: each block's parameters are all-gathered just before
its forward and backward and freed after, and its gradients are reduce-scattered, so every rank
keeps 1/world of the parameters, gradients and (since the optimizer sees only the local shards)
AdamW's moments. On CUDA with a 16-bit run dtype the gathered parameters are cast to it and
gradients are reduced in float32; on CPU (gloo) everything stays float32.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from gpt.model import GPT


def shard(model: GPT, device: torch.device, dtype: torch.dtype) -> None:
    """Shard `model` in place over the default process group (which must exist)."""
    policy = MixedPrecisionPolicy()
    if device.type == "cuda" and dtype != torch.float32:
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor, or the tensor itself when it is not sharded."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
