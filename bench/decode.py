"""Decode speed side by side with Hugging Face `generate`, in one process, same weights, same shape.

For each shape and batch, one set of random weights is loaded into gptmeter's GPT and, through
a GPT-2 export (gpt/hf.py), into transformers' GPT2LMHeadModel (SDPA attention, its KV cache).
Each contender generates the same number of greedy tokens from the same prompt; the rounds are
interleaved, the order reversed every other round (A, B, C, C, B, A, ...), so that a neighbour's
load on a shared machine hits all of them alike. The ratio to transformers is taken per round
(the two runs of a round are seconds apart) and reported as the median and range over rounds;
tokens/s is each contender's median. Before timing, the greedy tokens of every contender are
compared with each other.

tokens/s counts new tokens over the whole `generate` call (a short prompt's prefill included,
for everyone). Bandwidth utilisation is the bytes a decode step must read (weights + the KV
cache at its average length, profiling.flops.decode_bytes_per_step) times steps per second,
over the copy bandwidth (read + write, the figure the profiler uses on CPUs), and also over
the read-only bandwidth (summing a buffer): a decode step only reads. Both are measured in this
process (profiling.microbench's fastest-batch timer, 128 MiB buffers) just before and just
after each row's rounds, and the better of the two is kept. Where the last-level cache is as
large as the weights (this project's VM reports a 260 MiB L3, shared with the host's other
tenants, for 120 MB of 30M fp32 weights), both "bandwidths" are partly cache bandwidth and
move with what the neighbours evict; the environment records the cache's size.

With --profile-step it also shows where gptmeter's eager one-token step spends its time
(torch.profiler's busiest operators) beside the time to merely read every weight once.

    python -m bench.decode [--shapes tiny 30m] [--batches 1 16] [--compile] [--profile-step] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from gpt.cli import fail, positive_int
from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from gpt.files import atomic_write_text
from gpt.generate import decoding_head, one_token_step
from gpt.host_memory import keep_freed_memory
from gpt.model import GPT, KVCache
from profiling import flops
from profiling.hardware import device_name
from profiling.microbench import STREAM_BYTES, seconds_per_call, stream_copy

ROOF_BYTES = STREAM_BYTES  # 128 MiB buffers, the profile's streaming copy: far beyond the caches

SHAPES = {
    "tiny": GPTConfig.from_preset("tiny"),  # 0.8M parameters, byte vocabulary
    "30m": GPTConfig(vocab_size=50257, block_size=256, n_layer=6, n_head=6, n_embd=384),  # 30.0M, GPT-2 vocabulary
    "toy": GPTConfig(vocab_size=97, block_size=32, n_layer=1, n_head=2, n_embd=16),  # for the test
}
PROMPT_TOKENS = 16


def _transformers():
    """The transformers package, or bad input: the one-line message says how to install one that imports here."""
    try:
        import transformers
    except ImportError as error:
        # From 5.25 transformers imports Hugging Face's `kernels` package at start-up, and run from this
        # repository that name is this project's own kernels/ (the Triton kernels).
        raise GptmeterError(f"the contender transformers does not import ({error}); install the tested range: "
                            "pip install -e '.[test]' (transformers 4.45 to 5.24)") from error
    return transformers


def _hf_twin(model: GPT):
    """transformers' GPT2LMHeadModel with `model`'s weights, SDPA attention."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(Path(folder) / "model", eos_token=model.config.vocab_size - 1)
        return _transformers().GPT2LMHeadModel.from_pretrained(Path(folder) / "model",
                                                                attn_implementation="sdpa").eval()


def contenders(model: GPT, new_tokens: int, compile: bool) -> dict:
    """name -> function(prompt) returning (B, prompt + new) greedy tokens."""
    hf = _hf_twin(model)

    def huggingface(prompt: torch.Tensor) -> torch.Tensor:
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                           pad_token_id=model.config.vocab_size - 1)

    runs = {"gptmeter": lambda prompt: model.generate(prompt, new_tokens, temperature=0)}
    if compile:
        runs["gptmeter compiled"] = lambda prompt: model.generate(prompt, new_tokens, temperature=0, compile=True)
    runs["transformers"] = huggingface
    return runs


