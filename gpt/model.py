"""A GPT-2 style decoder-only Transformer, written to be read top to bottom.

    tokens ─► token embedding + position embedding ─► dropout
           ─► n_layer × Block[ x + Attention(LN(x)) ; x + MLP(LN(x)) ]
           ─► final LayerNorm ─► output head (shares the token embedding's weights) ─► logits

Shapes in comments use B = batch, T = tokens in this call, S = keys visible
(cached + new), C = n_embd, H = query heads, Hkv = key/value heads, D = head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt.config import GPTConfig
from gpt.errors import ConfigError

# ----------------------------------------------------------------------------- attention


def resolve_attention(name: str, device: torch.device | str) -> str:
    """Turn "auto" into a concrete backend for `device`; other names pass through if they can run there.

    "auto" picks our Triton kernel only on a CUDA GPU class where the attention
    benchmark measured it at least as fast as SDPA (evidence table in `kernels`);
    everywhere else it picks SDPA.
    """
    device = torch.device(device)
    if name == "triton" and device.type != "cuda":
        from kernels.fused_attention import INTERPRETED

        if not INTERPRETED:
            raise ConfigError("--attention triton needs a CUDA GPU (TRITON_INTERPRET=1 runs it on CPU, for tests only)")
    if name != "auto":
        return name
    if device.type != "cuda":
        return "sdpa"
    from kernels import measured_faster_than_sdpa

    return "triton" if measured_faster_than_sdpa(torch.cuda.get_device_name(device)) else "sdpa"


def causal_mask(t_query: int, t_key: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, S) mask, True where query i may see key j: j <= i + (S - T).

    Aligned to the bottom-right so that the newest queries line up with the newest
    keys, which is what decoding against a KV cache needs.
    """
    offset = t_key - t_query
    rows = torch.arange(t_query, device=device).unsqueeze(1)
    cols = torch.arange(t_key, device=device).unsqueeze(0)
    return cols <= rows + offset


