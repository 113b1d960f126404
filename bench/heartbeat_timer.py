"""How late the heartbeat engine's timer fires at a 2 ms keepalive, and what
the heartbeat costs in CPU: idle, then with every core kept busy, at normal
priority and under SCHED_FIFO. Figures from the engine's own lateness
histogram (stats()["lateness"]) and its thread's CPU time.

    .venv/bin/python bench/heartbeat_timer.py [SECONDS_PER_PHASE]   # default 5

Baseline: the same engine at normal priority, in the same run. Prints figures,
never fails on them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

from understudy.failover.heartbeat import Heartbeat, HeartbeatConfig, UnicastPath

INTERVAL_MS = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def phase(seconds: float, rt_priority: int | None) -> dict[str, Any]:
    """One engine (node 0) heartbeating to a live peer (node 1) over loopback for `seconds`."""
    pa, pb = free_port(), free_port()
    common = dict(cluster=1, keys={1: bytes(32)}, keepalive_ms=INTERVAL_MS, warn_ms=20, dead_ms=50, initdead_ms=100)
    a = Heartbeat(HeartbeatConfig(node=0, peers=[1], paths=[UnicastPath("lo", "127.0.0.1", pa, [("127.0.0.1", pb)])],
                                  rt_priority=rt_priority, **common))  # type: ignore[arg-type]
    b = Heartbeat(HeartbeatConfig(node=1, peers=[0], paths=[UnicastPath("lo", "127.0.0.1", pb, [("127.0.0.1", pa)])],
                                  **common))  # type: ignore[arg-type]
    a.start()
    b.start()
    try:
        time.sleep(0.2)  # warm up: the peer is heard, caches are warm
        a.reset_lateness()
        cpu0, wall0 = a.stats()["cpu_us"], a.stats()["wall_us"]
        time.sleep(seconds)
        s = a.stats()
        events = a.poll()
        s["cpu_pct"] = 100.0 * (s["cpu_us"] - cpu0) / max(1, s["wall_us"] - wall0)
        s["dead_events"] = sum(type(e).__name__ == "PeerDead" for e in events)
        return s
    finally:
        a.stop()
        b.stop()


def row(name: str, s: dict[str, Any], base: dict[str, Any] | None) -> None:
    late = s["lateness"]
    ratio = f"  (p99 {late['p99_us'] / max(1, base['lateness']['p99_us']):.2f}x, max " \
            f"{late['max_us'] / max(1, base['lateness']['max_us']):.2f}x of normal priority)" if base else ""
    print(f"{name:<34} wakeups {late['count']:>6}  p50 {late['p50_us']:>5} us  p99 {late['p99_us']:>5} us  "
          f"p99.9 {late['p999_us']:>5} us  max {late['max_us']:>6} us  overruns {late['overruns']:>4}  "
          f"cpu {s['cpu_pct']:.2f} %{ratio}")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    cores = os.cpu_count() or 1
    print(f"heartbeat every {INTERVAL_MS} ms, {seconds:g} s per phase, {cores} cores\n")
    idle = phase(seconds, None)
    row("idle, normal priority", idle, None)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)
        normal = phase(seconds, None)
        fifo = phase(seconds, 50)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    row(f"{cores} cores busy, normal priority", normal, None)
    if fifo["rt_granted"]:
        row(f"{cores} cores busy, SCHED_FIFO 50", fifo, normal)
    else:
        print(f"SCHED_FIFO refused: {fifo['rt_error']} (the engine ran at normal priority)")
        row(f"{cores} cores busy, FIFO refused", fifo, normal)
    print(f"\ndead peers reported (false alarms at dead_ms=50): normal {normal['dead_events']}, fifo {fifo['dead_events']}")


if __name__ == "__main__":
    main()
