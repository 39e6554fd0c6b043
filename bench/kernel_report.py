"""What the GPU compiler makes of each attention tile, without a GPU.

    python -m bench.kernel_report                     # every tile: sm_90 and sm_80, bf16 and fp16, head dims 32 64 128
    python -m bench.kernel_report --arch sm_90 --json

Every autotuning tile of the forward, dQ and dK/dV kernels (kernels/tuning.py) is
compiled through Triton's own code generator for the target (no device needed), and
its PTX through the ptxas that Triton ships, with -v. Per tile it reports registers
per thread, spill bytes (stores + loads), shared memory per block (Triton's dynamic
allocation plus any static), which matrix and copy instructions the code uses
(wgmma: Hopper's asynchronous tensor-core MMA; mma.sync: Ampere's; cp.async: the
asynchronous global-to-shared copy; TMA: cp.async.bulk.tensor), and every ptxas
warning or "Potential Performance Loss" note (e.g. wgmma serialised for lack of
registers). A tile fails when it spills, draws such a note, or needs more shared
memory than one block may have. Exit status 1 when any tile fails.

The launch is specialised as the model launches the kernels: q, k, v are
(batch, heads, seq, head_dim) views of (batch, seq, heads, head_dim) tensors (every
stride a multiple of 16 elements, head_dim stride 1), 4096 tokens, causal, 16 query
heads sharing 4 key/value heads (grouped-query: the dK/dV kernel's loop over a group's
heads is compiled in; --kv-heads 16 compiles multi-head attention, which Triton
specialises to one head per group);
on sm_90 the forward gets K and V as TMA tensor descriptors, as its launcher passes them
on Hopper. Compiling is CPU-heavy (seconds per tile); --jobs compiles tiles in parallel.
The specialisation uses Triton internals (checked with Triton 3.9).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton

from gpt.cli import HelpFormatter, positive_int
from gpt.errors import GptmeterError
from kernels import tuning

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
HEAD_DIMS = (32, 64, 128)
CAPABILITY = {"sm_90": 90, "sm_80": 80}
# Shared memory one block may use (the opt-in maximum; 1 KB of each SM's 228 / 164 KB is
# reserved by the system): CUDA C++ Programming Guide, "Technical Specifications per
# Compute Capability", compute capability 9.0 (H100) and 8.0 (A100). Triton checks a
# kernel's shared memory against the same device attribute before launching it.
SHARED_MEMORY_LIMIT = {"sm_90": 227 * 1024, "sm_80": 163 * 1024}
LAUNCH = {"batch": 4, "heads": 16, "kv_heads": 4, "seq": 4096, "causal": True}


class ReportError(GptmeterError):
    """The report cannot compile here."""


@dataclasses.dataclass(frozen=True)
class TileReport:
    kernel: str
    arch: str
    dtype: str
    head_dim: int
    block_m: int
    block_n: int
    warps: int
    stages: int
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    shared_limit_bytes: int
    wgmma: bool
    mma_sync: bool
    cp_async: bool
    tma: bool
    warnings: tuple[str, ...]

    @property
    def problems(self) -> list[str]:
        found = []
        if self.spill_store_bytes or self.spill_load_bytes:
            found.append(f"spills {self.spill_store_bytes}/{self.spill_load_bytes} bytes")
        if self.shared_bytes > self.shared_limit_bytes:
            found.append(f"shared memory {self.shared_bytes} > {self.shared_limit_bytes} bytes")
        return found + list(self.warnings)

    @property
    def ok(self) -> bool:
        return not self.problems


KERNEL_FUNCTIONS = {"forward": "_forward_kernel", "dq": "_backward_dq_kernel", "dkdv": "_backward_dkdv_kernel"}


def _attention_module():
    from kernels import fused_attention

    if fused_attention.INTERPRETED:
        raise ReportError("kernels were imported under TRITON_INTERPRET=1, which compiles nothing; "
                          "run the report without it")
    return fused_attention


def launch_arguments(head_dim: int, dtype: torch.dtype, block_n: int, tma: bool, kv_heads: int) -> dict:
    """Every argument of the three kernels, as the model would pass them (see the module docstring);
    with `tma`, K and V are the forward's tensor descriptors, as its launcher makes them on Hopper."""
    heads, seq = LAUNCH["heads"], LAUNCH["seq"]
    # Only the dtype and the 16-byte alignment of a tensor matter to the compiler: small
    # stand-ins carry them. Strides: (batch, seq, heads, head_dim) storage seen as
    # (batch, heads, seq, head_dim).
    tensor, stats = torch.empty(16, dtype=dtype), torch.empty(16, dtype=torch.float32)
    arguments = dict(Q=tensor, K=tensor, V=tensor, Out=tensor, DO=tensor, DQ=tensor, DK=tensor, DV=tensor, LSE=stats,
                     Delta=stats, sm_scale=head_dim ** -0.5, num_heads=heads, group_size=heads // kv_heads,
                     seq_q=seq, seq_k=seq, seq_q_bucket=seq, seq_k_bucket=seq, HEAD_DIM=head_dim,
                     CAUSAL=LAUNCH["causal"], DOT_PRECISION="tf32")
    for prefix, tensor_heads, seq_axis in (("q", heads, "m"), ("k", kv_heads, "n"), ("v", kv_heads, "n"),
                                           ("o", heads, "m"), ("do", heads, "m")):
        strides = (seq * tensor_heads * head_dim, head_dim, tensor_heads * head_dim, 1)
        for axis, stride in zip(("b", "h", seq_axis, "d"), strides):
            arguments[f"stride_{prefix}{axis}"] = stride
    if tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        shape, strides = [LAUNCH["batch"], kv_heads, seq, head_dim], [arguments[f"stride_k{axis}"] for axis in "bhnd"]
        arguments["K"] = arguments["V"] = TensorDescriptor(tensor, shape, strides, [1, 1, block_n, head_dim])
    return arguments | {"TMA": tma}


