"""Generate text from a trained checkpoint (or an untrained preset, to measure decoding speed).

    python sample.py                                   # newest checkpoint in out/tiny, unconditional
    python sample.py --prompt "def main(" --max-new-tokens 200
    echo "class Stack:" | python sample.py --temperature 0.8
    python sample.py --init random --preset gpt2 --num-samples 64 --max-new-tokens 128
    python sample.py --init path/to/gpt2 --prompt "Hello" --compile   # a local Hugging Face GPT-2 folder

Text goes to standard output (streamed when there is one sample); the timing line
(prefill and decode tokens/s) goes to standard error, so a pipe gets only text.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gpt.cli import (
    BOARD_WATTS_HELP,
    INIT_HELP,
    HelpFormatter,
    VOCAB_SIZE_HELP,
    add_shape_arguments,
    fail,
    model_vocab_size,
    non_negative_float,
    positive_float,
    positive_int,
    probability,
    pretrained_folder,
    resolve_device,
    resolve_dtype,
    use_device,
    shape_overrides,
)
from gpt.config import ATTENTION_BACKENDS, DTYPE_NAMES, PRESETS, SHAPE_ONLY_PRESETS, GPTConfig
from gpt.errors import ConfigError, GptmeterError
from gpt.files import check_output_file
from gpt.host_memory import keep_freed_memory
from gpt.memory import generation_bytes, require_fits
from gpt.rundir import newest_run, run_tokenizer
from gpt.tokenizer import TOKENIZERS, Tokenizer, folder_tokenizer, get_tokenizer

if TYPE_CHECKING:  # torch loads after the flags are parsed, so that --help answers at once
    import torch

    from gpt.model import GPT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Sample text from a gptmeter checkpoint and report prefill/decode tokens per second.",
        formatter_class=HelpFormatter,
    )
    source = parser.add_argument_group("model")
    source.add_argument("--out-dir", default="out/tiny",
                        help="run directory holding ckpt.pt (or an FSDP run's ckpt.dcp/), or a folder of numbered "
                        "runs (its newest is used)")
    source.add_argument("--init", metavar="random|PATH",
                        help=f"{INIT_HELP} instead of the checkpoint in --out-dir; random = an untrained model of "
                        "--preset's shape with the overrides below (for timing, no checkpoint needed); PATH = a "
                        "folder with config.json, model.safetensors or pytorch_model.bin, vocab.json, merges.txt")
    source.add_argument("--preset", default="tiny", choices=[p for p in PRESETS if p not in SHAPE_ONLY_PRESETS],
                        help="model shape for --init random")
    add_shape_arguments(source)
    source.add_argument("--vocab-size", type=positive_int, help="for --init random: " + VOCAB_SIZE_HELP)
    source.add_argument("--tokenizer", choices=TOKENIZERS,
                        help="for --init random (default: bytes for tiny, else cl100k); a checkpoint names its own, "
                        "a model folder brings its vocab.json and merges.txt")
    prompt = parser.add_argument_group("prompt (default: standard input if it is piped, else start from nothing)")
    prompt.add_argument("--prompt", help="prompt text")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from this file")
    generation = parser.add_argument_group("generation")
    generation.add_argument("--num-samples", type=positive_int, default=1,
                            help="samples, generated together as one batch")
    generation.add_argument("--max-new-tokens", type=positive_int, default=300, help="tokens to generate per sample")
    generation.add_argument("--temperature", type=non_negative_float, default=0.8,
                            help="softmax temperature; 0 = greedy (always the most likely token)")
    generation.add_argument("--top-k", type=positive_int, help="sample only among the k most likely tokens")
    generation.add_argument("--top-p", type=probability, help="nucleus sampling: smallest set with probability >= p")
    generation.add_argument("--seed", type=int, default=1337, help="random seed (same seed, same text)")
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES],
                     help="weights' dtype for inference; auto = bfloat16 on GPUs with native bf16 (compute "
                     "capability >= 8.0), float16 on older GPUs, float32 on CPU")
    run.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS, help="attention implementation")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the one-token decode step (CUDA graphs on GPUs), once per power-of-two "
                     "cache window the run reaches (32, 64, ... slots); compiled during the untimed warm-up, which "
                     "then takes a minute or so (docs/decoding.md has CPU timings)")
    run.add_argument("--board-watts", type=positive_float, help=BOARD_WATTS_HELP)
    run.add_argument("--profile-json", type=Path,
                     help="also write the measured prefill/decode figures (tokens/s, MFU, bandwidth utilisation, "
                     "J/token) to this JSON file, for python -m profiling scale --from")
    return parser


def load_model(args: argparse.Namespace, device: "torch.device") -> tuple["GPT", Tokenizer]:
    import torch

    from gpt.checkpoint import load_checkpoint
    from gpt.model import GPT, resolve_attention

    attention = resolve_attention(args.attention, device)
    folder = pretrained_folder(args.init)
    if args.init is not None and folder is None:  # random
        tokenizer = get_tokenizer(args.tokenizer or ("bytes" if args.preset == "tiny" else "cl100k"))
        vocab_size = model_vocab_size(args.vocab_size, tokenizer.vocab_size)
        config = GPTConfig.from_preset(args.preset, vocab_size=vocab_size, attention=attention, **shape_overrides(args))
        torch.manual_seed(args.seed)
        return GPT(config), tokenizer
    if shape_overrides(args):
        raise ConfigError("--layers, --width, --heads, --kv-heads and --block-size shape a model for --init random; "
                          "a checkpoint keeps its own shape")
    if folder is not None:
        model = GPT.from_pretrained(folder, attention)
        return model, get_tokenizer(args.tokenizer) if args.tokenizer else folder_tokenizer(folder)
    run_dir = newest_run(Path(args.out_dir))
    payload = load_checkpoint(run_dir, map_location="cpu")
    tokenizer = run_tokenizer(run_dir, payload["tokenizer"])
    model = GPT(GPTConfig(**{**payload["model_config"], "attention": attention}))
    model.load_state_dict(payload["model"])
    return model, tokenizer


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise ConfigError(f"prompt file {args.prompt_file} does not exist; pass an existing file to --prompt-file")
        try:
            return args.prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read --prompt-file {args.prompt_file} as UTF-8 text ({error})") from None
    try:
        piped = sys.stdin is not None and not sys.stdin.isatty()
        return sys.stdin.read() if piped else ""
    except (OSError, ValueError):  # a closed or unreadable standard input holds no prompt
        return ""


def encode_prompt(text: str, tokenizer: Tokenizer, block_size: int) -> list[int]:
    """Prompt ids, led by end-of-text as every training document is; cropped (with a warning) to the context."""
    ids = [tokenizer.eos_token] + tokenizer.encode(text)
    if len(ids) > block_size:
        print(f"sample.py: warning: the prompt has {len(ids)} tokens but the context holds {block_size}; "
              f"keeping the last {block_size}", file=sys.stderr)
        ids = ids[-block_size:]
    return ids


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        check_output_file(args.profile_json, "--profile-json")
        device = resolve_device(args.device)
        use_device(device)
        dtype = resolve_dtype(args.dtype, device)
        model, tokenizer = load_model(args, device)
        prompt_ids = encode_prompt(read_prompt(args), tokenizer, model.config.block_size)
        itemsize = 4 if dtype == "float32" else 2
        require_fits(generation_bytes(model.config, args.num_samples, len(prompt_ids) + args.max_new_tokens, itemsize),
                     device, f"{args.num_samples} samples of {len(prompt_ids) + args.max_new_tokens} tokens",
                     "lower --num-samples or --max-new-tokens")
    except GptmeterError as error:
        fail("sample.py", str(error))
    return generate(args, model, tokenizer, prompt_ids, device, dtype)


def generate(args: argparse.Namespace, model: "GPT", tokenizer: Tokenizer, prompt_ids: list[int],
             device: "torch.device", dtype: str) -> int:
    """Generate, stream or print the samples, report the timing, and write --profile-json."""
    import torch

    from gpt.generate import compile_steps
    from gpt.trainer import DTYPES
    from gpt.warmup import plan_warmup, warm_up
    from profiling.live import GenerationProfiler, describe_generation
    from profiling.meter import reset_peak_memory
    from profiling.rundir import write_profile

    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    idx = torch.tensor([prompt_ids] * args.num_samples, dtype=torch.long, device=device)
    # The profiler's set-up (reading the device profile and peaks) comes before the warm-up: right before the
    # timed prefill it left the host's caches cold and added a third to a small model's prefill (docs/benchmarks.md).
    profiler = GenerationProfiler(model.config, device, dtype, args.num_samples, len(prompt_ids), args.board_watts)
    warmup = plan_warmup(len(prompt_ids), args.max_new_tokens, model.config.block_size,
                         every_key=model.config.attention == "triton")
    warm_up(model, idx, warmup, args.temperature, args.top_k, args.top_p)  # compilation, first calls stay untimed
    if args.compile:  # and the compiled one-token step, for each cache window the run will use
        compile_steps(model, idx, args.max_new_tokens)
    reset_peak_memory(device)  # the peak the profile reports is the timed generation's
    generator = torch.Generator(device=device).manual_seed(args.seed)
    stream = args.num_samples == 1
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def on_tokens(columns: torch.Tensor) -> None:  # (B, n) new tokens, a chunk at a time: one host sync each
        profiler.on_tokens(columns.size(1))
        if stream:
            ids = [i for i in columns[0].tolist() if i != tokenizer.eos_token]
            sys.stdout.write(utf8.decode(tokenizer.decode_bytes(ids)))
            sys.stdout.flush()

    if stream:
        sys.stdout.write(tokenizer.decode(prompt_ids))
    profiler.start()
    out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, eos_token=tokenizer.eos_token, generator=generator, on_tokens=on_tokens,
                         compile=args.compile)
    profiler.stop()
    if stream:
        sys.stdout.write(utf8.decode(b"", final=True) + "\n")
    else:
        for row in out.tolist():
            sys.stdout.write(tokenizer.decode(row) + "\n" + "-" * 40 + "\n")
    profile = profiler.profile(model.config.to_dict(), warmup)
    profiler.close()
    print(describe_generation(profile), file=sys.stderr)
    if args.profile_json:
        write_profile(args.profile_json, profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
