"""The analytic FLOP, parameter and byte model against hand counts, published numbers and counters run on the model.

Counter cross-checks run the real `gpt.model.GPT`: tiny configs with real data on the CPU, and
GPT-2's full shape on the meta device (same ops and shapes, no arithmetic), which lets the
counters see GPT-2 at T = 1024 in well under a second.
"""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from gpt.model import GPT, KVCache
from profiling import flops
from profiling.__main__ import main

aten = torch.ops.aten

TINY = GPTConfig.from_preset("tiny", attention="naive")
TINY_GQA = GPTConfig.from_preset("tiny", n_head=4, n_kv_head=2, attention="naive")


def tiny_variant(config: GPTConfig, attention: str) -> GPTConfig:
    return GPTConfig(**{**config.to_dict(), "attention": attention})


# ----------------------------------------------------------------------------- published numbers and hand counts


@pytest.mark.parametrize(
    "preset, params",
    [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)],
)
def test_gpt2_parameter_counts(preset, params):
    assert flops.param_count(GPTConfig.from_preset(preset)) == params


def test_gpt3_is_175b():
    # Brown et al. (2020), table 2.1: "175.0B"; the shape gives 174.6e9 (GPT-3's own count rounds up).
    assert flops.param_count(GPTConfig.from_preset("gpt3-175b")) == pytest.approx(175e9, rel=0.005)


def test_gpt2_flops_per_token_from_the_guide():
    config = GPTConfig.from_preset("gpt2")
    assert flops.forward_flops_per_token(config, 1024) == 284_812_800
    assert flops.training_flops_per_token(config, 1024) == 854_438_400


@pytest.mark.parametrize("config", [GPTConfig.from_preset("gpt2"), TINY_GQA, GPTConfig.from_preset("gpt3-175b")])
def test_forward_is_two_flops_per_matmul_weight_plus_attention(config):
    """2·N_matmul + 4·n_layer·T·d: N_matmul = the weight matrices (wte doubles as the head), from param_count."""
    plain = GPTConfig(**{**config.to_dict(), "bias": False})
    d = config.n_embd
    matmul_weights = flops.param_count(plain) - config.block_size * d - (2 * config.n_layer + 1) * d
    for seq_len in (1, 100, config.block_size):
        expected = 2 * matmul_weights + 4 * config.n_layer * seq_len * d
        assert flops.forward_flops_per_token(config, seq_len) == expected


def test_gqa_shrinks_only_the_kv_projections():
    full, grouped = flops.flop_breakdown(TINY, 64), flops.flop_breakdown(TINY_GQA, 64)
    d, d_kv = TINY.n_embd, TINY_GQA.n_kv_head * TINY_GQA.head_dim
    assert full.qkv - grouped.qkv == TINY.n_layer * 2 * d * 2 * (d - d_kv)
    assert _without(full, "qkv") == _without(grouped, "qkv")


def _without(breakdown: flops.FlopBreakdown, name: str) -> dict:
    return {key: value for key, value in breakdown.components().items() if key != name}


@pytest.mark.parametrize("seq_len", [1, 2, 7, 128])
def test_causal_attention_counts_the_mask_entries(seq_len):
    config = TINY
    visible = int(torch.ones(seq_len, seq_len).tril().sum())  # T·(T+1)/2 score entries
    causal = flops.flop_breakdown(config, seq_len, causal=True)
    assert causal.attention_scores * seq_len == config.n_layer * 2 * config.n_embd * visible
    assert causal.attention_values == causal.attention_scores
    full = flops.flop_breakdown(config, seq_len)
    assert causal.forward - full.forward == 2 * (causal.attention_scores - full.attention_scores)


def test_hardware_flops_follow_the_attention_backend():
    naive, fused = TINY, tiny_variant(TINY, "sdpa")
    assert flops.hardware_flops_per_token(naive, 64) == flops.training_flops_per_token(naive, 64)
    causal = flops.flop_breakdown(fused, 64, causal=True)
    assert flops.hardware_flops_per_token(fused, 64) == 3 * causal.forward + causal.attention_scores
    assert flops.hardware_flops_per_token(fused, 64, training=False) == causal.forward


def test_decode_steps_add_up_to_a_causal_prefill():
    config = GPTConfig.from_preset("gpt2")
    prompt = 300
    assert sum(flops.decode_flops_per_token(config, length) for length in range(1, prompt + 1)) == flops.prefill_flops(
        config, prompt
    )


def test_bad_lengths_are_refused():
    with pytest.raises(GptmeterError, match="sequence length"):
        flops.flop_breakdown(TINY, 0)
    with pytest.raises(GptmeterError, match="context length"):
        flops.decode_flops_per_token(TINY, 0)
    with pytest.raises(GptmeterError, match="unknown dtype"):
        flops.kv_cache_bytes_per_token(TINY, "fp12")


# ----------------------------------------------------------------------------- against the real model


@pytest.mark.parametrize("config", [TINY, TINY_GQA])
def test_param_count_matches_the_model(config):
    assert flops.param_count(config) == GPT(config).num_params()
    no_bias = GPTConfig(**{**config.to_dict(), "bias": False})
    assert flops.param_count(no_bias) == sum(p.numel() for p in GPT(no_bias).parameters())


