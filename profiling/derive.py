"""Published serving estimates derived by the planner from their traffic and model, never from their GPU count.

`profiling.scenarios` repeats each publication's own arithmetic (their GPU count × their price), as a check of
the cost model. Here the same question goes through the serving planner instead: the publication's traffic,
model, device class and price, plus every input it did not give, each listed with its source or the word
"assumption". The derived fleet and cost stand beside the published ones, and the tornado names the input that
alone moves the derived cost furthest toward the published figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiling import cost
from profiling.plan import LATENCY_SOURCE
from profiling.scale import ScaleError, ScaleRequest, extrapolate
from profiling.scenarios import run_scenario

TOKENS_PER_WORD = 4 / 3  # OpenAI, "What are tokens and how to count them?": a token is about 3/4 of a word


@dataclass(frozen=True)
class Derivation:
    request: ScaleRequest  # the publication's traffic, model, device class and price; the rest below
    inputs: dict[str, str] = field(default_factory=dict)  # every input set or defaulted -> its source


DERIVATIONS: dict[str, Derivation] = {
    "semianalysis-2023": Derivation(
        ScaleRequest(device="a100-80gb", model="gpt3-175b", queries_per_day=193e6, prompt_tokens=200,
                     tokens_per_query=500, prices=cost.PriceChoice(usd_per_device_hour=1.0)),
        {"queries_per_day": "193M/day: SemiAnalysis, Feb 2023",
         "model": "175B dense, GPT-3 shape (gpt3-175b): the published case",
         "device": "A100 80GB SXM (HGX A100 servers, 8 per server): SemiAnalysis, Feb 2023",
         "usd_per_device_hour": "$1 per A100-hour all-in: SemiAnalysis, Feb 2023",
         "tokens_per_query": "500 generated tokens: Epoch AI's baseline query (Feb 2025); assumption for 2023",
         "prompt_tokens": "200: assumption (not published)",
         "ttft_s, min_user_tokens_per_sec": f"2 s and 5 tokens/s: {LATENCY_SOURCE}; assumption for 2023",
         "peak_to_average": "1 (fleet sized for the average): assumption (not published)"}),
    "goldstein-2022": Derivation(
        ScaleRequest(device="a100-80gb", model="gpt3-175b", queries_per_day=10e6, prompt_tokens=0,
                     tokens_per_query=round(30 * TOKENS_PER_WORD), min_user_tokens_per_sec=15 * TOKENS_PER_WORD,
                     prices=cost.PriceChoice(usd_per_device_hour=3.0)),
        {"queries_per_day": "10M/day: Goldstein, Dec 2022",
         "model": "175B params (gpt3-175b shape): Goldstein, Dec 2022",
         "device": "A100 (80 GB: 8 hold the bf16 weights): Goldstein, Dec 2022",
         "usd_per_device_hour": "$3 per A100-hour: Goldstein, Dec 2022",
         "tokens_per_query": "30 words × 4/3 tokens per word = 40: Goldstein's words, OpenAI's tokens-per-word rule",
         "min_user_tokens_per_sec": "15 words/s × 4/3 = 20 tokens/s: the low end of Goldstein's 15-20 words/s",
         "prompt_tokens": "0: assumption (Goldstein priced generated words only)",
         "ttft_s": f"2 s: {LATENCY_SOURCE}; assumption for 2022",
         "peak_to_average": "1 (fleet sized for the average): assumption (not published)"}),
}


def derivation(name: str) -> Derivation:
    if name not in DERIVATIONS:
        raise ScaleError(f"scale --scenario derives {', '.join(DERIVATIONS)}; {name!r} is not one of them "
                         "(python -m profiling cost --scenario NAME reproduces any published scenario's arithmetic)")
    return DERIVATIONS[name]


def explains_most(tornado: list[dict[str, Any]], derived: float, published: float,
                  fixed: tuple[str, ...] = ("price_factor",)) -> dict[str, Any] | None:
    """The tornado input whose low or high end alone moves the derived cost furthest toward the published one
    (`fixed` inputs are the publication's own and explain nothing), with the share of the gap it closes."""
    if published == derived:
        return None
    best = None
    for entry in tornado:
        if entry["input"] in fixed:
            continue
        for end in ("low", "high"):
            usd = entry[f"{end}_usd_per_day"]
            if usd is None:
                continue
            closed = (usd - derived) / (published - derived)
            if best is None or closed > best["gap_closed"]:
                best = {"input": entry["input"], "end": end, "value": entry[end], "usd_per_day": usd,
                        "gap_closed": closed, "source": entry.get("sources", {}).get(end, entry["source"])}
    return best


def derive(name: str, request: ScaleRequest | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """scale's answer for the derived case (`request`: the derivation's, or one with some of its inputs changed),
    and the published-against-derived comparison."""
    chosen = derivation(name)
    request = chosen.request if request is None else request
    result = extrapolate(request)
    published = run_scenario(name)
    serving = result["serving"]
    price = chosen.request.prices.usd_per_device_hour  # the publication's
    usd_published = published["published"]["usd_per_day"]
    derived = serving["usd_per_day"]["central"]
    comparison = {
        "scenario": name,
        "source": published["source"],
        "inputs": chosen.inputs,
        "changed_on_the_command_line": [input_ for input_ in ScaleRequest.__dataclass_fields__
                                        if getattr(request, input_) != getattr(chosen.request, input_)],
        "published": {"usd_per_day": usd_published, "usd_per_query": published["published"]["usd_per_query"],
                      # the fleet the published cost pays for at the published price (not an input here)
                      "devices": usd_published / (24 * price)},
        "derived": {"usd_per_day": derived, "usd_per_query": serving["usd_per_query"], "devices": serving["devices"],
                    "tensor_parallel": serving["tensor_parallel"], "batch": serving["batch"],
                    "limited_by": serving["limited_by"], "usd_per_day_band": serving["usd_per_day"]},
        "derived_over_published": derived / usd_published,
        "explains_most": explains_most(serving["tornado"], derived, usd_published),
        "reproduction": {"usd_per_day": published["usd_per_day"], "relative_difference":
                         published["relative_difference"]["usd_per_day"]},
    }
    return result, comparison
