"""Health-check scheduler benchmark: 10,000 real servers, TCP checks every second.

Every real server is a distinct loopback address (127.1.x.y) on one port,
answered by a uvloop acceptor in its own process. Each side runs in a fresh
child process for the same duration, and reports its CPU (user + system, as a
fraction of one core, from getrusage) and how late its checks started
(actual start minus scheduled start: p50, p99, max):

* understudy: `understudy.health.Monitor`, checks spread; its TCP checks run in
  the core's prober thread (`_core.TcpProber`), whose CPU is also shown apart.
* naive: one asyncio task per check, `asyncio.wait_for(asyncio.open_connection())`,
  all starting together — the obvious implementation, on the same uvloop.
* keepalived (TCP_CHECK for every real server) is tried first: its checker
  needs IPVS in the kernel, and says so and exits where there is none.

    .venv/bin/python bench/health_bench.py [--servers 10000] [--seconds 30]

Figures, never pass/fail. Goals: ≤ 0.5 core, lateness p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PORT = 18080
KEEPALIVED_WAIT = 180  # s; it reads a config of 10,000 real servers slowly


def address(i: int) -> str:
    return f"127.1.{i >> 8}.{i & 255}"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the real servers ------------------------------------------------------------
class _Abort(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()


def serve() -> None:
    """Accept on 0.0.0.0:PORT (so on every 127.1.x.y) and drop each connection at once."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Abort, "0.0.0.0", PORT, backlog=4096, reuse_address=True)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# --- the checkers ----------------------------------------------------------------
def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)
    return {"count": n, "p50": ordered[(n - 1) // 2], "p99": ordered[min(n - 1, math.ceil(0.99 * n) - 1)],
            "max": ordered[-1]}


def thread_cpu(name: str) -> float:
    """CPU seconds (user + system) of this process's thread called `name`, from /proc; 0 if none."""
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def run_understudy(servers: int, seconds: float, warmup: float) -> dict[str, object]:
    import uvloop

    from understudy.health import Check, Monitor, StateChange, TcpProbe

    ups = downs = 0
    why: dict[str, int] = {}

    def changed(change: StateChange) -> None:
        nonlocal ups, downs
        if change.up:
            ups += 1
        else:
            downs += 1
            why[change.reason] = why.get(change.reason, 0) + 1

    async def main() -> dict[str, object]:
        monitor = Monitor()
        for i in range(servers):
            monitor.watch(Check(TcpProbe(address(i), PORT), interval=1.0, timeout=0.5, rise=1, fall=1), changed)
        await monitor.start()
        await asyncio.sleep(warmup)
        monitor.reset_lateness()
        before, t0, prober0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), thread_cpu("us-prober")
        await asyncio.sleep(seconds)
        after, t1, prober1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), thread_cpu("us-prober")
        late = monitor.lateness()
        failed = sum(s.failed_runs for c in monitor.checks if (s := monitor.status(c)) is not None)
        runs = sum(s.runs for c in monitor.checks if (s := monitor.status(c)) is not None)
        await monitor.stop()
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"cpu": cpu / (t1 - t0), "user": (after.ru_utime - before.ru_utime) / (t1 - t0),
                "p50": late.p50, "p99": late.p99, "max": late.max, "checks": late.count, "runs": runs,
                "failed_runs": failed, "up": ups, "down": downs, "why": why, "prober": (prober1 - prober0) / (t1 - t0)}

    return uvloop.run(main())


def run_naive(servers: int, seconds: float, warmup: float) -> dict[str, object]:
    import uvloop

    late: list[float] = []
    failed = 0
    measuring = stopping = False

    async def check(addr: str) -> None:
        nonlocal failed
        due = time.monotonic()
        # A flag as well as cancel(): Python 3.11's wait_for can swallow a cancellation.
        while not stopping:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if measuring:
                late.append(time.monotonic() - due)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(addr, PORT), 0.5)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                failed += 1
            due += 1.0

    async def main() -> dict[str, object]:
        nonlocal measuring, stopping
        tasks = [asyncio.create_task(check(address(i))) for i in range(servers)]
        await asyncio.sleep(warmup)
        measuring, failed_before = True, failed
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(seconds)
        after, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"cpu": cpu / (t1 - t0), "user": (after.ru_utime - before.ru_utime) / (t1 - t0),
                **_percentiles(late or [0.0]), "checks": len(late), "failed_runs": failed - failed_before}

    return uvloop.run(main())


def run_floor(servers: int, seconds: float, warmup: float) -> dict[str, object]:
    """The kernel's share: blocking connect + RST close in a plain loop, no scheduler, no event loop."""
    import struct

    linger = struct.pack("ii", 1, 0)
    n, t_end = 0, time.monotonic() + min(seconds, 5.0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    while time.monotonic() < t_end:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.connect((address(n % servers), PORT))
        s.close()
        n += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_per_connect": ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / n,
            "sys_per_connect": (after.ru_stime - before.ru_stime) / n, "connects": n}


