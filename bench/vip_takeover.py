"""Time from `VipManager.acquire()` to the first gratuitous ARP on the wire.

Two namespaces joined by a veth pair: the director `a` takes over a VIP, the
neighbour `n` captures with tcpdump (immediate mode, kernel timestamps on the
same realtime clock as `time.time()`). Each round takes a fresh VIP, so every
round adds an address and announces it. Baselines in the same run: a bare
AF_PACKET send of a prebuilt ARP frame from Python (the floor: call to wire),
and `ip addr add` alone as a script-driven failover would run it.

    .venv/bin/python bench/vip_takeover.py [ROUNDS]

Needs root (namespaces). Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from understudy._core import Announcer
from understudy.uml.netns import NetnsFactory
from understudy.vip import AnnounceSettings, Vip, VipManager


def first_seen(pcap: Path) -> dict[str, float]:
    """Epoch time of the first ARP announcing each address."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "arp", "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "arp.src.proto_ipv4"], capture_output=True, text=True, check=True, timeout=120).stdout
    seen: dict[str, float] = {}
    for line in out.splitlines():
        ts, ip = line.split("\t")
        seen.setdefault(ip, float(ts))
    return seen


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    factory = NetnsFactory(prefix=f"usb{os.getpid()}-")
    try:
        a, n = factory("a"), factory("n")
        factory.veth(a, n, "192.0.2.11/24", "192.0.2.2/24", name_a="eth0", name_b="eth0")
        with tempfile.TemporaryDirectory() as tmp:
            pcap = Path(tmp) / "takeover.pcap"
            os.chmod(tmp, 0o777)  # tcpdump drops to its own user before writing
            dump = n.popen("tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-n", "-w", str(pcap), "arp")
            assert dump.stderr is not None
            while "listening" not in dump.stderr.readline():
                pass
            acquire: dict[str, float] = {}
            bare: dict[str, float] = {}
            ip_add: list[float] = []
            with a.entered():
                async def takeovers() -> None:
                    for i in range(rounds):
                        vip = Vip(f"192.0.2.{100 + i}", 24, "eth0")
                        mgr = VipManager([vip], settings=AnnounceSettings(repeat=1))
                        await mgr.start()
                        acquire[vip.address] = time.time()
                        await mgr.acquire()
                        await asyncio.sleep(0.02)
                        await mgr.stop()

                asyncio.run(takeovers())
                ann = Announcer("eth0")
                raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                raw.bind(("eth0", 0))
                for i in range(rounds):
                    ip = f"198.51.100.{1 + i}"
                    frame = ann.frame(ip)
                    bare[ip] = time.time()
                    raw.send(frame)
                    time.sleep(0.02)
                raw.close()
                for i in range(rounds):
                    t0 = time.perf_counter()
                    subprocess.run(["ip", "addr", "add", f"203.0.113.{1 + i}/24", "dev", "eth0"], check=True)
                    ip_add.append(time.perf_counter() - t0)
            time.sleep(0.2)
            dump.terminate()
            dump.communicate(timeout=10)
            seen = first_seen(pcap)
    finally:
        factory.cleanup()

    def lat(sent: dict[str, float]) -> list[float]:
        return [(seen[ip] - t) * 1e6 for ip, t in sent.items() if ip in seen]

    ours, floor = lat(acquire), lat(bare)
    spawn = [x * 1e6 for x in ip_add]
    print(f"acquire() -> first gratuitous ARP on the wire, {len(ours)}/{rounds} rounds:")
    print(f"  median {statistics.median(ours):8.0f} us   p90 {statistics.quantiles(ours, n=10)[-1]:8.0f} us")
    print(f"baseline: bare AF_PACKET send from Python -> wire, {len(floor)}/{rounds}:")
    print(f"  median {statistics.median(floor):8.0f} us   ratio {statistics.median(ours) / statistics.median(floor):.1f}x")
    print("baseline: `ip addr add` alone (subprocess), no announcement yet:")
    print(f"  median {statistics.median(spawn):8.0f} us   ratio {statistics.median(ours) / statistics.median(spawn):.2f}x")


if __name__ == "__main__":
    main()
