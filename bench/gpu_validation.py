"""The predictor on reference profiles against published end-to-end GPU measurements.

No GPU was available to this project, so the reference profiles (datasheet × cited efficiencies,
profiling/device_profile.py) are checked against figures others measured and published. None of these
figures set a parameter of a reference profile (REFERENCE_FIGURES lists where each one came from).

Each case names the model shape, the per-GPU workload and the published throughput per GPU, with its
source. Caveats that are not modelled: data-parallel runs pay gradient all-reduce (mostly overlapped
with backward); llm.c is hand-written C/CUDA with fused kernels, nanoGPT uses torch.compile, gpt-fast
runs its decode step as a CUDA graph (so per-kernel host overhead does not apply: `graphed`), and
Llama-2-7B is stood in for by the gptmeter shape with the same layers, width, heads, vocabulary and
(within 1%) parameters.

    python -m bench.gpu_validation [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpt.config import GPTConfig
from gpt.files import write_json
from profiling import flops
from profiling.device_profile import graphed, reference_profile
from profiling.predict import predict_decode, predict_train


@dataclass(frozen=True)
class Case:
    name: str
    device: str  # hardware-table key
    model: dict  # GPTConfig fields
    mode: str  # train or decode
    workload: dict  # per GPU: batch, seq_len, grad_accum / prompt_tokens, new_tokens
    published_tokens_per_sec: float  # per GPU
    derivation: str  # how the per-GPU figure follows from what was published
    source: str
    software: str
    cuda_graphs: bool = False
    notes: str = ""


GPT2_124M = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
GPT2_1558M = dict(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600)
LLAMA2_7B_SHAPE = dict(vocab_size=32000, block_size=4096, n_layer=32, n_head=32, n_embd=4096, bias=False)

CASES = [
    Case("llm.c GPT-2 124M training", "a100-80gb", GPT2_124M, "train",
         dict(batch=64, seq_len=1024, grad_accum=1), 524288 / 8 / 0.300,
         "524,288 tokens per step on 8 GPUs in ~300 ms per step",
         "karpathy/llm.c scripts/run_gpt2_124M.sh (commit 039904e, 2024): '8X A100 80GB SXM ... steps in ~300ms/iter'",
         "llm.c C/CUDA, bf16, cuDNN attention"),
    Case("llm.c GPT-2 1558M training", "h100-sxm", GPT2_1558M, "train",
         dict(batch=16, seq_len=1024, grad_accum=8), 1048576 / 8 / 2.80,
         "1,048,576 tokens per step on 8 GPUs in 2.80 s per step",
         "karpathy/llm.c scripts/run_gpt2_1558M.sh (commit 039904e, 2024): 'on 8X H100 80GB SXM ... steps in 2.80s/iter'",
         "llm.c C/CUDA, bf16, cuDNN attention, ZeRO-1"),
    Case("nanoGPT GPT-2 124M training", "a100-40gb", GPT2_124M, "train",
         dict(batch=12, seq_len=1024, grad_accum=5), 600000 * 12 * 1024 * 40 / (4 * 86400) / 8,
         "600,000 steps of 12 x 1024 x 40 tokens (config/train_gpt2.py) in 'about 4 days' on 8 GPUs",
         "karpathy/nanoGPT README ('a single 8XA100 40GB node in about 4 days of training') and "
         "config/train_gpt2.py (2023)",
         "PyTorch 2.0, torch.compile, bf16 autocast, flash SDPA",
         notes="'about 4 days' is rounded: read the figure as +-10%"),
    Case("gpt-fast Llama-2-7B decode, batch 1", "a100-80gb", LLAMA2_7B_SHAPE, "decode",
         dict(batch=1, prompt_tokens=5, new_tokens=200), 104.9,
         "published tokens/s at batch 1 (prompt of 5 tokens), one GPU",
         "pytorch-labs/gpt-fast README, Benchmarks table (A100-80GB power-limited to 330 W), 'Llama-2-7B Base "
         "104.9 tokens/s, 1397 GB/s' (Dec 2023)",
         "PyTorch, torch.compile(mode='reduce-overhead'): CUDA graphs, bf16", cuda_graphs=True,
         notes="Llama-2-7B stood in for by a GPT of its layers, width, heads and vocabulary (6.6B vs 6.7B params)"),
]


@dataclass
class Result:
    case: Case
    predicted_tokens_per_sec: float
    mfu: float
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def error(self) -> float:
        return (self.predicted_tokens_per_sec - self.case.published_tokens_per_sec) / self.case.published_tokens_per_sec


def predict_case(case: Case) -> Result:
    config = GPTConfig(**case.model)
    profile = reference_profile(case.device, "bf16")
    if case.cuda_graphs:
        profile = graphed(profile)
    w = case.workload
    if case.mode == "train":
        prediction = predict_train(config, w["batch"], w["seq_len"], w["grad_accum"], profile)
    else:
        prediction = predict_decode(config, w["batch"], w["prompt_tokens"], w["new_tokens"], profile)
    return Result(case, prediction.tokens_per_sec, prediction.mfu, prediction.breakdown)


def format_results(results: list[Result]) -> str:
    lines = [f"{'case':<38} {'device':<10} {'published':>10} {'predicted':>10} {'error':>7} {'MFU':>6}"]
    for r in results:
        lines.append(f"{r.case.name:<38} {r.case.device:<10} {r.case.published_tokens_per_sec:>10,.1f} "
                     f"{r.predicted_tokens_per_sec:>10,.1f} {100 * r.error:>+6.1f}% {r.mfu:>6.1%}")
    errors = [abs(r.error) for r in results]
    lines.append(f"median |error| {statistics.median(errors):.1%}, max {max(errors):.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_validation", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the cases and predictions as JSON")
    args = parser.parse_args(argv)
    results = [predict_case(case) for case in CASES]
    print(format_results(results))
    if args.json:
        rows = [{"case": asdict(r.case), "params": flops.param_count(GPTConfig(**r.case.model)),
                 "predicted_tokens_per_sec": r.predicted_tokens_per_sec, "error": r.error, "mfu": r.mfu,
                 "breakdown": r.breakdown} for r in results]
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
