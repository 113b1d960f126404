"""Understudy to Understudy, as an operator runs it (`understudy sync relay`): a
primary and two backups, each director in its own network namespace of this host
on one bridged sync link, over IPv4 and IPv6, unicast and multicast. No IPVS is
involved (pure replication), so this runs on the host, not in a UML guest.

The primary starts with a table (from its state file) that its backups receive as
a paced full copy, then relays live sync messages from a stand-in kernel master.
Each backup's table, saved when it stops, must hold exactly the primary's; with
multicast, tcpdump in a backup's namespace sees the frames with the TTL / hop
limit the primary was given."""

import json
import os
import subprocess
import sys
import time

import pytest

from topology import local_pair, switch
from understudy._core import Conn, ConnTable, SyncSender, encode
from understudy.uml.netns import NetnsFactory

UNDERSTUDY = [sys.executable, "-m", "understudy.cli"]
SEEDED = 20_000
LIVE = 2_000
TTL = 3

CASES = {
    "ipv4-unicast": ("10.77.0.{}/24", None),
    "ipv4-multicast": ("10.77.0.{}/24", "239.77.0.81"),
    "ipv6-unicast": ("fd77::{}/64", None),
    "ipv6-multicast": ("fd77::{}/64", "ff02::77:8849"),
}


def conns(first, n, rs="192.168.1.11"):
    return [Conn(6, f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1000 + i % 50_000, "10.0.0.100", 80,
                 rs, 8000, state=1, timeout=900) for i in range(first, first + n)]


def keys(table):
    return {(c.caddr, c.cport, c.daddr) for c in table}


@pytest.fixture
def link():
    """Namespaces p (primary), b1, b2 (backups) on bridge br0 in sw; each end named sync0.
    The primary also has a local veth pair ks0/us0 for its (stand-in) kernel master."""
    factory = NetnsFactory(prefix=f"u2u{os.getpid() % 100000}-")
    try:
        sw, p, b1, b2 = (factory(n) for n in ("sw", "p", "b1", "b2"))
        yield factory, sw, p, b1, b2
    finally:
        factory.cleanup()


def wire(factory, sw, directors, net):
    for i, ns in enumerate(directors, 1):
        factory.veth(ns, sw, net.format(i), name_a="sync0", name_b=f"port{i}")
    switch(sw, "br0", [f"port{i}" for i in range(1, len(directors) + 1)])
    # Flood multicast: no querier on this link to teach the bridge who joined.
    sw.run("ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")


def stats(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.parametrize("case", list(CASES))
def test_relay_between_understudies(link, tmp_path, case):
    net, group = CASES[case]
    factory, sw, p, b1, b2 = link
    wire(factory, sw, [p, b1, b2], net)
    local_pair(p, "ks0", "us0", "169.254.1.1/30", "169.254.1.2/30")
    addr = [net.format(i).split("/")[0] for i in (1, 2, 3)]

    key = tmp_path / "sync.key"
    key.write_text("00112233445566778899aabbccddeeff\n")
    key.chmod(0o600)
    seeded = ConnTable()
    seeded.apply(encode(conns(0, SEEDED)))
    seeded.save(tmp_path / "primary.table")

    relay = [*UNDERSTUDY, "sync", "relay", "--key-file", str(key), "--device", "sync0"]
    via = ["--group", group] if group else []
    capture = None
    if group:
        # Independent judge of the multicast path: tcpdump on a backup's end of the link.
        capture = b1.popen("tcpdump", "-i", "sync0", "-n", "-v", "-l", "-c", "5", "udp", "and", "dst", group)
    backups = []
    for i, ns in ((2, b1), (3, b2)):
        backups.append(ns.popen(*relay, "backup", "--node", str(i), "--bind", addr[i - 1], "--primary", addr[0],
                                *via, "--stats-file", str(tmp_path / f"b{i}.json"),
                                "--state-file", str(tmp_path / f"b{i}.table")))
    peers = [] if group else ["--peer", addr[1], "--peer", addr[2]]
    primary = p.popen(*relay, "primary", "--node", "1", "--bind", addr[0], *peers, *via, "--ttl", str(TTL),
                      "--kernel-interface", "us0", "--state-file", str(tmp_path / "primary.table"),
                      "--stats-file", str(tmp_path / "p.json"))
    # The primary writes its counters once its sockets are open: then the kernel master may talk.
    deadline = time.monotonic() + 15
    while not (tmp_path / "p.json").exists() and time.monotonic() < deadline and primary.poll() is None:
        time.sleep(0.1)
    assert primary.poll() is None and (tmp_path / "p.json").exists(), primary.stderr.read()

    # Live traffic while (or after) the copy runs, as a kernel master sends it.
    live = conns(SEEDED, LIVE, rs="192.168.1.12") + conns(0, 100, rs="192.168.1.13")  # new, and moved
    with p.entered():
        sender = SyncSender(interface="ks0")
        for i, datagram in enumerate(encode(live)):
            sender.send([datagram])
            if i % 10 == 9:
                time.sleep(0.005)

    expected = ConnTable()
    expected.apply(encode(conns(0, SEEDED)))
    expected.apply(encode(live))
    deadline = time.monotonic() + 20
    shown = [{}, {}]
    while time.monotonic() < deadline:
        shown = [stats(tmp_path / f"b{i}.json") for i in (2, 3)]
        if all(s.get("caught_up") and s.get("connections") == len(expected) for s in shown):
            break
        time.sleep(0.2)
    assert [s.get("connections") for s in shown] == [len(expected)] * 2, shown
    assert all(s["caught_up"] for s in shown)
    assert all(s["relay"]["rejected_bad_tag"] == 0 for s in shown)

    for b in backups:
        b.terminate()
        assert b.wait(timeout=10) == 0
    for i in (2, 3):
        copy = ConnTable()
        copy.load(tmp_path / f"b{i}.table")
        assert keys(copy) == keys(expected), f"backup {i}"
    ps = stats(tmp_path / "p.json")["relay"]
    assert ps["copies_completed"] >= 1 and ps["unsent"] == 0, ps

    if capture is not None:
        out, _ = capture.communicate(timeout=10)
        out = out if isinstance(out, str) else out.decode()
        hops = "ttl" if ":" not in group else "hlim"
        assert f"{hops} {TTL}," in out or f"{hops} {TTL})" in out, out
    primary.terminate()
    assert primary.wait(timeout=10) == 0


def test_a_group_without_a_device_is_refused(tmp_path):
    key = tmp_path / "k"
    key.write_text("00112233445566778899aabbccddeeff")
    key.chmod(0o600)
    result = subprocess.run([*UNDERSTUDY, "sync", "relay", "backup", "--node", "2", "--key-file", str(key),
                             "--bind", "127.0.0.1", "--primary", "127.0.0.2", "--group", "239.1.2.3"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--device" in result.stderr
