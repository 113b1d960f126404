"""The director daemon (`understudy run`) against a real kernel: health checks
move real servers' weights in IPVS, operators drain, add and remove servers
and reload the config without disturbing established connections.

    client c ── front ── lb (understudy run; VIP 10.0.0.100) ── back switch ── rs1, rs2, rs3
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from understudy.uml.topology import switch

pytestmark = pytest.mark.uml

VIP = "10.0.0.100"
RS = {"rs1": "192.168.1.11", "rs2": "192.168.1.12", "rs3": "192.168.1.13"}
UNDERSTUDY = [sys.executable, "-m", "understudy"]

CONFIG = """\
[[service]]
name = "web"
address = "10.0.0.100"
port = 80
scheduler = "rr"
check = {{ type = "http", path = "/health", interval = 0.3, timeout = 0.25, rise = 2, fall = 2 }}
{servers}
[admin]
socket = "{socket}"

[health]
drain_timeout = {drain}
"""


def server_block(name: str, weight: int = 1) -> str:
    return f'\n[[service.server]]\naddress = "{RS[name]}:8080"\nweight = {weight}\n'


class Site:
    def __init__(self, netns, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.c, self.lb, self.sw = netns("c"), netns("lb"), netns("sw")
        self.rs = {name: netns(name) for name in RS}
        netns.veth(self.c, self.lb, "10.0.0.2/24", ["10.0.0.1/24", f"{VIP}/24"], name_b="front")
        netns.veth(self.lb, self.sw, "192.168.1.1/24", name_a="back", name_b="lbb")
        for name, ns in self.rs.items():
            netns.veth(ns, self.sw, f"{RS[name]}/24", name_b=name)
            ns.run("ip", "route", "add", "default", "via", "192.168.1.1")
        switch(self.sw, "br0", ["lbb", *RS])
        self.c.run("ip", "route", "add", "default", "via", "10.0.0.1")
        self.lb.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.servers: dict[str, subprocess.Popen[str]] = {}
        self.socket = str(tmp_path / "admin.sock")
        self.config = tmp_path / "understudy.toml"
        self.daemon: subprocess.Popen[bytes] | None = None

    def serve(self, name: str) -> None:
        proc = self.rs[name].popen(sys.executable, "-m", "understudy.demo.apps", "server", name, "8080")
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.servers[name] = proc

    def write(self, servers: str, drain: float = 300) -> None:
        self.config.write_text(CONFIG.format(servers=servers, socket=self.socket, drain=drain))

    def start(self) -> None:
        log = open(self.dir / "daemon.log", "ab")
        self.daemon = subprocess.Popen(self.lb.argv(*UNDERSTUDY, "run", "--config", str(self.config)),
                                       stdout=log, stderr=log)
        self.wait("the admin socket", lambda: Path(self.socket).exists())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*UNDERSTUDY, *args, "--socket", self.socket], capture_output=True, text=True,
                              timeout=30)

    def weights(self) -> dict[str, int]:
        """Real server -> weight, as ipvsadm sees the kernel."""
        out = self.lb.run("ipvsadm", "-Ln", "-t", f"{VIP}:80", check=False).stdout
        rows = {}
        for line in out.splitlines():
            f = line.split()
            if f and f[0] == "->" and f[1][0].isdigit():
                rows[f[1]] = int(f[3])
        return rows

    def wait(self, what, predicate, timeout: float = 15.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if predicate():
                return
            time.sleep(0.05)
        log = (self.dir / "daemon.log").read_text(errors="replace")[-12000:] if (self.dir / "daemon.log").exists() else ""
        raise AssertionError(f"timed out waiting for {what}; weights {self.weights()}\n{log}")

    def connect(self) -> tuple[socket.socket, str]:
        """A keep-alive HTTP connection through the VIP, and the real server that answered."""
        with self.c.entered():
            s = socket.create_connection((VIP, 80), timeout=5)
        return s, ask(s)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(timeout=20)


def ask(s: socket.socket) -> str:
    s.sendall(f"GET / HTTP/1.1\r\nHost: {VIP}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


@pytest.fixture
def site(netns, tmp_path):
    s = Site(netns, tmp_path)
    yield s
    s.stop()


def test_dead_server_goes_to_weight_zero_and_comes_back(site):
    for name in ("rs1", "rs2"):
        site.serve(name)
    site.write(server_block("rs1") + server_block("rs2"))
    site.start()
    site.wait("both servers in IPVS", lambda: site.weights() == {f"{RS['rs1']}:8080": 1, f"{RS['rs2']}:8080": 1})
    site.servers.pop("rs2").kill()
    site.wait("rs2 quiesced", lambda: site.weights().get(f"{RS['rs2']}:8080") == 0)
    status = json.loads(site.cli("status", "--json").stdout)
    rs2 = next(s for s in status["services"][0]["servers"] if s["server"].startswith(RS["rs2"]))
    assert not rs2["up"] and rs2["reason"]
    for _ in range(6):  # every new connection goes to rs1
        s, who = site.connect()
        s.close()
        assert who == "rs1"
    site.serve("rs2")
    site.wait("rs2 restored", lambda: site.weights().get(f"{RS['rs2']}:8080") == 1)
    text = site.cli("status").stdout
    assert "web" in text and RS["rs2"] in text


def test_drain_keeps_connections_and_admits_no_new_ones(site):
    for name in ("rs1", "rs2"):
        site.serve(name)
    site.write(server_block("rs1") + server_block("rs2"))
    site.start()
    site.wait("both servers", lambda: len(site.weights()) == 2)
    held = [site.connect() for _ in range(4)]
    on_rs1 = [s for s, who in held if who == "rs1"]
    assert on_rs1, "round robin put nothing on rs1"
    out = site.cli("server", "drain", "web", f"{RS['rs1']}:8080")
    assert out.returncode == 0, out.stderr
    assert site.weights()[f"{RS['rs1']}:8080"] == 0
    for s in on_rs1:
        assert ask(s) == "rs1"  # the established connection still reaches its server
    for _ in range(6):
        s, who = site.connect()
        s.close()
        assert who == "rs2"
    assert site.cli("server", "enable", "web", f"{RS['rs1']}:8080").returncode == 0
    assert site.weights()[f"{RS['rs1']}:8080"] == 1
    bad = site.cli("server", "drain", "web", "192.168.1.99:8080")
    assert bad.returncode == 1 and "no real server" in bad.stderr


def test_runtime_add_remove_and_reload_apply_a_minimal_diff(site):
    for name in RS:
        site.serve(name)
    site.write(server_block("rs1") + server_block("rs2"))
    site.start()
    site.wait("two servers", lambda: len(site.weights()) == 2)
    held, who = site.connect()
    assert site.cli("server", "add", "web", f"{RS['rs3']}:8080", "--weight", "2").returncode == 0
    site.wait("rs3 added", lambda: site.weights().get(f"{RS['rs3']}:8080") == 2)
    # Reload: rs1's weight changes, rs3 (added at runtime) stays, nothing else moves.
    site.write(server_block("rs1", 5) + server_block("rs2"))
    out = site.cli("reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [f"edit destination {RS['rs1']}:8080 of tcp {VIP}:80 (weight 1 -> 5)"]
    assert site.weights() == {f"{RS['rs1']}:8080": 5, f"{RS['rs2']}:8080": 1, f"{RS['rs3']}:8080": 2}
    assert ask(held) == who  # the connection made before the reload still works
    # A broken config is refused and changes nothing.
    site.config.write_text(site.config.read_text().replace('scheduler = "rr"', 'scheduler = "nope"'))
    bad = site.cli("reload")
    assert bad.returncode == 1 and "scheduler" in bad.stderr
    assert site.cli("server", "remove", "web", f"{RS['rs3']}:8080").returncode == 0
    site.wait("rs3 gone", lambda: f"{RS['rs3']}:8080" not in site.weights())


def test_check_config_names_the_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[service]]\naddress = "10.0.0.1"\nport = 80\nschedular = "rr"\n')
    out = subprocess.run([*UNDERSTUDY, "check-config", str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{bad}:4: service[0].schedular: unknown key (did you mean 'scheduler'?)" in out.stderr
