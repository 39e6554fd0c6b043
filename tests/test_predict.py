"""The predictor: its arithmetic on a synthetic profile against hand counts, profile files and precedence,
reference profiles, and (slow) a quick calibration against the model's own training and decoding.
"""

import dataclasses
import json
import math

import pytest

from gpt.config import GPTConfig
from profiling import device_profile, flops, hardware, predict
from profiling.__main__ import main
from profiling.device_profile import DeviceProfile, ProfileError

MATMUL_RATE = 1e9  # FLOP/s everywhere on the grid
ATTENTION_RATE = 2e8
SECONDS_PER_ELEMENT = 1e-9  # every memory-bound kind, at every size
PER_PARAMETER, PER_TENSOR = 3e-9, 2e-6
PER_CALL_INFERENCE, PER_CALL_TRAINING = 5e-6, 7e-6
FIXED = {"forward": 1e-4, "train_micro_step": 3e-4, "token": 2e-4, "prefill": 4e-4, "train_step": 5e-4}


def flat(rate: float, sizes: int = 3) -> list:
    return [[[rate] * sizes for _ in range(sizes)] for _ in range(sizes)]


def synthetic_profile(overlap: bool = False) -> DeviceProfile:
    kinds = set(flops.MEMORY_PASSES)
    return DeviceProfile(
        device="synthetic", device_class="cpu", kind="measured", dtype="fp32", date="2026-11-23", source="test",
        peak_flops=2e9, peak_flops_source="test", memory_bandwidth=1e9,
        matmul={"dims": [1, 64, 4096], "flops_per_sec": flat(MATMUL_RATE)},
        attention={"backend": "sdpa", "batch_heads": [1, 64, 4096], "seq": [1, 64, 4096], "head_dim": [8, 64, 512],
                   "flops_per_sec": {v: flat(ATTENTION_RATE) for v in ("causal", "causal_backward", "decode")}},
        memory={kind: {"elements": [10, 10**9], "seconds": [10 * SECONDS_PER_ELEMENT, SECONDS_PER_ELEMENT * 1e9]}
                for kind in kinds} | {"stream_copy": {"bytes": 2**27, "bytes_per_sec": 1e9}},
        adamw={"seconds_per_parameter": PER_PARAMETER, "seconds_per_tensor": PER_TENSOR},
        overhead={"per_call_s": {"inference": PER_CALL_INFERENCE, "training": PER_CALL_TRAINING},
                  "fixed_s": dict(FIXED), "overlap": overlap},
    )


CONFIG = GPTConfig(vocab_size=300, block_size=64, n_layer=3, n_head=4, n_embd=64)


def test_training_step_time_by_hand():
    batch, seq, accum = 2, 32, 3
    L, d, V = CONFIG.n_layer, CONFIG.n_embd, CONFIG.vocab_size
    n = batch * seq
    # Matmuls: 2 FLOPs per weight per token forward (12 d² per block + the d × V head), 3× for training.
    matmul_flops = accum * 3 * n * 2 * (L * 12 * d * d + d * V)
    # Causal attention: T(T+1)/2 (query, key) pairs per head, 4·head_dim FLOPs each (scores and values);
    # backward 2.5× that.
    attention_flops = accum * 3.5 * L * batch * 4 * d * seq * (seq + 1) // 2
    # Memory-bound elements per forward: embedding n·d, 2L+1 LayerNorms, L transposes, 2L adds, L GELUs of 4d,
    # cross-entropy over the vocabulary; the backward touches the same elements.
    # The backward also sums the output gradient of each biased matmul over the tokens (3d + d + 4d + d per
    # block) and concatenates the q, k, v gradients (3d per block).
    elements = accum * (2 * (n * d * (1 + 2 * L + 1 + L + 2 * L + 4 * L) + n * V) + n * d * 12 * L)
    # Calls: forward 11L + 4 (2 LayerNorms, 4 matmuls, attention, transpose, 2 adds, GELU per block; embedding,
    # ln_f, head, loss); backward the same plus one more call per matmul (4L + 1), 4 bias sums and a concat (5L).
    calls = accum * (11 * L + 4 + 15 * L + 5 + 5 * L)
    params, tensors = flops.param_count(CONFIG), 2 + 12 * L + 2
    expected = {
        "matmul": matmul_flops / MATMUL_RATE,
        "attention": attention_flops / ATTENTION_RATE,
        "memory_bound": elements * SECONDS_PER_ELEMENT,
        "optimizer": params * PER_PARAMETER + tensors * PER_TENSOR,
        "overhead": calls * PER_CALL_TRAINING + accum * FIXED["train_micro_step"] + FIXED["train_step"],
        "communication": 0.0,  # one process
    }
    result = predict.predict_train(CONFIG, batch, seq, accum, synthetic_profile())
    assert result.breakdown == pytest.approx(expected, rel=1e-12)
    step = sum(expected.values())
    assert result.step_seconds == pytest.approx(step, rel=1e-12)
    assert result.tokens_per_sec == pytest.approx(accum * n / step, rel=1e-12)
    assert result.mfu == pytest.approx(accum * n * flops.training_flops_per_token(CONFIG, seq) / step / 2e9)


