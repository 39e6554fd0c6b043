"""Communication of data-parallel training: the ring model, the measured table and the predictor's
`--world-size`, against hand counts; (slow) the collectives and the harness measured by 2 gloo processes under
torchrun."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt.config import GPTConfig
from profiling import collectives, device_profile, flops, harness, predict
from profiling.collectives import CommunicationError, Link
from tests.test_predict import PER_CALL_TRAINING, PER_PARAMETER, PER_TENSOR, SECONDS_PER_ELEMENT, synthetic_profile

ROOT = Path(__file__).resolve().parent.parent
CONFIG = GPTConfig(vocab_size=300, block_size=64, n_layer=3, n_head=4, n_embd=64)
# One block: 12·64² weights + 13·64 biases and LayerNorm gains; the root: wte 300·64, wpe 64·64, ln_f 2·64.
BLOCK, ROOT_UNIT = 12 * 64 * 64 + 13 * 64, 300 * 64 + 64 * 64 + 2 * 64
HARNESS = {"ddp": {"per_step_s": 4e-4, "per_block_s": 1e-5}, "fsdp": {"per_step_s": 2e-3, "per_block_s": 3e-3}}
TABLE = {"backend": "gloo", "world_size": 2, "harness": HARNESS,
         "ops": {op: {"bytes": [1000, 3000], "seconds": [1e-4, 3e-4]} for op in collectives.OPS}}


def test_ring_by_hand():
    link = Link(bytes_per_s=1e11, latency_s=1e-6, source="test")
    assert collectives.link_seconds("all_reduce", 1e9, 4, link) == pytest.approx(2 * 3 / 4 * 1e9 / 1e11 + 6e-6)
    assert collectives.link_seconds("all_gather", 1e9, 4, link) == pytest.approx(3 / 4 * 1e9 / 1e11 + 3e-6)
    assert collectives.link_seconds("reduce_scatter", 1e9, 1, link) == 0


def test_two_level_collectives_beyond_a_server_by_hand():
    intra, inter = Link(1e11, 1e-6, "nvlink"), Link(1e10, 5e-6, "nic")
    cluster = collectives.Cluster(4, intra, inter)
    S = 1e9
    # inside one server: the plain ring
    assert collectives.cluster_seconds("all_reduce", S, 4, cluster) == collectives.link_seconds("all_reduce", S, 4,
                                                                                                 intra)
    # 16 devices = 4 servers × 4: ring inside, then each device's S/4 across 4 servers over its NIC, tree latency
    assert collectives.cluster_seconds("all_reduce", S, 16, cluster) == pytest.approx(
        2 * 3 / 4 * S / 1e11 + 6 * 1e-6 + 2 * 3 / 4 * (S / 4) / 1e10 + 2 * 2 * 5e-6)
    assert collectives.cluster_seconds("reduce_scatter", S, 16, cluster) == pytest.approx(
        3 / 4 * S / 1e11 + 3 * 1e-6 + 3 / 4 * (S / 4) / 1e10 + 2 * 5e-6)
    assert collectives.cluster_seconds("all_gather", S, 16, cluster) == pytest.approx(
        collectives.cluster_seconds("reduce_scatter", S, 16, cluster))
    # 20 devices span 5 servers (the last partly used): ⌈log2 5⌉ = 3 tree hops each way
    assert collectives.cluster_seconds("all_reduce", S, 20, cluster) == pytest.approx(
        2 * 3 / 4 * S / 1e11 + 6e-6 + 2 * 4 / 5 * (S / 4) / 1e10 + 2 * 3 * 5e-6)
    # one device per server (no intra link): the across-servers stage alone
    lone = collectives.Cluster(1, None, inter)
    assert collectives.cluster_seconds("all_reduce", S, 8, lone) == pytest.approx(2 * 7 / 8 * S / 1e10 + 2 * 3 * 5e-6)
    with pytest.raises(CommunicationError, match="need an intra-server link"):
        collectives.Cluster(8, None, inter)


def test_reference_data_parallel_beyond_a_server_adds_infiniband_by_hand():
    profile = device_profile.reference_profile("a100-80gb", "bf16")
    S = 4 * flops.param_count(CONFIG)  # one bucket
    alone = predict.predict_train(CONFIG, 2, 32, 1, profile)
    sixteen = predict.predict_train(CONFIG, 2, 32, 1, profile, world_size=16)
    # 2 servers × 8 A100: NVLink 3 ring (300 GB/s, 2 µs/hop), then S/8 over 200 Gb/s HDR (25 GB/s, 5 µs/hop)
    expected = 2 * 7 / 8 * S / 300e9 + 14 * 2e-6 + 2 * 1 / 2 * (S / 8) / 25e9 + 2 * 1 * 5e-6
    assert sixteen.breakdown["communication"] == pytest.approx(expected, rel=1e-12)
    copies = sum(predict.price(collectives.data_parallel_copies(CONFIG, 16, 1, False, "bf16"), profile,
                                "training").values())
    assert sixteen.step_seconds == pytest.approx(alone.step_seconds + expected + copies, rel=1e-12)  # no harness
    four_per_server = predict.predict_train(CONFIG, 2, 32, 1, profile, world_size=16, devices_per_server=4)
    assert four_per_server.breakdown["communication"] == pytest.approx(
        2 * 3 / 4 * S / 300e9 + 6 * 2e-6 + 2 * 3 / 4 * (S / 4) / 25e9 + 2 * 2 * 5e-6, rel=1e-12)
    cluster = predict.reference_cluster("l4")  # PCIe card without a datasheet network: the assumed one
    assert cluster.inter.bytes_per_s == 100e9 / 8 / 8 and cluster.inter.source.startswith("assumption")
    assert predict.reference_cluster("cpu").per_server == 1  # no intra-server link: one device per server


def test_measured_table_interpolates_clamps_and_extrapolates_at_its_bandwidth():
    assert collectives.table_seconds(TABLE, "all_reduce", 2000, 2) == pytest.approx(2e-4)
    assert collectives.table_seconds(TABLE, "all_reduce", 10, 2) == pytest.approx(1e-4)  # latency floor
    assert collectives.table_seconds(TABLE, "all_reduce", 6000, 2) == pytest.approx(6e-4)
    with pytest.raises(CommunicationError, match="nproc_per_node 4"):
        collectives.table_seconds(TABLE, "all_reduce", 2000, 4)


def test_ddp_all_reduces_every_gradient_in_buckets_and_fsdp_gathers_blocks_twice_per_micro_step():
    calls = []

    def bytes_of(op, size):
        calls.append((op, size))
        return size

    assert flops.param_count(CONFIG) == 3 * BLOCK + ROOT_UNIT
    assert collectives.fsdp_units(CONFIG) == (BLOCK, ROOT_UNIT)
    total = 4 * flops.param_count(CONFIG)
    assert collectives.data_parallel_seconds(CONFIG, 2, 3, False, bytes_of) == total  # one bucket under 1 MiB
    assert {op for op, _ in calls} == {"all_reduce"}
    big = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)  # GPT-2: 498 MB
    calls.clear()
    collectives.data_parallel_seconds(big, 2, 1, False, bytes_of)
    # 497,759,232 bytes: the first bucket of 1 MiB, then 18 of 25 MiB and the rest, 496,710,656 − 18·26,214,400
    assert [size for _, size in calls] == [2**20] + [25 * 2**20] * 18 + [496_710_656 - 18 * 26_214_400]
    calls.clear()
    # per micro-step (3) each block gathered twice and the root once; per step one reduce-scatter of each unit
    gathered = 4 * 3 * (2 * 3 * BLOCK + ROOT_UNIT)
    assert collectives.data_parallel_seconds(CONFIG, 2, 3, True, bytes_of) == pytest.approx(gathered + total)
    assert set(calls) == {(op, 4 * unit) for op in ("all_gather", "reduce_scatter") for unit in (BLOCK, ROOT_UNIT)}
    assert collectives.data_parallel_seconds(CONFIG, 1, 3, True, bytes_of) == 0


def test_ddp_step_adds_the_all_reduce_the_bucket_copies_and_the_harness_by_hand():
    profile = dataclasses.replace(synthetic_profile(), collectives=TABLE)
    alone = predict.predict_train(CONFIG, 2, 32, 1, profile)
    ddp = predict.predict_train(CONFIG, 2, 32, 1, profile, world_size=2)
    params = flops.param_count(CONFIG)
    all_reduce = collectives.table_seconds(TABLE, "all_reduce", 4 * params, 2)
    copies = 2 * (params * SECONDS_PER_ELEMENT + PER_CALL_TRAINING)  # into the one bucket and back
    harness = HARNESS["ddp"]["per_step_s"] + 3 * HARNESS["ddp"]["per_block_s"]
    assert alone.breakdown["communication"] == 0
    assert ddp.breakdown["communication"] == pytest.approx(all_reduce)
    assert ddp.breakdown["memory_bound"] == pytest.approx(alone.breakdown["memory_bound"] + 2 * params * 1e-9)
    assert ddp.step_seconds == pytest.approx(alone.step_seconds + all_reduce + copies + harness)
    assert ddp.tokens_per_sec == pytest.approx(alone.tokens_per_sec * alone.step_seconds / ddp.step_seconds)


def test_fsdp_step_by_hand_gathers_copies_sharded_optimizer_and_harness():
    profile = dataclasses.replace(synthetic_profile(), collectives=TABLE)
    accum = 2
    alone = predict.predict_train(CONFIG, 2, 32, accum, profile)
    fsdp = predict.predict_train(CONFIG, 2, 32, accum, profile, world_size=2, sharded=True)
    seconds = lambda op, units: collectives.table_seconds(TABLE, op, 4 * units, 2)  # noqa: E731
    communication = (accum * (2 * 3 * seconds("all_gather", BLOCK) + seconds("all_gather", ROOT_UNIT))
                     + 3 * seconds("reduce_scatter", BLOCK) + seconds("reduce_scatter", ROOT_UNIT))
    # Each gather copies the shard in (half a unit, rounded up) and the whole unit out; each reduce-scatter
    # copies the unit's gradients in: 6 block gathers and 1 root gather per micro-step, 4 reduce-scatters.
    gathers = accum * (2 * 3 * (-(-BLOCK // 2) + BLOCK) + (-(-ROOT_UNIT // 2) + ROOT_UNIT))
    copied = gathers + 3 * BLOCK + ROOT_UNIT
    copy_calls = accum * 2 * (2 * 3 + 1) + 3 + 1
    # AdamW over each tensor's half (every size here is even): parameters halve, tensors stay
    optimizer = flops.param_count(CONFIG) / 2 * PER_PARAMETER + flops.parameter_tensors(CONFIG) * PER_TENSOR
    harness = HARNESS["fsdp"]["per_step_s"] + 3 * HARNESS["fsdp"]["per_block_s"]
    assert all(size % 2 == 0 for size in flops.parameter_tensor_sizes(CONFIG))
    assert fsdp.breakdown["communication"] == pytest.approx(communication)
    assert fsdp.breakdown["optimizer"] == pytest.approx(optimizer)
    assert fsdp.breakdown["memory_bound"] == pytest.approx(alone.breakdown["memory_bound"] + copied * 1e-9)
    assert fsdp.breakdown["overhead"] == pytest.approx(alone.breakdown["overhead"] + copy_calls * PER_CALL_TRAINING
                                                       + harness)


def test_a_table_without_the_harness_says_how_to_measure_it():
    table = {key: value for key, value in TABLE.items() if key != "harness"}
    profile = dataclasses.replace(synthetic_profile(), collectives=table)
    with pytest.raises(CommunicationError, match="torchrun --standalone --nproc_per_node 2 -m profiling calibrate"):
        predict.predict_train(CONFIG, 2, 32, 1, profile, world_size=2)


def test_the_harness_splits_into_a_cost_per_step_and_per_block():
    assert harness.split({1: 5e-3, 3: 11e-3}) == pytest.approx({"per_step_s": 2e-3, "per_block_s": 3e-3})
    assert harness.split({3: 1e-3, 1: 2e-3}) == {"per_step_s": 2e-3, "per_block_s": 0.0}  # no negative block cost
    assert harness.split({1: -1e-3, 3: -1e-3}) == {"per_step_s": 0.0, "per_block_s": 0.0}


def test_a_profile_without_collectives_says_how_to_measure_them():
    with pytest.raises(predict.PredictError, match="torchrun --standalone --nproc_per_node 2 -m profiling calibrate"):
        predict.predict_train(CONFIG, 2, 32, 1, synthetic_profile(), world_size=2)
    with pytest.raises(predict.PredictError, match="--mode train"):
        predict.predict(CONFIG, "decode", synthetic_profile(), 1, prompt_tokens=4, new_tokens=4, world_size=2)


def test_reference_gpu_profiles_ring_over_the_nvlink_of_the_hardware_table():
    profile = device_profile.reference_profile("h100-sxm", "bf16")
    step = predict.predict_train(CONFIG, 2, 32, 1, profile, world_size=8)
    link = Link(450e9, collectives.REFERENCE_LATENCY_S, "")
    assert step.breakdown["communication"] == pytest.approx(
        collectives.link_seconds("all_reduce", 4 * flops.param_count(CONFIG), 8, link))


@pytest.mark.slow
def test_two_gloo_processes_measure_every_collective_and_the_harness(tmp_path):
    script = tmp_path / "measure.py"
    script.write_text("import dataclasses, json, torch, torch.distributed as dist\n"
                      "from profiling import harness\n"
                      "from profiling.collectives import measure\n"
                      "from tests.test_predict import synthetic_profile\n"
                      "dist.init_process_group('gloo')\n"
                      "table = measure(sizes=(1024, 65536), repeats=2, progress=False)\n"
                      "profile = dataclasses.replace(synthetic_profile(), collectives=table)\n"
                      "table['harness'] = harness.measure(profile, torch.device('cpu'), 'fp32', steps=3)\n"
                      "print(json.dumps(table)) if dist.get_rank() == 0 else None\n"
                      "dist.destroy_process_group()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads(done.stdout.strip().splitlines()[-1])
    assert table["backend"] == "gloo" and table["world_size"] == 2
    for op in collectives.OPS:
        assert table["ops"][op]["bytes"] == [1024, 65536]
        assert all(seconds > 0 for seconds in table["ops"][op]["seconds"])
    for mode in collectives.MODES:  # the width-8 steps of both wrappers were timed, and their harness is finite
        assert set(table["harness"]["measured_s"][mode]) == {"1", "3"}
        assert all(value > 0 for value in table["harness"]["measured_s"][mode].values())
        assert 0 <= collectives.harness_seconds(table, CONFIG, mode == "fsdp") < 1