def compile_source(function, arguments: dict):
    """Triton's source object for `function` specialised on `arguments` as its launcher would specialise them:
    16-byte-divisible integers and pointers marked so, integers equal to 1 folded to constants."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend
    from triton.compiler import ASTSource

    signature, constants, attributes = {}, {}, {}
    for index, (name, parameter) in enumerate(zip(function.arg_names, function.params)):
        value = arguments[name]
        if parameter.is_constexpr:
            signature[name], constants[(index,)] = "constexpr", value
            continue
        kind, specialisation = native_specialize_impl(BaseBackend, value, False, True, True)
        signature[name] = kind
        if kind == "constexpr":
            constants[(index,)] = specialisation
        elif specialisation == "D":
            attributes[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(function, signature, constants, attributes)


def ptxas_log(ptx: str, arch: str) -> str:
    """`ptxas -v` on the PTX, with Triton's own ptxas and flags for that architecture."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    capability = CAPABILITY[arch]
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "kernel.ptx")
        with open(source, "w") as file:
            file.write(ptx)
        result = subprocess.run([get_ptxas(capability).path, "-v", "--regAllocOptLevel=2",
                                 f"--gpu-name={sm_arch_from_capability(capability)}", source,
                                 "-o", os.path.join(folder, "kernel.cubin")], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ptxas failed for {arch}:\n{result.stderr}")
    return result.stderr + result.stdout


def _count(pattern: str, log: str) -> int:
    found = re.search(pattern, log)
    return int(found.group(1)) if found else 0


def report_tile(kernel: str, arch: str, dtype: str, head_dim: int, tile: tuning.Tile,
                kv_heads: int = LAUNCH["kv_heads"]) -> TileReport:
    from triton.backends.compiler import GPUTarget

    block_m, block_n, warps, stages = tile
    module = _attention_module()
    # As the launcher decides (fused_attention._tma_eligible) for the model's aligned tensors.
    tma = kernel == "forward" and CAPABILITY[arch] >= 90 and module.TensorDescriptor is not None
    arguments = launch_arguments(head_dim, DTYPES[dtype], block_n, tma, kv_heads) | {"BLOCK_M": block_m,
                                                                                     "BLOCK_N": block_n}
    compiled = triton.compile(compile_source(getattr(module, KERNEL_FUNCTIONS[kernel]).fn, arguments),
                              target=GPUTarget("cuda", CAPABILITY[arch], 32),
                              options={"num_warps": warps, "num_stages": stages})
    ptx, log = compiled.asm["ptx"], ptxas_log(compiled.asm["ptx"], arch)
    notes = tuple(line.strip() for line in log.splitlines()
                  if "warning" in line.lower() or "Potential Performance Loss" in line)
    return TileReport(
        kernel=kernel, arch=arch, dtype=dtype, head_dim=head_dim, block_m=block_m, block_n=block_n, warps=warps,
        stages=stages, registers=_count(r"Used (\d+) registers", log),
        spill_store_bytes=_count(r"(\d+) bytes spill stores", log),
        spill_load_bytes=_count(r"(\d+) bytes spill loads", log),
        shared_bytes=compiled.metadata.shared + _count(r"(\d+) bytes smem", log),
        shared_limit_bytes=SHARED_MEMORY_LIMIT[arch],
        wgmma="wgmma.mma_async" in ptx, mma_sync="mma.sync" in ptx,
        cp_async=re.search(r"cp\.async\.c[ag]\.", ptx) is not None, tma="cp.async.bulk.tensor" in ptx,
        warnings=notes)


def _report_tile(job: tuple) -> TileReport:
    return report_tile(*job)


def jobs(archs, dtypes, head_dims, kernels, kv_heads: int) -> list[tuple]:
    return [(kernel, arch, dtype, head_dim, tile, kv_heads)
            for arch in archs for dtype in dtypes for head_dim in head_dims for kernel in kernels
            for tile in tuning.tiles(kernel, arch, head_dim)]


def format_row(row: TileReport) -> str:
    uses = " ".join(name for name, used in (("wgmma", row.wgmma), ("mma.sync", row.mma_sync),
                                            ("cp.async", row.cp_async), ("TMA", row.tma)) if used)
    tile = f"{row.block_m}x{row.block_n} w{row.warps} s{row.stages}"
    status = "ok" if row.ok else "FAIL: " + "; ".join(row.problems)
    return (f"{row.kernel:<8}{row.arch:<7}{row.dtype:<6}{row.head_dim:>4}  {tile:<15}{row.registers:>5}"
            f"{row.spill_store_bytes:>7}/{row.spill_load_bytes:<6}{row.shared_bytes / 1024:>8.1f}  {uses:<27}{status}")


HEADER = (f"{'kernel':<8}{'arch':<7}{'dtype':<6}{'hd':>4}  {'tile MxN':<15}{'regs':>5}{'spill st/ld':>13}"
          f"{'smem KiB':>9}  {'instructions':<27}status")


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, the module docstring kept as written."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_report", description=__doc__,
                                     formatter_class=_Formatter)
    parser.add_argument("--arch", nargs="+", choices=list(CAPABILITY), default=list(CAPABILITY),
                        help="targets: sm_90 (H100/H200, Hopper) and/or sm_80 (A100, Ampere)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                        help="input precisions")
    parser.add_argument("--head-dims", nargs="+", type=int, choices=HEAD_DIMS, default=list(HEAD_DIMS),
                        help="channels per head")
    parser.add_argument("--kernels", nargs="+", choices=tuning.KERNELS, default=list(tuning.KERNELS),
                        help="forward, dQ and/or dK/dV kernel")
    parser.add_argument("--kv-heads", type=int, choices=(1, 2, 4, 8, 16), default=LAUNCH["kv_heads"],
                        help=f"key/value heads shared by the launch's {LAUNCH['heads']} query heads: "
                             f"{LAUNCH['heads']} is multi-head attention (one head per group, which Triton "
                             "specialises), fewer is grouped-query")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="tiles compiled at once, one process each (each takes a CPU core and ~0.5 GB)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        raise ReportError("this Triton has no NVIDIA backend; install the triton wheel from PyPI") from None
    _attention_module()
    # Triton 3.9 warns when this is unset; 1 is its current default, the one the kernels run with.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    work = jobs(args.arch, args.dtypes, args.head_dims, args.kernels, args.kv_heads)
    launch = LAUNCH | {"kv_heads": args.kv_heads}
    if args.jobs == 1:
        rows = [_report_tile(job) for job in work]
    else:
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_report_tile, work))
    failed = sum(not row.ok for row in rows)
    if args.json:
        from triton.backends.nvidia.compiler import get_ptxas

        print(json.dumps({
            "triton": triton.__version__,
            "ptxas": {arch: get_ptxas(CAPABILITY[arch]).version for arch in args.arch},
            "launch": launch, "failed": failed,
            "tiles": [dataclasses.asdict(row) | {"ok": row.ok, "problems": row.problems} for row in rows],
        }, indent=1))
    else:
        print(HEADER)
        print("\n".join(format_row(row) for row in rows))
        print(f"\n{len(rows)} tiles, {failed} failed (triton {triton.__version__}; launch: {launch})")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GptmeterError as error:
        print(f"python -m bench.kernel_report: error: {error}", file=sys.stderr)
        sys.exit(2)