@torch.no_grad()
def roofs() -> tuple[float, float]:
    """Copy (bytes read + written) and read-only (summing a buffer) bandwidth of this CPU, bytes/s, measured now."""
    cpu = torch.device("cpu")
    source = torch.ones(ROOF_BYTES // 4)
    return stream_copy(cpu, "fp32")["bytes_per_sec"], ROOF_BYTES / seconds_per_call(source.sum, cpu)


def measure(shape: str, batch: int, new_tokens: int, rounds: int, compile: bool) -> dict:
    config = SHAPES[shape]
    if PROMPT_TOKENS + new_tokens > config.block_size:
        raise GptmeterError(f"--new-tokens {new_tokens} + a {PROMPT_TOKENS}-token prompt exceed the {shape} "
                            f"context of {config.block_size}; ask for fewer")
    torch.manual_seed(0)
    model = GPT(config).eval()
    prompt = torch.randint(config.vocab_size - 1, (batch, PROMPT_TOKENS))
    runs = contenders(model, new_tokens, compile)
    outputs = {name: run(prompt) for name, run in runs.items()}  # warm-up (and compilation), and the check
    reference = outputs["gptmeter"]
    agree = {name: bool(torch.equal(out, reference)) for name, out in outputs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    before = roofs()
    for round_ in range(rounds):
        for name in list(runs)[:: 1 if round_ % 2 == 0 else -1]:
            started = time.perf_counter()
            runs[name](prompt)
            seconds[name].append(time.perf_counter() - started)
    # A neighbour's load lowers a bandwidth measurement as it lowers the rounds: keep the better of the two.
    copy_bandwidth, read_bandwidth = (max(pair) for pair in zip(before, roofs()))
    contexts = range(PROMPT_TOKENS + 1, PROMPT_TOKENS + new_tokens)
    bytes_per_step = statistics.fmean(flops.decode_bytes_per_step(config, c, batch, weight_dtype="fp32")
                                      for c in contexts)
    results = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        ratios = [hf / ours for hf, ours in zip(seconds["transformers"], times)]  # per round: > 1 is faster than HF
        results[name] = {
            "tokens_per_sec": batch * new_tokens / median,
            "median_seconds": median,
            "seconds": times,
            "vs_transformers": statistics.median(ratios),
            "vs_transformers_rounds": ratios,
            "bandwidth_utilisation": bytes_per_step * new_tokens / median / copy_bandwidth,
            "read_bandwidth_utilisation": bytes_per_step * new_tokens / median / read_bandwidth,
            "greedy_tokens_equal_gptmeter": agree[name],
        }
    return {"shape": shape, "params": model.num_params(), "batch": batch, "prompt_tokens": PROMPT_TOKENS,
            "new_tokens": new_tokens, "config": config.to_dict(), "decode_bytes_per_step": bytes_per_step,
            "decode_bytes_per_token": bytes_per_step / batch,
            "copy_bandwidth_bytes_per_s": copy_bandwidth, "read_bandwidth_bytes_per_s": read_bandwidth,
            "results": results}


def last_level_cache() -> str | None:
    """Size of the CPU's largest cache as Linux reports it (e.g. "266240K"), None where unknown."""
    levels = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"),
                    key=lambda index: int((index / "level").read_text()))
    return (levels[-1] / "size").read_text().strip() if levels else None


@torch.no_grad()
def profile_step(shape: str, batch: int, context: int, top: int = 8) -> dict:
    """Where one eager decode step's time goes: torch.profiler's busiest operators (self time per step),
    beside the step's time and the time to merely read every weight once (summing each) in this process."""
    from torch.profiler import ProfilerActivity, profile

    config = SHAPES[shape]
    torch.manual_seed(0)
    model = GPT(config).eval()
    cache = KVCache(config, batch, capacity=context + 1)
    model(torch.randint(config.vocab_size, (batch, context)), cache=cache)
    token = torch.zeros(batch, 1, dtype=torch.long)
    head = decoding_head(model, batch)  # as generate decodes

    def step() -> None:  # the decode step at `context`, again and again
        cache.pos.fill_(context)
        one_token_step(model, token, cache, head)

    cpu, steps = torch.device("cpu"), 20
    step_seconds = seconds_per_call(step, cpu)
    read_seconds = seconds_per_call(lambda: [p.sum() for p in model.parameters()], cpu)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    busiest = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"shape": shape, "batch": batch, "context": context, "step_seconds": step_seconds,
            "weight_read_seconds": read_seconds,
            "operators": [{"name": e.key, "calls_per_step": e.count / steps,
                           "self_seconds_per_step": e.self_cpu_time_total / 1e6 / steps} for e in busiest]}


