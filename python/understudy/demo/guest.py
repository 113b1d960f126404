"""The demo cluster, run inside a user-mode Linux guest (`understudy demo`).

    client c ── br-front ── lb1 (node 0, priority 200) ─┐ sync0: heartbeats + connection sync
                        └── lb2 (node 1, priority 100) ─┘
    rs1 rs2 rs3 ── br-back ── lb1, lb2   (NAT: the real servers' gateway is a VIP too)

Both directors run `understudy run` on one config file. The scenario: a real
server dies (removed, traffic continues); the primary director dies (killed,
links cut: the backup takes over and the connections survive); it returns
(resynced, it reclaims the primary role: failback); the real server returns.
Prints a live timeline and a summary; exits 0 only if everything behaved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from understudy.admin import AdminError, request
from understudy.uml.netns import Netns, NetnsFactory
from understudy.uml.topology import local_pair, switch

VIP, GATEWAY = "10.0.0.100", "192.168.1.1"
SERVERS = {"rs1": "192.168.1.11", "rs2": "192.168.1.12", "rs3": "192.168.1.13"}
DIRECTORS = {"lb1": (0, "10.0.0.11", "192.168.1.21", "10.255.0.1"),
             "lb2": (1, "10.0.0.12", "192.168.1.22", "10.255.0.2")}
LONG_CONNECTIONS = 24
PYTHON = sys.executable

CONFIG = """\
# The demo cluster: two directors, one virtual service, three real servers.
[cluster]
id = 42
key_file = "cluster.key"
interval_ms = 50
dead_ms = 400
initdead_ms = 1500
auto_failback = true
failback_delay = 2

[[cluster.path]]
name = "sync"
type = "unicast"
interface = "sync0"

[[cluster.path]]
name = "front"
type = "unicast"
interface = "front"

[[cluster.node]]
id = 0
name = "lb1"
priority = 200
addresses = {{ sync = "10.255.0.1", front = "10.0.0.11" }}

[[cluster.node]]
id = 1
name = "lb2"
priority = 100
addresses = {{ sync = "10.255.0.2", front = "10.0.0.12" }}

[[vip]]
address = "{vip}/24"
interface = "front"

[[vip]]
address = "{gateway}/24"
interface = "back"

[announce]
repeat = 3
interval = 0.1

[tracking]
interfaces = ["front", "back"]

[sync]
mode = "relay"
interface = "ksync1"
kernel_interface = "ksync0"
syncid = 7
addresses = {{ 0 = "10.255.0.1", 1 = "10.255.0.2" }}

[[service]]
name = "web"
address = "{vip}"
port = 80
protocol = "tcp"
scheduler = "rr"
forward = "masq"
check = {{ type = "http", path = "/health", interval = 0.3, timeout = 0.25, rise = 2, fall = 2 }}
{servers}
"""


class Timeline:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        print(f"[{self.now():6.2f}s] {text}", flush=True)


class Director:
    def __init__(self, name: str, ns: Netns, workdir: Path) -> None:
        self.name, self.ns = name, ns
        self.node = DIRECTORS[name][0]
        self.socket = f"/run/understudy/{name}.sock"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.config = workdir / "understudy.toml"

    def start(self) -> None:
        config = self.config.read_text().replace("[sync]", f'[admin]\nsocket = "{self.socket}"\n\n[sync]', 1)
        mine = self.config.with_name(f"{self.name}.toml")
        mine.write_text(config)
        log = open(self.log, "a")
        self.proc = subprocess.Popen(
            self.ns.argv(PYTHON, "-m", "understudy", "run", "--config", str(mine), "--node", str(self.node)),
            stdout=log, stderr=subprocess.STDOUT, text=True)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def status(self) -> dict[str, Any] | None:
        """The daemon's status through its admin socket (None while it is not answering)."""
        try:
            return request(self.socket, "status", timeout=5)  # type: ignore[no-any-return]
        except (AdminError, OSError, ValueError):
            return None

    def logged(self, pattern: str, after: float) -> float | None:
        """Wall-clock time of the first log line after `after` matching `pattern`."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in lines:
            m = re.match(r"(\S+ \S+),(\d+) ", line)
            if m and re.search(pattern, line):
                t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                if t >= after:
                    return t
        return None

    def role(self) -> str | None:
        s = self.status()
        return s["failover"]["role"] if s else None

    def holds_vip(self) -> bool:
        out = self.ns.run("ip", "-o", "addr", "show", "dev", "front").stdout
        return f" {VIP}/" in out

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""


class ClientWatch(threading.Thread):
    """Reads the client's JSON lines; keeps the latest."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.latest: dict[str, Any] = {}

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.latest = json.loads(line)
            except ValueError:
                pass