def test_decode_is_the_mean_over_the_tokens_sample_py_times():
    batch, prompt, new = 3, 10, 5
    L, d, V = CONFIG.n_layer, CONFIG.n_embd, CONFIG.vocab_size
    # N one-token forwards, N − 1 draws timed; each forward's attention reads the slots that hold tokens
    # (eager generate's KVCache.window), prompt + 1 … prompt + new, 4·head_dim FLOPs per slot and head.
    contexts = range(prompt + 1, prompt + new + 1)
    matmul = new * batch * 2 * (L * 12 * d * d + d * V) / MATMUL_RATE
    attention = sum(L * batch * 4 * d * c for c in contexts) / ATTENTION_RATE
    forward_elements = batch * d * (1 + 2 * L + 1 + L + 2 * L + 4 * L + 2 * L)  # ... + KV-cache writes (2d per layer)
    # each draw: the sample over the vocabulary, and the end-of-text check's 4 calls over the batch's ids, priced
    # at the table's smallest size (10 elements: below it, clamped)
    end_of_text = flops.END_OF_TEXT_CALLS * 10
    memory = (new * forward_elements + (new - 1) * (batch * V + end_of_text)) * SECONDS_PER_ELEMENT
    calls = new * (12 * L + 3) + (new - 1) * (1 + flops.END_OF_TEXT_CALLS)  # 11L + 3 as in training, + L KV writes
    overhead = calls * PER_CALL_INFERENCE + new * FIXED["forward"] + (new - 1) * FIXED["token"]
    steps = new - 1
    result = predict.predict_decode(CONFIG, batch, prompt, new, synthetic_profile())
    assert result.breakdown["matmul"] == pytest.approx(matmul / steps, rel=1e-12)
    assert result.breakdown["attention"] == pytest.approx(attention / steps, rel=1e-12)
    assert result.breakdown["memory_bound"] == pytest.approx(memory / steps, rel=1e-12)
    assert result.breakdown["overhead"] == pytest.approx(overhead / steps, rel=1e-12)
    assert result.tokens_per_sec == pytest.approx(batch * steps / (matmul + attention + memory + overhead))


