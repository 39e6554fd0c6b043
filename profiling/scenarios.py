"""Published cost and energy estimates, recomputed from their own inputs with the cost model.

Each scenario states the inputs as its authors published (or as they can be reconstructed from
what was published), runs them through `profiling.cost`, and sets the result next to the published
figure with the relative difference (ours − published) / published. A scenario that drifts away
from its figure means the cost model changed meaning, which the tests catch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

from gpt.files import dumps_json
from gpt.errors import GptmeterError
from profiling import cost


class ScenarioError(GptmeterError, ValueError):
    """An unknown scenario name; the message lists the known ones."""


def _peak_flops(device_key: str, dtype: str = "bf16") -> tuple[float, str]:
    from profiling.hardware import accelerator

    entry = accelerator(device_key)
    return entry.peak(dtype), entry.source


def semianalysis_2023() -> dict[str, Any]:
    servers, gpus_per_server, usd_per_gpu_hour, queries_per_day = 3_617, 8, 1.0, 193e6
    devices = servers * gpus_per_server
    usd_per_day = cost.fleet_usd_per_day(devices, cost.cloud_device_hour(usd_per_gpu_hour))
    return {
        "inputs": {"hgx_a100_servers": servers, "gpus_per_server": gpus_per_server, "a100_gpus": devices,
                   "usd_per_gpu_hour": usd_per_gpu_hour, "queries_per_day": queries_per_day},
        "usd_per_day": usd_per_day,
        "usd_per_query": usd_per_day / queries_per_day,
        "published": {"usd_per_day": 694_444.0, "usd_per_query": 0.0036},
    }


def goldstein_2022() -> dict[str, Any]:
    gpus, usd_per_gpu_hour, words_per_sec, words_per_query, queries_per_day = 8, 3.0, 20.0, 30, 10e6
    result = cost.serving_cost(
        cost.cloud_device_hour(usd_per_gpu_hour), words_per_sec / gpus, None, words_per_query, queries_per_day
    )
    slowest = cost.serving_cost(
        cost.cloud_device_hour(usd_per_gpu_hour), 15.0 / gpus, None, words_per_query, queries_per_day
    )
    return {
        "inputs": {"params": 175e9, "gpus_per_replica": gpus, "usd_per_a100_hour": usd_per_gpu_hour,
                   "words_per_sec_per_replica": words_per_sec, "words_per_query": words_per_query,
                   "queries_per_day": queries_per_day,
                   "note": "20 words/s is the top of the published 15-20 words/s (350 ms per word per A100 "
                           "over 8 A100s would be 22.9 words/s); a word is priced like a token"},
        "usd_per_day": result.usd_per_day,
        "usd_per_query": result.usd_per_query,
        "usd_per_day_at_15_words_per_sec": slowest.usd_per_day,
        "published": {"usd_per_day": 100_000.0, "usd_per_query": 0.01},
    }


def gpt3_training() -> dict[str, Any]:
    params, tokens = 175e9, 300e9
    return {
        "inputs": {"params": params, "tokens": tokens, "flops_per_param_per_token": 6},
        "flops": cost.approximate_training_flops(params, tokens),
        "published": {"flops": 3.14e23},
    }


def gpt4_training() -> dict[str, Any]:
    flops, gpus = 2.15e25, 25_000
    peak, source = _peak_flops("a100-80gb", "bf16")
    return {
        "inputs": {"flops": flops, "a100_gpus": gpus, "days": [90, 100],
                   "peak_flops_per_gpu": peak, "peak_flops_source": source},
        "mfu_at_90_days": cost.implied_mfu(flops, gpus, 90, peak),
        "mfu_at_100_days": cost.implied_mfu(flops, gpus, 100, peak),
        "published": {"mfu_at_90_days": 0.36, "mfu_at_100_days": 0.32},
    }


def epoch_energy_per_query() -> dict[str, Any]:
    active_params, output_tokens, utilisation = 100e9, 500, 0.10
    watts_per_gpu, load_factor, pue = 1_275.0, 0.7, 1.2
    peak, source = _peak_flops("h100-sxm", "bf16")
    flops_per_token = 2 * active_params  # one multiply-add per active parameter per generated token
    gpu_seconds = output_tokens * flops_per_token / (peak * utilisation)
    kwh = cost.energy_kwh(cost.facility_kw(watts_per_gpu, load_factor, pue), gpu_seconds)
    return {
        "inputs": {"active_params": active_params, "output_tokens_per_query": output_tokens,
                   "flops_per_token": flops_per_token, "h100_peak_flops": peak, "peak_flops_source": source,
                   "utilisation": utilisation, "watts_per_gpu_with_server_share": watts_per_gpu,
                   "power_load_factor": load_factor, "pue": pue},
        "gpu_seconds_per_query": gpu_seconds,
        "wh_per_query": kwh * 1000,
        "published": {"wh_per_query": 0.3},
    }


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str
    compute: Callable[[], dict[str, Any]]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("semianalysis-2023", "ChatGPT inference fleet: 28,936 A100 at about $1 per GPU-hour, 193M queries/day",
             "SemiAnalysis (D. Patel, A. Ahmad), 'The Inference Cost Of Search Disruption', Feb 2023",
             semianalysis_2023),
    Scenario("goldstein-2022", "GPT-3-sized ChatGPT on one 8xA100 replica at 20 words/s, $3 per A100-hour, "
             "30 words/query, 10M queries/day", "Tom Goldstein, thread on X/Twitter, 6 Dec 2022", goldstein_2022),
    Scenario("gpt3-training", "GPT-3 175B training compute, 6 x params x 300B tokens",
             "Brown et al., 'Language Models are Few-Shot Learners', 2020, table D.1", gpt3_training),
    Scenario("gpt4-training", "MFU implied by 2.15e25 FLOPs on ~25,000 A100 in 90-100 days",
             "SemiAnalysis, 'GPT-4 Architecture, Infrastructure, ...', Jul 2023 (reported, not official)",
             gpt4_training),
    Scenario("epoch-energy-per-query", "GPT-4o query: 100B active params, 500 output tokens, H100 at 10% "
             "utilisation, 1,275 W per GPU at 70% load, PUE 1.2",
             "Epoch AI (J. You), 'How much energy does ChatGPT use?', Feb 2025", epoch_energy_per_query),
)}


def scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def run_scenario(name: str) -> dict[str, Any]:
    """The scenario's inputs, our figures, the published ones and (ours − published) / published for each."""
    chosen = scenario(name)
    result = chosen.compute()
    published = result["published"]
    return {
        "scenario": chosen.name,
        "description": chosen.description,
        "source": chosen.source,
        **result,
        "relative_difference": {key: (result[key] - value) / value for key, value in published.items()},
    }


def format_scenario(result: dict[str, Any]) -> str:
    lines = [f"{result['scenario']}: {result['description']}", f"source: {result['source']}", "inputs:"]
    lines += [f"  {name} = {value}" for name, value in result["inputs"].items()]
    lines.append("figure                     ours          published     difference")
    for key, published in result["published"].items():
        lines.append(f"{key:<26} {result[key]:<13.4g} {published:<13.4g} {100 * result['relative_difference'][key]:+.2f} %")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "scenarios", help="list the published estimates that `cost --scenario NAME` reproduces",
        description="List the published cost, compute and energy estimates the calculator reproduces from "
        "their own inputs; run one with: python -m profiling cost --scenario NAME [--json].",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    listing = [{"name": s.name, "description": s.description, "source": s.source} for s in SCENARIOS.values()]
    if args.json:
        print(dumps_json(listing, indent=2))
        return 0
    width = max(len(s.name) for s in SCENARIOS.values())
    for entry in listing:
        print(f"{entry['name']:<{width}}  {entry['description']}\n{'':<{width}}  source: {entry['source']}")
    return 0
