"""The one base type for bad input: every command line catches it and prints its message as one line.

A subclass's message names the problem and the fix. Any other exception is a bug and keeps its traceback.
"""


class GptmeterError(Exception):
    """Bad input from the user (a flag, a file, a path, an environment variable): one line, what to change."""


class ConfigError(GptmeterError, ValueError):
    """A setting (a flag, a config field) out of range or contradicting another; the message names the flag."""
