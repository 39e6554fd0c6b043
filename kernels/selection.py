"""Evidence behind `--attention auto`: on which GPUs our kernel has been measured faster than SDPA.

`auto` picks the Triton kernel only on a GPU listed here, and torch's
`scaled_dot_product_attention` everywhere else (and always on CPU). An entry is
added only from a `bench/attention.py` run on that GPU in which our kernel, at the
model's shapes (causal, bf16, head dims 64 and 128), was at least as fast as SDPA's
default backend forward and backward; the value names the result file under
`bench/results/`. No GPU has been measured yet, so the table is empty.
"""

from __future__ import annotations

SDPA_BEATEN_ON: dict[str, str] = {}


def measured_faster_than_sdpa(device_name: str) -> bool:
    """True when `device_name` (as `torch.cuda.get_device_name()` reports it) is in the evidence table."""
    return device_name in SDPA_BEATEN_ON
