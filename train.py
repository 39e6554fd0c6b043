"""Train a GPT. With no flags: the `tiny` preset on the Python standard library's source, byte tokenizer.

    python train.py                                  # a few minutes on a laptop CPU
    python train.py --preset gpt2 --device cuda      # GPT-2 124M with bf16 autocast
    python train.py --resume                         # continue the newest run of the preset
    python train.py --init path/to/gpt2 --data my.txt   # fine-tune a Hugging Face GPT-2 folder (out/gpt2-finetune)

Writes into the run directory: ckpt.pt (ckpt.dcp/ with --fsdp) + meta.json, config.json and
metrics.jsonl. By default every run gets a new numbered folder, out/<preset>/run-001, run-002, ...;
an explicit --out-dir that holds a run needs --resume or --overwrite (gpt/rundir.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from gpt.cli import (
    BOARD_WATTS_HELP,
    INIT_HELP,
    RANDOM_INIT,
    SHAPE_FLAGS,
    HelpFormatter,
    VOCAB_SIZE_HELP,
    add_shape_arguments,
    explicit_flags,
    fail,
    model_vocab_size,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    pretrained_folder,
    resolve_device,
    resolve_dtype,
    shape_overrides,
    use_device,
)
from gpt.config import (
    ATTENTION_BACKENDS,
    DTYPE_NAMES,
    PRESET_TRAIN_DEFAULTS,
    PRESETS,
    SHAPE_ONLY_PRESETS,
    GPTConfig,
    TrainConfig,
)
from gpt.errors import GptmeterError
from gpt.host_memory import keep_freed_memory
from gpt.rundir import SHARDED_CHECKPOINT_NAME, RunLock, claim_run_dir, keep_tokenizer_files, run_tokenizer
from gpt.tokenizer import TOKENIZERS, get_tokenizer

DEFAULT_OUT_DIR = "out/{preset}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a GPT from scratch and log tokens/s, loss and checkpoints to a run directory.",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--init", default=RANDOM_INIT, metavar="random|PATH",
                       help=f"starting weights: {INIT_HELP} (config.json, model.safetensors or pytorch_model.bin, "
                       "vocab.json, merges.txt) to fine-tune, whose shape and tokenizer the run then uses, with "
                       "generic training defaults; its runs go to out/<folder name>-finetune")
    model.add_argument("--preset", default="tiny", choices=[p for p in PRESETS if p not in SHAPE_ONLY_PRESETS],
                       help="model shape (gpt/config.py); the flags below override parts of it")
    add_shape_arguments(model)
    model.add_argument("--vocab-size", type=positive_int, help=VOCAB_SIZE_HELP)
    model.add_argument("--dropout", type=non_negative_float,
                       help="dropout probability (default 0; may change on --resume)")
    model.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS,
                       help="attention implementation; auto = SDPA, or our Triton kernel on GPUs where it measured faster")
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="text file, folder of text files, or folder with train.bin/val.bin "
                      "(default: the Python standard library's source)")
    data.add_argument("--tokenizer", choices=TOKENIZERS,
                      help="default: bytes for the tiny preset, cl100k otherwise; sets the model's vocabulary size")
    data.add_argument("--allow-binary", action="store_true",
                      help="train on --data files that look binary (a NUL byte in their first 8 KiB) instead of "
                      "refusing them")
    run = parser.add_argument_group("run")
    run.add_argument("--out-dir", help="run directory for checkpoints and logs (default: a new out/<preset>/run-NNN); "
                     "one that holds a run needs --resume or --overwrite")
    run.add_argument("--resume", action="store_true",
                     help="continue from the run's checkpoint, ckpt.pt or ckpt.dcp/ (default: the newest run in "
                     "out/<preset>); the model's shape, tokenizer and vocabulary stay the saved ones, training "
                     "settings given now apply")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in an --out-dir that holds a run; its files are moved to <out-dir>.old-<time>")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES],
                     help="autocast compute dtype; auto = bfloat16 on GPUs with native bf16 (compute capability "
                     ">= 8.0), float16 with loss scaling on older GPUs, float32 on CPU")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    run.add_argument("--fsdp", action=argparse.BooleanOptionalAction,
                     help="shard weights, gradients and AdamW state over the torchrun processes (FSDP2) instead "
                     "of replicating them (DDP); checkpoints are then sharded (ckpt.dcp/) and resume at any "
                     "number of processes; without torchrun, a group of one. Default: off, or the resumed run's "
                     "choice")
    run.add_argument("--seed", type=int, help="random seed for weights, batches and dropout (default 1337)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")
    run.add_argument("--peak-tflops", type=positive_float,
                     help="peak dense TFLOP/s (1e12 FLOP/s) to compute MFU against, for a GPU outside "
                     "profiling/hardware.py's table (default: that table's datasheet figure)")
    run.add_argument("--board-watts", type=positive_float, help=BOARD_WATTS_HELP)
    optim = parser.add_argument_group("optimisation (defaults: generic; tiny preset in brackets; gpt/trainer.py)")
    flags = {
        "max_iters": (positive_int, "optimizer steps in the whole run"),
        "batch_size": (positive_int, "sequences per micro-batch on each card (process); under torchrun the global batch is this times the world size"),
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
FIXED_ON_RESUME = {"preset": "preset", "block_size": "block size", "vocab_size": "vocabulary size",
                   "tokenizer": "tokenizer", "layers": "layer count", "width": "width", "heads": "head count",
                   "kv_heads": "key/value head count"}  # flag destination -> what it sets; a resumed model keeps them


def train_config_from(args: argparse.Namespace, preset: str, saved: dict | None, device, dtype: str) -> TrainConfig:
    """Generic defaults, then the preset's, then a resumed run's saved settings, then flags given now."""
    values = {**PRESET_TRAIN_DEFAULTS.get(preset, {}), **(saved or {})}
    values |= {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    values |= {"device": str(device), "dtype": dtype, "compile": args.compile}
    return TrainConfig(**values)


def model_config_from(args: argparse.Namespace, tokenizer_vocab: int, attention: str) -> GPTConfig:
    overrides = {"vocab_size": model_vocab_size(args.vocab_size, tokenizer_vocab), "dropout": args.dropout or 0.0,
                 "attention": attention, **shape_overrides(args)}
    return GPTConfig.from_preset(args.preset, **overrides)


def resumed_model_config(args: argparse.Namespace, given: set[str], saved: dict, attention: str) -> GPTConfig:
    """The saved model, with --dropout and --attention applied; a shape, tokenizer or vocabulary flag that
    differs from the saved value is an error naming it."""
    model = saved["model_config"]
    saved_values = {"preset": saved["run_info"].get("preset"), "vocab_size": model["vocab_size"],
                    "tokenizer": saved["tokenizer"], **{flag: model[field] for flag, field in SHAPE_FLAGS.items()}}
    for name, what in FIXED_ON_RESUME.items():
        if name in given and getattr(args, name) != saved_values[name]:
            flag = "--" + name.replace("_", "-")
            raise GptmeterError(
                f"{flag} {getattr(args, name)} differs from the resumed run's {what}, {saved_values[name]}; a resumed "
                f"run keeps its {what}: drop {flag}, or start a new run without --resume"
            )
    dropout = args.dropout if "dropout" in given else model["dropout"]
    return GPTConfig(**{**model, "dropout": dropout, "attention": attention})


def changes_on_resume(saved: dict, model_config: GPTConfig, train_config: TrainConfig) -> list[str]:
    """'name old -> new' for each setting a resumed run changes, to print."""
    before = {**saved["train_config"], "dropout": saved["model_config"]["dropout"]}
    after = {**dataclasses.asdict(train_config), "dropout": model_config.dropout}
    return [f"{name} {before[name]} -> {after[name]}" for name in before
            if name not in ("device", "compile") and before[name] != after.get(name, before[name])]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    keep_freed_memory()
    from gpt import distributed  # imports torch, which --help must not wait for

    lock = None
    try:
        device = distributed.init(resolve_device(args.device))
        use_device(device)
        dtype = resolve_dtype(args.dtype, device)
        folder = pretrained_folder(args.init)
        if folder is not None:  # a fine-tuning run is named after its folder, checked before a run folder is made
            from gpt.hf import read_config

            read_config(folder)
            args.preset = f"{folder.name}-finetune"
        lock, run_folder = claim_on_main(args)
        return train(args, given, device, dtype, run_folder)
    except GptmeterError as error:
        fail("train.py", str(error))
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown()


def claim_on_main(args: argparse.Namespace) -> tuple[RunLock | None, Path]:
    """Rank 0 claims and locks the run directory and tells the other ranks which it is; they take no lock."""
    from gpt import distributed

    lock, folder, problem = None, None, None
    if distributed.is_main():
        try:
            lock, note = claim_run_dir(Path(args.out_dir) if args.out_dir else None,
                                       Path(DEFAULT_OUT_DIR.format(preset=args.preset)), args.resume, args.overwrite)
            folder = lock.folder
            if note:
                print(f"train.py: {note}", file=sys.stderr)
        except GptmeterError as error:
            problem = error
    folder = distributed.broadcast_from_main(None if problem else folder)
    if problem is not None:
        raise problem
    if folder is None:
        raise GptmeterError("rank 0 could not claim the run directory; see its message")
    return lock, folder


def train(args: argparse.Namespace, given: set[str], device, dtype: str, out_dir: Path) -> int:
    """Build everything for the run in `out_dir` (locked by the caller), train, and report."""
    from tqdm import tqdm

    from gpt import distributed
    from gpt.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from gpt.data import load_data
    from gpt.memory import require_fits, training_bytes
    from gpt.model import GPT, resolve_attention
    from gpt.tokenizer import folder_tokenizer
    from gpt.trainer import Trainer, TrainingStopped
    from profiling.live import TrainingProfiler, describe_prediction

    attention = resolve_attention(args.attention, device)
    # An FSDP run's sharded weights are read later, by each rank for its own shards.
    saved = load_checkpoint(out_dir, map_location="cpu", weights=False) if args.resume else None
    folder = pretrained_folder(args.init)
    pretrained = None
    if saved:  # a resumed run keeps its model and tokenizer; flags given now may change training settings
        model_config = resumed_model_config(args, given, saved, attention)
        args.preset = saved["run_info"].get("preset", args.preset)
        tokenizer = run_tokenizer(out_dir, saved["tokenizer"])
    elif folder is not None:
        if shape_overrides(args) or args.vocab_size:
            raise GptmeterError("--layers, --width, --heads, --kv-heads, --block-size and --vocab-size shape a new "
                                "model; a model loaded with --init PATH keeps its own shape")
        pretrained = GPT.from_pretrained(folder, attention)
        tokenizer = get_tokenizer(args.tokenizer) if args.tokenizer else folder_tokenizer(folder)
        model_config = dataclasses.replace(pretrained.config, dropout=args.dropout or 0.0)
        model_vocab_size(model_config.vocab_size, tokenizer.vocab_size)  # the data's ids must fit the model
    else:
        tokenizer = get_tokenizer(args.tokenizer or ("bytes" if args.preset == "tiny" else "cl100k"))
        model_config = model_config_from(args, tokenizer.vocab_size, attention)
    train_config = train_config_from(args, args.preset, saved and saved["train_config"], device, dtype)
    if saved and saved["train_config"].get("fsdp", False) != train_config.fsdp:
        given_now = "--fsdp" if train_config.fsdp else "--no-fsdp"
        raise GptmeterError(f"{given_now} differs from the resumed run's mode, which fixes its checkpoint format "
                            "(sharded ckpt.dcp/ with --fsdp, ckpt.pt without); drop it to resume in the saved mode")
    shards = distributed.world_size() if train_config.fsdp else 1
    require_fits(training_bytes(model_config, train_config.batch_size, shards), device,
                 f"a micro-batch of {train_config.batch_size} sequences of {model_config.block_size} tokens",
                 "lower --batch-size (and raise --grad-accum to keep the tokens per step)")
    if saved:
        for change in changes_on_resume(saved, model_config, train_config):
            print(f"train.py: resuming with {change}", file=sys.stderr)
    data = load_data(args.data, tokenizer, allow_binary=args.allow_binary)
    for warning in data.warnings:
        print(f"train.py: warning: {warning}", file=sys.stderr)
    run_info = {"preset": args.preset} | ({"init": str(folder.resolve())} if pretrained else {})
    trainer = Trainer(model_config, train_config, data, tokenizer.name, out_dir, run_info,
                      initial_weights=pretrained and pretrained.state_dict())
    if saved:
        trainer.resume(saved)
    if distributed.is_main():
        keep_tokenizer_files(out_dir, tokenizer)  # a model folder's BPE: the run keeps its own copy

    if trainer.world_size > 1 and distributed.is_main():
        kind = "sharded data-parallel (FSDP2)" if trainer.sharded else "data-parallel (DDP)"
        print(f"train.py: {kind} on {distributed.world_size()} processes; --batch-size "
              f"{train_config.batch_size} is per card, global batch {train_config.batch_size * distributed.world_size()} "
              "sequences", file=sys.stderr)
    if distributed.is_main():
        print(
            f"training {args.preset} ({trainer.model.num_params():,} parameters, {model_config.attention} attention) "
            f"on {data.source} [{tokenizer.name}], {device} {dtype}, from step {trainer.step} to {train_config.max_iters}; "
            f"run directory {out_dir}",
            file=sys.stderr,
        )
    profiler = TrainingProfiler(model_config, device, dtype, train_config.batch_size, train_config.grad_accum,
                                args.peak_tflops, args.board_watts)
    progress = tqdm(total=train_config.max_iters, initial=trainer.step, unit="step",
                    disable=args.no_progress or not distributed.is_main(),
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
    summary = profiler.summary()  # this card's figures; the job's tokens/s is world_size times
    world = distributed.world_size()
    summary |= {"world_size": world, "mode": trainer.mode,
                "job_tokens_per_sec": None if summary["tokens_per_sec"] is None else summary["tokens_per_sec"] * world}
    trainer.log(summary)
    profiler.close()
    if stopped is not None:  # every rank stopped at the same step; one line says so
        if not distributed.is_main():
            return stopped.exit_code
        fail("train.py", str(stopped), stopped.exit_code)
    if summary["tokens_per_sec"] is None:
        speed = f"no tokens/s: all {summary['steps']} steps were warm-up"
    else:
        mfu = f", MFU {summary['mfu']:.1%} of {summary['peak_precision']} peak" if summary["mfu"] is not None else ""
        predicted = describe_prediction("", summary["predicted_tokens_per_sec"], summary["prediction_error"],
                                        summary["prediction_note"])
        speed = f"{summary['tokens_per_sec']:,.0f} tokens/s{mfu} ({predicted})"
    if not distributed.is_main():
        return 0
    checkpoint = out_dir / (SHARDED_CHECKPOINT_NAME if trainer.sharded else CHECKPOINT_NAME)
    print(f"done: step {trainer.step}, val loss {trainer.val_loss:.4f}, {speed}; checkpoint {checkpoint}; "
          f"profile with: python -m profiling report {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