def wait_for(what: str, predicate: Any, timeout: float, tl: Timeline) -> float:
    """Poll until `predicate()`; returns seconds waited, raises on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def build(netns: NetnsFactory, workdir: Path) -> dict[str, Netns]:
    names = ["sw", "c", *SERVERS, *DIRECTORS]
    ns = {n: netns(n) for n in names}
    sw = ns["sw"]
    netns.veth(ns["c"], sw, "10.0.0.2/24", name_b="c")
    front_ports, back_ports = ["c"], []
    for rs, addr in SERVERS.items():
        netns.veth(ns[rs], sw, f"{addr}/24", name_b=rs)
        back_ports.append(rs)
        ns[rs].run("ip", "route", "add", "default", "via", GATEWAY)
    for lb, (_node, front, back, _sync) in DIRECTORS.items():
        netns.veth(ns[lb], sw, f"{front}/24", name_a="front", name_b=f"{lb}f")
        netns.veth(ns[lb], sw, f"{back}/24", name_a="back", name_b=f"{lb}b")
        front_ports.append(f"{lb}f")
        back_ports.append(f"{lb}b")
        local_pair(ns[lb], "ksync0", "ksync1", "10.254.0.1/30", "10.254.0.2/30")
        ns[lb].run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.vs.conntrack=0")
    netns.veth(ns["lb1"], ns["lb2"], "10.255.0.1/24", "10.255.0.2/24", name_a="sync0", name_b="sync0")
    switch(sw, "br-front", front_ports)
    switch(sw, "br-back", back_ports)
    servers = "".join(f'\n[[service.server]]\naddress = "{addr}:8080"\n' for addr in SERVERS.values())
    (workdir / "understudy.toml").write_text(CONFIG.format(vip=VIP, gateway=GATEWAY, servers=servers))
    key = workdir / "cluster.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    return ns


def scenario(ns: dict[str, Netns], workdir: Path, tl: Timeline) -> dict[str, Any]:
    results: dict[str, Any] = {}
    servers = {rs: ns[rs].popen(PYTHON, "-m", "understudy.demo.apps", "server", rs, "8080") for rs in SERVERS}
    for proc in servers.values():
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    tl.say("3 real servers up (HTTP on :8080)")

    lb = {name: Director(name, ns[name], workdir) for name in DIRECTORS}
    for d in lb.values():
        d.start()
    tl.say("directors lb1 (priority 200) and lb2 (priority 100) started")
    wait_for("lb1 primary", lambda: lb["lb1"].role() == "primary" and lb["lb1"].holds_vip(), 30, tl)
    wait_for("lb2 backup", lambda: lb["lb2"].role() == "backup", 15, tl)
    tl.say(f"lb1 is PRIMARY and holds {VIP}; lb2 is backup")

    client = subprocess.Popen(ns["c"].argv(PYTHON, "-m", "understudy.demo.apps", "client", VIP,
                                           str(LONG_CONNECTIONS)), stdout=subprocess.PIPE, text=True)
    watch = ClientWatch(client)
    watch.start()
    wait_for("client connections", lambda: watch.latest.get("long_open", 0) + watch.latest.get("long_dead", 0)
             >= LONG_CONNECTIONS, 20, tl)
    spread: dict[str, int] = {}
    for server in watch.latest["servers"].values():
        spread[server] = spread.get(server, 0) + 1
    tl.say(f"client: {LONG_CONNECTIONS} long-lived connections open ({', '.join(f'{k}: {v}' for k, v in sorted(spread.items()))}),"
           " a new request every 50 ms")
    wait_for("lb2 caught up", lambda: bool((lb["lb2"].status() or {}).get("sync", {}).get("caught_up")), 20, tl)
    time.sleep(2)
    tl.say(f"steady: {watch.latest['short_ok']} requests ok, {watch.latest['short_fail']} failed")

    # 1. A real server dies.
    before = dict(watch.latest)
    on_rs2 = [i for i, s in watch.latest["servers"].items() if s == "rs2"]
    servers["rs2"].kill()
    t_kill, wall_kill = time.monotonic(), time.time()
    tl.say("KILL real server rs2")

    def rs2_up(director: str = "lb1") -> bool | None:
        s = lb[director].status()
        if not s:
            return None
        return all(srv["up"] for svc in s["services"] for srv in svc["servers"]
                   if srv["server"].startswith(SERVERS["rs2"] + ":"))

    def rs2_down() -> bool:
        return rs2_up() is False

    wait_for("rs2 marked down", rs2_down, 10, tl)
    marked = lb["lb1"].logged(r"health .*server=192\.168\.1\.12:8080 up=False", wall_kill)
    results["server_detect_s"] = (marked - wall_kill) if marked else time.monotonic() - t_kill
    tl.say(f"lb1 marked rs2 DOWN after {results['server_detect_s']:.2f} s and set its weight to 0")
    time.sleep(1.5)
    results["server_lost"] = watch.latest["short_fail"] - before["short_fail"]
    tl.say(f"traffic continues: {watch.latest['short_ok'] - before['short_ok']} requests ok, "
           f"{results['server_lost']} failed while rs2 was being detected; "
           f"{len(on_rs2)} long-lived connections were on rs2 (they die with it)")

    # 2. The primary director dies.
    before = dict(watch.latest)
    alive_before = watch.latest["long_open"]
    t_kill, wall_kill = time.monotonic(), time.time()
    lb["lb1"].kill()
    for dev in ("front", "back", "sync0"):
        ns["lb1"].run("ip", "link", "set", dev, "down")
    tl.say("KILL director lb1 (process killed, links cut)")
    wait_for("lb2 primary", lambda: lb["lb2"].holds_vip(), 15, tl)
    # From lb2's own log: when its addresses were up (polling `ip` would add its own delay).
    took = lb["lb2"].logged(r"vip change=added vip=10\.0\.0\.100", wall_kill)
    results["failover_s"] = (took - wall_kill) if took else time.monotonic() - t_kill
    tl.say(f"lb2 took over {VIP} after {results['failover_s'] * 1000:.0f} ms")

    def requests_flow() -> bool:
        return bool(watch.latest.get("short_ok", 0) > before["short_ok"] + 5)

    wait_for("requests through lb2", requests_flow, 15, tl)
    time.sleep(3)
    results["failover_lost"] = watch.latest["short_fail"] - before["short_fail"]
    results["survived_failover"] = (watch.latest["long_open"], alive_before)
    tl.say(f"through lb2: long-lived connections alive {watch.latest['long_open']}/{alive_before}; "
           f"{results['failover_lost']} short requests failed during the takeover")

    # 3. lb1 returns as a rebooted box would: empty IPVS table, no VIPs, no connections.
    ns["lb1"].run("ipvsadm", "-C")
    for dev in ("front", "back"):
        ns["lb1"].run("ip", "addr", "flush", "dev", dev)
    for dev, addr in (("front", DIRECTORS["lb1"][1]), ("back", DIRECTORS["lb1"][2])):
        ns["lb1"].run("ip", "addr", "add", f"{addr}/24", "dev", dev)
    for dev in ("front", "back", "sync0"):
        ns["lb1"].run("ip", "link", "set", dev, "up")
    before = dict(watch.latest)
    alive_before = watch.latest["long_open"]
    t_back = time.monotonic()
    lb["lb1"].start()
    tl.say("lb1 back (rebooted: empty tables); it resyncs from lb2, then fails back (auto_failback, 2 s delay)")
    wait_for("lb1 primary again", lambda: lb["lb1"].holds_vip() and lb["lb1"].role() == "primary", 40, tl)
    results["failback_s"] = time.monotonic() - t_back
    wait_for("lb2 released", lambda: not lb["lb2"].holds_vip(), 10, tl)
    tl.say(f"lb1 is PRIMARY again after {results['failback_s']:.1f} s; lb2 released the VIPs")
    time.sleep(3)
    results["failback_lost"] = watch.latest["short_fail"] - before["short_fail"]
    results["survived_failback"] = (watch.latest["long_open"], alive_before)
    tl.say(f"long-lived connections alive {watch.latest['long_open']}/{alive_before}; "
           f"{results['failback_lost']} short requests failed during the failback")

    # 4. The real server returns.
    servers["rs2"] = ns["rs2"].popen(PYTHON, "-m", "understudy.demo.apps", "server", "rs2", "8080")
    wait_for("rs2 up", lambda: rs2_up() is True, 10, tl)
    tl.say("rs2 is back: checked healthy twice, weight restored")
    results["long_dead"] = watch.latest["dead"]
    results["on_rs2"] = len(on_rs2)
    results["total_ok"] = watch.latest["short_ok"]
    client.kill()
    for d in lb.values():
        d.kill()
    return results


def main() -> int:
    tl = Timeline()
    netns = NetnsFactory("demo-")
    workdir = Path(tempfile.mkdtemp(prefix="understudy-demo-"))
    ok = False
    try:
        ns = build(netns, workdir)
        tl.say("topology: client, 2 directors, 3 real servers in network namespaces of a Linux "
               f"{os.uname().release} kernel with IPVS")
        r = scenario(ns, workdir, tl)
        survived = r["survived_failover"][0] == r["survived_failover"][1] and \
            r["survived_failback"][0] == r["survived_failback"][1]
        expected_alive = LONG_CONNECTIONS - r["on_rs2"]
        print("\n==== summary")
        print(f"  real server failure detected in   {r['server_detect_s']:.2f} s "
              f"({r['server_lost']} requests failed meanwhile)")
        print(f"  director failover (kill -> VIP)   {r['failover_s'] * 1000:.0f} ms "
              f"({r['failover_lost']} requests failed)")
        print(f"  connections surviving failover    {r['survived_failover'][0]}/{r['survived_failover'][1]}")
        print(f"  failback (restart -> primary)     {r['failback_s']:.1f} s ({r['failback_lost']} requests failed)")
        print(f"  connections surviving failback    {r['survived_failback'][0]}/{r['survived_failback'][1]}")
        print(f"  requests served                   {r['total_ok']}")
        ok = survived and r["survived_failback"][0] == expected_alive and r["failover_s"] < 5
        print(f"\n==== {'PASS' if ok else 'FAIL'}: "
              + ("every connection on a live real server survived both director changes" if ok else
                 f"connections that died: {r['long_dead']}"))
    except (TimeoutError, AssertionError, subprocess.SubprocessError, OSError) as e:
        print(f"\n==== FAIL: {e}", flush=True)
        for name in DIRECTORS:
            log = workdir / f"{name}.log"
            if log.exists():
                print(f"---- {name} log (last lines)\n" + "\n".join(log.read_text().splitlines()[-25:]))
    finally:
        netns.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
