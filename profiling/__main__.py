"""`python -m profiling COMMAND ...`: one subcommand per profiling module.

Each module listed in SUBCOMMANDS provides `add_parser(subparsers) -> ArgumentParser` and
`run(args) -> int` (the exit status). A `GptmeterError` escaping `run` is bad input: it is printed
as one line and the command exits with status 2, without a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gpt.errors import GptmeterError
from gpt.host_memory import keep_freed_memory

SUBCOMMANDS = (
    "profiling.flops",
    "profiling.hardware_cli",
    "profiling.calibrate",
    "profiling.predict",
    "profiling.report",
    "profiling.cost_cli",
    "profiling.scale_cli",
    "profiling.scenarios",
    "profiling.train_compare_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m profiling", description="FLOPs, hardware peaks, utilisation and cost of gptmeter models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return args.run(args)
    except GptmeterError as error:
        print(f"python -m profiling {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
