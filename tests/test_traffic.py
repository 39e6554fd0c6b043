"""scale --traffic FILE: a distribution of (prompt, output, share) classes, its means priced and its 99th percentile
reserved in the KV cache, by hand; bad files refused in one line naming the problem."""

import json

import pytest

from profiling import cost, flops, scale
from profiling.device_profile import reference_profile
from profiling.plan import ServingInputs, plan_serving
from profiling.traffic import TrafficError, read_traffic

ROWS = [(70, 215, 6), (1020, 130, 3.9), (1500, 500, 0.1)]  # shares as weights: 60%, 39%, 1%


def _json(tmp_path, rows=ROWS, name="traffic.json"):
    path = tmp_path / name
    path.write_text(json.dumps([{"prompt_tokens": p, "output_tokens": o, "share": s} for p, o, s in rows]))
    return path


def test_means_and_the_99th_percentile_by_hand_from_json_and_csv(tmp_path):
    from_json = read_traffic(_json(tmp_path))
    csv_file = tmp_path / "traffic.csv"
    csv_file.write_text("prompt_tokens,output_tokens,share\n" + "".join(f"{p},{o},{s}\n" for p, o, s in ROWS))
    from_csv = read_traffic(csv_file)
    for found in (from_json, from_csv):
        assert [row.share for row in found.classes] == pytest.approx([0.6, 0.39, 0.01])
        assert found.mean_prompt_tokens == pytest.approx(0.6 * 70 + 0.39 * 1020 + 0.01 * 1500)
        assert found.mean_output_tokens == pytest.approx(0.6 * 215 + 0.39 * 130 + 0.01 * 500)
        # contexts 285 (60%), 1150 (99% covered), 2000: the 99th percentile is 1150, the longest 2000
        assert found.context_percentile() == 1150 and found.context_percentile(1.0) == 2000
        assert found.context_percentile(0.5) == 285
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"classes": json.loads(_json(tmp_path).read_text())}))
    assert read_traffic(wrapped).classes == from_json.classes


def test_the_planner_prices_the_means_and_sizes_the_kv_cache_for_the_long_end(tmp_path):
    path = _json(tmp_path)
    request = scale.ScaleRequest(device="h100-sxm", model="gpt3-175b", queries_per_day=1e8, traffic=path)
    result = scale.extrapolate(request)
    serving, inputs = result["serving"], result["inputs"]
    prompt, output = round(0.6 * 70 + 0.39 * 1020 + 0.01 * 1500), round(0.6 * 215 + 0.39 * 130 + 0.01 * 500)
    assert (inputs["prompt_tokens"]["value"], inputs["tokens_per_query"]["value"]) == (prompt, output)
    assert inputs["kv_context_tokens"]["value"] == 1150 and "--traffic" in inputs["prompt_tokens"]["source"]
    assert result["traffic"]["kv_context_tokens"] == 1150 and len(result["traffic"]["classes"]) == 3
    config, device = scale.GPTConfig.from_preset("gpt3-175b"), scale.device_spec("h100-sxm")
    priced = cost.price_device(cost.PriceChoice(), "h100-sxm", 700)
    same = plan_serving(config, device, reference_profile("h100-sxm", "bf16"),
                        ServingInputs(prompt_tokens=prompt, output_tokens=output, queries_per_day=1e8,
                                      kv_context_tokens=1150), priced)
    assert serving["devices"] == same.devices and serving["batch"] == same.batch
    # the KV cache of the chosen batch fits at 1,150 slots per sequence; one sequence more does not (memory-bound)
    per_token = flops.kv_cache_bytes_per_token(config, "bf16")
    usable = serving["tensor_parallel"] * 80e9 * 0.9
    assert serving["weight_gb"] * 1e9 + serving["batch"] * 1150 * per_token <= usable
    assert serving["kv_cache_gb"] == pytest.approx(serving["batch"] * 1150 * per_token / 1e9)
    if serving["limited_by"] == "memory":
        assert serving["weight_gb"] * 1e9 + (serving["batch"] + 1) * 1150 * per_token > usable
    means_only = plan_serving(config, device, reference_profile("h100-sxm", "bf16"),
                              ServingInputs(prompt_tokens=prompt, output_tokens=output, queries_per_day=1e8), priced)
    assert means_only.batch > serving["batch"]  # reserving the long end's slots costs batch


@pytest.mark.parametrize("name, content, message", [
    ("t.json", "{not json", "is not valid JSON"),
    ("t.json", '{"rows": []}', "must hold a list of"),
    ("t.json", "[]", "holds no traffic classes"),
    ("t.json", '[{"prompt_tokens": 10, "output_tokens": 5}]', "row 1: missing share"),
    ("t.json", '[{"prompt_tokens": 10, "output_tokens": 5, "share": 1, "turns": 2}]', "unknown field(s) turns"),
    ("t.json", '[{"prompt_tokens": 10.5, "output_tokens": 5, "share": 1}]', "prompt_tokens must be a whole number"),
    ("t.json", '[{"prompt_tokens": -1, "output_tokens": 5, "share": 1}]', "at least 0, got -1"),
    ("t.json", '[{"prompt_tokens": 1, "output_tokens": 5, "share": 0}]', "share must be a positive number, got 0"),
    ("t.csv", "prompt,output,share\n1,2,3\n", "must name prompt_tokens, output_tokens, share; missing prompt_tokens"),
    ("t.csv", "prompt_tokens,output_tokens,share\n1,x,3\n", "line 2: output_tokens 'x' is not a number"),
    ("t.txt", "anything", "give a .json or .csv file"),
])
def test_a_bad_traffic_file_is_one_line_naming_the_problem(cli, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    status, out, err = cli("scale", "--model", "gpt2", "--device", "h100-sxm", "--traffic", str(path))
    assert status == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_traffic_conflicts_and_a_class_beyond_the_context_are_refused(cli, tmp_path):
    path = _json(tmp_path)
    status, _, err = cli("scale", "--model", "gpt3-175b", "--device", "h100-sxm", "--traffic", str(path),
                         "--prompt-tokens", "100")
    assert status == 2 and "drop --prompt-tokens and --tokens-per-query" in err
    status, _, err = cli("scale", "--model", "gpt2", "--device", "h100-sxm", "--traffic", str(path))
    assert status == 2 and "a class of 1500 + 500 tokens exceeds the model's context of 1024" in err
    with pytest.raises(TrafficError, match="cannot read --traffic"):
        read_traffic(tmp_path / "missing.json")
