"""The model against independent references: published sizes, causality, backends, the KV cache."""

import importlib
import math

import pytest
import torch

from gpt.errors import GptmeterError
from gpt.config import GPTConfig
from gpt.generate import sample_next_token
from gpt.model import GPT, causal_mask, naive_attention, sdpa_attention


def small_config(**overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32), **overrides})


def build(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


@pytest.mark.parametrize(
    "preset, published",
    [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)],
)
def test_gpt2_parameter_counts_match_the_released_checkpoints(preset, published):
    with torch.device("meta"):  # shapes only: no memory for 1.5B weights
        model = GPT(GPTConfig.from_preset(preset))
    assert model.num_params() == published


def test_output_head_shares_the_token_embedding():
    model = build(small_config())
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_residual_projections_start_smaller_with_depth():
    config = small_config(n_layer=8, n_embd=256, n_head=4)
    model = build(config)
    expected = 0.02 / math.sqrt(2 * config.n_layer)
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - expected) / expected < 0.05
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) / 0.02 < 0.05


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
def test_changing_a_later_token_never_changes_earlier_logits(attention):
    model = build(small_config(attention=attention))
    idx = torch.randint(0, 61, (2, 20))
    changed = idx.clone()
    changed[:, 12:] = (changed[:, 12:] + 7) % 61
    before, _ = model(idx)
    after, _ = model(changed)
    torch.testing.assert_close(before[:, :12], after[:, :12], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 12:], after[:, 12:])


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_naive_and_sdpa_models_agree(n_kv_head):
    naive = build(small_config(attention="naive", n_kv_head=n_kv_head))
    sdpa = build(small_config(attention="sdpa", n_kv_head=n_kv_head))
    sdpa.load_state_dict(naive.state_dict())
    idx = torch.randint(0, 61, (3, 24))
    targets = torch.randint(0, 61, (3, 24))
    logits_a, loss_a = naive(idx, targets)
    logits_b, loss_b = sdpa(idx, targets)
    torch.testing.assert_close(logits_a, logits_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_a, loss_b)


