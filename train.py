"""Train a GPT. With no flags: the `tiny` preset on the Python standard library's source, byte tokenizer.

    python train.py                                  # a few minutes on a laptop CPU
    python train.py --preset gpt2 --device cuda      # GPT-2 124M with bf16 autocast
    python train.py --resume --out-dir out/tiny      # continue where a run stopped
    python train.py --init path/to/gpt2 --data my.txt --out-dir out/ft   # fine-tune a Hugging Face GPT-2 folder

Writes into --out-dir: ckpt.pt (+ meta.json), config.json and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tqdm import tqdm

from gpt.checkpoint import CheckpointError, load_checkpoint
from gpt.cli import (
    BOARD_WATTS_HELP,
    HelpFormatter,
    VOCAB_SIZE_HELP,
    fail,
    init_source,
    model_vocab_size,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_device,
    resolve_dtype,
)
from gpt.config import ATTENTION_BACKENDS, PRESETS, SHAPE_ONLY_PRESETS, GPTConfig
from gpt.data import DataError, load_data
from gpt.model import GPT, resolve_attention
from gpt.tokenizer import TOKENIZERS, TokenizerUnavailable, folder_tokenizer, get_tokenizer
from gpt.trainer import DTYPES, PRESET_TRAIN_DEFAULTS, Trainer, TrainConfig, TrainingStopped
from profiling.live import TrainingProfiler

DEFAULT_OUT_DIR = "out/{preset}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a GPT from scratch and log tokens/s, loss and checkpoints to a run directory.",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--init", default="random", type=init_source("random"), metavar="{random,PATH}",
                       help="random = new weights of --preset's shape; or PATH of a Hugging Face GPT-2 folder "
                       "(config.json, model.safetensors or pytorch_model.bin, vocab.json, merges.txt) to fine-tune, "
                       "whose shape and tokenizer the run then uses")
    model.add_argument("--preset", default="tiny", choices=[p for p in PRESETS if p not in SHAPE_ONLY_PRESETS],
                       help="model shape (gpt/config.py)")
    model.add_argument("--block-size", type=positive_int, help="context length in tokens (default: the preset's)")
    model.add_argument("--vocab-size", type=positive_int, help=VOCAB_SIZE_HELP)
    model.add_argument("--dropout", type=non_negative_float, default=0.0, help="dropout probability")
    model.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS,
                       help="attention implementation; auto = SDPA, or our Triton kernel on GPUs where it measured faster")
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="text file, folder of text files, or folder with train.bin/val.bin "
                      "(default: the Python standard library's source)")
    data.add_argument("--tokenizer", choices=TOKENIZERS,
                      help="default: bytes for the tiny preset, cl100k otherwise; sets the model's vocabulary size")
    run = parser.add_argument_group("run")
    run.add_argument("--out-dir", help="run directory for checkpoints and logs "
                     "(default: out/<preset>, or out/<folder>-finetune with --init PATH)")
    run.add_argument("--resume", action="store_true", help="continue from --out-dir/ckpt.pt")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                     help="autocast compute dtype; auto = bfloat16 on recent GPUs, float32 on CPU")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    run.add_argument("--seed", type=int, help="random seed for weights, batches and dropout (default 1337)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")
    run.add_argument("--peak-tflops", type=positive_float,
                     help="peak dense TFLOP/s (1e12 FLOP/s) to compute MFU against, for a GPU outside "
                     "profiling/hardware.py's table (default: that table's datasheet figure)")
    run.add_argument("--board-watts", type=positive_float, help=BOARD_WATTS_HELP)
    optim = parser.add_argument_group("optimisation (defaults: generic; tiny preset in brackets; gpt/trainer.py)")
    flags = {
        "max_iters": (positive_int, "optimizer steps in the whole run"),
        "batch_size": (positive_int, "sequences per micro-batch"),
        "grad_accum": (positive_int, "micro-batches per optimizer step"),
        "learning_rate": (positive_float, "peak learning rate, reached after warm-up"),
        "min_lr": (non_negative_float, "learning rate at the end of the cosine decay"),
        "warmup_iters": (non_negative_int, "steps of linear warm-up"),
        "beta1": (positive_float, "AdamW first-moment decay"),
        "beta2": (positive_float, "AdamW second-moment decay"),
        "weight_decay": (non_negative_float, "AdamW decoupled weight decay (matrices and embeddings only)"),
        "grad_clip": (non_negative_float, "max global gradient norm (0 = off)"),
        "eval_interval": (positive_int, "steps between validation passes"),
        "eval_iters": (positive_int, "batches per validation pass"),
        "checkpoint_interval": (positive_int, "steps between checkpoints (one is always written at the end)"),
    }
    generic, tiny = TrainConfig(), PRESET_TRAIN_DEFAULTS["tiny"]
    for name, (kind, text) in flags.items():
        shown = f"{getattr(generic, name):g}" + (f" [{tiny[name]:g}]" if name in tiny else "")
        optim.add_argument("--" + name.replace("_", "-"), type=kind, help=f"{text} (default {shown})")
    return parser


TRAIN_FLAGS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("device", "dtype", "compile")]


def train_config_from(args: argparse.Namespace, preset: str, saved: dict | None, device, dtype: str) -> TrainConfig:
    """Generic defaults, then the preset's, then a resumed run's saved settings, then flags given now."""
    values = {**PRESET_TRAIN_DEFAULTS.get(preset, {}), **(saved or {})}
    values |= {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    values |= {"device": str(device), "dtype": dtype, "compile": args.compile}
    return TrainConfig(**values)


def model_config_from(args: argparse.Namespace, tokenizer_vocab: int, device) -> GPTConfig:
    overrides = {"vocab_size": model_vocab_size(args.vocab_size, tokenizer_vocab), "dropout": args.dropout, "attention": resolve_attention(args.attention, device)}
    if args.block_size:
        overrides["block_size"] = args.block_size
    return GPTConfig.from_preset(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        if isinstance(args.init, Path):  # a fine-tuning run is named after its folder and uses generic defaults
            args.preset = f"{args.init.name}-finetune"
        out_dir = Path(args.out_dir or DEFAULT_OUT_DIR.format(preset=args.preset))
        saved = load_checkpoint(out_dir, map_location="cpu") if args.resume else None
        pretrained = None
        if saved:  # a resumed run keeps its model and tokenizer; flags given now may change training settings
            args.preset = saved["run_info"].get("preset", args.preset)
            tokenizer = get_tokenizer(saved["tokenizer"])
            model_config = GPTConfig(**saved["model_config"])
        elif isinstance(args.init, Path):
            pretrained = GPT.from_pretrained(args.init, resolve_attention(args.attention, device))
            tokenizer = get_tokenizer(args.tokenizer) if args.tokenizer else folder_tokenizer(args.init)
            model_config = dataclasses.replace(pretrained.config, dropout=args.dropout)
            model_vocab_size(model_config.vocab_size, tokenizer.vocab_size)  # the data's ids must fit the model
        else:
            tokenizer = get_tokenizer(args.tokenizer or ("bytes" if args.preset == "tiny" else "cl100k"))
            model_config = model_config_from(args, tokenizer.vocab_size, device)
        train_config = train_config_from(args, args.preset, saved and saved["train_config"], device, dtype)
        data = load_data(args.data, tokenizer)
        run_info = {"preset": args.preset} | ({"init": str(args.init.resolve())} if pretrained else {})
        trainer = Trainer(model_config, train_config, data, tokenizer.name, out_dir, run_info,
                          initial_weights=pretrained and pretrained.state_dict())
        if saved:
            trainer.resume(saved)
    except (ValueError, DataError, CheckpointError, TokenizerUnavailable) as error:
        fail("train.py", str(error))

    print(
        f"training {args.preset} ({trainer.model.num_params():,} parameters, {model_config.attention} attention) "
        f"on {data.source} [{tokenizer.name}], {device} {dtype}, from step {trainer.step} to {train_config.max_iters}; "
        f"run directory {out_dir}",
        file=sys.stderr,
    )
    profiler = TrainingProfiler(model_config, device, dtype, args.peak_tflops, args.board_watts)
    progress = tqdm(total=train_config.max_iters, initial=trainer.step, unit="step", disable=args.no_progress,
                    dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 10.0)

    def show(record, fields) -> None:
        progress.update(1)
        shown = {"loss": f"{record.loss:.3f}", "tok/s": f"{fields['window_tokens_per_sec']:,.0f}"}
        if fields["window_mfu"] is not None:
            shown["MFU"] = f"{fields['window_mfu']:.1%}"
        if fields["watts"] is not None:
            shown["W"] = f"{fields['watts']:.0f}"
        progress.set_postfix(shown, refresh=False)

    stopped = None
    try:
        trainer.run(on_step=profiler.on_step, on_progress=show)
    except TrainingStopped as error:
        stopped = error
    progress.close()
    summary = profiler.summary()
    trainer.log(summary)
    profiler.close()
    if stopped is not None:
        fail("train.py", str(stopped), stopped.exit_code)
    if summary["tokens_per_sec"] is None:
        speed = f"no tokens/s: all {summary['steps']} steps were warm-up"
    else:
        mfu = f", MFU {summary['mfu']:.1%}" if summary["mfu"] is not None else ""
        speed = f"{summary['tokens_per_sec']:,.0f} tokens/s{mfu}"
    print(f"done: step {trainer.step}, val loss {trainer.val_loss:.4f}, {speed}; checkpoint {out_dir / 'ckpt.pt'}; "
          f"profile with: python -m profiling report {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
