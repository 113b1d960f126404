"""How long a sync role's event loop stalls while its table of 1 M connections
is saved: before (`ConnTable.save` called on the loop, as the roles did) and
now (`_Role.save`: a checkpoint captured in steps between the loop's other
work, written in a thread), in the same run, on uvloop.

    .venv/bin/python bench/persist_stall.py [--entries 1000000]

A ticker asks to wake every millisecond; its lateness is the stall others
see (a datagram waiting in the socket, a timer). Prints figures and the
ratio; never fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from understudy.sync import Conn, ConnTable, encode
from understudy.sync.roles import _Role


class Idle(_Role):
    """A role with no sockets: the persistence machinery alone."""

    name = "bench"

    def _open(self) -> list[int]:
        return []

    def _readable(self) -> None:  # never registered
        pass


def fill(table: ConnTable, n: int) -> None:
    for first in range(0, n, 100_000):
        conns = [Conn(6, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1024 + i % 50_000, "10.0.0.100", 80,
                      "192.168.1.11", 8000, state=1, timeout=3600) for i in range(first, min(n, first + 100_000))]
        table.apply(encode(conns))


async def ticker(lateness: list[float], stop: asyncio.Event) -> None:
    # perf_counter: uvloop's own clock has a 1 ms grain.
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - t - 0.001)


async def measure(save: Any) -> tuple[float, float, float]:
    """(longest stall, median lateness, wall time of the save) in seconds."""
    lateness: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lateness, stop))
    await asyncio.sleep(0.2)
    lateness.clear()
    start = time.perf_counter()
    await save()
    took = time.perf_counter() - start
    stop.set()
    await tick
    return max(lateness), statistics.median(lateness), took


async def main(entries: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "table"
        role = Idle(state_file=state)
        await role.start()
        fill(role.table, entries)
        assert len(role.table) == entries

        async def blocking() -> None:
            role.table.save(Path(tmp) / "whole")  # the old way, on the loop

        async def idle() -> None:
            await asyncio.sleep(0.1)

        results: dict[str, list[tuple[float, float, float]]] = {"idle": [], "before": [], "now": []}
        for _ in range(runs):
            results["idle"].append(await measure(idle))
            results["before"].append(await measure(blocking))
            results["now"].append(await measure(role.save))
        await role.stop()
    print(f"saving a table of {entries:,} connections, uvloop, best of {runs} (worst in brackets):")
    best = {k: min(v) for k, v in results.items()}
    for k, (stall, median, took) in best.items():
        worst = max(r[0] for r in results[k])
        what = {"idle": "no save (baseline: timer grain)", "before": "ConnTable.save on the loop",
                "now": "checkpoint: steps + thread"}[k]
        print(f"  {k:<7} {what:<32} longest stall {stall * 1e3:6.1f} ms ({worst * 1e3:6.1f})   median tick lateness "
              f"{median * 1e3:5.2f} ms   save took {took * 1e3:6.0f} ms")
    print(f"  ratio   longest stall {best['before'][0] / best['now'][0]:.0f}x shorter")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.entries, args.runs))
