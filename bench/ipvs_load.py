"""Loading a large IPVS table into the real kernel: Understudy's batched
netlink against ipvsadm-restore, each in a fresh user-mode Linux guest (the
kernel's destination trash from one run would slow the next).

    .venv/bin/python bench/ipvs_load.py [--services 10000] [--dests 4]

Prints figures and the ratio; never fails on time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def services(n: int, dests: int) -> list[dict[str, object]]:
    return [{"protocol": "tcp", "address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "port": 80,
             "scheduler": "wlc",
             "destinations": [{"address": f"172.16.{(i * dests + j) >> 8 & 255}.{(i * dests + j) & 255}",
                               "port": 8080, "weight": 1 + j} for j in range(dests)]}
            for i in range(n)]


def rules(state: list[dict[str, object]]) -> str:
    lines = []
    for svc in state:
        vip = f"{svc['address']}:{svc['port']}"
        lines.append(f"-A -t {vip} -s wlc")
        for d in svc["destinations"]:  # type: ignore[attr-defined]
            lines.append(f"-a -t {vip} -r {d['address']}:{d['port']} -m -w {d['weight']}")
    return "\n".join(lines) + "\n"


def inside(method: str, n: int, dests: int) -> dict[str, float]:
    """Runs in the guest: load the table one way, report seconds."""
    state = services(n, dests)
    out: dict[str, float] = {}
    if method == "ipvsadm-restore":
        text = rules(state)
        t0 = time.perf_counter()
        subprocess.run(["ipvsadm-restore"], input=text, text=True, check=True)
        out["load"] = time.perf_counter() - t0
    else:
        from understudy.ipvs import Ipvs, Reconciler, converge, parse_state

        desired = parse_state({"services": state})
        ipvs = Ipvs()
        t0 = time.perf_counter()
        converge(ipvs, desired)
        out["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert Reconciler().plan(desired, ipvs.dump(stats=False)) == []
        out["no-op reconcile (dump + plan)"] = time.perf_counter() - t0
        # 1% of the real servers change weight: only those are sent.
        changed = [dict(s, destinations=[dict(d, weight=d["weight"] + 10) if i % 100 == 0 else d  # type: ignore
                                         for d in s["destinations"]]) if i % 25 == 0 else s
                   for i, s in enumerate(state)]
        t0 = time.perf_counter()
        applied = converge(ipvs, parse_state({"services": changed}))
        out["reconcile 1% weight changes"] = time.perf_counter() - t0
        out["edits sent"] = float(len(applied))
    count = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, check=True).stdout.count("->")
    out["real servers in kernel"] = float(count)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--dests", type=int, default=4)
    parser.add_argument("--inside", choices=("understudy", "ipvsadm-restore"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(inside(args.inside, args.services, args.dests)))
        return 0

    from understudy.uml import run

    results = {}
    for method in ("ipvsadm-restore", "understudy"):
        guest = run([sys.executable, __file__, "--inside", method, "--services", str(args.services),
                     "--dests", str(args.dests)], cwd=ROOT, timeout=1200)
        if not guest.ok:
            print(f"{method}: guest failed ({guest.returncode}):\n{guest.stderr[-2000:]}", file=sys.stderr)
            return 1
        results[method] = json.loads(guest.stdout.strip().splitlines()[-1])
    objects = args.services * (1 + args.dests)
    print(f"IPVS table load in a user-mode Linux 6.1 guest: {args.services:,} services x {args.dests} real "
          f"servers = {objects:,} objects (each method in a fresh guest)")
    base = results["ipvsadm-restore"]["load"]
    for method, figures in results.items():
        load = figures["load"]
        print(f"  {method:<16} load {load:8.2f} s  {objects / load:10,.0f} objects/s  "
              f"({base / load:.1f}x ipvsadm-restore)")
        for name, value in figures.items():
            if name != "load":
                print(f"      {name}: {value:,.2f}" if value % 1 else f"      {name}: {value:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