# --- keepalived --------------------------------------------------------------------
def try_keepalived(servers: int) -> str:
    """Run keepalived's checker on the same servers; returns why it could not."""
    if shutil.which("keepalived") is None:
        return "keepalived is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "keepalived.conf")
        with open(conf, "w") as f:
            f.write("global_defs {\n  router_id health_bench\n}\n")
            f.write(f"virtual_server 10.255.0.1 {PORT} {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n"
                    "  protocol TCP\n")
            for i in range(servers):
                f.write(f"  real_server {address(i)} {PORT} {{\n    TCP_CHECK {{\n      connect_timeout 1\n"
                        "    }\n  }\n")
            f.write("}\n")
        argv = ["keepalived", "--dont-fork", "--log-console", "--check", "-f", conf,
                "-p", os.path.join(tmp, "k.pid"), "-c", os.path.join(tmp, "c.pid"), "-r", os.path.join(tmp, "v.pid")]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=KEEPALIVED_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return f"keepalived was still starting after {KEEPALIVED_WAIT} s; not measured"
        lines = [ln.split(": ", 1)[-1] for ln in out.splitlines() if "ipvs" in ln.lower()]
        return "keepalived's checker exited: " + ("; ".join(lines[:2]) or out.strip()[-200:])


# --- driver --------------------------------------------------------------------------
def child(side: str, servers: int, seconds: float, warmup: float) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--servers", str(servers), "--seconds",
                          str(seconds), "--warmup", str(warmup)], capture_output=True, text=True,
                         timeout=seconds + warmup + 300)
    if out.returncode != 0:
        raise SystemExit(f"{side} failed:\n{out.stderr}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--side", choices=["serve", "understudy", "naive", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile()
    if args.side == "serve":
        return serve()
    if args.side:
        run = {"understudy": run_understudy, "naive": run_naive, "floor": run_floor}[args.side]
        print(json.dumps(run(args.servers, args.seconds, args.warmup)))
        return

    server = subprocess.Popen([sys.executable, __file__, "--side", "serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        with socket.create_connection((address(args.servers - 1), PORT), timeout=2):
            pass
        print(f"{args.servers} real servers (127.1.x.y:{PORT}), TCP check every 1 s, timeout 0.5 s, "
              f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up; {os.cpu_count()} CPUs")
        why = try_keepalived(args.servers)
        print(f"keepalived: {why}\nbaseline instead: naive asyncio, one task per check")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        results = {side: child(side, args.servers, args.seconds, args.warmup) for side in ("understudy", "naive")}
        floor = child("floor", args.servers, args.seconds, args.warmup)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        server.kill()
        server.wait()
    ours, naive = results["understudy"], results["naive"]
    print(f"{'side':<12}{'CPU (cores)':>12}{'user':>8}{'checks/s':>10}{'CPU/check':>11}{'late p50':>10}"
          f"{'late p99':>10}{'late max':>10}{'failed runs':>13}")
    for side, r in results.items():
        rate = float(r["checks"]) / args.seconds  # type: ignore[arg-type]
        print(f"{side:<12}{r['cpu']:>12.3f}{r['user']:>8.3f}{rate:>10.0f}"
              f"{float(r['cpu']) / max(rate, 1) * 1e6:>9.1f}us{float(r['p50']) * 1e3:>8.1f}ms"  # type: ignore[arg-type]
              f"{float(r['p99']) * 1e3:>8.1f}ms{float(r['max']) * 1e3:>8.1f}ms{r['failed_runs']:>13}")  # type: ignore[arg-type]
    print(f"understudy: {ours['up']} servers reported up, {ours['down']} down {ours['why']}; {ours['runs']} runs "
          f"({float(ours['checks']) / args.seconds:.0f} checks/s measured)")  # type: ignore[arg-type]
    per_check = float(ours["cpu"]) / (float(ours["checks"]) / args.seconds)  # type: ignore[arg-type]
    prober = float(ours["prober"])  # type: ignore[arg-type]
    print(f"understudy split: prober thread {prober:.3f} core, the rest (asyncio loop: rise/fall per batch) "
          f"{float(ours['cpu']) - prober:.3f} core")  # type: ignore[arg-type]
    floor_cpu = float(floor["cpu_per_connect"])  # type: ignore[arg-type]
    print(f"CPU per check: understudy {per_check * 1e6:.1f} us; floor (blocking connect + close loop, no "
          f"scheduler) {floor_cpu * 1e6:.1f} us, of which system {float(floor['sys_per_connect']) * 1e6:.1f} us "  # type: ignore[arg-type]
          f"-- on loopback the kernel runs both ends of each handshake in the checker's context")
    print(f"floor at {args.servers} checks/s: {floor_cpu * args.servers:.2f} core")
    print(f"ratio naive/understudy: CPU {float(naive['cpu']) / float(ours['cpu']):.2f}x, "  # type: ignore[arg-type]
          f"lateness p99 {float(naive['p99']) / max(float(ours['p99']), 1e-6):.1f}x")  # type: ignore[arg-type]
    for side, r in results.items():
        rate = float(r["checks"]) / args.seconds  # type: ignore[arg-type]
        if rate < 0.97 * args.servers:
            print(f"{side} did not keep up ({rate:.0f} of {args.servers} checks/s): it got less CPU than it needed "
                  f"(load average above), so its lateness measures the run queue more than the scheduler")
    print("goals: CPU <= 0.5 core, lateness p99 <= 50 ms")


if __name__ == "__main__":
    main()
