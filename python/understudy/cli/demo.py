"""`understudy demo`: the cluster demo in a user-mode Linux kernel."""

from __future__ import annotations

import argparse

from understudy.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="run a demo cluster in a user-mode Linux kernel (2 directors, 3 real servers, a client)",
        description="Boot a user-mode Linux kernel with IPVS and play a scenario on a two-director cluster: "
        "a real server dies, the primary director dies (connections survive), it returns (failback). "
        "Exits 0 only if everything behaved.")
    demo.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up after S seconds (300)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from understudy.demo import run_demo

    return run_demo(args.timeout)