def test_optimizer_cost_per_parameter_follows_the_measured_grid():
    """Each tensor's parameters at the seconds per parameter of its size and the model's parameter count,
    interpolated in log-log, clamped past the grid's edges."""
    profile = synthetic_profile()
    profile.adamw = {"seconds_per_parameter": 0.0, "seconds_per_tensor": PER_TENSOR,
                     "grid": {"tensor_elements": [100, 10**4], "parameters": [10**4, 10**6],
                              "seconds_per_parameter": [[1e-9, 2e-9], [4e-9, 8e-9]]}}
    d, L, V = CONFIG.n_embd, CONFIG.n_layer, CONFIG.vocab_size
    params = flops.param_count(CONFIG)
    total_weight = (math.log(params) - math.log(10**4)) / (math.log(10**6) - math.log(10**4))

    def per_parameter(size: int) -> float:  # by hand: geometric interpolation along each axis, clamped
        size_weight = min(max((math.log(size) - math.log(100)) / (math.log(10**4) - math.log(100)), 0.0), 1.0)
        return 1e-9 * 4**size_weight * 2**total_weight

    # wte, wpe, then per block ln_1, qkv, proj, ln_2 (d each, biases of d, 3d, d, d, 4d, d), fc and mlp proj
    # (4d² each; past the grid's 10⁴ elements like qkv's 3d² and proj's d²), ln_f and its bias.
    sizes = [V * d, CONFIG.block_size * d] + L * [d, 3 * d * d, d * d, d, 4 * d * d, 4 * d * d,
                                                    d, 3 * d, d, d, 4 * d, d] + [d, d]
    assert sum(sizes) == params
    expected = sum(size * per_parameter(size) for size in sizes) + len(sizes) * PER_TENSOR
    result = predict.predict_train(CONFIG, 2, 32, 1, profile)
    assert result.breakdown["optimizer"] == pytest.approx(expected, rel=1e-12)


def test_parameter_tensors_are_the_models_own():
    from gpt import GPT

    for config in (CONFIG, GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                                     bias=False)):
        model_sizes = sorted(p.numel() for p in GPT(config).parameters())
        assert sorted(flops.parameter_tensor_sizes(config)) == model_sizes
        assert sum(model_sizes) == flops.param_count(config)


def prefill_calls(layers: int) -> int:
    """Operation calls of a prefill by hand: 14 a layer (the KV cache's two allocations among them), the
    embeddings, the final LayerNorm and the head, the draw and the end-of-text check's 4."""
    return 14 * layers + 3 + 1 + 4


def test_prefill_by_hand():
    """Its calls cost the profile's prefill per-call figure; a profile without one (a reference profile) charges
    the inference figure."""
    batch, prompt = 2, 16
    L, d, V = CONFIG.n_layer, CONFIG.n_embd, CONFIG.vocab_size
    n = batch * prompt
    matmul = n * 2 * (L * 12 * d * d + d * V) / MATMUL_RATE
    attention = L * batch * 4 * d * prompt * (prompt + 1) // 2 / ATTENTION_RATE
    cache = 2 * L * batch * (prompt + 1) * d  # keys and values of every layer, zero-filled for prompt + 1 tokens
    end_of_text = 4 * 10  # the check's 4 calls over the batch's ids, at the table's smallest size (clamped)
    memory = (n * d * (1 + 2 * L + 1 + L + 2 * L + 4 * L + 2 * L) + batch * V + cache + end_of_text
              ) * SECONDS_PER_ELEMENT
    tables = matmul + attention + memory
    profile = synthetic_profile()
    result = predict.predict_prefill(CONFIG, batch, prompt, profile)
    overhead = prefill_calls(L) * PER_CALL_INFERENCE + FIXED["prefill"]  # generate's one-off work, measured
    assert result.step_seconds == pytest.approx(tables + overhead, rel=1e-12)
    assert result.tokens_per_sec == pytest.approx(n / result.step_seconds)
    profile.overhead["per_call_s"]["prefill"] = 11e-6
    result = predict.predict_prefill(CONFIG, batch, prompt, profile)
    assert result.step_seconds == pytest.approx(tables + prefill_calls(L) * 11e-6 + FIXED["prefill"], rel=1e-12)
    assert result.breakdown["overhead"] == pytest.approx(prefill_calls(L) * 11e-6 + FIXED["prefill"], rel=1e-12)


