"""The Triton attention kernel against a float64 oracle, forward and backward.

Without CUDA these run in Triton's interpreter (see conftest.py). The error bound
follows the FlashAttention tests: the kernel's error against float64 may be at
most a small multiple of the error that PyTorch itself makes at the kernel's
precision, plus a tiny absolute floor for cases where that error is ~0.
"""

from __future__ import annotations

import importlib
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from kernels import attention_reference, flash_attention, measured_faster_than_sdpa

flash_module = importlib.import_module("kernels.fused_attention")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F16, F32, BF16 = torch.float16, torch.float32, torch.bfloat16
OUTPUT_ERROR_FACTOR, GRAD_ERROR_FACTOR, ERROR_FLOOR = 2.0, 3.0, 1e-5


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch):
    """Fill every buffer the kernels write with NaN, so an element they skip cannot pass."""

    def allocate_nan(shape, like, dtype=None):
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype or like.dtype)

    monkeypatch.setattr(flash_module, "_allocate", allocate_nan)


def random_inputs(batch, heads, kv_heads, seq_q, seq_k, head_dim, dtype, seed=0):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, device=DEVICE, dtype=torch.float32).to(dtype)

    q = normal(batch, heads, seq_q, head_dim)
    k, v = normal(batch, kv_heads, seq_k, head_dim), normal(batch, kv_heads, seq_k, head_dim)
    grad_out = normal(batch, heads, seq_q, head_dim)
    return q, k, v, grad_out


def output_and_grads(attention, q, k, v, grad_out, causal, dtype):
    """Run `attention` on copies of q, k, v cast to `dtype`; return (out, dq, dk, dv)."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = attention(*leaves, causal=causal)
    out.backward(grad_out.to(dtype))
    return [out.detach()] + [t.grad for t in leaves]


def assert_close_to_oracle(q, k, v, grad_out, causal):
    """Kernel vs float64 reference, within a multiple of the same-precision reference's error."""
    dtype = q.dtype
    ours = output_and_grads(flash_attention, q, k, v, grad_out, causal, dtype)
    exact = output_and_grads(attention_reference, q, k, v, grad_out, causal, torch.float64)
    torch_same_precision = output_and_grads(attention_reference, q, k, v, grad_out, causal, dtype)
    names = ("out", "dq", "dk", "dv")
    factors = (OUTPUT_ERROR_FACTOR,) + (GRAD_ERROR_FACTOR,) * 3
    for name, factor, mine, truth, baseline in zip(names, factors, ours, exact, torch_same_precision):
        assert mine.shape == truth.shape and mine.dtype == dtype, name
        assert torch.isfinite(mine).all(), f"{name}: elements left unwritten or not finite"
        error = (mine.double() - truth).abs().max().item()
        allowed = factor * (baseline.double() - truth).abs().max().item() + ERROR_FLOOR
        assert error <= allowed, f"{name}: max error {error:.3g} > allowed {allowed:.3g}"
    return ours


