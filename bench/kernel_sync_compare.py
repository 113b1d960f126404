"""The kernel's own backup sync daemon against Understudy's listener, fed the
same v1 sync messages in the same user-mode Linux guest: how fast each takes
N connections in, and the CPU it spends per million.

    .venv/bin/python bench/kernel_sync_compare.py [--entries 200000] [--rates 20000,50000] [--repeat 3]

One guest (Linux 6.1). For each offered rate (entries/s; 0: as fast as the
sender goes) and each receiver, two fresh network namespaces joined by a
veth: `src` sends N distinct TCP connections as 40-entry v1 messages by
multicast (224.0.0.81:8848, as a kernel master daemon does), paced in bursts
of 8 datagrams; `dst` runs the receiver:

* kernel: `ipvsadm --start-daemon backup` with the service and real server
  the entries name; created = the real server's connection count, checked
  at the end against /proc/net/ip_vs_conn; CPU = the `ipvs-b` kernel
  thread's (utime + stime, 10 ms grain);
* understudy: a receiver as the `sync listen` role runs it (SyncReceiver and
  ConnTable, drained on readiness), plain and with its state file journaled;
  CPU = the process's (getrusage).

Both sockets keep the default receive buffer. "guest busy" is the whole
guest's non-idle CPU time in the receiving window, per million created: the
sender and packet delivery included (the same for every receiver; UML
accounts next to no softirq time apart). UML runs every system call and
interrupt through ptrace: absolute figures are far below bare metal; the
ratios between receivers in the same guest are what this measures.
Prints figures and ratios; never fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HZ = os.sysconf("SC_CLK_TCK")

SENDER = """
import sys, time
from understudy.sync import Conn, SyncSender, encode
n, rate = int(sys.argv[1]), float(sys.argv[2])
datagrams = []
for first in range(0, n, 50_000):
    conns = [Conn(6, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1024 + i % 60_000, "10.0.0.100", 80,
                  "192.168.1.11", 8000, state=1, timeout=900) for i in range(first, min(n, first + 50_000))]
    datagrams += encode(conns)
sender = SyncSender(interface="eth0")
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for at in range(0, len(datagrams), 8):
    sender.send(datagrams[at:at + 8])
    if rate:
        ahead = start + (at + 8) * 40 / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
print(time.perf_counter() - start, flush=True)
"""

RECEIVER = """
import json, resource, select, sys, tempfile, time
from pathlib import Path
from understudy.sync import ConnTable, SyncReceiver
n, journaled = int(sys.argv[1]), sys.argv[2] == "1"
table = ConnTable()
tmp = tempfile.TemporaryDirectory()
if journaled:
    table.open_state(Path(tmp.name) / "table")
receiver = SyncReceiver(interface="eth0")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
print("ready", flush=True)
first = last = None
cpu0 = cpu()
while len(table) < n:
    if not select.select([receiver.fileno()], [], [], 3.0)[0]:
        if first is not None:
            break  # the sender is done; the rest was lost
        continue
    receiver.drain(table)
    now = time.perf_counter()
    first = first or now
    last = now
table.journal_flush(sync=journaled)
print(json.dumps({"created": len(table), "seconds": (last or 0) - (first or 0), "cpu": cpu() - cpu0,
                  "datagrams": table.stats()["datagrams"]}), flush=True)
"""


def busy() -> float:
    """Seconds this (guest) kernel's CPUs were not idle: user, nice, system, irq, softirq, steal."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / HZ