def test_the_prefill_costs_are_solved_from_two_depths_as_measured_beyond_the_tables():
    """Prefills of the calibration's model measured 2 µs a call and 30 µs more than the tables price: both come
    back; a measurement below the tables gives no negative cost."""
    profile = synthetic_profile()
    profile.overhead = {"per_call_s": {"inference": 0.0, "training": 0.0}, "fixed_s": dict(FIXED, prefill=0.0)}
    shape = device_profile.PREFILL_SHAPE
    prompt, new = device_profile.PREFILL_PROMPT_TOKENS, device_profile.PREFILL_NEW_TOKENS
    tables = [predict.predict_prefill(GPTConfig(n_layer=layers, attention="sdpa", **shape), 1, prompt, profile,
                                      new).step_seconds for layers in (1, 3)]
    measured = [seconds + 2e-6 * prefill_calls(layers) + 3e-5 for seconds, layers in zip(tables, (1, 3))]
    depths = {"width": shape["n_embd"], "prompt_tokens": prompt, "new_tokens": new, "layers": [1, 3]}
    assert device_profile._solve_prefill(profile, depths | {"seconds": measured}) == pytest.approx((2e-6, 3e-5))
    assert device_profile._solve_prefill(profile, depths | {"seconds": [0.5 * t for t in tables]}) == (0.0, 0.0)


def test_overlapped_host_time_counts_only_where_it_exceeds_the_device():
    profile = synthetic_profile(overlap=True)
    op = flops.Op("x", "add", (1000,), 0, 0, count=4)
    assert profile.op_seconds(op, "inference") == pytest.approx((4e-6, 4 * (PER_CALL_INFERENCE - 1e-6)))
    big = flops.Op("x", "add", (10**6,), 0, 0, count=2)
    assert profile.op_seconds(big, "inference") == pytest.approx((2e-3, 0.0))


def test_interpolation_is_linear_in_log_space_and_clamped():
    profile = synthetic_profile()
    profile.matmul = {"dims": [1, 100], "flops_per_sec": [[[1e6, 1e6], [1e6, 1e6]], [[1e8, 1e8], [1e8, 1e8]]]}
    at = lambda m: profile.device_seconds(flops.Op("mm", "matmul", (m, 50, 50), 2 * m * 2500, 0))  # noqa: E731
    assert 2 * 10 * 2500 / at(10) == pytest.approx(1e7)  # halfway in log M: the geometric mean
    assert 2 * 1000 * 2500 / at(1000) == pytest.approx(1e8)  # past the grid: the edge's throughput


def test_operation_listing_sums_to_the_flop_model():
    config = GPTConfig.from_preset("gpt2")
    for seq in (1, 7, 1024):
        hardware = flops.flop_breakdown(config, seq, causal=True)
        train = flops.train_step_operations(config, 2, seq, 1)
        assert sum(op.flops * op.count for op in train) == 2 * seq * hardware.training(recompute_scores=True)
    decode = flops.decode_operations(config, 3, 50)
    assert sum(op.flops * op.count for op in decode) == 3 * flops.decode_flops_per_token(config, 50)


# ----------------------------------------------------------------------------- files and precedence


def test_profile_round_trip_and_bad_files(tmp_path):
    path = device_profile.save_profile(synthetic_profile(), tmp_path / "p.json")
    assert device_profile.load_profile(path) == synthetic_profile()
    data = json.loads(path.read_text())
    (tmp_path / "old.json").write_text(json.dumps(data | {"version": 0}))
    (tmp_path / "foreign.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{")
    for name, words in [("old.json", "version 0"), ("foreign.json", "not a gptmeter"), ("broken.json", "cannot read"),
                        ("missing.json", "does not exist")]:
        with pytest.raises(ProfileError, match=words):
            device_profile.load_profile(tmp_path / name)


