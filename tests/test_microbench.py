"""The micro-benchmarks time the shapes and memory traffic a model has (profiling/microbench.py)."""

import pytest
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
    depth's fastest; timings scripted, two rounds of (2 layers, 4 layers)."""
    from gpt.config import GPTConfig
    from gpt.model import GPT

    calls = []
    real_forward = GPT.forward

    def forward(self, idx, *args, **kwargs):
        calls.append((self.config.n_layer, self.config.n_embd, tuple(idx.shape), kwargs["cache"].pos.item()))
        return real_forward(self, idx, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", forward)
    times = iter([3e-3, 9e-3, 2e-3, 8e-3])  # rounds of (2 layers, 4 layers): the fastest of each is kept
    monkeypatch.setattr(microbench, "seconds_per_call", lambda work, device: (work(), next(times))[1])
    config = GPTConfig(n_layer=1, n_embd=32, n_head=1, vocab_size=8, block_size=16, attention="sdpa")
    result = microbench.decode_depth_seconds(torch.device("cpu"), "fp32", config, batch=1, depths=(2, 4),
                                           rounds=2)
    assert result == {"width": 32, "batch": 1, "layers": [2, 4], "seconds": [2e-3, 8e-3]}
    prompts = [call for call in calls if call[2] == (1, 4)]
    steps = [call for call in calls if call[2] == (1, 1)]
    assert sorted(layers for layers, *_ in prompts) == [2, 4]  # each model's 4-token prompt, once
    assert {(layers, width, pos) for layers, width, _, pos in steps} == {(2, 32, 4), (4, 32, 4)}  # always slot 4


def test_prefill_depth_seconds_times_generate_to_its_first_token_once_after_the_warm_up(monkeypatch):
    """Each prefill is one `GPT.generate` call timed from its start to its first new token, right after
    sample.py's warm-up, with its end-of-text check; the depths alternate every `repeats` calls and each keeps
    its fastest. Durations scripted through the clock: rounds of (1 layer × 2, 3 layers × 2)."""
    import gpt.warmup
    from gpt.config import GPTConfig
    from gpt.model import GPT

    events = []
    real_warm_up, real_generate = gpt.warmup.warm_up, GPT.generate
    def warm_up(model, idx, plan, *sampling):
        events.append(("warm-up", model.config.n_layer, tuple(idx.shape)))
        return real_warm_up(model, idx, plan, *sampling)

    monkeypatch.setattr(gpt.warmup, "warm_up", warm_up)

    def generate(self, idx, max_new_tokens, *args, on_tokens, **kwargs):
        assert kwargs["eos_token"] == self.config.vocab_size  # sample.py's end-of-text check, an id never drawn
        events.append(("generate", self.config.n_layer, tuple(idx.shape), max_new_tokens))

        def first_token(columns):
            events.append(("first token", columns.shape))
            on_tokens(columns)
        return real_generate(self, idx, max_new_tokens, *args, on_tokens=first_token, **kwargs)

    monkeypatch.setattr(GPT, "generate", generate)
    durations = iter([5e-3, 4e-3, 9e-3, 8e-3, 3e-3, 6e-3, 10e-3, 7e-3])
    now = [0.0]

    def clock() -> float:  # called at the start, then at the first token: that interval takes the next duration
        if events[-1][0] == "first token":
            now[0] += next(durations)
        return now[0]

    monkeypatch.setattr(microbench, "host_clock", lambda threads: ("scripted", clock))
    config = GPTConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=11, block_size=32, attention="sdpa")
    result = microbench.prefill_depth_seconds(torch.device("cpu"), "fp32", config, 6, 3, rounds=2, repeats=2)
    assert result == {"width": 16, "prompt_tokens": 6, "new_tokens": 3, "layers": [1, 3],
                      "seconds": [pytest.approx(3e-3), pytest.approx(7e-3)]}
    calls = [event for event in events if event[0] == "generate"]
    assert [layers for _, layers, *_ in calls] == [1, 1, 3, 3, 1, 1, 3, 3]
    assert all(shape == (1, 6) and new == 3 for _, _, shape, new in calls)
    for index, event in enumerate(events):
        if event[0] == "generate":  # the warm-up of the same model, on the same prompt, just before
            assert events[index - 1] == ("warm-up", event[1], (1, 6))
    assert next(durations, None) is None  # every call timed once


def test_the_optimizer_step_is_timed_on_matrices_the_trainer_decays(monkeypatch):
    """make_optimizer decays matrices, not vectors; a model's parameters are nearly all matrices, so the timed
    state must land in the decayed group, with every step's gradients clipped and applied."""
    import gpt.trainer

    made = []
    real = gpt.trainer.make_optimizer

    def spy(params, config):
        optimizer = real(params, config)
        made.append((optimizer, config.weight_decay))
        return optimizer

    monkeypatch.setattr(gpt.trainer, "make_optimizer", spy)
    monkeypatch.setattr(microbench, "seconds_per_call", lambda work, device: (work(), work(), 1.0)[2])
    microbench._optimizer_step_seconds(torch.device("cpu"), tensors=3, elements=8, window=3 * 8 * 16)
    (optimizer, decay), = made
    assert decay > 0
    decayed = [group for group in optimizer.param_groups if group["weight_decay"] == decay]
    assert [len(group["params"]) for group in decayed] == [3]
    assert all(len(optimizer.state[param]) > 0 for param in decayed[0]["params"])  # AdamW stepped on each


def test_memory_bound_calls_write_into_blocks_not_just_freed(monkeypatch):
    """A residual add timed over 4 operand sets: each call's result stays alive for 4 calls, so the allocator
    hands the next call a block last written 4 calls ago, not the one just freed (cache-hot)."""
    outputs = []
    add = torch.add

    def recording_add(*operands):
        result = add(*operands)
        outputs.append(result.data_ptr())
        return result

    monkeypatch.setattr(torch, "add", recording_add)
    elements = 4096
    forward, backward = microbench._memory_work("add", elements, torch.device("cpu"), torch.float32,
                                                window=4 * 2 * elements * 4)  # two operands of 16 KiB, 4 sets
    for _ in range(12):
        forward()
    assert backward is None
    # while a call runs, the four before it are held: every five successive results lie in five blocks
    assert all(len(set(outputs[i:i + 5])) == 5 for i in range(len(outputs) - 4))
