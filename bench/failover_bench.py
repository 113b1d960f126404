"""Failover time: SIGKILL the primary, time the backup's first gratuitous ARP
for the VIP on the wire, and when the VIP shows in the backup's addresses.

    sudo .venv/bin/python bench/failover_bench.py                     # keepalived at 1 s and 10 ms
    sudo .venv/bin/python bench/failover_bench.py --impl understudy   # 1000, 100, 10, 2 ms
    ... --runs 40 --interval 10 --soak 600 --load 2 --json out.json

Topology (network namespaces made here, removed at exit): directors d0, d1
(d2 with --nodes 3) and an observer `obs` on a bridge (the shared segment,
192.0.2.0/24, VIP 192.0.2.100), and a second bridge joining the directors
only (the heartbeat link, 198.51.100.0/24). The bridges live in a namespace
of their own, so the host's network is untouched.

One run: the primary's process group gets SIGKILL (time taken just before,
CLOCK_MONOTONIC); the observer's AF_PACKET socket stamps the first gratuitous
ARP for the VIP from another director in the kernel (SO_TIMESTAMPNS, moved
from CLOCK_REALTIME onto CLOCK_MONOTONIC at once, see failover_probe.py);
a netlink listener in each director stamps the VIP's RTM_NEWADDR. Then the
VIP the killed daemon left behind is removed (a crashed host would not hold
it), the node restarts, rejoins as a backup, and the next run kills the new
primary, so the roles alternate.

A *false failover* is the VIP added on any director while nothing was killed:
counted apart while every node runs (the CPU window, and the soak: --soak S,
with --load N busy loops) and while a restarted node rejoins (it claimed the
VIP before it heard the primary). CPU is the CPU time of each node's
processes (the scheduler's per-thread count, else utime + stime) over a quiet
window of --cpu-window s (and over the soak), as % of one core.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failover_impls import IMPLEMENTATIONS, Launcher, Layout, Understudy  # noqa: E402

PROBE = Path(__file__).resolve().parent / "failover_probe.py"
PREFIX = "fbench"
DEFAULT_INTERVALS = {"keepalived": [1000, 10], "understudy": [1000, 100, 10, 2]}
TICK = os.sysconf("SC_CLK_TCK")
SCHEDSTAT = Path("/proc/self/schedstat").exists()


class BenchError(Exception):
    """A run that could not be measured; the message says what was seen."""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done


# --- processes -------------------------------------------------------------

class Processes:
    """Every process the bench started, each in a process group of its own."""

    def __init__(self) -> None:
        self.groups: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path | None = None, piped: bool = False) -> subprocess.Popen[bytes]:
        """Output to `log` (or nowhere); with `piped`, stdout to a pipe for the caller."""
        with open(log if log else os.devnull, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if piped else out,
                                    stderr=out, start_new_session=True)
        self.groups.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.groups:
            self.groups.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self.groups):
            self.kill(proc)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(entry))
    return pids


def cpu_seconds(pgid: int, thread: str | None = None) -> float:
    """CPU time of every live process in the group (or only its threads named
    `thread`): the scheduler's ns count of each thread (/proc/PID/task/TID/schedstat)
    where the kernel keeps it, else utime + stime from /proc/PID/stat, whose 10 ms
    ticks cannot tell 0.05% from 0 over 10 s (and do not split threads)."""
    total = 0.0
    for pid in group_pids(pgid):
        try:
            if SCHEDSTAT:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    task = Path(f"/proc/{pid}/task/{tid}")
                    with contextlib.suppress(OSError):  # a thread that just ended
                        if thread is None or (task / "comm").read_text().strip() == thread:
                            total += int((task / "schedstat").read_text().split()[0]) / 1e9
            elif thread is not None:
                return math.nan
            else:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)
        except OSError:  # the process just ended
            continue
    return total


# --- topology --------------------------------------------------------------

class Topology:
    """The namespaces: directors, observer, and the switch holding both bridges."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.tag = f"{PREFIX}{os.getpid()}"
        self.sw = f"{self.tag}-sw"
        self.obs = f"{self.tag}-obs"
        self.directors = [f"{self.tag}-d{i}" for i in range(layout.nodes)]
        self.made: list[str] = []

    def ns(self, name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", name, *argv, check=check)

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        self.ns(name, "ip", "link", "set", "lo", "up")
        self.ns(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")

    def _port(self, name: str, ifname: str, port: str, bridge: str, addr: str, mac: str | None) -> None:
        sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", name)
        sh("ip", "-n", self.sw, "link", "set", port, "master", bridge, "up")
        if mac:
            sh("ip", "-n", name, "link", "set", ifname, "address", mac)
        sh("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", ifname)
        sh("ip", "-n", name, "link", "set", ifname, "up")

    def build(self) -> None:
        lay = self.layout
        self._netns(self.sw)
        for bridge in ("pub", "hb"):
            # No STP (ports forward at once), no IGMP snooping (VRRP's multicast floods).
            sh("ip", "-n", self.sw, "link", "add", bridge, "type", "bridge", "stp_state", "0",
               "forward_delay", "0", "mcast_snooping", "0")
            sh("ip", "-n", self.sw, "link", "set", bridge, "up")
        for i, name in enumerate(self.directors):
            self._netns(name)
            self._port(name, lay.public_if, f"d{i}p", "pub", lay.public_addr(i), lay.mac(i))
            self._port(name, lay.heartbeat_if, f"d{i}h", "hb", lay.heartbeat_addr(i), None)
        self._netns(self.obs)
        self._port(self.obs, "eth0", "obsp", "pub", "192.0.2.254", "02:00:00:00:00:fe")

    def remove(self) -> None:
        for name in reversed(self.made):
            sh("ip", "netns", "del", name, check=False)
        self.made.clear()


def remove_stale_namespaces() -> None:
    """Namespaces left by a bench that died without cleaning up (its pid is gone)."""
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and "-" in name:
            pid = name[len(PREFIX):].split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                sh("ip", "netns", "del", name, check=False)


# --- events ----------------------------------------------------------------

@dataclass
class Event:
    t: int  # CLOCK_MONOTONIC ns
    kind: str  # "garp", "add", "del"
    node: int  # director index (for garp: by the sender's MAC; -1 unknown)
    seen: int = 0  # garp: when the capture process read it


class Recorder:
    """Reads the probes' JSON lines into one time-ordered list of events."""

    def __init__(self, layout: Layout) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()
        self.by_mac = {layout.mac(i): i for i in range(layout.nodes)}

    def follow(self, proc: subprocess.Popen[bytes], node: int | None, errors: Path) -> None:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first.startswith(b'{"ready"'):
            said = (errors.read_text(errors="replace").strip().splitlines() or ["(nothing)"])[-1]
            raise BenchError(f"probe `{' '.join(map(str, proc.args))}` did not start: {said}")
        threading.Thread(target=self._read, args=(proc, node), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes], node: int | None) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            e = json.loads(line)
            if node is None:
                event = Event(e["t"], "garp", self.by_mac.get(e["mac"], -1), e["seen"])
            else:
                event = Event(e["t"], e["ev"], node)
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait(self, since: int, match, timeout: float) -> Event | None:
        """The first event after index `since` that `match`es, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[since:]:
                    if match(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def adds(self, since: int, until: int | None = None) -> list[Event]:
        with self.cond:
            return [e for e in self.events[since:until] if e.kind == "add"]

    def holders(self) -> set[int]:
        held: set[int] = set()
        with self.cond:
            for e in self.events:
                if e.kind == "add":
                    held.add(e.node)
                elif e.kind == "del":
                    held.discard(e.node)
        return held


# --- the bench -------------------------------------------------------------

@dataclass
class Result:
    impl: str
    interval_ms: int
    garp_ms: list[float] = field(default_factory=list)
    addr_ms: list[float] = field(default_factory=list)
    #: VIP moves with nothing killed: while all nodes ran (CPU window, soak) ...
    false_failovers: int = 0
    #: ... and while a restarted node rejoined (it claimed before hearing the primary).
    false_at_rejoin: int = 0
    cpu_primary: float | None = None
    cpu_backup: float | None = None
    soak_s: float = 0.0
    soak_cpu_primary: float | None = None  # the node primary when the soak began
    soak_cpu_backup: float | None = None
    #: The heartbeat thread alone (primary, backup), when the launcher names it.
    thread_cpu: tuple[float, float] | None = None
    soak_thread_cpu: tuple[float, float] | None = None
    failed_runs: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    #: How long after the kernel's stamp the capture process read each GARP (its own lag).
    capture_lag_ms: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with fewer than 100 runs the 99th is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Bench:
    def __init__(self, launcher: Launcher, topo: Topology, procs: Processes, args: argparse.Namespace) -> None:
        self.launcher = launcher
        self.topo = topo
        self.procs = procs
        self.args = args
        self.rec = Recorder(topo.layout)
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self.log_start: dict[int, int] = {}  # where each node's latest start begins in its log
        self.logs = launcher.workdir
        self.result = Result(launcher.name, launcher.interval_ms)

    # node control

    def log(self, node: int) -> Path:
        return self.logs / f"{self.launcher.name}-{node}.log"

    def start_node(self, node: int) -> None:
        log = self.log(node)
        with open(log, "a") as f:  # one log per node for the whole bench; each start marked
            f.write(f"=== failover_bench: start at {time.monotonic_ns()} (CLOCK_MONOTONIC ns)\n")
        self.log_start[node] = log.stat().st_size
        self.launcher.before_start(node)
        self.nodes[node] = self.procs.start(["ip", "netns", "exec", self.topo.directors[node],
                                             *self.launcher.command(node)], log)

    def alive(self, node: int) -> None:
        proc = self.nodes[node]
        if proc.poll() is not None:
            lines = self.log(node).read_text(errors="replace").splitlines()[-8:] or ["(empty log)"]
            raise BenchError(f"node {node} exited with {proc.returncode}: {lines[-1].strip()}\n"
                             f"its log ({self.log(node)}) ends:\n" + "\n".join(lines))

    def wait_backup(self, node: int) -> None:
        """Until the node says it is backup (if it says), then `settle_s` more."""
        marker = self.launcher.backup_marker
        deadline = time.monotonic() + 10 + self.launcher.settle_s
        while marker and marker not in self.log(node).read_text(errors="replace")[self.log_start[node]:]:
            self.alive(node)
            if time.monotonic() > deadline:
                raise BenchError(f"node {node} never logged {marker!r}")
            time.sleep(0.02)
        time.sleep(self.launcher.settle_s)
        self.alive(node)

    def drop_vip(self, node: int) -> None:
        lay = self.topo.layout
        self.topo.ns(self.topo.directors[node], "ip", "addr", "del", f"{lay.vip}/{lay.prefix}", "dev",
                     lay.public_if, check=False)

    # phases

    def setup(self) -> int:
        """Probes, then node 0 until it holds the VIP, then the others as backups; the primary."""
        lay = self.topo.layout
        for node, ns, what in [(None, self.topo.obs, ["garp", "eth0"]),
                               *((i, name, ["addr"]) for i, name in enumerate(self.topo.directors))]:
            errors = self.logs / f"probe-{ns}.err"
            argv = ["ip", "netns", "exec", ns, sys.executable, str(PROBE), *what, lay.vip]
            self.rec.follow(self.procs.start(argv, errors, piped=True), node, errors)
        self.launcher.write_configs()
        since = self.rec.mark()
        self.start_node(0)
        first = self.rec.wait(since, lambda e: e.kind == "add", timeout=15 + 10 * self.launcher.dead_ms / 1000)
        self.alive(0)
        if first is None or first.node != 0:
            raise BenchError(f"node 0 did not take the VIP (saw {first})")
        for node in range(1, lay.nodes):
            self.start_node(node)
        for node in range(1, lay.nodes):
            self.wait_backup(node)
        return self.check_holder(0, since, "the start", rejoin=True)

    def check_holder(self, expected: int, since: int, phase: str, rejoin: bool = False) -> int:
        """Counts VIP moves since `since` as false failovers; returns who holds the VIP now."""
        moved = [e for e in self.rec.adds(since) if e.node != expected]
        if not moved:
            return expected
        if rejoin:
            self.result.false_at_rejoin += len(moved)
        else:
            self.result.false_failovers += len(moved)
        print(f"  ! VIP added on node(s) {sorted({e.node for e in moved})} during {phase} without a kill",
              file=sys.stderr)
        return self.holder()

    def holder(self) -> int:
        """The one node holding the VIP, waiting out a dual-primary moment."""
        deadline = time.monotonic() + 2 * self.launcher.settle_s
        while len(held := self.rec.holders()) != 1:
            if time.monotonic() > deadline:
                raise BenchError(f"the VIP is on nodes {sorted(held)}, not on one")
            time.sleep(0.05)
        return held.pop()

    def cpu_window(self, seconds: float, primary: int) -> tuple[float, float, tuple[float, float] | None]:
        """% of a core used by the primary and (mean of) the backups over `seconds`, and
        the same for the heartbeat thread alone when the launcher names one."""
        thread = self.launcher.heartbeat_thread
        def sample() -> dict[int, tuple[float, float]]:
            return {n: (cpu_seconds(p.pid), cpu_seconds(p.pid, thread) if thread else math.nan)
                    for n, p in self.nodes.items()}
        before = sample()
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        after = sample()
        used = {n: [(after[n][i] - before[n][i]) / wall * 100 for i in (0, 1)] for n in self.nodes}
        backups = [n for n in used if n != primary]
        threads = (used[primary][1], statistics.mean(used[n][1] for n in backups)) if thread else None
        return used[primary][0], statistics.mean(used[n][0] for n in backups), threads

    def soak(self, primary: int) -> int:
        load = [self.procs.start([sys.executable, "-c", "while True: pass"]) for _ in range(self.args.load)]
        try:
            since = self.rec.mark()
            print(f"  soak {self.args.soak:g} s with {self.args.load} busy loop(s)", file=sys.stderr)
            r = self.result
            r.soak_cpu_primary, r.soak_cpu_backup, r.soak_thread_cpu = self.cpu_window(self.args.soak, primary)
            self.result.soak_s = self.args.soak
            for node in self.nodes:
                self.alive(node)
            moved = [e for e in self.rec.adds(since)]
            self.result.false_failovers += len(moved)
            if moved:
                print(f"  ! {len(moved)} VIP move(s) during the soak", file=sys.stderr)
                return self.holder()
            return primary
        finally:
            for proc in load:
                self.procs.kill(proc)

    def failover(self, primary: int) -> int:
        """One kill of `primary`; records the times; returns the new primary."""
        wait = 5 + 20 * self.launcher.dead_ms / 1000
        # The rejoin before this run took a fixed time, so without this the kill would
        # land at the same phase of the primary's heartbeat every run.
        time.sleep(random.uniform(0, self.launcher.interval_ms / 1000))
        since = self.rec.mark()
        victim = self.nodes[primary]
        t_kill = time.monotonic_ns()
        os.killpg(victim.pid, signal.SIGKILL)
        garp = self.rec.wait(since, lambda e: e.kind == "garp" and e.node not in (primary, -1) and e.t >= t_kill,
                             wait)
        add = self.rec.wait(since, lambda e: e.kind == "add" and e.node != primary, 1 if garp else wait)
        self.procs.kill(victim)
        self.drop_vip(primary)  # the dead daemon could not
        if garp is None:
            raise BenchError(f"no gratuitous ARP from a backup within {wait:.1f} s of killing node {primary}")
        self.result.garp_ms.append((garp.t - t_kill) / 1e6)
        self.result.capture_lag_ms.append((garp.seen - garp.t) / 1e6)
        if add is not None:
            self.result.addr_ms.append((add.t - t_kill) / 1e6)
        new = garp.node
        # The restarted node must come back as a backup and leave the VIP where it is.
        since = self.rec.mark()
        self.start_node(primary)
        self.wait_backup(primary)
        self.check_holder(new, since, f"the rejoin of node {primary}", rejoin=True)
        for node in self.nodes:
            self.alive(node)
        # Not always the first to announce: two backups may both claim, and one yields.
        return self.holder()

    def run(self) -> Result:
        primary = self.setup()
        since = self.rec.mark()
        r = self.result
        r.cpu_primary, r.cpu_backup, r.thread_cpu = self.cpu_window(self.args.cpu_window, primary)
        primary = self.check_holder(primary, since, "the CPU window")
        if self.args.soak:
            primary = self.soak(primary)
        for i in range(self.args.runs):
            try:
                primary = self.failover(primary)
            except BenchError as e:
                self.result.failed_runs.append(str(e))
                print(f"  run {i + 1}: {e}", file=sys.stderr)
                if len(self.result.failed_runs) >= 3:
                    raise BenchError("three runs failed; giving up on this configuration") from e
                primary = self.recover()
                continue
            print(f"  run {i + 1:3}/{self.args.runs}: GARP {self.result.garp_ms[-1]:8.2f} ms   "
                  f"now primary: node {primary}", file=sys.stderr)
        return self.result

    def recover(self) -> int:
        """After a failed run: restart every dead node and find who holds the VIP."""
        for node, proc in list(self.nodes.items()):
            if proc.poll() is not None:
                self.drop_vip(node)
                self.start_node(node)
                self.wait_backup(node)
        return self.holder()


# --- output ----------------------------------------------------------------

def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(results: list[Result]) -> str:
    rows = ["| implementation | interval | runs | min ms | median ms | p99 ms | max ms | VIP in `ip addr`, median ms "
            "| false failovers: steady / at rejoin | CPU % primary / backup |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        interval = f"{r.interval_ms} ms" if r.interval_ms < 1000 else f"{r.interval_ms / 1000:g} s"
        if r.skipped or r.error:
            why = f"skipped: {r.skipped}" if r.skipped else f"failed: {r.error}"
            rows.append(f"| {r.impl} | {interval} | {why} | | | | | | | |")
            continue
        g = r.garp_ms
        stats = [min(g), statistics.median(g), percentile(g, 99), max(g)] if g else [None] * 4
        soak = f" (soak {r.soak_s:g} s)" if r.soak_s else ""
        cpu = f"{fmt(r.cpu_primary, 2)} / {fmt(r.cpu_backup, 2)}"
        if r.soak_cpu_primary is not None:
            cpu += f" (loaded: {fmt(r.soak_cpu_primary, 2)} / {fmt(r.soak_cpu_backup, 2)})"
        if r.thread_cpu is not None:
            cpu += f"; heartbeat thread {fmt(r.thread_cpu[0], 2)} / {fmt(r.thread_cpu[1], 2)}"
        if r.soak_thread_cpu is not None:
            cpu += f" (loaded: {fmt(r.soak_thread_cpu[0], 2)} / {fmt(r.soak_thread_cpu[1], 2)})"
        runs = f"{len(g)}" + (f" ({len(r.failed_runs)} failed)" if r.failed_runs else "")
        addr = fmt(statistics.median(r.addr_ms) if r.addr_ms else None)
        rows.append(f"| {r.impl} | {interval} | {runs} | " + " | ".join(fmt(v) for v in stats)
                    + f" | {addr} | {r.false_failovers}{soak} / {r.false_at_rejoin} | {cpu} |")
    return "\n".join(rows)


def measure(name: str, interval: int, args: argparse.Namespace, procs: Processes) -> Result:
    layout = Layout(args.nodes)
    workdir = Path(tempfile.mkdtemp(prefix=f"fbench-{name}-{interval}-"))
    launcher = IMPLEMENTATIONS[name](interval, layout, workdir, args.rt_priority)
    if isinstance(launcher, Understudy):
        launcher.dead_factor = args.dead_factor
    why = launcher.unavailable()
    if why:
        print(f"{name} at {interval} ms: skipped -- {why}", file=sys.stderr)
        return Result(name, interval, skipped=why)
    print(f"{name} at {interval} ms (dead time {launcher.dead_ms:g} ms), {args.runs} runs; logs in {workdir}",
          file=sys.stderr)
    topo = Topology(layout)
    atexit.register(topo.remove)
    keep = args.keep_logs
    try:
        topo.build()
        return Bench(launcher, topo, procs, args).run()
    except BenchError as e:
        keep = True  # the logs explain it
        print(f"{name} at {interval} ms: {e}", file=sys.stderr)
        return Result(name, interval, error=str(e).splitlines()[0])
    finally:
        procs.kill_all()
        topo.remove()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", action="append", choices=sorted(IMPLEMENTATIONS),
                   help="implementation to measure (repeatable; default: keepalived, and understudy when it can run)")
    p.add_argument("--interval", action="append", type=int, metavar="MS",
                   help="heartbeat / advert interval in ms (repeatable; default per implementation)")
    p.add_argument("--runs", type=int, default=20, help="kills per configuration (default 20)")
    p.add_argument("--nodes", type=int, default=2, choices=(2, 3), help="directors (default 2)")
    p.add_argument("--cpu-window", type=float, default=10.0, metavar="S", help="quiet window for CPU (default 10 s)")
    p.add_argument("--soak", type=float, default=0.0, metavar="S",
                   help="seconds of no kills, counting false failovers")
    p.add_argument("--load", type=int, default=0, metavar="N", help="busy loops during the soak")
    p.add_argument("--rt-priority", type=int, metavar="P",
                   help="SCHED_FIFO priority for the daemons (both implementations)")
    p.add_argument("--dead-factor", type=float, default=3.0, metavar="K",
                   help="Understudy's dead_ms = K x interval (default 3, as VRRP's 3 adverts)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every measurement here")
    p.add_argument("--keep-logs", action="store_true", help="keep configs and daemon logs")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root (it makes network namespaces)")
    if args.runs < 1:
        p.error("--runs must be at least 1")

    procs = Processes()
    atexit.register(procs.kill_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    remove_stale_namespaces()
    impls = args.impl or ["keepalived", "understudy"]
    results = []
    for name in impls:
        for interval in args.interval or DEFAULT_INTERVALS[name]:
            results.append(measure(name, interval, args, procs))
    print(table(results))
    for r in results:
        if r.capture_lag_ms:
            lag = r.capture_lag_ms
            print(f"{r.impl} at {r.interval_ms} ms: the capture read each GARP {statistics.median(lag):.3f} ms "
                  f"(median; max {max(lag):.3f} ms) after the kernel stamped it")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
