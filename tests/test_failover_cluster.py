"""Failover clusters of real processes (`understudy failover run`) in host
network namespaces: who owns the VIP (`ip addr`) and what ARP the wire shows
(tcpdump on an observer), through kills, partitions, link failures, switches
and forged heartbeats.

    node0 node1 ... ── br0 (10.9.0.0/24, VIP 10.9.0.100) ── observer (tcpdump)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from understudy.admin import AdminError, request

VIP = "10.9.0.100"
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
UNDERSTUDY = [sys.executable, "-m", "understudy"]


def addr(i: int) -> str:
    return f"10.9.0.{11 + i}"


class Cluster:
    def __init__(self, host_netns, tmp_path: Path, priorities: list[int], *, interval_ms: int = 50,
                 dead_ms: int = 400, extra: str = "", node_extra: dict[int, str] | None = None,
                 paths: str | None = None, serial: dict[int, Path] | None = None) -> None:
        self.netns, self.dir = host_netns, tmp_path
        self.n = len(priorities)
        self.sw = host_netns("sw")
        self.ns = [host_netns(f"n{i}") for i in range(self.n)]
        self.obs = host_netns("obs")
        ports = []
        for i, ns in enumerate(self.ns):
            host_netns.veth(ns, self.sw, f"{addr(i)}/24", name_a="lan", name_b=f"p{i}")
            ports.append(f"p{i}")
        host_netns.veth(self.obs, self.sw, "10.9.0.250/24", name_a="lan", name_b="pobs")
        ports.append("pobs")
        self.sw.run("ip", "link", "add", "br0", "type", "bridge")
        for p in ports:
            self.sw.run("ip", "link", "set", p, "master", "br0")
        self.sw.run("ip", "link", "set", "br0", "up")
        unicast = paths is None or 'type = "unicast"' in paths
        nodes = "".join(
            f'\n[[cluster.node]]\nid = {i}\npriority = {p}\n'
            + (f'addresses = {{ lan = "{addr(i)}" }}\n' if unicast else "")
            for i, p in enumerate(priorities))
        self.serial = serial or {}
        # Not bound to the interface: the tests cut links with blackhole routes,
        # which a socket bound to a device would route around.
        paths = paths if paths is not None else '[[cluster.path]]\nname = "lan"\ntype = "unicast"\n'
        self.config_text = (
            f"[cluster]\nid = 9\nkey = \"{KEY}\"\ninterval_ms = {interval_ms}\ndead_ms = {dead_ms}\n"
            f"initdead_ms = {dead_ms * 3}\n{extra}\n{paths}{nodes}\n"
            f'[[vip]]\naddress = "{VIP}/24"\ninterface = "lan"\n\n[announce]\nrepeat = 2\ninterval = 0.05\n'
        )
        self.node_extra = node_extra or {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.arp: list[tuple[float, str]] = []
        # Immediate mode: otherwise frames wait in the capture ring's block.
        self._tcpdump = subprocess.Popen(
            self.obs.argv("tcpdump", "-i", "lan", "--immediate-mode", "-n", "-e", "-l", "arp"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self._tcpdump.stderr is not None
        deadline, line = time.monotonic() + 10, ""
        while "listening" not in line and time.monotonic() < deadline:
            line = self._tcpdump.stderr.readline()
        threading.Thread(target=self._read_arp, daemon=True).start()

    def _read_arp(self) -> None:
        assert self._tcpdump.stdout is not None
        for line in self._tcpdump.stdout:
            m = re.match(r"\S+ ([0-9a-f:]{17}) > ff:ff:ff:ff:ff:ff.*(?:Request who-has|Reply) " + re.escape(VIP), line)
            if m:
                self.arp.append((time.monotonic(), m.group(1)))

    def mac(self, i: int) -> str:
        return json.loads(self.ns[i].run("ip", "-j", "link", "show", "lan").stdout)[0]["address"]

    def socket(self, i: int) -> str:
        return str(self.dir / f"n{i}.sock")

    def start(self, i: int, *extra: str) -> None:
        cfg = self.dir / f"n{i}.toml"
        text = self.config_text.replace("@SERIAL@", str(self.serial.get(i, "")))
        cfg.write_text(text + f'\n[admin]\nsocket = "{self.socket(i)}"\n' + self.node_extra.get(i, ""))
        log = open(self.dir / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen(self.ns[i].argv(*UNDERSTUDY, "failover", "run", "--config", str(cfg),
                                                         "--node", str(i), *extra), stdout=log, stderr=log)

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i)

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)

    def holds(self, i: int) -> bool:
        return f" {VIP}/" in self.ns[i].run("ip", "-o", "addr", "show", "dev", "lan").stdout

    def owners(self, among: list[int] | None = None) -> list[int]:
        return [i for i in (among if among is not None else list(self.procs)) if self.holds(i)]

    def wait(self, what, predicate, timeout: float = 10.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if predicate():
                return time.monotonic() - t0
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; owners {self.owners()}\n" + self.logs())

    def wait_owner(self, i: int, timeout: float = 10.0) -> float:
        return self.wait(f"node {i} to own the VIP alone", lambda: self.owners() == [i], timeout)

    def status(self, i: int) -> dict:
        return request(self.socket(i), "status")

    def role(self, i: int) -> str | None:
        """The node's role, None while its daemon is not (yet) answering."""
        try:
            return self.status(i)["failover"]["role"]
        except AdminError:
            return None

    def logs(self) -> str:
        out = []
        for p in sorted(self.dir.glob("n*.log")):
            out.append(f"---- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def holdings(self) -> list[tuple[float, int, str]]:
        """(time, node, "added" | "removed") of every VIP change, from the daemons' logs."""
        out = []
        for i in range(self.n):
            log = self.dir / f"n{i}.log"
            for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
                m = re.match(r"(\S+ \S+),(\d+) .*vip change=(added|removed)", line)
                if m:
                    t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                    out.append((t, i, m.group(3)))
        return sorted(out, key=lambda e: (e[0], e[2] != "removed"))

    def never_two_holders(self, since: float = 0.0) -> bool:
        """No moment (by the daemons' own logs) when two nodes held the VIP.

        Sampling `ip addr` namespace by namespace is not atomic; the logs are: a node
        logs "removed" after its address is gone and only then tells its peers, so a
        peer's "added" can never carry an earlier time."""
        held: set[int] = set()
        for t, node, change in self.holdings():
            (held.add if change == "added" else held.discard)(node)
            if t >= since and len(held) > 1:
                return False
        return True

    def watch_owners(self, seconds: float) -> list[list[int]]:
        """Sample the VIP owners for `seconds`."""
        samples, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(self.owners())
            time.sleep(0.005)
        return samples

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self._tcpdump.kill()
        self._tcpdump.wait()


@pytest.fixture
def cluster(host_netns, tmp_path):
    made = []

    def make(*args, **kw):
        c = Cluster(host_netns, tmp_path, *args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_two_nodes_failover_then_the_survivor_keeps_it(cluster):
    c = cluster([200, 100])
    c.start_all()
    c.wait_owner(0)
    c.wait("node 1 backup", lambda: c.role(1) == "backup")
    assert any(mac == c.mac(0) for _, mac in c.arp), "no gratuitous ARP from node 0"
    c.kill(0)
    t_kill = time.monotonic()
    c.wait("node 1 to own the VIP", lambda: c.holds(1))
    c.wait("node 1's gratuitous ARP", lambda: any(t > t_kill and mac == c.mac(1) for t, mac in c.arp), 2)
    # Node 0 returns (its stale VIP still on the interface, as after a crash): it
    # drops the address and stays backup, failback being off.
    assert c.holds(0)
    c.start(0)
    c.wait("node 0 releases its stale VIP", lambda: not c.holds(0))
    c.wait("node 0 backup", lambda: c.role(0) == "backup")
    assert all(o == [1] for o in c.watch_owners(1.0))


def test_failback_never_puts_the_vip_on_two_nodes(cluster):
    c = cluster([200, 100], extra="auto_failback = true\nfailback_delay = 0.3")
    c.start_all()
    c.wait_owner(0)
    c.kill(0)
    c.wait_owner(1)
    c.ns[0].run("ip", "addr", "del", f"{VIP}/24", "dev", "lan")  # a reboot clears what the crash left
    restart = time.time()
    c.start(0)
    c.wait_owner(0)
    assert c.never_two_holders(since=restart), c.holdings()
    assert c.role(0) == "primary" and c.role(1) == "backup"


def test_clean_stop_hands_over_without_the_dead_time(cluster):
    c = cluster([200, 100], interval_ms=100, dead_ms=5000)
    c.start_all()
    c.wait_owner(0)
    c.wait("node 1 backup", lambda: c.role(1) == "backup")
    t0 = time.monotonic()
    c.stop(0)
    took = c.wait("node 1 to take over", lambda: c.holds(1), 5)
    assert took < 4.0, f"took {took:.2f} s: it waited for the 5 s dead time"
    assert not c.holds(0)


def test_three_nodes_minority_releases_majority_elects(cluster):
    c = cluster([200, 150, 100])
    c.start_all()
    c.wait_owner(0)
    c.ns[0].run("ip", "link", "set", "lan", "down")  # node 0 alone: no quorum
    c.wait("node 0 releases (no quorum)", lambda: not c.holds(0))
    c.wait_owner(1, timeout=5)
    assert c.role(0) == "fault" and "quorum" in c.status(0)["failover"]["reason"]
    c.ns[0].run("ip", "link", "set", "lan", "up")
    c.wait("node 0 back as backup", lambda: c.role(0) == "backup")
    assert c.owners() == [1]


def test_five_nodes_partition_and_asymmetric_loss(cluster):
    c = cluster([250, 200, 150, 100, 50])
    c.start_all()
    c.wait_owner(0)

    def cut(a: int, b: int, both: bool = True) -> None:
        c.ns[a].run("ip", "route", "add", "blackhole", f"{addr(b)}/32")
        if both:
            c.ns[b].run("ip", "route", "add", "blackhole", f"{addr(a)}/32")

    for a in (0, 1):
        for b in (2, 3, 4):
            cut(a, b)
    c.wait("minority {0,1} releases", lambda: not c.holds(0) and not c.holds(1))
    c.wait_owner(2)
    for a in (0, 1):
        for b in (2, 3, 4):
            for x, y in ((a, b), (b, a)):
                c.ns[x].run("ip", "route", "del", "blackhole", f"{addr(y)}/32")
    c.wait("all back", lambda: all(c.role(i) in ("backup", "primary") for i in range(5)))
    assert c.owners() == [2]
    # Asymmetric loss: node 2 no longer hears node 4, but node 4 hears it: no flap.
    c.ns[4].run("ip", "route", "add", "blackhole", f"{addr(2)}/32")
    assert all(o == [2] for o in c.watch_owners(1.0))


def test_lost_public_interface_hands_over(cluster):
    c = cluster([200, 100], node_extra={0: '\n[tracking]\ninterfaces = ["lan", "uplink"]\n'})
    c.ns[0].run("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-far")
    c.ns[0].run("ip", "link", "set", "uplink-far", "up")
    c.ns[0].run("ip", "link", "set", "uplink", "up")
    c.start_all()
    c.wait_owner(0)
    c.ns[0].run("ip", "link", "set", "uplink", "down")
    c.wait_owner(1)
    assert c.role(0) == "fault" and "interface" in c.status(0)["failover"]["reason"]
    c.ns[0].run("ip", "link", "set", "uplink", "up")
    c.wait("node 0 backup again", lambda: c.role(0) == "backup")
    assert c.owners() == [1]


def test_manual_switch_from_any_node(cluster):
    c = cluster([200, 100, 50])
    c.start_all()
    c.wait_owner(0)
    c.wait("all up", lambda: all(c.role(i) in ("backup", "primary") for i in range(3)))
    out = subprocess.run([*UNDERSTUDY, "failover", "switch", "--to", "2", "--socket", c.socket(1)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    c.wait_owner(2)
    assert c.never_two_holders(), c.holdings()
    assert all(o == [2] for o in c.watch_owners(0.5))  # pinned: no failback to node 0
    # Standby for maintenance: node 2 hands over and stays out until released.
    out = subprocess.run([*UNDERSTUDY, "failover", "standby", "on", "--socket", c.socket(2)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    c.wait_owner(0)
    assert c.role(2) == "backup" and c.status(2)["failover"]["reason"] == "standby"
    assert c.never_two_holders(), c.holdings()


def test_partitioned_pair_heals_to_one_primary(cluster):
    c = cluster([200, 100])
    c.start_all()
    c.wait_owner(0)
    for a, b in ((0, 1), (1, 0)):
        c.ns[a].run("ip", "route", "add", "blackhole", f"{addr(b)}/32")
    c.wait("both primary (no witness)", lambda: c.owners() == [0, 1])
    t_heal = time.monotonic()
    for a, b in ((0, 1), (1, 0)):
        c.ns[a].run("ip", "route", "del", "blackhole", f"{addr(b)}/32")
    c.wait_owner(0)
    c.wait("the winner re-announces", lambda: any(t > t_heal and mac == c.mac(0) for t, mac in c.arp), 3)


def test_forged_and_replayed_heartbeats_change_nothing(cluster):
    c = cluster([200, 100])
    c.start_all()
    c.wait_owner(0)
    c.wait("node 1 backup", lambda: c.role(1) == "backup")
    # Capture one genuine frame of node 0, then replay it and forge variants at node 1.
    cap = subprocess.Popen(c.ns[1].argv("tcpdump", "-i", "lan", "-c", "1", "-w", "-", "udp", "and", "src",
                                        addr(0)), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    raw = cap.communicate(timeout=10)[0]
    frame = raw[24 + 16 + 14 + 20 + 8:]  # pcap header, record header, Ethernet, IPv4, UDP
    assert frame[:2] == b"US"
    forged = bytearray(frame)
    forged[-1] ^= 1
    c.kill(0)
    with c.ns[0].entered():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr(0), 0))
        for _ in range(200):
            s.sendto(frame, (addr(1), 694))
            s.sendto(bytes(forged), (addr(1), 694))
            time.sleep(0.002)
        s.close()
    c.wait_owner(1, timeout=5)  # neither kept node 0 alive
    counters = c.status(1)["failover"]["heartbeat"]["counters"]
    text = json.dumps(counters)
    assert re.search(r'"bad_tag": [1-9]', text) and re.search(r'"replayed": [1-9]', text), text


def test_serial_line_only(cluster, tmp_path):
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    modem = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if a.exists() and b.exists():
                break
            time.sleep(0.02)
        serial = '[[cluster.path]]\nname = "serial"\ntype = "serial"\ndevice = "@SERIAL@"\n'
        c = cluster([200, 100], interval_ms=50, dead_ms=400, paths=serial, serial={0: a, 1: b})
        c.start_all()
        c.wait_owner(0)
        c.wait("node 1 backup over the serial line", lambda: c.role(1) == "backup")
        c.kill(0)
        c.wait_owner(1)
    finally:
        modem.kill()
        modem.wait()


def test_notify_scripts_run_on_changes(cluster, tmp_path):
    script = tmp_path / "notify.sh"
    out = tmp_path / "states"
    script.write_text(f"#!/bin/sh\necho \"$UNDERSTUDY_NODE $1 $UNDERSTUDY_PREVIOUS\" >> {out}\n")
    script.chmod(0o755)
    c = cluster([200, 100], extra="", node_extra={i: f'\n[notify]\nany = "{script}"\n' for i in (0, 1)})
    c.start_all()
    c.wait_owner(0)
    c.kill(0)
    c.wait_owner(1)
    c.wait("notify lines", lambda: out.exists() and "1 primary backup" in out.read_text(), 5)
    lines = out.read_text().splitlines()
    assert "0 primary init" in lines and "1 backup init" in lines


def test_metrics_admin_socket_root_only_and_json_logs(cluster, tmp_path):
    c = cluster([200, 100], node_extra={0: '\n[metrics]\nlisten = "127.0.0.1"\nport = 9469\n'})
    c.start_all()
    c.wait_owner(0)
    with c.ns[0].entered():
        import urllib.request

        body = urllib.request.urlopen("http://127.0.0.1:9469/metrics", timeout=5).read().decode()
    assert 'understudy_role{role="primary"} 1.0' in body
    assert "understudy_peers_alive 1.0" in body
    # The socket is 0600 and the daemon checks the peer's uid: nobody is refused.
    probe = ("import socket,os,sys; os.setgid(65534); os.setuid(65534); s=socket.socket(socket.AF_UNIX);\n"
             "try:\n s.connect(sys.argv[1]); print('connected')\nexcept PermissionError: print('refused')")
    out = subprocess.run([sys.executable, "-c", probe, c.socket(0)], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "refused", out.stderr
    assert oct(os.stat(c.socket(0)).st_mode & 0o777) == "0o600"
    # A second daemon on the same socket refuses to start rather than steal it.
    second = subprocess.run(c.ns[0].argv(*UNDERSTUDY, "failover", "run", "--config", str(tmp_path / "n0.toml"),
                                         "--node", "0"), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "another daemon (pid" in second.stderr, second.stderr
    assert c.owners() == [0]
    # Structured logs: one JSON object per line.
    c.kill(1)
    c.start(1, "--log-format", "json")
    c.wait("node 1 back", lambda: c.role(1) == "backup")
    lines = (tmp_path / "n1.log").read_text().splitlines()
    tail = lines[lines.index(next(ln for ln in lines if ln.startswith("{"))):]
    assert all(json.loads(ln)["level"] in ("info", "warning") for ln in tail), tail


def test_two_nodes_with_a_witness_the_isolated_one_releases(cluster):
    c = cluster([200, 100], extra='tiebreaker = "10.9.0.250"\n[tracking]\ngateways = { interval = 0.2, timeout = 0.2, fall = 2 }')
    c.start_all()
    c.wait_owner(0)
    c.ns[0].run("ip", "link", "set", "lan", "down")  # node 0 cut off: no peer, no witness
    c.wait("node 0 releases", lambda: not c.holds(0))
    c.wait("node 1 takes over", lambda: c.holds(1))
    assert c.role(0) == "fault" and "quorum" in c.status(0)["failover"]["reason"]


def test_event_stream_follows_role_changes(cluster):
    c = cluster([200, 100])
    c.start_all()
    c.wait_owner(0)
    c.wait("node 1 backup", lambda: c.role(1) == "backup")
    follower = subprocess.Popen([*UNDERSTUDY, "events", "--socket", c.socket(1)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        c.kill(0)
        c.wait_owner(1)
        assert follower.stdout is not None
        seen = []
        while not any(e["kind"] == "role" and e["new"] == "primary" for e in seen):
            seen.append(json.loads(follower.stdout.readline()))
        role = seen[-1]
        assert (role["node"], role["old"]) == (1, "backup") and "no primary in sight" in role["reason"], seen
        taken = json.loads(follower.stdout.readline())  # then the address it took
        assert (taken["kind"], taken["change"]) == ("vip", "added"), taken
    finally:
        follower.kill()
        follower.wait()


def test_a_flapping_link_shorter_than_the_dead_time_moves_nothing(cluster):
    c = cluster([200, 100], interval_ms=50, dead_ms=600)
    c.start_all()
    c.wait_owner(0)
    c.wait("node 1 backup", lambda: c.role(1) == "backup")
    before = c.status(1)["failover"]["transitions"]
    for _ in range(8):  # 150 ms down, 150 ms up: each blip well inside the dead time
        c.ns[1].run("ip", "link", "set", "lan", "down")
        time.sleep(0.15)
        c.ns[1].run("ip", "link", "set", "lan", "up")
        time.sleep(0.15)
    time.sleep(0.7)
    assert c.owners() == [0]
    assert c.status(1)["failover"]["transitions"] == before and c.role(1) == "backup"
    assert c.never_two_holders()
