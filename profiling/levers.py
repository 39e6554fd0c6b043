"""Optimisation levers: the serving plan re-run with one input changed, and the change in cost per day.

Each lever is a change to the request, so its row is exactly what `scale` answers for the changed command line
(the flag is printed beside it): narrower weights (fp8, int8), relaxed latency targets, a larger tensor-parallel
degree, another device class, and owned instead of rented devices (or the reverse). A lever that does not apply,
or whose plan cannot be made, says why instead of a figure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from gpt.errors import GptmeterError
from profiling.plan import ServingInputs, ServingPlan
from profiling.scale import ScaleRequest, plan_request

RELAX = 2.0  # the relaxed latency lever: time to first token × this, per-user tokens/s ÷ this
OTHER_DEVICE = {"h100-sxm": "h200", "h200": "h100-sxm", "a100-80gb": "h100-sxm"}  # the device-class lever's default


@dataclass(frozen=True)
class Lever:
    name: str
    # The changed request and the flags that make it, or the reason the lever does not apply.
    change: Callable[[ScaleRequest, ServingPlan], tuple[ScaleRequest, str] | str]


def _weights(dtype: str) -> Callable[[ScaleRequest, ServingPlan], tuple[ScaleRequest, str] | str]:
    def change(request: ScaleRequest, base: ServingPlan) -> tuple[ScaleRequest, str] | str:
        if request.weights_dtype == dtype:
            return f"the baseline already stores {dtype} weights"
        return replace(request, weights_dtype=dtype), f"--weights-dtype {dtype}"
    return change


def _relaxed(request: ScaleRequest, base: ServingPlan) -> tuple[ScaleRequest, str]:
    ttft = RELAX * (request.ttft_s or ServingInputs.ttft_s)
    speed = (request.min_user_tokens_per_sec or ServingInputs.min_user_tokens_per_sec) / RELAX
    return (replace(request, ttft_s=ttft, min_user_tokens_per_sec=speed),
            f"--ttft-s {ttft:g} --min-user-tokens-per-sec {speed:g}")


def _wider(request: ScaleRequest, base: ServingPlan) -> tuple[ScaleRequest, str]:
    """Twice the chosen degree; a server that small grows to it (an NVLink switch domain at the same per-device
    link bandwidth: assumption)."""
    tp = 2 * base.tensor_parallel
    per_server = max(request.devices_per_server or ServingInputs.devices_per_server, tp)
    return (replace(request, tensor_parallel=tp, devices_per_server=per_server),
            f"--tensor-parallel {tp} --devices-per-server {per_server}")


def other_device(request: ScaleRequest, chosen: str | None = None) -> str:
    return chosen or OTHER_DEVICE.get(request.device, "h100-sxm")


def _device(key: str) -> Callable[[ScaleRequest, ServingPlan], tuple[ScaleRequest, str] | str]:
    def change(request: ScaleRequest, base: ServingPlan) -> tuple[ScaleRequest, str] | str:
        if key == request.device:
            return f"the baseline already runs on {key}"
        # The user's price and profile are the baseline device's: the other device takes its own from the tables.
        prices = replace(request.prices, usd_per_device_hour=None, purchase_usd=None)
        return replace(request, device=key, device_profile=None, prices=prices), f"--device {key}"
    return change


def _ownership(request: ScaleRequest, base: ServingPlan) -> tuple[ScaleRequest, str]:
    flipped = "tco" if request.prices.pricing == "cloud" else "cloud"
    return replace(request, prices=replace(request.prices, pricing=flipped)), f"--pricing {flipped}"


def levers(request: ScaleRequest, device: str | None = None) -> list[Lever]:
    """The levers for `request`; `device` names the device-class lever's device (default: OTHER_DEVICE)."""
    key = other_device(request, device)
    return [
        Lever("fp8 weights", _weights("fp8")),
        Lever("int8 weights", _weights("int8")),
        Lever(f"latency targets relaxed {RELAX:g}x", _relaxed),
        Lever("tensor parallel 2x", _wider),
        Lever(f"device {key}", _device(key)),
        Lever("owned instead of rented" if request.prices.pricing == "cloud" else "rented instead of owned",
              _ownership),
    ]


def _row(name: str, flags: str, plan: ServingPlan, base_usd: float) -> dict[str, Any]:
    return {"lever": name, "flags": flags, "devices": plan.devices, "tensor_parallel": plan.tensor_parallel,
            "batch": plan.batch, "limited_by": plan.limited_by, "usd_per_day": plan.usd_per_day,
            "change_usd_per_day": plan.usd_per_day - base_usd,
            "change_fraction": plan.usd_per_day / base_usd - 1, "weights": plan.weights}


def compare(request: ScaleRequest, device: str | None = None) -> dict[str, Any]:
    """The baseline plan and each lever's plan, with its change in cost per day against the baseline."""
    base = plan_request(request)
    rows = []
    for lever in levers(request, device):
        changed = lever.change(request, base)
        if isinstance(changed, str):
            rows.append({"lever": lever.name, "flags": "", "error": changed})
            continue
        changed_request, flags = changed
        try:
            rows.append(_row(lever.name, flags, plan_request(changed_request), base.usd_per_day))
        except GptmeterError as error:  # e.g. a device class with no price, a degree the server cannot link
            rows.append({"lever": lever.name, "flags": flags, "error": str(error)})
    return {"baseline": _row("baseline", "", base, base.usd_per_day), "levers": rows}
