"""The micro-benchmarks time the shapes and memory traffic a model has (profiling/microbench.py)."""

import torch

from profiling import microbench


def test_large_matmuls_are_shrunk_but_never_made_skinny():
    # (1024 × 4096) @ (4096 × 4096): 3.4e10 FLOPs; a 3e8 budget alone would time 8 rows.
    assert microbench._shrink(1024, 2 * 4096 * 4096, 3e8) == 8
    assert microbench._shrink(1024, 2 * 4096 * 4096, 3e8, microbench.MIN_TIMED_ROWS) == 256
    assert microbench._shrink(64, 2 * 4096 * 4096, 3e8, microbench.MIN_TIMED_ROWS) == 64  # already skinny: as is
    assert microbench._shrink(1024, 2 * 64 * 64, 3e8, microbench.MIN_TIMED_ROWS) == 1024  # fits: as is


def test_decode_attention_reads_the_whole_cache_from_successive_places():
    seen = []

    def attend(q, k, v, mask):
        seen.append((k.data_ptr(), v.data_ptr(), tuple(k.shape), bool(mask.all()), tuple(mask.shape)))
        return q

    batch_heads, keys, head_dim = 2, 16, 8
    one_cache = 2 * batch_heads * keys * head_dim * 4  # keys and values, float32
    call = microbench._decode_call(attend, batch_heads, keys, head_dim, torch.device("cpu"), torch.float32,
                                   3 * one_cache)
    for _ in range(4):
        call()
    places = [ptr for ptr, _, _, _, _ in seen]
    assert len(set(places[:3])) == 3 and places[3] == places[0]  # three places in the window, then round again
    assert all(shape == (batch_heads, 1, keys, head_dim) and visible and mask == (1, keys)
               for _, _, shape, visible, mask in seen)  # the model's path: every slot behind an all-true mask


def test_decode_depth_seconds_times_the_models_own_decode_forward_at_two_depths(monkeypatch):
    """It runs GPT's one-token forward against a 4-token cache (at each depth, in alternation) and keeps each
    depth's fastest; timings scripted, two rounds of (1 layer, 3 layers)."""
    from gpt.config import GPTConfig
    from gpt.model import GPT

    calls = []
    real_forward = GPT.forward

    def forward(self, idx, *args, **kwargs):
        calls.append((self.config.n_layer, self.config.n_embd, tuple(idx.shape), kwargs["cache"].pos.item()))
        return real_forward(self, idx, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", forward)
    times = iter([3e-3, 9e-3, 2e-3, 8e-3])  # rounds of (1 layer, 3 layers): the fastest of each is kept
    monkeypatch.setattr(microbench, "seconds_per_call", lambda work, device: (work(), next(times))[1])
    config = GPTConfig(n_layer=1, n_embd=32, n_head=1, vocab_size=8, block_size=16, attention="sdpa")
    result = microbench.decode_depth_seconds(torch.device("cpu"), "fp32", config, rounds=2)
    assert result == {"width": 32, "layers": [1, 3], "seconds": [2e-3, 8e-3]}
    prompts = [call for call in calls if call[2] == (1, 4)]
    steps = [call for call in calls if call[2] == (1, 1)]
    assert sorted(layers for layers, *_ in prompts) == [1, 3]  # each model's 4-token prompt, once
    assert {(layers, width, pos) for layers, width, _, pos in steps} == {(1, 32, 4), (3, 32, 4)}  # always slot 4