@pytest.mark.parametrize("t_query, t_key", [(1, 9), (4, 9), (9, 9)])
def test_attention_backends_match_float64_softmax_with_bottom_right_mask(t_query, t_key):
    torch.manual_seed(1)
    q = torch.randn(2, 4, t_query, 8, dtype=torch.float64)
    k, v = torch.randn(2, 2, t_key, 8, dtype=torch.float64), torch.randn(2, 2, t_key, 8, dtype=torch.float64)
    # Independent reference: loop over heads and queries, softmax over the keys each query may see.
    expected = torch.empty_like(q)
    for h in range(4):
        for i in range(t_query):
            visible = i + (t_key - t_query) + 1
            scores = torch.einsum("bd,bsd->bs", q[:, h, i], k[:, h // 2, :visible]) / math.sqrt(8)
            weights = torch.softmax(scores, dim=-1)
            expected[:, h, i] = torch.einsum("bs,bsd->bd", weights, v[:, h // 2, :visible])
    torch.testing.assert_close(naive_attention(q, k, v), expected)
    torch.testing.assert_close(sdpa_attention(q, k, v), expected)


def test_causal_mask_is_bottom_right_aligned():
    mask = causal_mask(2, 4, torch.device("cpu"))
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("batch", [1, 2])  # batch 1 decodes through decoding_head's (C, vocab) copy on a CPU
def test_kv_cache_generation_equals_full_recomputation(batch):
    model = build(small_config(n_kv_head=2))
    prompt = torch.randint(0, 61, (batch, 5))
    generated = model.generate(prompt, max_new_tokens=40, temperature=0)  # runs past the context of 24
    idx = prompt
    for _ in range(40):  # no cache: re-run the cropped window for every token
        logits, _ = model(idx[:, -24:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, idx)


def test_decoding_head_is_the_output_head_transposed_and_follows_its_updates():
    from gpt.generate import decoding_head

    model = build(small_config())
    assert decoding_head(model, batch=2) is None  # only one sequence gains from the other layout
    head = decoding_head(model, batch=1)
    assert head.shape == (32, 61) and head.is_contiguous()
    assert decoding_head(model, batch=1) is head  # kept: the copy is made once, not per step
    hidden = torch.randn(1, 32, dtype=torch.float64)
    expected = hidden @ model.lm_head.weight.detach().double().t()
    torch.testing.assert_close((hidden.float() @ head).double(), expected, rtol=1e-5, atol=1e-5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # an in-place update, as fine-tuning between samples does
    model(torch.randint(0, 61, (1, 5)), targets=torch.randint(0, 61, (1, 5)))[1].backward()
    optimizer.step()
    updated = decoding_head(model, batch=1)
    assert updated is not head and torch.equal(updated, model.lm_head.weight.detach().t())
    model.double()  # another dtype, another tensor
    assert decoding_head(model, batch=1).dtype == torch.float64
    with torch.inference_mode():
        inference_model = build(small_config())
    assert decoding_head(inference_model, batch=1) is None  # no version counter to follow: the model's own head


def test_generation_stops_at_end_of_text():
    model = build(small_config())
    prompt = torch.randint(0, 61, (1, 3))
    first = model.generate(prompt, max_new_tokens=1, temperature=0)[0, -1].item()
    out = model.generate(prompt, max_new_tokens=30, temperature=0, eos_token=first)
    assert out.shape[1] == 4 and out[0, -1].item() == first


def test_sampling_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    gen = torch.Generator().manual_seed(0)
    assert sample_next_token(logits, temperature=0).item() == 1
    draws = {sample_next_token(logits, 1.0, top_k=2, generator=gen).item() for _ in range(200)}
    assert draws == {1, 2}
    # softmax([1,3,2,.5]) ≈ [.085,.629,.231,.052]: p=0.7 keeps the best two, p=0.5 only the best.
    assert {sample_next_token(logits, 1.0, top_p=0.7, generator=gen).item() for _ in range(200)} == {1, 2}
    assert {sample_next_token(logits, 1.0, top_p=0.5, generator=gen).item() for _ in range(50)} == {1}


def test_draws_follow_the_probabilities_and_never_pick_a_zero():
    from gpt.generate import draw

    probs = torch.tensor([0.5, 0.25, 0.125, 0.0, 0.125, 0.0])  # dyadic: exact in float32 and float64
    n = 40_000
    draws = draw(probs.expand(n, -1), torch.Generator().manual_seed(0))  # n rows, one draw each
    frequencies = torch.bincount(draws, minlength=6).double() / n
    sigma = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert (frequencies - probs.double()).abs().le(5 * sigma).all()
    assert frequencies[3] == 0 and frequencies[5] == 0  # zero probability, before and after the last positive one


def test_tiny_model_overfits_one_batch():
    model = build(small_config())
    model.train()
    idx = torch.randint(0, 61, (4, 24), generator=torch.Generator().manual_seed(3))
    targets = torch.roll(idx, -1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    _, first = model(idx, targets)
    for _ in range(150):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first.item() > math.log(61) * 0.9
    assert loss.item() < 0.1


def test_sequence_longer_than_context_is_refused():
    model = build(small_config())
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 25, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=30), "divisible"),
        (dict(n_kv_head=3), "multiple"),
        (dict(attention="fast"), "unknown attention"),
        (dict(n_layer=0), "positive"),
    ],
)
def test_bad_configs_are_rejected(overrides, message):
    with pytest.raises(GptmeterError, match=message):
        small_config(**overrides)


def test_attention_auto_is_sdpa_on_cpu_and_triton_there_needs_the_interpreter(monkeypatch):
    from gpt.model import resolve_attention

    assert resolve_attention("auto", "cpu") == "sdpa"
    monkeypatch.setattr(importlib.import_module("kernels.fused_attention"), "INTERPRETED", False)
    with pytest.raises(GptmeterError, match="needs a CUDA GPU"):
        resolve_attention("triton", "cpu")


def test_a_head_size_the_triton_kernel_lacks_is_a_config_error_not_a_failed_first_step():
    from kernels.fused_attention import SUPPORTED_HEAD_DIMS

    assert 48 not in SUPPORTED_HEAD_DIMS
    with pytest.raises(GptmeterError, match="gives 48; change --width or --heads, or use --attention sdpa"):
        small_config(n_embd=96, n_head=2, attention="triton")
    assert small_config(n_embd=96, n_head=2, attention="sdpa").head_dim == 48


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(GptmeterError, match="tiny, gpt2"):
        GPTConfig.from_preset("gpt5")


def test_end_of_text_and_streaming_do_not_depend_on_how_often_the_host_looks(monkeypatch):
    import gpt.generate

    model = build(small_config(block_size=64))
    prompt = torch.randint(0, 61, (3, 4))
    free = model.generate(prompt, max_new_tokens=50, temperature=0)
    eos = int(free[0, 4 + 20])  # row 0 meets it at step 20 at the latest; other rows maybe earlier, maybe never
    results = []
    for every in (1, 16):
        monkeypatch.setattr(gpt.generate, "SYNC_EVERY", every)
        chunks = []
        out = model.generate(prompt, max_new_tokens=50, temperature=0, eos_token=eos, on_tokens=chunks.append)
        assert torch.equal(torch.cat(chunks, dim=1), out[:, 4:])  # streamed = returned
        assert chunks[0].size(1) == 1 and all(c.size(1) <= every for c in chunks)
        results.append(out)
    assert torch.equal(results[0], results[1])
    out = results[0]
    finished_at = [(row[4:] == eos).nonzero()[0].item() if (row[4:] == eos).any() else None for row in free]
    done = all(step is not None for step in finished_at)  # then it stops where the last row finished
    assert out.size(1) == 4 + (max(finished_at) + 1 if done else 50)
    for row, free_row, step in zip(out, free, finished_at):
        end = out.size(1) if step is None else 4 + step + 1
        assert torch.equal(row[:end], free_row[:end]) and (row[end:] == eos).all()  # then padded with eos


def test_static_cache_keeps_its_shape_and_address_while_decoding():
    from gpt.model import KVCache

    config = small_config()
    model = build(config)
    cache = KVCache(config, batch=2, capacity=config.block_size)
    address, shape = cache.keys[1].data_ptr(), cache.keys[1].shape
    with torch.no_grad():
        model(torch.randint(0, 61, (2, 5)), cache=cache)
        for _ in range(3):
            model(torch.randint(0, 61, (2, 1)), cache=cache)
    assert cache.keys[1].data_ptr() == address and cache.keys[1].shape == shape and cache.pos.item() == 8
    with pytest.raises(ValueError, match="exceeds the context"):
        KVCache(config, batch=1, capacity=config.block_size + 1)


def test_decode_steps_attend_over_the_stored_slots_only():
    """A cache preallocated for the whole context: each eager step reads prompt + tokens so far, not every slot."""
    model = build(small_config(n_layer=1, block_size=24))
    seen = []
    attend = model.transformer.h[0].attn.attend
    model.transformer.h[0].attn.attend = lambda q, k, v, mask=None: seen.append(k.size(2)) or attend(q, k, v, mask)
    with torch.no_grad():
        model.generate(torch.randint(0, 61, (1, 4)), max_new_tokens=6, temperature=0)
    assert seen == [4, 5, 6, 7, 8, 9]  # the prompt attends to itself, then one more slot per new token


def test_compiled_windows_are_few_and_cover_the_stored_slots():
    from gpt.generate import MIN_WINDOW, window_bucket

    windows = [window_bucket(slots, capacity=80) for slots in range(1, 81)]
    assert sorted(set(windows)) == [MIN_WINDOW, 64, 80]
    assert all(slots <= window <= max(MIN_WINDOW, 2 * slots) for slots, window in enumerate(windows, start=1))


@pytest.mark.slow
def test_compiled_decode_step_gives_the_eager_tokens():
    model = build(small_config(n_layer=1, block_size=80))
    prompt = torch.randint(0, 61, (2, 5))
    eager = model.generate(prompt, max_new_tokens=90, temperature=0)  # windows 32, 64 and 80; past the context
    from torch._dynamo.utils import counters

    from gpt.generate import compile_steps

    assert compile_steps(model, prompt, max_new_tokens=90) == [32, 64, 80]
    compiled = counters["stats"]["unique_graphs"]
    assert torch.equal(model.generate(prompt, max_new_tokens=90, temperature=0, compile=True), eager)
    assert counters["stats"]["unique_graphs"] == compiled  # compile_steps compiled every window the run used
    assert torch.equal(model.generate(prompt[:, :3], max_new_tokens=8, temperature=0, compile=True),
                       model.generate(prompt[:, :3], max_new_tokens=8, temperature=0))
    one = prompt[:1]  # batch 1: the step multiplies by decoding_head's copy, an input of the compiled graph
    assert torch.equal(model.generate(one, max_new_tokens=8, temperature=0, compile=True),
                       model.generate(one, max_new_tokens=8, temperature=0))