def test_measured_beats_reference_and_cpu_is_never_carried_to_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(device_profile, "PROFILES_DIR", tmp_path / "none")
    assert device_profile.resolve_profile("h100-sxm", dtype="bf16").kind == "reference"
    other_cpu = synthetic_profile()  # another CPU's profile in the same cache is not this one's
    device_profile.save_profile(other_cpu, device_profile.cache_path(other_cpu.device, other_cpu.dtype))
    with pytest.raises(ProfileError, match="no measured fp32 profile of this CPU"):
        device_profile.resolve_profile("cpu", dtype="fp32")
    cpu = synthetic_profile()
    cpu.device = hardware.device_name("cpu")
    device_profile.save_profile(cpu, device_profile.cache_path(cpu.device, cpu.dtype))
    assert device_profile.resolve_profile("cpu", dtype="fp32") == cpu
    assert device_profile.resolve_profile("h100-sxm", dtype="fp32").kind == "reference"  # the CPU's is not used
    gpu = synthetic_profile()
    gpu.device, gpu.device_class, gpu.dtype = "NVIDIA H100 80GB HBM3", "h100-sxm", "bf16"
    device_profile.save_profile(gpu, device_profile.cache_path(gpu.device, gpu.dtype))
    assert device_profile.resolve_profile("h100-sxm", dtype="bf16") == gpu
    with pytest.raises(ProfileError, match="never carried"):
        device_profile.resolve_profile("a100-80gb", tmp_path / "device_profiles" /
                                       device_profile.cache_path(gpu.device, gpu.dtype).name)
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path / "empty"))
    with pytest.raises(ProfileError, match="calibrate"):
        device_profile.resolve_profile("cpu", dtype="fp32")


def test_an_outdated_profile_blocks_only_its_own_device(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path))
    old = dataclasses.asdict(synthetic_profile())
    old |= {"version": device_profile.FORMAT_VERSION - 1, "device_class": "h100-sxm", "dtype": "bf16"}
    folder = tmp_path / device_profile.CACHE_DIR
    folder.mkdir()
    (folder / "cpu-old.json").write_text(json.dumps(old | {"device_class": "cpu", "dtype": "fp32"}))
    assert device_profile.resolve_profile("h100-sxm", dtype="bf16").kind == "reference"  # the CPU's file ignored
    (folder / "h100-old.json").write_text(json.dumps(old))
    with pytest.raises(ProfileError, match="recalibrate"):
        device_profile.resolve_profile("h100-sxm", dtype="bf16")


def test_reference_decode_of_a_large_model_is_bandwidth_bound():
    """Batch-1 decode of GPT-2 XL on an H100 reads every weight once: time ≈ bytes / achievable bandwidth."""
    config = GPTConfig.from_preset("gpt2-xl")
    profile = device_profile.reference_profile("h100-sxm", "bf16")
    result = predict.predict_decode(config, 1, 100, 50, profile)
    bandwidth = 3.35e12 * device_profile.REFERENCE_FIGURES["copy_bandwidth_fraction"]["value"]
    weights = flops.decode_weight_bytes(config, "bf16") / bandwidth
    assert result.breakdown["matmul"] == pytest.approx(weights, rel=0.05)
    assert profile.kind == "reference" and "datasheet" in profile.citations


