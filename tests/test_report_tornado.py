"""`profiling report FILE` on a `scale --json` output: the band and tornado printed, the chart drawn beside the
file, and a file that is neither a run directory nor a scale output refused in one line."""

import contextlib
import io
import json

import pytest

from profiling.__main__ import main


@pytest.fixture(scope="module")
def scale_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "gpt2-h100.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["scale", "--model", "gpt2", "--device", "h100-sxm", "--queries-per-day", "1e7", "--json"]) == 0
    path.write_text(out.getvalue())
    return path


def test_report_prints_the_tornado_of_a_scale_file_and_draws_it(scale_file, capsys):
    scale = json.loads(scale_file.read_text())["serving"]
    assert main(["report", str(scale_file)]) == 0
    text = capsys.readouterr().out
    chart = scale_file.parent / "gpt2-h100-tornado.png"
    assert chart.read_bytes().startswith(b"\x89PNG") and f"plots: {chart}" in text
    assert f"${scale['usd_per_day']['central']:,.0f} central" in text
    lines = text.splitlines()
    rows = [next(line for line in lines if line.startswith(entry["input"] + " ")) for entry in scale["tornado"]]
    assert [lines.index(row) for row in rows] == sorted(lines.index(row) for row in rows)  # largest effect first
    for entry, row in zip(scale["tornado"], rows):
        low, high = entry["low_usd_per_day"], entry["high_usd_per_day"]
        assert f"{entry['low']:g}: ${low:,.0f}" in row and f"{entry['high']:g}: ${high:,.0f}" in row
        assert f"{entry['low_wh_per_query']:.3g}..{entry['high_wh_per_query']:.3g}" in row  # the energy it moves
        assert row.rstrip().endswith(f"${abs(high - low):,.0f}")
    assert {"pue", "power_load_factor", "grid_kg_co2_per_kwh", "prompt_tokens"} <= {e["input"] for e in scale["tornado"]}
    assert f"{scale['wh_per_query']['central']:.3g} central" in text


def test_report_json_of_a_scale_file_carries_its_tornado(scale_file, capsys):
    assert main(["report", str(scale_file), "--json", "--no-plots"]) == 0
    printed = json.loads(capsys.readouterr().out)
    serving = json.loads(scale_file.read_text())["serving"]
    assert printed["tornado"] == serving["tornado"] and printed["usd_per_day"] == serving["usd_per_day"]
    assert printed["plots"] == []


@pytest.mark.parametrize("content, why", [("{not json", "not JSON"), ('{"serving": {}}', "no serving.tornado"),
                                          ("[1, 2]", "no serving.tornado")])
def test_a_file_that_is_no_scale_output_is_refused_in_one_line(tmp_path, capsys, content, why):
    path = tmp_path / "other.json"
    path.write_text(content)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and "scale --json" in err and len(err.splitlines()) == 1
