"""What every command group shares: exit codes, the handler type, error output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeAlias

Handler: TypeAlias = Callable[[argparse.Namespace], int]
# argparse has no public name for what add_subparsers() returns.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_USAGE = 2
"""Bad input or an unreadable file, like argparse's own usage errors."""


def fail(message: str) -> int:
    """Print a one-line error to stderr; returns EXIT_USAGE for `return fail(...)`."""
    print(f"understudy: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_group(subparsers: Subparsers, name: str, help_text: str) -> Subparsers:
    """A command group: `understudy NAME` prints its help, `understudy NAME SUB` runs SUB."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(usage_parser=parser)
    return parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
