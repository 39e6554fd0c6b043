"""Model shapes: one dataclass and the named presets.

Every other part of gptmeter (the model, the FLOP model, the cost extrapolation)
reads a model's shape from a `GPTConfig`, so this file is the single place where
a preset's numbers live.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gpt.errors import GptmeterError

ATTENTION_BACKENDS = ("auto", "triton", "sdpa", "naive")


class ConfigError(GptmeterError, ValueError):
    """A model or training setting that cannot be used; the message names the setting and its allowed values."""


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