def kthread_cpu(prefix: str) -> tuple[int, float]:
    """(pid, utime + stime seconds) of the kernel thread whose name starts with `prefix`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm.startswith(prefix):
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return int(pid), (int(stat[11]) + int(stat[12])) / HZ
        except OSError:
            continue
    raise RuntimeError(f"no kernel thread {prefix}*")


def dest_conns(ns: Any) -> int:
    """Active + inactive connections of the one real server, as the kernel counts them
    (read from this thread moved into `ns`: spawning a reader costs the guest more)."""
    with ns.entered(), open("/proc/thread-self/net/ip_vs") as proc:
        out = proc.read()
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "->" and f[1] != "RemoteAddress:Port":
            return int(f[4]) + int(f[5])
    return 0


def one_run(kind: str, n: int, rate: float) -> dict[str, float]:
    from understudy.uml import NetnsFactory

    netns = NetnsFactory(prefix=f"ksc{uuid.uuid4().hex[:4]}-")
    try:
        src, dst = netns("src"), netns("dst")
        netns.veth(src, dst, "10.77.0.1/24", "10.77.0.2/24")
        sender = subprocess.Popen(src.argv(sys.executable, "-c", SENDER, str(n), str(rate)), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert sender.stdout is not None and sender.stdin is not None
        assert sender.stdout.readline().strip() == "ready"
        result: dict[str, float] = {}
        if kind == "kernel":
            dst.run("ipvsadm", "-A", "-t", "10.0.0.100:80", "-s", "rr")
            dst.run("ipvsadm", "-a", "-t", "10.0.0.100:80", "-r", "192.168.1.11:8000", "-m")
            dst.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "eth0")
            time.sleep(0.5)
            pid, cpu0 = kthread_cpu("ipvs-b")
            busy0 = busy()
            sender.stdin.write("go\n")
            sender.stdin.flush()
            start = time.perf_counter()
            created, done_at, last_change = 0, start, start
            while True:
                time.sleep(0.5)
                now_created = dest_conns(dst)
                now = time.perf_counter()
                if now_created != created:
                    created, done_at, last_change = now_created, now, now
                if created >= n or (sender.poll() is not None and now - last_change > 3.0):
                    break
            cpu1 = kthread_cpu("ipvs-b")[1]
            busy1 = busy()
            rows = len(dst.run("cat", "/proc/net/ip_vs_conn", timeout=600).stdout.splitlines()) - 1
            result = {"created": created, "table_rows": rows, "seconds": done_at - start,
                      "cpu": cpu1 - cpu0, "busy": busy1 - busy0}
        else:
            receiver = subprocess.Popen(dst.argv(sys.executable, "-c", RECEIVER, str(n),
                                                 "1" if kind == "understudy+journal" else "0"),
                                        stdout=subprocess.PIPE, text=True)
            assert receiver.stdout is not None
            assert receiver.stdout.readline().strip() == "ready"
            busy0 = busy()
            sender.stdin.write("go\n")
            sender.stdin.flush()
            got = json.loads(receiver.stdout.readline())
            busy1 = busy()
            receiver.wait(timeout=60)
            result = {**got, "busy": busy1 - busy0}
        sender.stdin.close()
        sender.wait(timeout=600)
        result["sent_in"] = float(sender.stdout.read().split()[-1]) if sender.stdout else 0.0
        return result
    finally:
        netns.cleanup()


def guest(n: int, rates: list[float], repeat: int) -> None:
    import statistics

    subprocess.run(["modprobe", "ip_vs"], check=True)
    kinds = ["kernel", "understudy", "understudy+journal"]
    print(f"{n:,} connections per run, 40-entry v1 messages, default receive buffers; "
          f"guest: {os.cpu_count()} CPU", flush=True)
    print(f"{'offered':>10} {'receiver':<20} {'created':>9} {'lost':>6} {'entries/s':>10} {'CPU/M':>9} "
          f"{'guest busy/M':>13}", flush=True)
    for rate in rates:
        offered = "max" if not rate else f"{rate:,.0f}/s"
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for _ in range(repeat):  # interleaved, so that a noisy spell hits every receiver
            for kind in kinds:
                r = one_run(kind, n, rate)
                r["cpu_m"] = r["cpu"] / max(r["created"], 1) * 1e6
                r["speed"] = r["created"] / r["seconds"] if r["seconds"] > 0 else float("nan")
                runs[kind].append(r)
                extra = f"   (ip_vs_conn rows {r['table_rows']:,.0f})" if "table_rows" in r else ""
                print(f"{offered:>10} {kind:<20} {r['created']:>9,.0f} {1 - r['created'] / n:>6.1%} "
                      f"{r['speed']:>10,.0f} {r['cpu_m']:>8.2f}s {r['busy'] / max(r['created'], 1) * 1e6:>12.2f}s"
                      f"   sent in {r['sent_in']:.2f} s{extra}", flush=True)
        if repeat > 1 or len(kinds) > 1:
            base = statistics.median(r["cpu_m"] for r in runs["kernel"])
            for kind in kinds:
                cpu = [r["cpu_m"] for r in runs[kind]]
                lost = [1 - r["created"] / n for r in runs[kind]]
                print(f"{offered:>10} {kind:<20} median of {repeat}: CPU/M {statistics.median(cpu):.2f}s "
                      f"(range {min(cpu):.2f}-{max(cpu):.2f}), lost {statistics.median(lost):.1%}, "
                      f"CPU ratio to the kernel {statistics.median(cpu) / base:.2f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--rates", default="20000,50000", help="offered entries/s, comma-separated; 0: unpaced")
    parser.add_argument("--repeat", type=int, default=3, help="runs per receiver and rate (medians)")
    parser.add_argument("--mem", default="1536M", help="guest memory")
    parser.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if args.guest:
        guest(args.entries, rates, args.repeat)
        return 0
    from understudy.uml import run

    result = run([sys.executable, str(Path(__file__).resolve()), "--guest", "--entries", str(args.entries),
                  "--rates", args.rates, "--repeat", str(args.repeat)], cwd=ROOT, mem=args.mem, timeout=5400,
                 echo=True)
    if result.returncode != 0:
        print(result.dmesg[-3000:], file=sys.stderr)
    return result.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