def format_profile(entry: dict) -> str:
    lines = [f"{entry['shape']} batch {entry['batch']}, context {entry['context']}: eager step "
             f"{entry['step_seconds'] * 1e3:.2f} ms; reading every weight once {entry['weight_read_seconds'] * 1e3:.2f} "
             "ms; busiest operators under torch.profiler (self ms per step, calls per step):"]
    lines += [f"    {op['name']:<52} {op['self_seconds_per_step'] * 1e3:>7.3f} {op['calls_per_step']:>6.1f}"
              for op in entry["operators"]]
    return "\n".join(lines)


def environment(threads: int, command: list[str]) -> dict:
    transformers = _transformers()
    return {"device": device_name("cpu"), "last_level_cache": last_level_cache(), "threads": threads,
            "date": datetime.now(timezone.utc).isoformat(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "dtype": "float32", "command": "python -m bench.decode " + " ".join(command)}


def format_table(report: dict) -> str:
    lines = [f"{'shape':<6} {'params':>7} {'batch':>5} {'MB/tok':>7}  {'contender':<18} {'tok/s':>9} {'vs HF':>6} "
             f"{'(rounds)':>13} {'of copy':>8} {'of read':>8}"]
    for row in report["rows"]:
        for name, r in row["results"].items():
            differ = "" if r["greedy_tokens_equal_gptmeter"] else "  (greedy tokens differ)"
            spread = f"{min(r['vs_transformers_rounds']):.2f}-{max(r['vs_transformers_rounds']):.2f}"
            lines.append(f"{row['shape']:<6} {row['params'] / 1e6:>6.1f}M {row['batch']:>5} "
                         f"{row['decode_bytes_per_token'] / 1e6:>7.2f}  {name:<18} {r['tokens_per_sec']:>9,.0f} "
                         f"{r['vs_transformers']:>5.2f}x {spread:>13} {r['bandwidth_utilisation']:>8.1%} "
                         f"{r['read_bandwidth_utilisation']:>8.1%}{differ}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "30m"], choices=list(SHAPES),
                        help="model shapes: tiny (0.8M parameters) and 30m (30.0M, vocabulary 50,257)")
    parser.add_argument("--batches", nargs="+", type=positive_int, default=[1, 16], help="sequences per batch")
    parser.add_argument("--new-tokens", type=positive_int, default=96, help="tokens generated per sequence")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="timed rounds per contender (medians kept; the ratio to transformers per round)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's, all cores)")
    parser.add_argument("--compile", action="store_true",
                        help="also time gptmeter with its compiled one-token step (compiles for about a minute)")
    parser.add_argument("--profile-step", action="store_true",
                        help="also profile gptmeter's eager one-token step of each shape and batch (torch.profiler) "
                        "at the average context, beside the time to read every weight once")
    parser.add_argument("--json", type=Path, help="also write the raw results to this JSON file")
    args = parser.parse_args(argv)
    keep_freed_memory()  # for every contender: the setting is the process's
    if args.threads:
        torch.set_num_threads(args.threads)
    command = sys.argv[1:] if argv is None else argv
    try:
        report = {"environment": environment(torch.get_num_threads(), command), "rows": []}
        for shape in args.shapes:
            for batch in args.batches:
                report["rows"].append(measure(shape, batch, args.new_tokens, args.rounds, args.compile))
                print(format_table({"rows": report["rows"][-1:]}).split("\n", 1)[1], file=sys.stderr)
        if args.profile_step:
            context = PROMPT_TOKENS + args.new_tokens // 2
            report["step_profiles"] = [profile_step(shape, batch, context)
                                       for shape in args.shapes for batch in args.batches]
    except GptmeterError as error:
        fail("bench.decode", str(error))
    print(format_table(report))
    for entry in report.get("step_profiles", []):
        print(format_profile(entry))
    copy = max(row["copy_bandwidth_bytes_per_s"] for row in report["rows"])
    read = max(row["read_bandwidth_bytes_per_s"] for row in report["rows"])
    print(f"bandwidth (best of each row's before and after): copy {copy / 1e9:.1f} GB/s (read + write), read-only "
          f"{read / 1e9:.1f} GB/s; {report['environment']['device']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