# (batch, heads, kv_heads, seq_q, seq_k, head_dim, causal, dtype): each axis covered, not the product.
CASES = {
    "len1": (1, 2, 2, 1, 1, 16, True, F32),
    "len17-gqa": (2, 4, 2, 17, 17, 32, True, F16),
    "len64-mqa-full": (1, 4, 1, 64, 64, 64, False, F32),
    "len113-d128": (1, 2, 2, 113, 113, 128, True, F16),
    "len255-full": (1, 2, 2, 255, 255, 16, False, F16),
    "q<k-chunk": (1, 2, 1, 17, 113, 32, True, F32),
    "q<k-decode": (1, 2, 2, 1, 255, 64, True, F16),
    "q>k-masked-rows": (1, 2, 2, 113, 66, 16, True, F32),
    "q>k-full": (1, 2, 1, 64, 17, 32, False, F16),
    "len577": (1, 1, 1, 577, 577, 16, True, F32),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_float64_reference(case):
    *shape, causal, dtype = case
    batch, heads, kv_heads, seq_q, seq_k, head_dim = shape
    q, k, v, grad_out = random_inputs(*shape, dtype)
    out, dq, _, _ = assert_close_to_oracle(q, k, v, grad_out, causal)
    if causal and seq_q > seq_k:
        blind_rows = seq_q - seq_k  # query i sees keys j <= i - blind_rows: none for i < blind_rows
        assert torch.all(out[:, :, :blind_rows] == 0) and torch.all(dq[:, :, :blind_rows] == 0)
        assert out[:, :, blind_rows:].abs().sum() > 0


TMA_CASES = ("len17-gqa", "len113-d128", "q<k-decode", "q>k-masked-rows", "q>k-full", "len577")


@pytest.mark.parametrize("name", TMA_CASES)
def test_tma_forward_matches_float64_reference(monkeypatch, name):
    """The Hopper path, K and V loaded through TMA tensor descriptors (tails zero-filled by
    the copy, not masked), run in the interpreter as the GPU would run it on sm_90."""
    original, descriptors = flash_module._tma_descriptor, []
    monkeypatch.setattr(flash_module, "_tma_eligible", lambda k, v: True)
    monkeypatch.setattr(flash_module, "_tma_descriptor", lambda t: descriptors.append(original(t)) or descriptors[-1])
    *shape, causal, dtype = CASES[name]
    q, k, v, grad_out = random_inputs(*shape, dtype, seed=3)
    if name == "len17-gqa":  # the model's layout: (B, T, H, D) memory seen as (B, H, T, D)
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert_close_to_oracle(q, k, v, grad_out, causal)
    assert len(descriptors) == 2  # K and V: the TMA path ran
    assert all(d.block_shape == [1, 1, 16, shape[-1]] for d in descriptors)  # boxes set to the interpreter's tile


def test_non_contiguous_inputs_and_grad():
    """Strided views as a model produces them, and a head_dim stride that is not 1."""
    q, k, v, grad_out = random_inputs(2, 4, 2, 40, 40, 32, F32, seed=1)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B, T, H, D) memory, seen as (B, H, T, D)
    k = k.transpose(-2, -1).contiguous().transpose(-2, -1)  # stride along head_dim is seq_k
    v = v.transpose(1, 2).contiguous().transpose(1, 2)
    grad_out = grad_out.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or grad_out.is_contiguous())
    assert_close_to_oracle(q, k, v, grad_out, causal=True)


def test_custom_sm_scale():
    q, k, v, grad_out = random_inputs(1, 2, 2, 33, 33, 16, F32, seed=2)
    expected = attention_reference(q.double(), k.double(), v.double(), causal=False, sm_scale=0.9)
    got = flash_attention(q, k, v, causal=False, sm_scale=0.9)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)


def test_log_sum_exp_is_saved_per_row_and_infinite_for_blind_rows():
    q, k, v, _ = random_inputs(1, 2, 1, 40, 24, 16, F32, seed=3)
    scale = 0.25
    _, lse = flash_module.flash_attention_fwd(q, k, v, True, scale)
    scores = (q.double() @ k.double().repeat_interleave(2, dim=1).transpose(-2, -1)) * scale
    visible = torch.arange(24, device=DEVICE) <= torch.arange(40, device=DEVICE)[:, None] - 16
    expected = scores.masked_fill(~visible, float("-inf")).logsumexp(-1)
    assert torch.all(lse[:, :, :16] == float("inf"))
    torch.testing.assert_close(lse[:, :, 16:].double(), expected[:, :, 16:], rtol=0, atol=1e-5)


def test_reference_agrees_with_torch_sdpa():
    """The oracle itself, against torch's implementation (bottom-right causal mask, GQA)."""
    from torch.nn.attention.bias import causal_lower_right

    q, k, v, _ = random_inputs(2, 4, 2, 9, 30, 16, torch.float64, seed=4)
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                              attn_mask=causal_lower_right(9, 30))
    torch.testing.assert_close(attention_reference(q, k, v, causal=True), expected)
    expected_full = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    torch.testing.assert_close(attention_reference(q, k, v, causal=False), expected_full)
    blind = attention_reference(k, q[:, :2], q[:, :2], causal=True)  # 30 queries, 9 keys: 21 rows see nothing
    assert torch.all(blind[:, :, :21] == 0) and torch.isfinite(blind).all()


def test_flop_counter_counts_the_kernel_like_torch_counts_sdpa():
    batch, heads, seq_q, seq_k, head_dim = 2, 4, 17, 33, 16
    q, k, v, grad_out = random_inputs(batch, heads, heads, seq_q, seq_k, head_dim, F32, seed=5)
    q.requires_grad_()
    with FlopCounterMode(display=False) as counter:
        flash_attention(q, k, v, causal=True).backward(grad_out)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    hand_count = 4 * batch * heads * seq_q * seq_k * head_dim  # two matmuls, 2 FLOPs per multiply-add
    assert by_op == {"gptmeter.flash_attention_fwd": hand_count, "gptmeter.flash_attention_bwd": 2.5 * hand_count}
    assert hand_count == sdpa_flop_count(q.shape, k.shape, v.shape)
    assert 2.5 * hand_count == sdpa_backward_flop_count(grad_out.shape, q.shape, k.shape, v.shape)


