"""`python -m understudy.uml [options] [--] [COMMAND...]`: run COMMAND in a fresh guest.

Without a command (or with -i), an interactive shell (or COMMAND) on this terminal;
type `exit` to power the guest off.
The exit status is the command's; 125 when the guest could not boot, 124 on timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from understudy.uml._runner import DEFAULT_MODULES, UmlUnavailable, run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the guest, print timings to stderr, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m understudy.uml", description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=None, help="kill the guest after the command ran this long")
    parser.add_argument("--boot-timeout", type=float, default=120.0, help="give up if the guest is not ready by then")
    parser.add_argument("--mem", default="512M", help="guest RAM (default 512M)")
    parser.add_argument("--modules", default=",".join(DEFAULT_MODULES), help="modules to load, comma-separated")
    parser.add_argument("-i", "--interactive", action="store_true", help="attach COMMAND to this terminal")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (init script, dmesg, status)")
    parser.add_argument("--dmesg", action="store_true", help="print the guest kernel log after the command")
    parser.add_argument("-C", "--cwd", default=None, help="directory to run in (default: the current one)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: a shell)")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    interactive = args.interactive or not command
    if not command:
        command = [os.environ.get("SHELL") or "/bin/sh"]
    if interactive:
        if not os.isatty(0):
            print("understudy.uml: interactive, but stdin is not a terminal", file=sys.stderr)
            return 2
    modules = [m for m in args.modules.split(",") if m]
    try:
        result = run(
            command,
            cwd=args.cwd,
            timeout=args.timeout,
            boot_timeout=args.boot_timeout,
            mem=args.mem,
            modules=modules,
            echo=True,
            interactive=interactive,
            keep=args.keep or None,
        )
    except UmlUnavailable as exc:
        print(f"understudy.uml: {exc}", file=sys.stderr)
        return 125
    if args.dmesg:
        sys.stderr.write(f"--- guest kernel log ---\n{result.dmesg}")
    kept = f", kept {result.workdir}" if result.workdir else ""
    print(
        f"understudy.uml: boot {result.boot_seconds:.2f} s, command {result.command_seconds:.2f} s, "
        f"total {result.total_seconds:.2f} s, status {result.returncode}"
        f"{' (timed out)' if result.timed_out else ''}{kept}",
        file=sys.stderr,
    )
    if result.timed_out:
        return 124
    return result.returncode if result.returncode is not None else 125


if __name__ == "__main__":
    sys.exit(main())
