"""Autotuning tiles per GPU generation, and the compile report that checks them without a GPU.

The report compiles through Triton's code generator and ptxas (marked `slow`); the
interpreter, which the rest of the suite runs in, compiles nothing, so those tests run
the report in a fresh process with TRITON_INTERPRET=0.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import fused_attention, tuning

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("capability, arch", [((9, 0), "sm_90"), ((8, 0), "sm_80"), ((8, 6), "sm_80")])
@pytest.mark.parametrize("head_dim", [32, 128])
def test_pruning_keeps_the_gpus_tiles_that_fit_the_sequence(monkeypatch, capability, arch, head_dim):
    monkeypatch.setattr(fused_attention, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    everything = tuning.configs("forward")
    q = torch.empty(1, dtype=torch.bfloat16)

    def kept(seq_q: int, seq_k: int) -> set:
        named = {"Q": q, "seq_q_bucket": seq_q, "seq_k_bucket": seq_k}
        return {tuning.tile_of(c) for c in fused_attention._prune_configs("forward", everything, named,
                                                                         HEAD_DIM=head_dim)}

    listed = set(tuning.tiles("forward", arch, head_dim))
    assert kept(4096, 4096) == listed
    assert kept(16, 4096) == {tile for tile in listed if tile[0] == 16}  # one decoding query
    assert kept(64, 64) == {tile for tile in listed if tile[0] <= 64 and tile[1] <= 64}
    float32 = {"Q": torch.empty(1), "seq_q_bucket": 4096, "seq_k_bucket": 4096}
    assert fused_attention._prune_configs("forward", everything, float32, HEAD_DIM=head_dim) == \
        [fused_attention._FLOAT32_CONFIG]


def _program_rows(kernel: str, tile: tuning.Tile) -> int:
    """Rows a program owns: queries (forward, dQ) or keys (dK/dV); 64 make a Hopper warp group's MMA."""
    return tile[1] if kernel == "dkdv" else tile[0]


def test_every_list_covers_decoding_and_long_sequences():
    for kernel in tuning.KERNELS:
        for arch in tuning.ARCHS:
            for head_dim in (16, 32, 64, 128):
                listed = tuning.tiles(kernel, arch, head_dim)
                assert min(block_m for block_m, *_ in listed) == 16, (kernel, arch, head_dim)
                assert max(_program_rows(kernel, tile) for tile in listed) >= 64, (kernel, arch, head_dim)


def _report(*arguments: str) -> subprocess.CompletedProcess:
    pytest.importorskip("triton.backends.nvidia")
    environment = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    return subprocess.run([sys.executable, *arguments], env=environment, capture_output=True, text=True, cwd=ROOT)


# Each case compiles every tile of the three kernels for one generation at head dims 64
# and 128 in bfloat16 (36 tiles for sm_90, 28 for sm_80: 27 s and 21 s on 2 cores with a
# cold Triton cache). `python -m bench.kernel_report` without flags covers float16 and
# head dim 32 too.
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_tile_compiles_without_spills_warnings_or_too_much_shared_memory(arch):
    result = _report("-m", "bench.kernel_report", "--arch", arch, "--head-dims", "64", "128", "--dtypes", "bf16",
                     "--jobs", "2", "--json")
    assert result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout)
    tiles = report["tiles"]
    expected = sum(len(tuning.tiles(kernel, arch, head_dim)) for kernel in tuning.KERNELS for head_dim in (64, 128))
    assert len(tiles) == expected
    assert [tile for tile in tiles if not tile["ok"]] == []
    assert result.returncode == 0
    for tile in tiles:
        assert 0 < tile["registers"] <= 255 and 0 < tile["shared_bytes"] <= tile["shared_limit_bytes"]
        hopper_forward = arch == "sm_90" and tile["kernel"] == "forward"
        assert tile["tma"] == hopper_forward  # K and V through TMA on Hopper, cp.async elsewhere
        assert tile["cp_async"] != hopper_forward
        if arch == "sm_80":
            assert tile["mma_sync"] and not tile["wgmma"]
        elif _program_rows(tile["kernel"], (tile["block_m"], tile["block_n"])) >= 64:
            assert tile["wgmma"], tile  # Hopper's tensor-core path wherever a warp group has 64 rows


# A tile the issue found faulty: with 4 warps at head dim 128 the dK/dV accumulators alone
# need 256 registers a thread. The report must flag it, or its clean verdicts mean nothing.
_FAULTY_TILE = """
from bench.kernel_report import report_tile
row = report_tile("dkdv", "sm_90", "bf16", 128, (32, 128, 4, 3))
print(row.registers, row.spill_store_bytes, row.ok, "|".join(row.problems))
"""


@pytest.mark.slow
def test_report_flags_a_tile_that_spills_and_serialises_wgmma():
    result = _report("-c", _FAULTY_TILE)
    assert result.returncode == 0, result.stderr[-3000:]
    registers, spilled, ok, problems = result.stdout.split(maxsplit=3)
    assert int(registers) == 255 and int(spilled) > 1000 and ok == "False"
    assert "spills" in problems and "wgmma.mma_async instructions are serialized" in problems


def test_report_refuses_to_run_under_the_interpreter():
    result = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--arch", "sm_90"],
                            env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "TRITON_INTERPRET" in result.stderr