# Each backend takes q (B, H, T, D), k and v (B, Hkv, S, D), and an optional boolean (T, S) mask of
# the keys each query sees (the KV cache passes one); without it, attention is causal, bottom-right aligned.


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal softmax attention spelled out: scores, mask, softmax, weighted sum."""
    group = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, S, D)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    mask = causal_mask(q.size(2), k.size(2), q.device) if mask is None else mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1) @ v  # (B, H, T, D)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch's fused attention. Its `is_causal` aligns top-left, so T != S needs a mask."""
    gqa = bool(q.size(1) != k.size(1))  # a plain bool even when traced (fvcore, torch.jit)
    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    if q.size(2) == k.size(2):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if q.size(2) == 1:  # one new token sees every cached key: no mask needed
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    mask = causal_mask(q.size(2), k.size(2), q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Our fused FlashAttention-2 style kernel (kernels/), causal, bottom-right aligned; SDPA for a given mask."""
    if mask is not None:  # the kernel masks causally only
        return sdpa_attention(q, k, v, mask)
    from kernels import flash_attention

    return flash_attention(q, k, v, causal=True)


ATTENTION_FUNCTIONS = {"naive": naive_attention, "sdpa": sdpa_attention, "triton": triton_attention}


class KVCache:
    """Keys and values of every layer, preallocated for `capacity` positions and written in place.

    Its tensors never change shape or address while decoding, so the one-token step can be
    compiled once (and replayed as a CUDA graph). The next free position `pos` is a device
    tensor, advanced in place: decoding never asks the host where it is. Attention reads the
    first `window` slots only (all of them unless the decoding loop, which counts the stored
    tokens on the host, narrows it), so a short context does not pay for the empty ones.
    """

    def __init__(self, config: GPTConfig, batch: int, capacity: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.capacity = capacity or config.block_size
        if self.capacity > config.block_size:
            raise ValueError(f"a KV cache of {self.capacity} positions exceeds the context of {config.block_size}")
        # One tensor per layer, not views of one: a compiled step then writes each in place (a write
        # through a view of a graph input makes inductor copy the whole base tensor back, every step).
        shape = (batch, config.n_kv_head, self.capacity, config.head_dim)  # (B, Hkv, S, D)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.window = self.capacity  # leading slots attention reads; slots past the new positions are masked
        self.empty = True  # nothing written yet: the first chunk attends only to itself
        self.new_positions = self.visible = None  # of the forward pass under way (see begin)

    def begin(self, t: int) -> torch.Tensor:
        """Start a forward pass over t new tokens: their positions (t,), and which slots they see, for every layer."""
        self.new_positions = self.pos + torch.arange(t, device=self.pos.device)  # (T,)
        if not self.empty:
            slots = torch.arange(self.window, device=self.pos.device)
            self.visible = slots <= self.new_positions.unsqueeze(1)  # (T, S), S = window
        return self.new_positions

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend) -> torch.Tensor:
        """Store the new keys and values of `layer`, then attend the new queries to everything stored."""
        keys, values = self.keys[layer], self.values[layer]  # (B, Hkv, S, D)
        keys.index_copy_(2, self.new_positions, k)
        values.index_copy_(2, self.new_positions, v)
        if self.empty:  # a prompt: plain causal attention over its own tokens, with any backend
            return attend(q, k, v)
        return attend(q, keys[:, :, : self.window], values[:, :, : self.window], self.visible)

    def advance(self, t: int) -> None:
        """End the forward pass: the t new tokens are stored."""
        self.pos.add_(t)
        self.empty = False
        self.new_positions = self.visible = None

    def reset(self) -> None:
        """Forget the stored tokens (the buffers stay, to be overwritten)."""
        self.pos.zero_()
        self.window = self.capacity
        self.empty = True


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        if config.attention not in ATTENTION_FUNCTIONS:
            raise ValueError(f"attention backend {config.attention!r} must be resolved first (see resolve_attention)")
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        kv_width = config.n_kv_head * config.head_dim
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_width, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attend = ATTENTION_FUNCTIONS[config.attention]

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        kv_width = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_width, kv_width], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if cache is None:
            y = self.attend(q, k, v)  # (B, H, T, D)
        else:
            y = cache.attend(self.layer, q, k, v, self.attend)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


# ----------------------------------------------------------------------------- feed-forward and block


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # GPT-2's tanh GELU


class Block(nn.Module):
    """Pre-LayerNorm residual block: each sub-layer reads a normalised copy and adds back."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------- the model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, layer) for layer in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2: each block adds two residual contributions, so their projections start
        # smaller (std / sqrt(2·n_layer)) to keep the residual stream's variance flat with depth.
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Unique parameters (the tied embedding counted once), position table included."""
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, folder, attention: str = "sdpa") -> "GPT":
        """A local Hugging Face GPT-2 folder's weights (format code in gpt/hf.py)."""
        from gpt.hf import load_pretrained

        return load_pretrained(folder, attention)

    def save_pretrained(self, folder, eos_token: int | None = None, max_shard_bytes: int | None = None) -> None:
        """Write this model as a Hugging Face GPT-2 folder, sharded above max_shard_bytes (gpt/hf.py)."""
        from gpt.hf import save_pretrained

        save_pretrained(self, folder, eos_token, max_shard_bytes)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) token ids → the final LayerNorm's output (B, T, C), which the output head turns into logits."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds the context of {self.config.block_size}")
        pos = cache.begin(T) if cache is not None else torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.advance(T)
        return self.transformer.ln_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids → logits (B, T, vocab), and the mean cross-entropy if targets are given.

        Targets equal to -1 are ignored. With a `cache`, idx holds only the new tokens;
        they are placed after the cache's contents and appended to it.
        """
        logits = self.lm_head(self.hidden(idx, cache))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        **options,
    ) -> torch.Tensor:
        """Continue idx (B, T) by up to max_new_tokens tokens through a KV cache; temperature 0 is greedy.

        The decoding loop (static cache, sampling on the device, optional compiled step, end-of-text
        and streaming options) lives in gpt/generate.py.
        """
        from gpt.generate import generate

        return generate(self, idx, max_new_tokens, temperature, top_k, top_p, **options)
