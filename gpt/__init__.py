"""A minimal GPT: configuration, model, tokenizers, data, checkpoints.

`GPT` and `GPTConfig` are imported on first use, so that importing a light submodule
(`gpt.errors`, say) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from gpt.errors import GptmeterError

__all__ = ["GPT", "GPTConfig", "GptmeterError"]
_LAZY = {"GPT": "gpt.model", "GPTConfig": "gpt.config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpt' has no attribute {name!r}")
