"""The tiles the attention kernels autotune over, per kernel, GPU generation and head dim.

A tile is (BLOCK_M, BLOCK_N, warps, pipeline stages). Forward and dQ: BLOCK_M queries ×
BLOCK_N keys per step; dK/dV: BLOCK_N keys per program, streamed over BLOCK_M queries.

Every tile listed for a generation compiles for it (sm_90 for Hopper, sm_80 for Ampere)
in bfloat16 and float16 with no register spill, no ptxas "Potential Performance Loss"
warning (such as serialised wgmma) and within one block's shared memory: checked
without a GPU by `python -m bench.kernel_report` (docs/attention.md lists the figures).
A tile that spills or serialises its tensor-core instructions is never the fastest, and
autotuning it costs every GPU user's first run a compile and a timing.

Tiles are listed per head dim because registers grow with it: at head dim 128 the
forward's 128-query tile needs 8 warps, and the dK/dV accumulators (2 × BLOCK_N × 128
float32) leave no room for 128-key tiles on 4 warps. Each list keeps a tile for every
length bucket: the autotuner drops tiles longer than the (power-of-two) sequence, so a
list needs a 16-row tile for single-query decoding and 32/64-row tiles for short prompts.
"""

from __future__ import annotations

import triton

Tile = tuple[int, int, int, int]  # (BLOCK_M, BLOCK_N, num_warps, num_stages)

KERNELS = ("forward", "dq", "dkdv")
ARCHS = ("sm_90", "sm_80")

# kernel -> GPU generation -> head dim -> tiles; head dims 16 and 32 use the head dim 64 list.
TILES: dict[str, dict[str, dict[int, tuple[Tile, ...]]]] = {
    "forward": {
        "sm_90": {
            64: ((128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4), (64, 64, 4, 3), (64, 32, 4, 4),
                 (32, 64, 4, 2), (16, 64, 4, 2)),
            128: ((128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 64, 4, 2)),
        },
        "sm_80": {
            64: ((128, 64, 4, 3), (128, 128, 8, 3), (128, 32, 4, 4), (64, 64, 4, 3), (64, 32, 4, 4), (32, 64, 4, 2),
                 (16, 64, 4, 2)),
            128: ((128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 64, 4, 2)),
        },
    },
    "dq": {
        "sm_90": {
            64: ((128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 64, 4, 2)),
            128: ((128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 32, 4, 2)),
        },
        "sm_80": {
            64: ((128, 32, 8, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 64, 4, 2)),
            128: ((64, 64, 8, 3), (64, 32, 4, 4), (32, 64, 4, 2), (16, 64, 4, 2)),
        },
    },
    "dkdv": {
        "sm_90": {
            64: ((64, 128, 8, 3), (32, 128, 8, 2), (64, 64, 4, 3), (32, 64, 4, 3), (16, 64, 4, 2)),
            128: ((32, 128, 8, 2), (16, 128, 8, 2), (32, 64, 8, 2), (32, 64, 4, 3), (16, 64, 4, 2)),
        },
        "sm_80": {
            64: ((64, 128, 8, 3), (32, 128, 8, 2), (16, 128, 8, 2), (32, 64, 8, 2), (16, 64, 4, 2)),
            128: ((64, 64, 8, 2), (32, 64, 8, 2), (16, 64, 4, 2)),
        },
    },
}


def arch_of(capability: tuple[int, int]) -> str:
    """The generation whose list a GPU uses: Hopper's for compute capability 9 and later
    (newer generations are not checked by the report), Ampere's for 8.x."""
    return "sm_90" if capability[0] >= 9 else "sm_80"


def tiles(kernel: str, arch: str, head_dim: int) -> tuple[Tile, ...]:
    return TILES[kernel][arch][max(head_dim, 64)]


def tile_of(config: triton.Config) -> Tile:
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages


def configs(kernel: str) -> list[triton.Config]:
    """Every tile of `kernel` for any generation and head dim, once each: the autotuner's
    full list, which the launch-time pruning narrows to the GPU's and head dim's tiles."""
    every = sorted({tile for per_dim in TILES[kernel].values() for listed in per_dim.values() for tile in listed},
                   reverse=True)
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps, num_stages=stages)
            for m, n, warps, stages in every]
