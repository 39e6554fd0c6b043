"""The harness of a data-parallel training step, measured where it occurs: under torchrun, at width 8.

DDP and FSDP2 do work around a step that is neither an operation of the model nor one of the collectives
`profiling.collectives` prices: autograd hooks, the reducer's bookkeeping, FSDP2's pre/post-forward and
backward hooks per block, DTensor dispatch in clipping and AdamW, and the trainer's scalar all-reduces (the
loss; under FSDP also the gradient norm). At width 8 the operations cost next to nothing, so

    harness(L) = Trainer.train_step of an L-layer, width-8 model in the running process group
                 − the predictor's price of that step (operations, fixed costs, copies and collectives)

and two depths give a cost per step and one per block, for DDP and for FSDP:
harness(L) = per_step + L · per_block (as `device_profile._solve_overhead` splits the single-process costs).
A step is timed by the trainer's own wall clock, the slowest rank's; the fastest of `steps` is kept, as
calibration keeps the fastest everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gpt.config import GPTConfig
from profiling import predict
from profiling.collectives import MODES
from profiling.device_profile import OVERHEAD_SHAPE, DeviceProfile
from profiling.microbench import timing_trainer

LAYERS = (1, 3)


def _step_seconds(config: GPTConfig, sharded: bool, device, dtype: str, steps: int) -> float:
    """The fastest of `steps` `Trainer.train_step`s (after two untimed), each the slowest rank's."""
    import torch
    import torch.distributed as dist

    trainer = timing_trainer(config, device, dtype, fsdp=sharded)
    for _ in range(2):
        trainer.train_step()
    times = []
    for _ in range(steps):
        dist.barrier()
        times.append(trainer.train_step().step_time_s)
    slowest = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return float(slowest.min())


def measure(profile: DeviceProfile, device, dtype: str, steps: int = 20) -> dict[str, Any]:
    """The harness of DDP and FSDP at the running world size; `profile` holds the collectives just measured.
    Call on every rank."""
    table = profile.collectives
    unpriced = {mode: {"per_step_s": 0.0, "per_block_s": 0.0} for mode in MODES}
    bare = dataclasses.replace(profile, collectives=table | {"harness": unpriced})
    result: dict[str, Any] = {"model": dict(OVERHEAD_SHAPE), "layers": list(LAYERS), "measured_s": {}}
    for mode in MODES:
        sharded = mode == "fsdp"
        residual, result["measured_s"][mode] = {}, {}
        for layers in LAYERS:
            config = GPTConfig(n_layer=layers, attention="sdpa", **OVERHEAD_SHAPE)
            measured = _step_seconds(config, sharded, device, dtype, steps)
            priced = predict.predict_train(config, 1, config.block_size, 1, bare, table["world_size"], sharded)
            result["measured_s"][mode][str(layers)] = measured
            residual[layers] = measured - priced.step_seconds
        result[mode] = split(residual)
    return result


def split(residual: dict[int, float]) -> dict[str, float]:
    """{layers: unexplained seconds} at two depths as per_step_s + layers · per_block_s, neither below zero."""
    (low, at_low), (high, at_high) = sorted(residual.items())
    per_block = max((at_high - at_low) / (high - low), 0.0)
    return {"per_step_s": max(at_low - low * per_block, 0.0), "per_block_s": per_block}
