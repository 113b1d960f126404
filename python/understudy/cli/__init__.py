"""The `understudy` command line.

Each command group lives in its own module exposing `register(subparsers)`,
which adds the group's parser and sets a `handler(args) -> int` default on
every runnable subcommand. Add a group by listing its module in
`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from understudy import __version__
from understudy.cli import demo, director, failover, ipvs, sync
from understudy.cli.common import EXIT_USAGE, Handler

COMMAND_GROUPS = (director, failover, sync, ipvs, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="High-availability engine for Linux Virtual Server (IPVS) directors.",
    )
    parser.add_argument("--version", action="version", version=f"understudy {__version__}")
    groups = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (argparse usage errors give 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            # A group named without a subcommand: show what it offers.
            usage = getattr(args, "usage_parser", parser)
            usage.print_help(sys.stderr)
            return EXIT_USAGE
        return handler(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); don't let the interpreter complain at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
