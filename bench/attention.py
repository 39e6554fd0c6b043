"""Attention benchmark: our Triton kernel against PyTorch's attention backends, in one run.

    python -m bench.attention            # full sweep (CUDA only; tens of minutes: autotuning per shape)
    python -m bench.attention --quick    # bf16, causal, head dims 64 and 128, three lengths
    python -m bench.attention --cpu-smoke --out-dir /tmp/x   # tiny, Triton interpreter: checks the plumbing

Shapes follow the FlashAttention papers and the Triton tutorial: a fixed number of
tokens per batch (batch = tokens / seq) and a fixed hidden size (heads = hidden /
head_dim). FLOPs follow the same convention: 4·B·H·T²·D per forward (two matmuls,
2 FLOPs per multiply-add), halved when causal (only the lower triangle is
computed), and backward = 2.5 × forward (five matmuls instead of two).

A shape whose tensors would not fit in the device's free memory is skipped with the reason printed
and recorded (bench/_memory.py). Every provider's output is checked on each shape before it is timed, against a
float64 reference on the first (batch, head) slice; ours is also checked on all
three gradients. Results go to bench/results/attention-<device>-<time>.json (rewritten
after each shape, so an interrupted run keeps what it measured), a PNG plot beside
it, and a markdown table on stdout for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from bench._memory import skip_reason
from gpt.files import write_json
from gpt.cli import positive_int

MODES = ("fwd", "bwd", "fwd+bwd")
BASELINE = "sdpa-default"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FLOP_CONVENTION = ("4*B*H*T^2*D per forward (2 FLOPs per multiply-add), x0.5 when causal; "
                   "backward = 2.5 x forward")
# Our kernel's error against float64 may be at most this multiple of SDPA-default's
# error at the same precision, plus a floor (the FlashAttention tests' criterion).
ERROR_FACTOR, ERROR_FLOOR = 3.0, 1e-3


@dataclasses.dataclass(frozen=True)
class Shape:
    dtype: str
    head_dim: int
    causal: bool
    seq: int
    batch: int
    heads: int

    @property
    def label(self) -> str:
        return f"{self.dtype} D={self.head_dim} {'causal' if self.causal else 'full'} T={self.seq}"


def forward_flops(shape: Shape) -> float:
    full = 4 * shape.batch * shape.heads * shape.seq * shape.seq * shape.head_dim
    return full / 2 if shape.causal else full


def mode_flops(shape: Shape, mode: str) -> float:
    return forward_flops(shape) * {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[mode]


def sweep(tokens: int, hidden: int, dtypes: list[str], head_dims: list[int], causal: list[bool],
          seqs: list[int]) -> list[Shape]:
    shapes = []
    for dtype in dtypes:
        for head_dim in head_dims:
            for is_causal in causal:
                for seq in seqs:
                    if tokens % seq or hidden % head_dim:
                        raise SystemExit(f"error: tokens ({tokens}) must be a multiple of every --seq-lens value "
                                         f"and hidden ({hidden}) of every --head-dims value")
                    shapes.append(Shape(dtype, head_dim, is_causal, seq, tokens // seq, hidden // head_dim))
    return shapes


# --------------------------------------------------------------------------- providers
#
# A provider maps (q, k, v) to the attention output. Construction may fail (a backend
# absent from this build or GPU); the reason is reported instead of a number.

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def build_providers(shape: Shape, device: str, include_naive: bool) -> dict[str, Attention | str]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels import attention_reference, flash_attention

    causal = shape.causal
    providers: dict[str, Attention | str] = {
        "triton (ours)": lambda q, k, v: flash_attention(q, k, v, causal=causal),
        BASELINE: lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    }

    def sdpa_with(backend):
        def attend(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return attend

    for name, backend in (("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-efficient", "EFFICIENT_ATTENTION"),
                          ("sdpa-cudnn", "CUDNN_ATTENTION")):
        member = getattr(SDPBackend, backend, None)
        providers[name] = sdpa_with(member) if member is not None else f"SDPBackend.{backend} not in this torch"
    providers["flex (compiled)"] = _flex_provider(shape, device)
    providers["naive"] = (lambda q, k, v: attention_reference(q, k, v, causal=causal)) if include_naive \
        else "skipped: score matrix too large for memory"
    return providers


def _flex_provider(shape: Shape, device: str) -> Attention | str:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as error:
        return f"flex_attention unavailable: {error}"
    if device != "cuda":
        return "flex_attention compiled needs CUDA here"
    block_mask = None
    if shape.causal:
        block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None,
                                       shape.seq, shape.seq, device=device)
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def naive_fits(shape: Shape, device: str) -> bool:
    """The reference keeps a few (B, H, T, T) matrices alive through backward; allow it half the free memory."""
    if device != "cuda":
        return True
    element_bytes = torch.finfo(DTYPES[shape.dtype]).bits // 8
    needed = 6 * shape.batch * shape.heads * shape.seq * shape.seq * element_bytes
    free, _ = torch.cuda.mem_get_info()
    return needed < free / 2


# --------------------------------------------------------------------------- correctness


def _max_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return (got.double() - exact).abs().max().item()


def check_correctness(shape: Shape, providers: dict[str, Attention | str], q, k, v, grad_out) -> dict[str, str]:
    """Each provider's output (and our gradients) on slice [0, 0] against float64.

    Returns provider name -> "ok", "incorrect: ..." or "unavailable: ...".
    """
    from kernels import attention_reference

    def first_slice(t):
        return t[:1, :1].detach()

    exact_leaves = [first_slice(t).double().requires_grad_() for t in (q, k, v)]
    exact = attention_reference(*exact_leaves, causal=shape.causal)
    exact.backward(first_slice(grad_out).double())
    exact_grads = [t.grad for t in exact_leaves]

    def output_and_grads(attend):
        leaves = [first_slice(t).requires_grad_() for t in (q, k, v)]
        out = attend(*leaves)
        out.backward(first_slice(grad_out))
        return [out.detach()] + [t.grad for t in leaves]

    baseline = output_and_grads(providers[BASELINE])
    allowed = [ERROR_FACTOR * _max_error(b, e) + ERROR_FLOOR for b, e in zip(baseline, [exact] + exact_grads)]
    verdicts = {}
    for name, attend in providers.items():
        if isinstance(attend, str):
            continue
        try:
            results = output_and_grads(attend)
        except Exception as error:  # a backend rejecting this shape/GPU: report it, keep going
            verdicts[name] = f"unavailable: {_first_line(error)}"
            continue
        checked = results if name == "triton (ours)" else results[:1]
        failures = [
            f"{what} error {_max_error(got, want):.2e} > {limit:.2e}"
            for what, got, want, limit in zip(("out", "dq", "dk", "dv"), checked, [exact] + exact_grads, allowed)
            if not torch.isfinite(got).all() or _max_error(got, want) > limit
        ]
        verdicts[name] = "ok" if not failures else "incorrect: " + "; ".join(failures)
    return verdicts


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


# --------------------------------------------------------------------------- timing


def cuda_timer(fn: Callable[[], object], grad_to_none: list[torch.Tensor]) -> float:
    """Median milliseconds per call: CUDA events via triton.testing.do_bench, which flushes L2 between calls."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def wall_timer(fn: Callable[[], object], grad_to_none: list[torch.Tensor]) -> float:
    """Median wall-clock milliseconds of three calls in the Triton interpreter: NOT a performance figure."""
    samples = []
    for _ in range(3):
        for t in grad_to_none:
            t.grad = None
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def time_provider(attend: Attention, q, k, v, grad_out, timer) -> dict[str, float]:
    leaves = [q, k, v]
    out = attend(q, k, v)
    return {
        "fwd": timer(lambda: attend(q, k, v), leaves),
        "bwd": timer(lambda: out.backward(grad_out, retain_graph=True), leaves),
        "fwd+bwd": timer(lambda: attend(q, k, v).backward(grad_out), leaves),
    }


