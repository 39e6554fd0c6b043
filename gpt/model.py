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


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention spelled out: scores, mask, softmax, weighted sum."""
    group = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, S, D)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    scores = scores.masked_fill(~causal_mask(q.size(2), k.size(2), q.device), float("-inf"))
    return F.softmax(scores, dim=-1) @ v  # (B, H, T, D)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's fused attention. Its `is_causal` aligns top-left, so T != S needs a mask."""
    gqa = bool(q.size(1) != k.size(1))  # a plain bool even when traced (fvcore, torch.jit)
    if q.size(2) == k.size(2):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if q.size(2) == 1:  # one new token sees every cached key: no mask needed
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    mask = causal_mask(q.size(2), k.size(2), q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Our fused FlashAttention-2 style kernel (kernels/), causal, bottom-right aligned."""
    from kernels import flash_attention

    return flash_attention(q, k, v, causal=True)


ATTENTION_FUNCTIONS = {"naive": naive_attention, "sdpa": sdpa_attention, "triton": triton_attention}


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size."""

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.length = 0  # tokens stored; advanced by GPT after every layer has appended

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is None:
            shape = (k.size(0), k.size(1), capacity, k.size(3))
            self.keys[layer] = k.new_empty(shape)
            self.values[layer] = v.new_empty(shape)
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


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
        self.block_size = config.block_size

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        kv_width = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_width, kv_width], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if cache is not None:
            k, v = cache.append(self.layer, k, v, self.block_size)  # (B, Hkv, S, D)
        y = self.attend(q, k, v)  # (B, H, T, D)
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

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids → logits (B, T, vocab), and the mean cross-entropy if targets are given.

        Targets equal to -1 are ignored. With a `cache`, idx holds only the new tokens;
        they are placed after the cache's contents and appended to it.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context of {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token: int | None = None,
        generator: torch.Generator | None = None,
        on_token=None,
    ) -> torch.Tensor:
        """Continue idx (B, T) by up to max_new_tokens tokens, reusing keys and values through a KV cache.

        temperature 0 means greedy. Generation stops once every row has produced
        `eos_token` (rows that finished early are padded with it). `on_token(tokens)`
        is called with each new (B,) column, e.g. to stream text or time decoding.
        Past the context, each step re-encodes the newest block_size tokens: learned
        absolute positions leave no cached keys valid once the window slides.
        """
        block_size = self.config.block_size
        cache = KVCache(self.config.n_layer)
        logits, _ = self(idx[:, -block_size:], cache=cache)
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B,)
            if eos_token is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_token), next_token)
                finished |= next_token == eos_token
            idx = torch.cat([idx, next_token.unsqueeze(1)], dim=1)
            if on_token is not None:
                on_token(next_token)
            if eos_token is not None and bool(finished.all()):
                break
            if cache.length < block_size:
                logits, _ = self(next_token.unsqueeze(1), cache=cache)
            else:
                cache = KVCache(self.config.n_layer)
                logits, _ = self(idx[:, -block_size:], cache=cache)
        return idx


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of logits (B, vocab): greedy at temperature 0, else sample.

    top_k keeps the k most likely tokens; top_p keeps the smallest set whose
    probability reaches p (nucleus sampling). Both apply after temperature.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already ≥ p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
