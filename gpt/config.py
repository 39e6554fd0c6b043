"""Configuration in one place: model shapes (a dataclass and the named presets) and training settings.

Every other part of gptmeter (the model, the FLOP model, the cost extrapolation)
reads a model's shape from a `GPTConfig`, so this file is the single place where
a preset's numbers live. It imports no torch, so command lines can build their
`--help` from it at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gpt.errors import ConfigError

ATTENTION_BACKENDS = ("auto", "triton", "sdpa", "naive")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # compute dtypes under autocast (gpt.trainer.DTYPES maps them)


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024  # longest context the position table covers, in tokens
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # key/value heads; None means n_head (plain multi-head attention)
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2 has
    attention: str = "sdpa"  # one of ATTENTION_BACKENDS; "auto" is resolved by gpt.model.resolve_attention

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(
                f"unknown attention backend {self.attention!r}; choose one of {', '.join(ATTENTION_BACKENDS)}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_GPT2 = dict(vocab_size=50257, block_size=1024, bias=True)

PRESETS: dict[str, dict] = {
    # A CPU demo: trains on the byte tokenizer (257 symbols) in a few minutes on 2 cores.
    "tiny": dict(vocab_size=257, block_size=128, n_layer=4, n_head=4, n_embd=128, bias=True),
    # The four GPT-2 sizes (Radford et al., 2019): 124M, 350M, 774M, 1558M parameters.
    "gpt2": dict(_GPT2, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(_GPT2, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(_GPT2, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(_GPT2, n_layer=48, n_head=25, n_embd=1600),
    # GPT-3 175B (Brown et al., 2020, table 2.1). Shape only: for the profiler, never built here.
    "gpt3-175b": dict(vocab_size=50257, block_size=2048, n_layer=96, n_head=96, n_embd=12288, bias=True),
}

# Presets too large to build on a small machine; the CLIs refuse to instantiate them.
SHAPE_ONLY_PRESETS = frozenset({"gpt3-175b"})


@dataclass
class TrainConfig:
    batch_size: int = 8  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int = 5000  # optimizer steps in the whole run
    learning_rate: float = 6e-4  # peak, reached after warm-up
    min_lr: float = 6e-5  # floor of the cosine decay
    warmup_iters: int = 200
    weight_decay: float = 0.1  # applied to matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_interval: int = 250  # steps between validation passes
    eval_iters: int = 20  # validation batches per pass (the same batches every time)
    checkpoint_interval: int = 250  # steps between checkpoints (one is always written at the end)
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"  # compute dtype under autocast; weights and optimizer stay float32
    compile: bool = False
    fsdp: bool = False  # shard weights, gradients and optimizer state (FSDP2) instead of replicating them (DDP)

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "checkpoint_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("learning_rate", "beta1", "beta2"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("min_lr", "warmup_iters", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
        if self.fsdp and self.dtype == "float16":  # its loss scaling would need a sharded gradient scaler
            raise ConfigError("--fsdp does not support --dtype float16; use --dtype bfloat16 or float32")


# Training settings that suit a preset better than the generic ones above.
PRESET_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        batch_size=32, max_iters=600, learning_rate=4e-3, min_lr=4e-4, warmup_iters=50,
        eval_interval=100, eval_iters=10, checkpoint_interval=100, weight_decay=0.1,
    ),
}
