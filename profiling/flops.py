"""Exact FLOP, parameter and byte counts of a GPT, from its `GPTConfig` alone.

Conventions (GUIDE section 2, written out in docs/profiling.md):

- One multiply-add is 2 FLOPs; only matmuls are counted (layer norms, softmax,
  GELU, residual adds and biases are a fraction of a percent and left out), so a
  (m × k) @ (k × n) product costs 2·m·k·n.
- Model FLOPs (PaLM, appendix B) count the full T × T attention matrix even though
  half of it is masked: per layer and token, 2·d·(d + 2·d_kv) for the q, k, v
  projections, 2·T·d for the scores q·kᵀ, 2·T·d for the weighted sum of values,
  2·d·d for the output projection, 2·2·d·4d for the MLP; plus 2·d·vocab for the
  output head. d = n_embd, d_kv = n_kv_head·head_dim (grouped-query attention
  shrinks k and v, not the score matrix, whose size follows the query heads).
- Training = 3 × forward: the backward pass of a matmul is two matmuls of the
  same size (gradient of the input and of the weight).
- Hardware FLOPs are what a fused causal kernel executes: query i meets keys
  0..i only, T·(T+1)/2 of the T² score entries, i.e. (T+1)/2 keys per token on
  average, so each attention term becomes 2·d·(T+1)/2 = d·(T+1) per layer and
  token. Block-tiled kernels also compute the masked half of each diagonal tile,
  which is not counted. In training, fused kernels (FlashAttention, PyTorch's
  SDPA kernels) recompute the scores in the backward pass instead of storing
  them, which adds one more scores term.

This module depends on `gpt.config` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gpt.files import dumps_json
from gpt.config import PRESETS, GPTConfig
from gpt.errors import GptmeterError


class ShapeError(GptmeterError, ValueError):
    """A dtype, sequence length or batch the FLOP model cannot count; one line naming the fix."""


# Bytes per element of the storage formats a weight or KV cache may use; aliases map to these names.
BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def dtype_name(dtype: object) -> str:
    """Short name ("bf16", "fp32", ...) of a dtype given as a string or a torch.dtype."""
    text = str(dtype).lower().removeprefix("torch.")
    name = _DTYPE_ALIASES.get(text, text)
    if name not in BYTES_PER_ELEMENT:
        raise ShapeError(f"unknown dtype {dtype!r}; use one of {', '.join(BYTES_PER_ELEMENT)}")
    return name


def bytes_per_element(dtype: object) -> int:
    return BYTES_PER_ELEMENT[dtype_name(dtype)]


# ----------------------------------------------------------------------------- parameters


def param_count(config: GPTConfig, embeddings: bool = True) -> int:
    """Unique parameters: the output head shares the token embedding, so it is counted once.

    With `embeddings=False`, the token and position tables are left out (Kaplan et al.'s N).
    """
    d, d_kv, bias = config.n_embd, config.n_kv_head * config.head_dim, int(config.bias)
    layer_norm = d + bias * d
    attention = d * (d + 2 * d_kv) + bias * (d + 2 * d_kv) + d * d + bias * d
    mlp = d * 4 * d + bias * 4 * d + 4 * d * d + bias * d
    blocks = config.n_layer * (2 * layer_norm + attention + mlp)
    tables = (config.vocab_size + config.block_size) * d if embeddings else 0
    return tables + blocks + layer_norm  # the last term is ln_f


# ----------------------------------------------------------------------------- FLOPs per token


@dataclass(frozen=True)
class FlopBreakdown:
    """Forward FLOPs per token by component, each summed over all layers.

    `causal=False` is the PaLM model count (full T × T attention); `causal=True`
    counts only the score entries a causal kernel computes. The attention terms
    are per-token averages over a sequence of `seq_len` tokens.
    """

    seq_len: int
    causal: bool
    qkv: int
    attention_scores: int
    attention_values: int
    attention_output: int
    mlp: int
    output_head: int

    @property
    def forward(self) -> int:
        return sum(self.components().values())

    def training(self, recompute_scores: bool = False) -> int:
        """Forward + backward: 3 × forward, plus the scores once more if the attention kernel recomputes them."""
        return 3 * self.forward + (self.attention_scores if recompute_scores else 0)

    def components(self) -> dict[str, int]:
        fields = ("qkv", "attention_scores", "attention_values", "attention_output", "mlp", "output_head")
        return {name: getattr(self, name) for name in fields}


def _attention_term(config: GPTConfig, seq_len: int, causal: bool) -> int:
    """FLOPs per token of q·kᵀ (or of weights·v), all layers: 2·d per key seen, T keys or (T+1)/2 on average."""
    d = config.n_embd
    per_layer = d * (seq_len + 1) if causal else 2 * d * seq_len
    return config.n_layer * per_layer


def flop_breakdown(config: GPTConfig, seq_len: int | None = None, causal: bool = False) -> FlopBreakdown:
    """Forward FLOPs per token at sequence length `seq_len` (default: the config's block_size)."""
    seq_len = config.block_size if seq_len is None else seq_len
    if not isinstance(seq_len, int) or seq_len <= 0:
        raise ShapeError(f"sequence length must be a positive integer, got {seq_len!r}")
    d, d_kv, n = config.n_embd, config.n_kv_head * config.head_dim, config.n_layer
    attention = _attention_term(config, seq_len, causal)
    return FlopBreakdown(
        seq_len=seq_len,
        causal=causal,
        qkv=n * 2 * d * (d + 2 * d_kv),
        attention_scores=attention,
        attention_values=attention,
        attention_output=n * 2 * d * d,
        mlp=n * 2 * 2 * d * 4 * d,
        output_head=2 * d * config.vocab_size,
    )


def forward_flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Model FLOPs (PaLM convention) of one token's forward pass."""
    return flop_breakdown(config, seq_len).forward


def training_flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Model FLOPs of one token's forward and backward pass: 3 × forward. MFU is measured against this."""
    return flop_breakdown(config, seq_len).training()


def hardware_flops_per_token(config: GPTConfig, seq_len: int | None = None, training: bool = True) -> int:
    """FLOPs the kernels of `config.attention` really execute per token (for hardware-FLOPs utilisation).

    "naive" multiplies the full masked T × T matrix and keeps it for backward, so it
    executes the model FLOPs; the fused backends ("sdpa", "triton", and "auto", which
    resolves to one of them) skip the masked half and recompute the scores in backward.
    """
    fused = config.attention != "naive"
    breakdown = flop_breakdown(config, seq_len, causal=fused)
    return breakdown.training(recompute_scores=fused) if training else breakdown.forward


# ----------------------------------------------------------------------------- inference


def prefill_flops(config: GPTConfig, prompt_len: int, causal: bool = True) -> int:
    """FLOPs of one forward pass over a prompt of `prompt_len` tokens (logits at every position included)."""
    return prompt_len * flop_breakdown(config, prompt_len, causal=causal).forward


def decode_flops_per_token(config: GPTConfig, context_len: int) -> int:
    """FLOPs to generate one token that attends to `context_len` keys (the cached ones and its own).

    One query row meets every key it sees, so nothing is masked: summing this over
    context lengths 1..P gives `prefill_flops(config, P, causal=True)`.
    """
    if not isinstance(context_len, int) or context_len <= 0:
        raise ShapeError(f"context length must be a positive integer, got {context_len!r}")
    step = dataclasses.replace(
        flop_breakdown(config, 1),
        attention_scores=config.n_layer * 2 * config.n_embd * context_len,
        attention_values=config.n_layer * 2 * config.n_embd * context_len,
    )
    return step.forward


def kv_cache_bytes_per_token(config: GPTConfig, dtype: object = "bf16") -> int:
    """Bytes one token occupies in the KV cache: a key and a value vector per layer and KV head."""
    return 2 * config.n_layer * config.n_kv_head * config.head_dim * bytes_per_element(dtype)


def decode_weight_bytes(config: GPTConfig, dtype: object = "bf16") -> int:
    """Weight bytes one decode step reads: every parameter, except that only one row of the position table is used."""
    elements = param_count(config) - (config.block_size - 1) * config.n_embd
    return elements * bytes_per_element(dtype)


def decode_bytes_per_step(
    config: GPTConfig, context_len: int, batch_size: int = 1, weight_dtype: object = "bf16", kv_dtype: object = None
) -> int:
    """Bytes one decode step must read from memory: the weights once, plus each sequence's cached keys and values.

    Activations (a few vectors per sequence) are ignored. `kv_dtype` defaults to `weight_dtype`.
    """
    if batch_size <= 0 or context_len <= 0:
        raise ShapeError(f"batch size and context length must be positive, got {batch_size} and {context_len}")
    kv_dtype = weight_dtype if kv_dtype is None else kv_dtype
    kv_cache = batch_size * context_len * kv_cache_bytes_per_token(config, kv_dtype)
    return decode_weight_bytes(config, weight_dtype) + kv_cache


# ----------------------------------------------------------------------------- operations, one by one
#
# The predictor (profiling/predict.py) prices a step as the sum of its operations, so it needs each
# operation's shape, not only the totals above. The listing below is the same count split by call:
# its matmul and attention FLOPs add up to `flop_breakdown` (tests/test_flops.py checks that), and it
# adds the memory-bound operations the totals leave out (norms, GELU, residual adds, softmax and
# cross-entropy, KV-cache writes, sampling, the optimizer), each with the bytes it reads and writes.

# Passes over a memory-bound operation's elements, reads plus writes, forward and backward: an add reads two
# tensors and writes one; a LayerNorm reads x and writes y (its statistics are one value per row); its backward
# reads x, the gradient and the statistics and writes the input gradient.
MEMORY_PASSES = {
    "add": 3,  # residual add (forward); the matching backward is the gradient sum at the fork
    "embedding": 3,  # token row + position row gathered and summed
    "embedding_backward": 3,  # the gradient scattered into both tables
    "layernorm": 2,
    "layernorm_backward": 3,
    "gelu": 2,
    "gelu_backward": 3,
    "copy": 2,  # transpose to contiguous
    "kv_write": 2,  # one layer's new keys (or values) written into the KV cache at their positions
    "kv_write_decode": 2,  # the same for a decode step's one new position per sequence and head
    "zeros": 1,  # a KV cache allocated for a generate call, zero-filled
    "bias_grad": 1,  # a Linear's output gradient summed over the tokens (its bias's gradient)
    "cross_entropy": 2,  # log-softmax over the vocabulary and the picked log-probabilities
    "cross_entropy_backward": 2,
    "sample": 3,  # temperature scale, softmax and one draw over the vocabulary, per sequence
}
BACKWARD_KIND = {"add": "add", "embedding": "embedding_backward", "layernorm": "layernorm_backward",
                 "gelu": "gelu_backward", "copy": "copy", "cross_entropy": "cross_entropy_backward"}


@dataclass(frozen=True)
class Op:
    """One operation of a step, run `count` times with the same shape.

    kind "matmul": shape (M, N, K), an (M × K) @ (K × N) product. kind "attention": shape
    (batch·heads, queries, keys, head_dim) with `variant` "causal" (queries = keys), "decode" (one query
    sees every key) or "causal_backward". kind "adamw": shape (elements of each parameter tensor), the
    whole optimizer step (gradient clipping and zeroing included). Any other kind is memory-bound:
    shape (elements,), priced by the bytes it moves.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    flops: int  # per call; 0 for memory-bound operations
    bytes: int  # per call, read + written
    count: int = 1
    phase: str = "forward"  # forward, backward or optimizer
    variant: str = ""  # attention: causal, decode or causal_backward; matmuls: "decode" in a decode step
    working_set: int = 0  # matmuls and a decode step's KV-cache write: the bytes that pass through the caches
    # between two calls of a layer's op: the model's weights, and in a decode step its KV cache


def _matmul(name: str, m: int, n: int, k: int, elem: int, count: int = 1, phase: str = "forward",
            working_set: int = 0, variant: str = "") -> Op:
    return Op(name, "matmul", (m, n, k), 2 * m * n * k, (m * k + k * n + m * n) * elem, count, phase, variant,
              working_set)


def _memory(name: str, kind: str, elements: int, elem: int, count: int = 1, phase: str = "forward",
            width: int | None = None, working_set: int = 0) -> Op:
    """A memory-bound op over `elements`; row-wise kinds (LayerNorm, the embedding) also carry their row width."""
    shape = (elements,) if width is None else (elements, width)
    return Op(name, kind, shape, 0, MEMORY_PASSES[kind] * elements * elem, count, phase, working_set=working_set)


def _attention(config: GPTConfig, batch: int, queries: int, keys: int, elem: int, variant: str) -> Op:
    """Causal: query i meets keys 0..i, T(T+1)/2 pairs; decode: one query meets all keys. 2·2·D FLOPs a pair."""
    heads, head_dim = config.n_head, config.head_dim
    pairs = queries * (queries + 1) // 2 if variant != "decode" else queries * keys
    flops = 2 * 2 * batch * heads * head_dim * pairs
    moved = batch * head_dim * (2 * heads * queries + 2 * config.n_kv_head * keys) * elem  # q, out; k, v
    if variant == "causal_backward":  # recompute the scores, then dS·K, dSᵀ·Q, Pᵀ·dO, dO·Vᵀ: 2.5 × forward
        flops, moved = flops * 5 // 2, 2 * moved
    return Op("attention", "attention", (batch * heads, queries, keys, head_dim), flops, moved, config.n_layer,
              "backward" if variant == "causal_backward" else "forward", variant)


def forward_operations(config: GPTConfig, batch: int, queries: int, keys: int | None = None,
                       loss: bool = False, dtype: object = "fp32") -> list[Op]:
    """The operations of one forward pass over `queries` new tokens per sequence that see `keys` keys.

    keys = queries (default) is a training step or a prefill (causal); keys > queries needs queries = 1,
    a decode step against the KV cache. `loss` adds the cross-entropy over every position; without it the
    KV cache is written (generation) and the logits of every position are still computed, as
    `GPT.forward` does.
    """
    keys = queries if keys is None else keys
    if min(batch, queries, keys) <= 0 or (keys != queries and queries != 1):
        raise ValueError(f"need batch, queries, keys > 0 and keys == queries or queries == 1; "
                         f"got {batch}, {queries}, {keys}")
    elem, n_layer = bytes_per_element(dtype), config.n_layer
    tokens, d, d_kv, vocab = batch * queries, config.n_embd, config.n_kv_head * config.head_dim, config.vocab_size
    weights = param_count(config) * elem
    # a decode step's products: their weights were read one step ago, and the KV cache passed through since
    cache = 2 * n_layer * batch * keys * d_kv * elem
    step, passing = ("", weights) if keys == queries else ("decode", weights + cache)
    ops = [
        _memory("embedding", "embedding", tokens * d, elem, width=d),
        _memory("ln", "layernorm", tokens * d, elem, 2 * n_layer, width=d),
        _matmul("qkv", tokens, d + 2 * d_kv, d, elem, n_layer, working_set=passing, variant=step),
        _attention(config, batch, queries, keys, elem, "causal" if keys == queries else "decode"),
        _memory("attention_out", "copy", tokens * d, elem, n_layer),
        _matmul("attention_proj", tokens, d, d, elem, n_layer, working_set=passing, variant=step),
        _memory("residual", "add", tokens * d, elem, 2 * n_layer),
        _matmul("mlp_fc", tokens, 4 * d, d, elem, n_layer, working_set=passing, variant=step),
        _memory("gelu", "gelu", tokens * 4 * d, elem, n_layer),
        _matmul("mlp_proj", tokens, d, 4 * d, elem, n_layer, working_set=passing, variant=step),
        _memory("ln_f", "layernorm", tokens * d, elem, width=d),
        _matmul("head", tokens, vocab, d, elem, working_set=passing, variant=step),
    ]
    if loss:
        ops.append(_memory("cross_entropy", "cross_entropy", tokens * vocab, elem))
    else:
        # keys and values of a layer, priced as one call (the model makes two; one fewer per-call cost); a decode
        # step writes one position per sequence and head into a cache grown cold since the layer's last step
        kind = "kv_write" if keys == queries else "kv_write_decode"
        ops.append(_memory("kv_cache_write", kind, 2 * tokens * d_kv, elem, n_layer, working_set=passing))
    return ops


def backward_operations(config: GPTConfig, forward: list[Op], batch: int, seq_len: int,
                        dtype: object = "fp32") -> list[Op]:
    """The backward pass of a causal forward: each matmul becomes two (input and weight gradients), plus the sum
    of its output gradient over the tokens where it has a bias; the gradients of q, k and v, split apart in the
    forward, are concatenated back into the qkv projection's."""
    elem, ops = bytes_per_element(dtype), []
    for op in forward:
        if op.kind == "matmul":
            m, n, k = op.shape
            ops.append(_matmul(op.name + "_grad_input", m, k, n, elem, op.count, "backward", op.working_set))
            ops.append(_matmul(op.name + "_grad_weight", n, k, m, elem, op.count, "backward", op.working_set))
            if config.bias and op.name != "head":  # the output head shares the embedding and has no bias
                ops.append(_memory(op.name + "_grad_bias", "bias_grad", m * n, elem, op.count, "backward"))
            if op.name == "qkv":
                ops.append(_memory("qkv_grad_concat", "copy", m * n, elem, op.count, "backward"))
        elif op.kind == "attention":
            ops.append(_attention(config, batch, seq_len, seq_len, elem, "causal_backward"))
        else:
            width = op.shape[1] if len(op.shape) > 1 else None
            ops.append(_memory(op.name + "_grad", BACKWARD_KIND[op.kind], op.shape[0], elem, op.count, "backward",
                               width))
    return ops


def parameter_tensor_sizes(config: GPTConfig) -> list[int]:
    """Elements of each parameter tensor the optimizer visits: wte (shared with the head), wpe, per block
    6 weights (+6 biases), ln_f."""
    d, d_kv = config.n_embd, config.n_kv_head * config.head_dim
    weights = [d, d * (d + 2 * d_kv), d * d, d, 4 * d * d, 4 * d * d]  # ln_1, qkv, proj, ln_2, fc, mlp proj
    biases = [d, d + 2 * d_kv, d, d, 4 * d, d] if config.bias else []
    return ([config.vocab_size * d, config.block_size * d] + config.n_layer * (weights + biases)
            + [d] * (2 if config.bias else 1))


def parameter_tensors(config: GPTConfig) -> int:
    return len(parameter_tensor_sizes(config))


def train_step_operations(config: GPTConfig, batch: int, seq_len: int, grad_accum: int = 1,
                          dtype: object = "fp32") -> list[Op]:
    """One optimizer step: `grad_accum` × (forward + backward over batch × seq_len tokens), then AdamW once."""
    forward = forward_operations(config, batch, seq_len, loss=True, dtype=dtype)
    micro = forward + backward_operations(config, forward, batch, seq_len, dtype)
    ops = [dataclasses.replace(op, count=op.count * grad_accum) for op in micro]
    params = param_count(config)
    # AdamW in float32: read parameter, gradient and both moments, write parameter and moments; clipping
    # reads the gradients once more.
    ops.append(Op("adamw", "adamw", tuple(parameter_tensor_sizes(config)), 0, 8 * 4 * params, 1, "optimizer"))
    return ops


END_OF_TEXT_CALLS = 4  # generate's end-of-text check per draw: full_like, where, == and |= over the batch's ids


def draw_operations(config: GPTConfig, batch: int, dtype: object = "fp32") -> list[Op]:
    """One token drawn for each of `batch` sequences, as sample.py's `GPT.generate` draws: temperature, softmax and
    the draw over the vocabulary, then the end-of-text check, END_OF_TEXT_CALLS elementwise calls over the
    batch's token ids (int64). The check of whether every row has ended, once per SYNC_EVERY tokens, is in the
    fixed costs."""
    return [_memory("sample", "sample", batch * config.vocab_size, bytes_per_element(dtype)),
            _memory("end_of_text", "add", batch, 8, END_OF_TEXT_CALLS)]


def prefill_operations(config: GPTConfig, batch: int, prompt_tokens: int, dtype: object = "fp32",
                       new_tokens: int = 1) -> list[Op]:
    """`GPT.generate`'s start: its KV cache allocated (keys and values of every layer, zero-filled, for the
    prompt and `new_tokens`, at most the context), the prompt through the model into it, the first token drawn."""
    elem = bytes_per_element(dtype)
    capacity = min(config.block_size, prompt_tokens + new_tokens)
    cache = batch * config.n_kv_head * capacity * config.head_dim
    return ([_memory("kv_cache_alloc", "zeros", cache, elem, 2 * config.n_layer)]
            + forward_operations(config, batch, prompt_tokens, dtype=dtype) + draw_operations(config, batch, dtype))


def decode_operations(config: GPTConfig, batch: int, context_len: int, dtype: object = "fp32") -> list[Op]:
    """One decode step: one new token per sequence attending to `context_len` keys (its own included), drawn."""
    return forward_operations(config, batch, 1, context_len, dtype=dtype) + draw_operations(config, batch, dtype)


# ----------------------------------------------------------------------------- python -m profiling flops


def summary(config: GPTConfig, seq_len: int | None = None) -> dict:
    """Everything `python -m profiling flops --json` prints, as plain numbers."""
    model = flop_breakdown(config, seq_len)
    causal = flop_breakdown(config, seq_len, causal=True)
    return {
        "config": config.to_dict(),
        "seq_len": model.seq_len,
        "params": param_count(config),
        "params_non_embedding": param_count(config, embeddings=False),
        "forward_flops_per_token": model.forward,
        "training_flops_per_token": model.training(),
        "forward_breakdown": model.components(),
        "hardware_forward_flops_per_token": causal.forward,
        "hardware_training_flops_per_token": causal.training(recompute_scores=True),
        "hardware_forward_breakdown": causal.components(),
        "kv_cache_bytes_per_token": {name: kv_cache_bytes_per_token(config, name) for name in ("fp32", "bf16", "int8")},
    }


def format_summary(report: dict) -> str:
    forward, hardware = report["forward_breakdown"], report["hardware_forward_breakdown"]
    total = report["forward_flops_per_token"]
    lines = [
        f"parameters: {report['params']:,} ({report['params_non_embedding']:,} without embeddings)",
        f"FLOPs per token at T = {report['seq_len']:,} (1 multiply-add = 2 FLOPs)",
        "",
        f"{'component':<18} {'model (PaLM)':>16} {'share':>7} {'causal kernel':>16}",
    ]
    for name, flops in forward.items():
        lines.append(f"{name:<18} {flops:>16,} {flops / total:>7.1%} {hardware[name]:>16,}")
    lines += [
        f"{'forward':<18} {total:>16,} {1:>7.1%} {report['hardware_forward_flops_per_token']:>16,}",
        f"{'training (3x)':<18} {report['training_flops_per_token']:>16,} {'':>7} "
        f"{report['hardware_training_flops_per_token']:>16,}",
        "",
        "causal kernel: masked scores skipped, scores recomputed in backward (FlashAttention-style)",
        "KV cache per token: "
        + ", ".join(f"{size:,} B ({name})" for name, size in report["kv_cache_bytes_per_token"].items()),
    ]
    return "\n".join(lines)


def add_parser(subparsers) -> object:
    from gpt.cli import positive_int  # here, so that the FLOP model itself needs gpt.config only

    parser = subparsers.add_parser(
        "flops",
        help="analytic parameters, FLOPs per token and KV-cache bytes of a preset",
        description="Exact parameter count and FLOPs per token (forward, training = 3x forward, PaLM convention; "
        "and what a causal kernel executes) of a model preset. See docs/profiling.md for the conventions.",
    )
    parser.add_argument("--preset", required=True, choices=list(PRESETS), help="model shape (gpt/config.py)")
    parser.add_argument(
        "--seq-len", type=positive_int, help="sequence length T in tokens (default: the preset's context)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def run(args) -> int:
    report = summary(GPTConfig.from_preset(args.preset), args.seq_len)
    print(dumps_json(report, indent=2) if args.json else format_summary(report))
    return 0