def _cpu_sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Full-matrix count, as torch counts its CUDA SDPA kernels: scores and weighted values, 2·T·S·D FLOPs each."""
    batch, heads, t_query, head_dim = query_shape
    return 2 * (2 * batch * heads * t_query * key_shape[2] * head_dim)


def _cpu_sdpa_backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Torch's CUDA SDPA backward count: the scores recomputed, then four gradient matmuls."""
    return 5 * _cpu_sdpa_forward(query_shape, key_shape, value_shape) // 2


# PyTorch counts its CUDA attention kernels but not the CPU one the sdpa backend runs here.
CPU_SDPA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(model: GPT, idx: torch.Tensor, backward: bool) -> tuple[int, dict]:
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FORMULAS) as counter:
        logits, loss = model(idx, targets=idx)
        if backward:
            loss.backward()
    return counter.get_total_flops(), counter.get_flop_counts()["Global"]


@pytest.mark.parametrize("config", [TINY, TINY_GQA, tiny_variant(TINY, "sdpa"), tiny_variant(TINY_GQA, "sdpa")])
def test_flop_counter_agrees_on_a_real_cpu_run(config):
    torch.manual_seed(0)
    batch, seq_len = 2, 48
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (batch, seq_len))
    breakdown = flops.flop_breakdown(config, seq_len)

    forward, ops = count_flops(model, idx, backward=False)
    if config.attention == "sdpa":
        assert aten._scaled_dot_product_flash_attention_for_cpu in ops  # the attention was counted, not skipped
    assert forward == batch * seq_len * breakdown.forward

    # Each matmul's backward is two matmuls of its size; the fused kernel also recomputes the scores.
    training, _ = count_flops(model, idx, backward=True)
    recompute = config.attention == "sdpa"
    assert training == batch * seq_len * breakdown.training(recompute_scores=recompute)


def test_flop_counter_agrees_on_gpt2_at_full_context():
    config = GPTConfig.from_preset("gpt2", attention="naive")
    with torch.device("meta"):
        model = GPT(config)
        idx = torch.zeros(1, 1024, dtype=torch.long)
    forward, _ = count_flops(model, idx, backward=False)
    assert forward == 1024 * 284_812_800
    training, _ = count_flops(model, idx, backward=True)
    assert training == 1024 * 854_438_400


def test_flop_counter_agrees_on_a_decode_step_and_kv_bytes():
    config = TINY_GQA
    model = GPT(config).eval()
    batch, prompt = 3, 20
    cache = KVCache(config, batch, capacity=prompt + 1)  # the decode step attends to every slot: prompt + 1
    with torch.no_grad():
        model(torch.randint(0, config.vocab_size, (batch, prompt)), cache=cache)
        with FlopCounterMode(display=False) as counter:
            model(torch.randint(0, config.vocab_size, (batch, 1)), cache=cache)
    assert counter.get_total_flops() == batch * flops.decode_flops_per_token(config, prompt + 1)

    allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    per_token = allocated // (batch * cache.capacity)  # the cache is preallocated to its capacity
    assert per_token == flops.kv_cache_bytes_per_token(config, "fp32")

    read = flops.decode_bytes_per_step(config, prompt + 1, batch, weight_dtype="fp32")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    unused_positions = (config.block_size - 1) * config.n_embd * 4
    assert read == weights - unused_positions + batch * (prompt + 1) * per_token


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
def test_fvcore_agrees_after_doubling(attention):
    fvcore = pytest.importorskip("fvcore.nn")
    from fvcore.nn.jit_handles import get_shape

    def sdpa_multiply_adds(inputs, outputs):
        batch, heads, t_query, head_dim = get_shape(inputs[0])
        return 2 * batch * heads * t_query * get_shape(inputs[1])[2] * head_dim

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, idx):
            return self.model(idx)[0]

    config = tiny_variant(TINY_GQA, attention)
    batch, seq_len = 2, 32
    idx = torch.randint(0, config.vocab_size, (batch, seq_len))
    model = GPT(config)
    analysis = (
        fvcore.FlopCountAnalysis(Logits(model), (idx,))
        .set_op_handle("aten::scaled_dot_product_attention", sdpa_multiply_adds)
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )
    multiply_adds = analysis.by_operator()
    del multiply_adds["layer_norm"]  # fvcore also counts LayerNorm, which the FLOP model leaves out
    assert 2 * sum(multiply_adds.values()) == batch * seq_len * flops.forward_flops_per_token(config, seq_len)


# ----------------------------------------------------------------------------- command line


def test_cli_json(capsys):
    assert main(["flops", "--preset", "gpt2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["params"], report["forward_flops_per_token"], report["training_flops_per_token"]) == (
        124_439_808,
        284_812_800,
        854_438_400,
    )
    assert sum(report["forward_breakdown"].values()) == report["forward_flops_per_token"]
    assert report["kv_cache_bytes_per_token"]["bf16"] == 2 * 12 * 768 * 2


def test_cli_table_and_seq_len(capsys):
    assert main(["flops", "--preset", "tiny", "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert f"{flops.forward_flops_per_token(TINY, 64):,}" in out and "T = 64" in out


def test_cli_rejects_a_bad_preset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["flops", "--preset", "gpt5"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gpt5'" in capsys.readouterr().err
