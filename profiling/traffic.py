"""Serving traffic as a distribution: the file `scale --traffic FILE` reads, and what the planner takes from it.

A traffic file lists classes of queries, each with its prompt length, its output length (tokens) and its share of
the queries. JSON, a list of rows or an object holding one under "classes":

    [{"prompt_tokens": 70, "output_tokens": 215, "share": 0.6},
     {"prompt_tokens": 1020, "output_tokens": 130, "share": 0.4}]

or CSV with a header naming the same three columns:

    prompt_tokens,output_tokens,share
    70,215,0.6
    1020,130,0.4

Shares are weights: they need not sum to 1 (they are divided by their sum). The planner takes two things from it:

    throughput   the share-weighted means of the prompt and of the output, rounded to whole tokens: the prefill
                 and decode work per query, and the generated tokens per query (cost per query is linear in them)
    memory       the share-weighted 99th percentile of prompt + output (`PERCENTILE`): the KV cache of every
                 sequence in the batch is sized for it, so that a long query finds its slots free

A bad file is a one-line TrafficError naming the file, the row and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt.errors import GptmeterError

COLUMNS = ("prompt_tokens", "output_tokens", "share")
PERCENTILE = 0.99  # of queries (by share) whose prompt + output the KV cache of each sequence holds


class TrafficError(GptmeterError, ValueError):
    """A traffic file that cannot be used; the message is one line naming the file, the row and the problem."""


@dataclass(frozen=True)
class TrafficClass:
    prompt_tokens: int
    output_tokens: int
    share: float  # of the queries, the file's shares divided by their sum

    @property
    def context(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class Traffic:
    classes: tuple[TrafficClass, ...]
    source: str  # the file it was read from

    @property
    def mean_prompt_tokens(self) -> float:
        return sum(row.share * row.prompt_tokens for row in self.classes)

    @property
    def mean_output_tokens(self) -> float:
        return sum(row.share * row.output_tokens for row in self.classes)

    def context_percentile(self, quantile: float = PERCENTILE) -> int:
        """The shortest context (prompt + output) that at least `quantile` of the queries, by share, fit in."""
        covered = 0.0
        for row in sorted(self.classes, key=lambda row: row.context):
            covered += row.share
            if covered >= quantile - 1e-12:
                return row.context
        return max(row.context for row in self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "classes": [vars(row) | {"context": row.context} for row in self.classes],
                "mean_prompt_tokens": self.mean_prompt_tokens, "mean_output_tokens": self.mean_output_tokens,
                "kv_context_tokens": self.context_percentile(), "percentile": PERCENTILE}


def _whole(path: Path, where: str, name: str, value: Any, least: int) -> int:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise TrafficError(f"{path} {where}: {name} {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < least:
        raise TrafficError(f"{path} {where}: {name} must be a whole number of tokens, at least {least}, got {value!r}")
    return int(value)


def _share(path: Path, where: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise TrafficError(f"{path} {where}: share {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TrafficError(f"{path} {where}: share must be a positive number, got {value!r}")
    return float(value)


def _rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) pairs of the file: "row N" of a JSON list, "line N" of a CSV file."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise TrafficError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from None
        if isinstance(data, dict) and set(data) == {"classes"}:
            data = data["classes"]
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise TrafficError(f"{path} must hold a list of {{{', '.join(COLUMNS)}}} rows, or "
                               '{"classes": [...]} of them')
        return [(f"row {index}", row) for index, row in enumerate(data, start=1)]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise TrafficError(f"{path}: the CSV header must name {', '.join(COLUMNS)}; missing {', '.join(missing)}")
        return [(f"line {reader.line_num}", row) for row in reader]
    raise TrafficError(f"--traffic {path}: give a .json or .csv file of {', '.join(COLUMNS)} rows (docs/cost.md)")


def read_traffic(path: Path | str) -> Traffic:
    """The classes of a traffic file, shares normalised (module docstring); a bad file is a TrafficError."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise TrafficError(f"cannot read --traffic {path}: {getattr(error, 'strerror', None) or error}") from None
    rows = _rows(path, text)
    if not rows:
        raise TrafficError(f"{path} holds no traffic classes; give at least one row of {', '.join(COLUMNS)}")
    parsed = []
    for where, row in rows:
        unknown = sorted(set(row) - set(COLUMNS))
        missing = [name for name in COLUMNS if row.get(name) in (None, "")]
        if unknown and path.suffix.lower() == ".json":
            raise TrafficError(f"{path} {where}: unknown field(s) {', '.join(unknown)}; a row holds {', '.join(COLUMNS)}")
        if missing:
            raise TrafficError(f"{path} {where}: missing {', '.join(missing)}")
        parsed.append((_whole(path, where, "prompt_tokens", row["prompt_tokens"], 0),
                       _whole(path, where, "output_tokens", row["output_tokens"], 1), _share(path, where, row["share"])))
    total = sum(share for _, _, share in parsed)
    return Traffic(tuple(TrafficClass(prompt, output, share / total) for prompt, output, share in parsed), str(path))