# --------------------------------------------------------------------------- one shape


def case_bytes(shape: Shape) -> int:
    """Memory a shape's case needs at once: q, k, v, dO, the output, dq, dk, dv and as many backward temporaries."""
    return 12 * shape.batch * shape.heads * shape.seq * shape.head_dim * torch.finfo(DTYPES[shape.dtype]).bits // 8


def run_shape(shape: Shape, device: str, timer) -> list[dict]:
    reason = skip_reason(shape.label, case_bytes(shape), torch.device(device))
    if reason:
        print(f"  {reason}", file=sys.stderr, flush=True)
        return [{**dataclasses.asdict(shape), "provider": "triton (ours)", "status": reason}]
    generator = torch.Generator(device=device).manual_seed(0)
    dtype = DTYPES[shape.dtype]

    def normal():
        return torch.randn(shape.batch, shape.heads, shape.seq, shape.head_dim, generator=generator,
                           device=device, dtype=dtype)

    q, k, v, grad_out = (normal() for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    providers = build_providers(shape, device, naive_fits(shape, device))
    verdicts = check_correctness(shape, providers, q, k, v, grad_out)
    records = []
    for name, attend in providers.items():
        record = {**dataclasses.asdict(shape), "provider": name}
        if isinstance(attend, str):
            record["status"] = attend
        elif verdicts[name] != "ok":
            record["status"] = verdicts[name]
        else:
            try:
                milliseconds = time_provider(attend, q, k, v, grad_out, timer)
            except Exception as error:  # e.g. out of memory for one peer: report it, keep going
                record["status"] = f"failed while timing: {_first_line(error)}"
            else:
                record["status"] = "ok"
                for mode, ms in milliseconds.items():
                    record[f"{mode}_ms"] = ms
                    record[f"{mode}_tflops"] = mode_flops(shape, mode) / (ms * 1e-3) / 1e12
        records.append(record)
        if device == "cuda":
            torch.cuda.empty_cache()
    return records


# --------------------------------------------------------------------------- reporting


def _cell(record: dict | None, modes=("fwd", "bwd")) -> str:
    if record is None or record["status"] != "ok":
        return "n/a"
    return " / ".join(f"{record[f'{m}_tflops']:.1f}" for m in modes)


def _ratio(ours: dict | None, other: dict | None) -> str:
    if not ours or not other or ours["status"] != "ok" or other["status"] != "ok":
        return "n/a"
    return " / ".join(f"{ours[f'{m}_tflops'] / other[f'{m}_tflops']:.2f}" for m in ("fwd", "bwd"))


def markdown_table(records: list[dict], meta: dict) -> str:
    """One row per shape: TFLOP/s as 'fwd / bwd' per provider, and our ratios to SDPA-default and Flex."""
    providers = list(dict.fromkeys(r["provider"] for r in records))
    others = [p for p in providers if p != "triton (ours)"]
    lines = [
        f"Device: {meta['device']} · date: {meta['date']} · torch {meta['torch']} · triton {meta['triton']}",
        f"Command: `{meta['command']}`",
        f"Timer: {meta['timer']}",
        f"TFLOP/s as fwd / bwd; FLOPs: {FLOP_CONVENTION}. Ratios are ours ÷ peer (> 1: ours faster).",
        "",
        "| shape | B×H | ours | ÷ " + BASELINE + " | ÷ flex | " + " | ".join(others) + " |",
        "|---|---|---|---|---|" + "---|" * len(others),
    ]
    by_shape: dict[str, dict[str, dict]] = {}
    for r in records:
        shape = Shape(**{f.name: r[f.name] for f in dataclasses.fields(Shape)})
        by_shape.setdefault(shape.label, {})[r["provider"]] = r
    for label, row in by_shape.items():
        any_record = next(iter(row.values()))
        ours = row.get("triton (ours)")
        cells = [label, f"{any_record['batch']}×{any_record['heads']}", _cell(ours),
                 _ratio(ours, row.get(BASELINE)), _ratio(ours, row.get("flex (compiled)"))]
        cells += [_cell(row.get(p)) for p in others]
        lines.append("| " + " | ".join(cells) + " |")
    problems = sorted({(r["provider"], r["status"]) for r in records if r["status"] != "ok"})
    if problems:
        lines += ["", "Not measured:"] + [f"- {provider}: {status}" for provider, status in problems]
    return "\n".join(lines)


def plot(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["dtype"], r["head_dim"], r["causal"]) for r in records))
    fig, axes = plt.subplots(len(groups), len(MODES), figsize=(5 * len(MODES), 3.2 * len(groups)), squeeze=False)
    for row, (dtype, head_dim, causal) in enumerate(groups):
        for col, mode in enumerate(MODES):
            ax = axes[row][col]
            group = [r for r in records if (r["dtype"], r["head_dim"], r["causal"]) == (dtype, head_dim, causal)
                     and r["status"] == "ok"]
            for provider in dict.fromkeys(r["provider"] for r in group):
                points = sorted((r["seq"], r[f"{mode}_tflops"]) for r in group if r["provider"] == provider)
                ax.plot(*zip(*points), marker="o", label=provider)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length (tokens)")
            ax.set_ylabel("TFLOP/s")
            ax.set_title(f"{mode}: {dtype}, head_dim {head_dim}, {'causal' if causal else 'non-causal'}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.attention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=positive_int, default=16384,
                        help="tokens per batch, batch × seq (default 16384)")
    parser.add_argument("--hidden", type=positive_int, default=2048,
                        help="model width in channels, heads × head_dim (default 2048)")
    parser.add_argument("--head-dims", type=positive_int, nargs="+", default=[64, 128],
                        help="channels per head (default 64 128)")
    parser.add_argument("--seq-lens", type=positive_int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384],
                        help="sequence lengths in tokens (default 512 … 16384)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                        help="input precisions (default bf16 fp16)")
    parser.add_argument("--masks", nargs="+", choices=["causal", "full"], default=["causal", "full"],
                        help="causal and/or non-causal attention (default both)")
    parser.add_argument("--quick", action="store_true",
                        help="small subset: bf16, causal, head dims 64 and 128, seq 1024 4096 16384")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results",
                        help="where the JSON and PNG go (default bench/results)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny shapes in Triton's CPU interpreter; checks correctness and the report, "
                             "its timings are not performance figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.dtypes, args.masks, args.seq_lens = ["bf16"], ["causal"], [1024, 4096, 16384]
    if args.cpu_smoke:
        args.tokens, args.hidden, args.head_dims, args.seq_lens, args.dtypes = 64, 32, [16], [32], ["fp16"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before `kernels` is imported: Triton reads it at decoration
        device, timer = "cpu", wall_timer
    elif torch.cuda.is_available():
        device, timer = "cuda", cuda_timer
    else:
        print("error: the attention benchmark needs a CUDA GPU; use --cpu-smoke to check it on CPU", file=sys.stderr)
        return 2
    import triton

    import kernels  # noqa: F401  (imported here, after TRITON_INTERPRET is settled)

    if args.cpu_smoke and not sys.modules["kernels.fused_attention"].INTERPRETED:
        print("error: --cpu-smoke needs `kernels` imported after TRITON_INTERPRET=1; run it in a fresh process",
              file=sys.stderr)
        return 2
    shapes = sweep(args.tokens, args.hidden, args.dtypes, args.head_dims,
                   [m == "causal" for m in args.masks], args.seq_lens)
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter smoke run)"
    now = dt.datetime.now(dt.timezone.utc)
    meta = {
        "device": device_name, "date": now.strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda,
        "command": "python -m bench.attention " + " ".join(sys.argv[1:] if argv is None else argv),
        "flop_convention": FLOP_CONVENTION, "timer": timer.__doc__.strip(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"attention-{re.sub(r'[^A-Za-z0-9]+', '-', device_name).strip('-')}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    json_path, png_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.png"
    records: list[dict] = []
    for index, shape in enumerate(shapes, 1):
        print(f"[{index}/{len(shapes)}] {shape.label}", file=sys.stderr, flush=True)
        records += run_shape(shape, device, timer)
        write_json(json_path, {"meta": meta, "results": records})
    if not args.no_plot:
        plot(records, png_path, f"{device_name} · torch {meta['torch']} · triton {meta['triton']} · {meta['date']}")
    print(markdown_table(records, meta))
    print(f"\nwrote {json_path}" + ("" if args.no_plot else f" and {png_path}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
