"""`understudy demo`: a whole cluster in a user-mode Linux kernel with IPVS.

The host side boots one guest and runs `understudy.demo.guest` in it, echoing
its timeline; see that module for the topology and the scenario.
"""

from __future__ import annotations

import sys

__all__ = ["run_demo"]


def run_demo(timeout: float = 300.0) -> int:
    """Boot a guest, play the scenario, return its exit status (0: everything behaved)."""
    from understudy.uml import UmlUnavailable, in_guest, run

    if in_guest():
        from understudy.demo.guest import main

        return main()
    print("booting a Linux kernel with IPVS (user-mode Linux)...", flush=True)
    try:
        result = run([sys.executable, "-m", "understudy.demo.guest"], echo=True, timeout=timeout, mem="768M")
    except UmlUnavailable as e:
        print(f"understudy demo: cannot boot the user-mode kernel: {e}", file=sys.stderr)
        return 1
    if result.timed_out:
        print(f"understudy demo: the scenario did not finish within {timeout:.0f} s", file=sys.stderr)
        return 1
    return result.returncode if result.returncode is not None else 1
