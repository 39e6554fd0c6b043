"""Small pieces shared by the command lines: argument types with units, device choice, clean failure."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from gpt.config import GPTConfig
from gpt.errors import ConfigError

if TYPE_CHECKING:  # torch loads only when a device is resolved, so that --help answers at once
    import torch


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has a meaningful one (not None, not an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _parse(text: str, kind: type, noun: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _parse(text, int, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _parse(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _parse(text, float, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def probability(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


BOARD_WATTS_HELP = ("device power in W, used only for an energy ESTIMATE (power x this process's CPU utilisation) "
                    "when no energy counter can be read (a CPU without RAPL); labelled as an estimate wherever shown")
VOCAB_SIZE_HELP = ("model vocabulary, at least the tokenizer's (extra rows are never produced by the data): "
                   "50257 gives GPT-2's exact shape, 50304 a tensor-core-friendly one (default: the tokenizer's)")


RANDOM_INIT = "random"
INIT_HELP = "random, or a Hugging Face GPT-2 folder"
# --flag -> GPTConfig field; each overrides the preset's value for a model built from scratch (--init random)
SHAPE_FLAGS = {"layers": "n_layer", "width": "n_embd", "heads": "n_head", "kv_heads": "n_kv_head",
               "block_size": "block_size"}


def add_shape_arguments(group: argparse._ArgumentGroup, context_flag: str = "--block-size",
                        vocab_flag: str | None = None) -> None:
    """--layers --width --heads --kv-heads and the context flag (and the vocabulary flag, where named): a
    model's shape. train.py/sample.py override a preset's with them (--block-size); the profiler's
    predict and scale describe a target model with them (--context, --vocab), GPTConfig's context and
    vocabulary standing where neither a preset nor a flag gives one."""
    fallback = GPTConfig()
    context_default, vocab_default = ("the preset's", "") if vocab_flag is None else (
        f"the preset's, else {fallback.block_size}", f"the preset's, else {fallback.vocab_size}")
    group.add_argument("--layers", type=positive_int, help="transformer blocks (default: the preset's)")
    group.add_argument("--width", type=positive_int, help="model width n_embd, a multiple of --heads "
                       "(default: the preset's)")
    group.add_argument("--heads", type=positive_int, help="query heads (default: the preset's)")
    group.add_argument("--kv-heads", type=positive_int, help="key/value heads, dividing --heads; fewer than "
                       "--heads is grouped-query attention (default: --heads)")
    group.add_argument(context_flag, type=positive_int, help=f"context length in tokens (default: {context_default})")
    if vocab_flag:
        group.add_argument(vocab_flag, type=positive_int, help=f"vocabulary size in tokens (default: {vocab_default})")


def shape_overrides(args: argparse.Namespace) -> dict[str, int]:
    """The GPTConfig fields the shape flags set (those given)."""
    overrides = {field: getattr(args, flag) for flag, field in SHAPE_FLAGS.items() if getattr(args, flag) is not None}
    if "n_head" in overrides and "n_kv_head" not in overrides:
        overrides["n_kv_head"] = overrides["n_head"]  # new heads, plain multi-head unless --kv-heads says otherwise
    return overrides


def pretrained_folder(init: str | None) -> Path | None:
    """The Hugging Face GPT-2 folder that --init names; None for "random" (or no --init)."""
    return None if init in (None, RANDOM_INIT) else Path(init)


def model_vocab_size(requested: int | None, tokenizer_vocab: int) -> int:
    """The model's vocabulary: the tokenizer's, or a larger padded size asked for with --vocab-size."""
    if requested is not None and requested < tokenizer_vocab:
        raise ConfigError(f"--vocab-size {requested} is smaller than the tokenizer's {tokenizer_vocab} ids")
    return requested or tokenizer_vocab


def resolve_device(name: str) -> "torch.device":
    """"auto" is CUDA when present, else CPU; asking for CUDA without one is an error, not a fallback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def use_device(device: "torch.device") -> None:
    """Make a CUDA device the current one. Triton launches, CUDA events and streams follow the current
    device rather than the tensors', so `--device cuda:1` must select it before any of them runs."""
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)


AMPERE_CAPABILITY = (8, 0)  # the first CUDA compute capability with bfloat16 and TF32 tensor cores


def resolve_dtype(name: str, device: "torch.device") -> str:
    """"auto": bfloat16 on GPUs with native bfloat16 (compute capability >= 8.0), float16 on older ones
    (the trainer then scales the loss with a GradScaler), float32 on CPU.

    The capability is that of `device` itself, not the current device; `torch.cuda.is_bf16_supported()`
    is not used because it also counts bfloat16 emulated on pre-Ampere GPUs (V100, T4), which is slow
    and has no datasheet peak.
    """
    if name != "auto":
        return name
    if device.type != "cuda":
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.get_device_capability(device) >= AMPERE_CAPABILITY else "float16"


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags actually given in `argv` (defaults left out), e.g. {"block_size"}."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def fail(program: str, message: str, exit_code: int = 2) -> NoReturn:
    """One line on standard error, no traceback, non-zero exit."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(exit_code)
