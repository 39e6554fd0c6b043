"""Small pieces shared by the command lines: argument types with units, device choice, clean failure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

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
    if not value >= 0:  # also rejects NaN
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


def init_source(*names: str):
    """An argparse type for --init: one of `names`, or else the path of a Hugging Face GPT-2 folder."""

    def parse(text: str) -> str | Path:
        return text if text in names else Path(text)

    return parse


BOARD_WATTS_HELP = ("device power in W, used only for an energy ESTIMATE (power x this process's CPU utilisation) "
                    "when no energy counter can be read (a CPU without RAPL); labelled as an estimate wherever shown")
VOCAB_SIZE_HELP = ("model vocabulary, at least the tokenizer's (extra rows are never produced by the data): "
                   "50257 gives GPT-2's exact shape, 50304 a tensor-core-friendly one (default: the tokenizer's)")


def model_vocab_size(requested: int | None, tokenizer_vocab: int) -> int:
    """The model's vocabulary: the tokenizer's, or a larger padded size asked for with --vocab-size."""
    if requested is not None and requested < tokenizer_vocab:
        raise ValueError(f"--vocab-size {requested} is smaller than the tokenizer's {tokenizer_vocab} ids")
    return requested or tokenizer_vocab


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA when present, else CPU; asking for CUDA without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> str:
    """"auto": bfloat16 on GPUs that support it, float16 on older ones, float32 on CPU."""
    if name != "auto":
        return name
    if device.type != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def fail(program: str, message: str, exit_code: int = 2) -> NoReturn:
    """One line on standard error, no traceback, non-zero exit."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(exit_code)