def test_runs_under_torch_compile_without_graph_break():
    q, k, v, grad_out = random_inputs(1, 2, 1, 20, 20, 16, F32, seed=6)

    def loss(q, k, v):
        return (flash_attention(q, k, v, causal=True) * grad_out).sum()

    def grads(loss_fn):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        loss_fn(*leaves).backward()
        return [t.grad for t in leaves]

    compiled = grads(torch.compile(loss, backend="aot_eager", fullgraph=True))
    for expected, got in zip(grads(loss), compiled):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "q_shape, kv_shape, dtype, message",
    [
        ((1, 2, 8, 48), (1, 2, 8, 48), F32, "head_dim 48"),
        ((1, 3, 8, 16), (1, 2, 8, 16), F32, "multiple of key/value heads"),
        ((1, 2, 8, 16), (1, 2, 8, 16), torch.float64, "dtype"),
        ((1, 2, 8), (1, 2, 8), F32, "(batch, heads, seq, head_dim)"),
    ],
)
def test_rejects_bad_inputs_with_a_clear_message(q_shape, kv_shape, dtype, message):
    q, kv = torch.randn(q_shape, dtype=dtype), torch.randn(kv_shape, dtype=dtype)
    with pytest.raises(ValueError, match=re.escape(message)):
        flash_attention(q, kv, kv)


def test_cpu_without_interpreter_says_it_needs_cuda(monkeypatch):
    monkeypatch.setattr(flash_module, "INTERPRETED", False)
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        flash_attention(q, q, q)


def test_auto_picks_the_kernel_only_where_the_evidence_table_lists_the_gpu(monkeypatch):
    selection = importlib.import_module("kernels.selection")
    monkeypatch.setattr(selection, "SDPA_BEATEN_ON", {"NVIDIA H100 80GB HBM3": "bench/results/example.json"})
    assert measured_faster_than_sdpa("NVIDIA H100 80GB HBM3")
    assert not measured_faster_than_sdpa("NVIDIA H100 PCIe")


def test_tiny_gpt_trains_and_decodes_the_same_with_triton_and_naive_attention():
    from gpt.config import GPTConfig
    from gpt.model import GPT

    def build(attention):
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_kv_head=1, n_embd=32,
                           attention=attention)
        return GPT(config).to(DEVICE)

    naive, triton_model = build("naive"), build("triton")
    tokens = torch.randint(0, 64, (2, 25), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    losses = {}
    for name, model in (("naive", naive), ("triton", triton_model)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses[name] = []
        for _ in range(2):
            _, loss = model(tokens[:, :-1], targets=tokens[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    assert losses["naive"][-1] < losses["naive"][0]
    torch.testing.assert_close(losses["triton"], losses["naive"], rtol=0, atol=1e-4)

    prompt = tokens[:, :5]
    with torch.no_grad():
        decoded = {name: model.eval().generate(prompt, 4, temperature=0.0)
                   for name, model in (("naive", naive), ("triton", triton_model))}
    assert torch.equal(decoded["triton"], decoded["naive"])


# --------------------------------------------------------------------------- GPU only

GPU_CASES = {
    "bf16-gqa": (2, 8, 2, 257, 257, 64, True, BF16),
    "bf16-d128-full": (1, 4, 4, 300, 300, 128, False, BF16),
    "bf16-q>k": (1, 4, 1, 200, 77, 32, True, BF16),
    "bf16-decode": (4, 8, 2, 1, 1000, 128, True, BF16),
    "large-f16": (2, 16, 16, 2048, 2048, 128, True, F16),
    "large-bf16-gqa": (1, 16, 4, 4096, 4096, 64, True, BF16),
}


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES.values(), ids=GPU_CASES.keys())
def test_gpu_matches_float64_reference(case):
    *shape, causal, dtype = case
    q, k, v, grad_out = random_inputs(*shape, dtype, seed=7)
    assert_close_to_oracle(q, k, v, grad_out, causal)


@pytest.mark.gpu
def test_gpu_backward_is_deterministic():
    q, k, v, grad_out = random_inputs(2, 16, 4, 1024, 1024, 128, BF16, seed=8)
    first = output_and_grads(flash_attention, q, k, v, grad_out, True, BF16)
    second = output_and_grads(flash_attention, q, k, v, grad_out, True, BF16)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