def test_cli_json_and_bad_input(capsys):
    assert main(["predict", "--preset", "gpt2", "--mode", "train", "--batch", "8", "--device", "a100-80gb",
                 "--dtype", "bf16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"tokens_per_sec", "step_seconds", "mfu", "breakdown", "profile"}
    assert set(result["breakdown"]) == set(predict.CATEGORIES)
    assert result["profile"]["kind"] == "reference" and 0 < result["mfu"] < 1
    assert main(["predict", "--layers", "2", "--width", "64", "--heads", "3", "--mode", "train", "--batch", "1",
                 "--device", "h100-sxm"]) == 2
    assert "divisible" in capsys.readouterr().err
    assert main(["predict", "--preset", "gpt2", "--mode", "decode", "--batch", "1", "--prompt-tokens", "1000",
                 "--new-tokens", "100", "--device", "h100-sxm"]) == 2
    assert "context" in capsys.readouterr().err


def test_skinny_matmuls_of_large_models_read_weights_from_memory():
    """Below the warm window the warm table holds; past the cold window the cold one; between, log-log."""
    profile = synthetic_profile()
    profile.matmul |= {"window_bytes": 2**25, "cold": {"rows": [1, 64], "flops_per_sec": flat(1e8)[:2],
                                                        "window_bytes": 2**29}}
    op = lambda m, weights: flops.Op("mm", "matmul", (m, 64, 64), 2 * m * 4096, 0, working_set=weights)  # noqa: E731
    rate = lambda o: o.flops / profile.device_seconds(o)  # noqa: E731
    assert rate(op(1, 2**24)) == pytest.approx(MATMUL_RATE)
    assert rate(op(1, 2**30)) == pytest.approx(1e8)
    assert rate(op(1, 2**27)) == pytest.approx((MATMUL_RATE * 1e8) ** 0.5)  # halfway in log bytes
    assert rate(op(4096, 2**30)) == pytest.approx(MATMUL_RATE)  # wide products: the warm table only


def test_the_window_curve_says_how_cold_a_large_models_weights_are():
    """The share of the measured slowdown, from the curve's cache-hot smallest window to the cold window,
    that a model's weight bytes have reached (log FLOP/s) sets how far its skinny matmuls move to the cold table."""
    profile = synthetic_profile()
    profile.matmul |= {"window_bytes": 2**25, "cold": {"rows": [1, 64], "flops_per_sec": flat(1e8)[:2],
                                                        "window_bytes": 2**29},
                       "window_curve": {"bytes": [2**22, 2**24, 2**26, 2**29], "flops_per_sec": [8e9, 8e9, 4e9, 2e9]}}
    op = lambda weights: flops.Op("mm", "matmul", (1, 64, 64), 2 * 4096, 0, working_set=weights)  # noqa: E731
    rate = lambda o: o.flops / profile.device_seconds(o)  # noqa: E731
    # 64 MiB: the curve has fallen from 8 to 4 of its 8-to-2 GFLOP/s, half the way in log: halfway to cold.
    assert rate(op(2**26)) == pytest.approx((MATMUL_RATE * 1e8) ** 0.5)
    assert rate(op(2**24)) == pytest.approx(MATMUL_RATE)  # where the curve has not fallen: the warm table


def test_the_curve_also_prices_models_inside_the_warm_window_and_the_in_model_excess_slows_the_cold_end():
    """With a window curve, a 16 MiB model whose curve point has fallen halfway (log) moves halfway to cold, though
    the warm table read over 32 MiB; `in_model_excess` slows the cold end (1: half the cold table's FLOP/s)."""
    profile = synthetic_profile()
    profile.matmul |= {"window_bytes": 2**25, "cold": {"rows": [1, 64], "flops_per_sec": flat(1e8)[:2],
                                                        "window_bytes": 2**29},
                       "window_curve": {"bytes": [2**22, 2**24, 2**29], "flops_per_sec": [8e9, 4e9, 2e9]}}
    op = lambda m, weights: flops.Op("mm", "matmul", (m, 64, 64), 2 * m * 4096, 0, working_set=weights)  # noqa: E731
    rate = lambda o: o.flops / profile.device_seconds(o)  # noqa: E731
    assert rate(op(1, 2**24)) == pytest.approx((MATMUL_RATE * 1e8) ** 0.5)
    profile.matmul["cold"]["in_model_excess"] = {"rows": [1, 16], "excess": [1.0, 3.0]}
    assert rate(op(1, 2**29)) == pytest.approx(1e8 / 2)
    assert rate(op(1, 2**24)) == pytest.approx((MATMUL_RATE * 1e8 / 2) ** 0.5)
    assert rate(op(4096, 2**29)) == pytest.approx(MATMUL_RATE)  # wide products: the warm table only
    # between the measured rows, log-linear in rows: 4 rows is halfway from 1 to 16, an excess of 2; past 16, 3
    assert rate(op(4, 2**29)) == pytest.approx(1e8 / 3)
    assert rate(op(64, 2**29)) == pytest.approx(1e8 / 4)


@pytest.mark.parametrize("batch", [1, 16])
def test_in_model_excess_is_the_unpriced_time_of_the_model_over_its_matmuls_price(batch):
    """The CPU grid's decode forward (768 wide, 6 layers) priced on the synthetic profile, with its fixed cost,
    and measured 30% of its matmuls' price slower than that: the excess is 0.3. Its matmuls by hand: 2 FLOPs per
    weight and row, 12·d² weights a layer and the 8-token head."""
    profile = synthetic_profile()
    grid = device_profile.GRIDS["cpu"]
    width, layers = grid.in_model_width, grid.in_model_layers
    config = GPTConfig(n_layer=layers, attention="sdpa", **device_profile.in_model_shape(width))
    priced = sum(predict.price(flops.forward_operations(config, batch, 1, 5), profile, "inference").values())
    priced += profile.overhead["fixed_s"]["forward"]
    matmuls = batch * 2 * (layers * 12 * width**2 + config.vocab_size * width) / MATMUL_RATE
    depths = {"width": width, "batch": batch, "layers": [layers], "seconds": [priced + 0.3 * matmuls]}
    assert device_profile.in_model_excess(profile, depths) == pytest.approx(0.3)
    assert device_profile.in_model_excess(profile, depths | {"seconds": [priced - matmuls]}) == 0.0


def test_a_decode_steps_skinny_matmuls_start_from_the_hot_table_and_count_the_kv_cache():
    """A decode step's products (variant "decode") blend from the hot table towards the cold one; a prefill's
    and a training step's from the warm table. The bytes that decide how far are the weights plus, in a
    decode step, the KV cache: here 4 MiB of weights sit where the curve has not fallen, and 60 MiB of
    cache take the working set to 64 MiB, where it has fallen halfway (log)."""
    profile = synthetic_profile()
    hot_rate = 4 * MATMUL_RATE
    profile.matmul |= {"window_bytes": 2**26, "cold": {"rows": [1, 64], "flops_per_sec": flat(1e8)[:2],
                                                        "window_bytes": 2**29},
                       "hot": {"rows": [1, 64], "flops_per_sec": flat(hot_rate)[:2], "window_bytes": 2**22},
                       "window_curve": {"bytes": [2**22, 2**24, 2**26, 2**29], "flops_per_sec": [8e9, 8e9, 4e9, 2e9]}}
    op = lambda variant, weights: flops.Op("mm", "matmul", (1, 64, 64), 2 * 4096, 0, variant=variant,  # noqa: E731
                                           working_set=weights)
    rate = lambda o: o.flops / profile.device_seconds(o)  # noqa: E731
    assert rate(op("decode", 2**22)) == pytest.approx(hot_rate)
    assert rate(op("", 2**22)) == pytest.approx(MATMUL_RATE)
    assert rate(op("decode", 2**26)) == pytest.approx((hot_rate * 1e8) ** 0.5)
    assert rate(op("decode", 2**29)) == pytest.approx(1e8)
    wide = flops.Op("mm", "matmul", (4096, 64, 64), 2 * 4096**2, 0, variant="decode", working_set=2**22)
    assert rate(wide) == pytest.approx(MATMUL_RATE)  # past the skinny rows: the warm table only

    config = GPTConfig(vocab_size=300, block_size=4096, n_layer=2, n_head=4, n_embd=64)
    weights = flops.param_count(config) * 4
    batch, keys = 4, 1000
    cache = 2 * config.n_layer * batch * keys * config.n_embd * 4
    decode = [o for o in flops.forward_operations(config, batch, 1, keys) if o.kind == "matmul"]
    prefill = [o for o in flops.forward_operations(config, batch, keys) if o.kind == "matmul"]
    assert {(o.variant, o.working_set) for o in decode} == {("decode", weights + cache)}
    assert {(o.variant, o.working_set) for o in prefill} == {("", weights)}


def test_each_fixed_cost_path_keeps_its_fastest_pass():
    """A slow spell in one pass of the fixed-cost models (all of the first pass at 1 layer) is left out path by
    path, so the per-call cost solved from the two depths is not that pass's."""
    first = {1: {"inference": 3e-4, "training": 9e-4, "token": 4e-4, "train_step": 2e-3},
             3: {"inference": 4e-4, "training": 1.1e-3, "token": 5e-4, "train_step": 3e-3}}
    second = {1: {"inference": 2e-4, "training": 6e-4, "token": 2.5e-4, "train_step": 1.5e-3},
              3: {"inference": 4.2e-4, "training": 1.2e-3, "token": 4.8e-4, "train_step": 3.1e-3}}
    merged = device_profile._fastest_timings(first, second)
    assert merged == {1: {"inference": 2e-4, "training": 6e-4, "token": 2.5e-4, "train_step": 1.5e-3},
                      3: {"inference": 4e-4, "training": 1.1e-3, "token": 4.8e-4, "train_step": 3e-3}}


def test_each_in_model_depth_keeps_its_faster_pass():
    """A burst slowing one depth in one pass (3 layers in the first, 6 in the second) is left out at each batch."""
    first = [{"width": 768, "batch": 1, "layers": [3, 6], "seconds": [5.0, 9.0]},
             {"width": 768, "batch": 16, "layers": [3, 6], "seconds": [20.0, 35.0]}]
    second = [{"width": 768, "batch": 1, "layers": [3, 6], "seconds": [4.0, 11.0]},
              {"width": 768, "batch": 16, "layers": [3, 6], "seconds": [18.0, 40.0]}]
    merged = device_profile._fastest_depths(first, second)
    assert [row["seconds"] for row in merged] == [[4.0, 9.0], [18.0, 35.0]]
    assert [row["batch"] for row in merged] == [1, 16]


def test_a_quick_profile_serves_the_ceilings_view_but_no_prediction(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path))
    quick = synthetic_profile()
    quick.device = hardware.device_name("cpu")
    device_profile.save_profile(quick, device_profile.cache_path(quick.device, "fp32", quick=True))
    assert device_profile.cached_ceilings(quick.device, "fp32") == device_profile.as_ceilings(quick)
    assert device_profile.cached_profile(quick.device, "fp32") is None
    with pytest.raises(ProfileError, match="calibrate"):
        device_profile.resolve_profile("cpu", dtype="fp32")


def test_row_wise_kinds_interpolate_log_linearly_in_the_row_width():
    profile = synthetic_profile()
    # LayerNorm timed at widths 64 and 1024: 4 and 1 seconds per element; a 256-wide op lies halfway in log width
    profile.memory["layernorm"] = {"elements": [10, 10**9], "widths": [64, 1024],
                                   "seconds": [[40.0, 4e9], [10.0, 1e9]]}
    at = lambda width: profile.device_seconds(flops.Op("ln", "layernorm", (1000, width), 0, 0))  # noqa: E731
    assert at(64) == pytest.approx(4000.0)
    assert at(256) == pytest.approx(2000.0)  # the geometric mean of 4000 and 1000
    assert at(4096) == pytest.approx(1000.0)  # clamped at the widest
    with pytest.raises(ValueError, match="row width"):
        profile.device_seconds(flops.Op("ln", "layernorm", (1000,), 0, 0))
    listed = flops.forward_operations(CONFIG, 2, 8)
    assert {op.shape for op in listed if op.kind in ("layernorm", "embedding")} == {(2 * 8 * 64, 64)}


def test_decode_kv_write_moves_to_its_cold_table_as_the_model_outgrows_the_warm_window():
    profile = synthetic_profile()
    profile.matmul |= {"window_bytes": 100, "cold": {"rows": [1], "flops_per_sec": flat(MATMUL_RATE),
                                                     "window_bytes": 10_000}}
    profile.memory["kv_write_decode_cold"] = {"elements": [10, 10**9], "seconds": [100 * SECONDS_PER_ELEMENT,
                                                                                  100 * SECONDS_PER_ELEMENT * 1e8]}
    op = lambda working_set: flops.Op("kv", "kv_write_decode", (1000,), 0, 0, working_set=working_set)  # noqa: E731
    warm, cold = 1000 * SECONDS_PER_ELEMENT, 1000 * 10 * SECONDS_PER_ELEMENT
    assert profile.device_seconds(op(50)) == pytest.approx(warm)
    assert profile.device_seconds(op(10_000)) == pytest.approx(cold)
    assert profile.device_seconds(op(1000)) == pytest.approx(math.sqrt(warm * cold))  # halfway in log bytes
    decode = [op for op in flops.decode_operations(CONFIG, 2, 9) if op.kind == "kv_write_decode"]
    weights = flops.param_count(CONFIG) * 4
    assert decode[0].working_set == weights + 2 * CONFIG.n_layer * 2 * 9 * CONFIG.n_embd * 4
