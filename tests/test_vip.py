"""VIP takeover and interface tracking in host network namespaces.

Two directors (a, b) and a neighbour (n) share one link (a bridge in `lan`).
Independent peers judge the result: `ip` (iproute2) reads the addresses and
the neighbour's cache, tcpdump captures the announcements on the neighbour's
side and tshark decodes them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from understudy._core import LinkMonitor, Netif, NetifError
from understudy.vip import AnnounceSettings, InterfaceTracker, LinkState, Vip, VipError, VipEvent, VipManager

V4 = "192.0.2.100"
V6 = "2001:db8::100"
FAST = AnnounceSettings(repeat=3, interval=0.1)


@pytest.fixture
def lan(host_netns):
    """Namespaces a, b, n, each with eth0 on bridge br0 of namespace `lan`."""
    lan = host_netns("lan")
    nodes = {}
    for name, host in (("a", 11), ("b", 12), ("n", 2)):
        ns = host_netns(name)
        host_netns.veth(ns, lan, [f"192.0.2.{host}/24", f"2001:db8::{host}/64"], name_a="eth0", name_b=f"p{name}")
        nodes[name] = ns
    lan.run("ip", "link", "add", "br0", "type", "bridge")
    for name in nodes:
        lan.run("ip", "link", "set", f"p{name}", "master", "br0")
    lan.run("ip", "link", "set", "br0", "up")
    return nodes


def addresses(ns, dev="eth0"):
    """(address, prefixlen, label) on `dev`, as iproute2 shows them."""
    out = json.loads(ns.run("ip", "-j", "addr", "show", "dev", dev).stdout)
    return {(a["local"], a["prefixlen"], a.get("label")) for a in out[0]["addr_info"]}


def mac(ns, dev="eth0"):
    return json.loads(ns.run("ip", "-j", "link", "show", "dev", dev).stdout)[0]["address"]


def run_in(ns, coro_fn):
    """Run `coro_fn()` on a fresh event loop with this thread inside `ns`."""
    with ns.entered():
        return asyncio.run(coro_fn())


class Capture:
    """tcpdump on `ns`'s eth0 into a pcap; `packets()` decodes it with tshark."""

    def __init__(self, ns, path: Path, bpf="arp or icmp6"):
        self.path = path
        # Immediate mode: without it frames wait in the capture ring's current
        # block, and a tcpdump stopped before the block retires never writes them.
        self.proc = ns.popen("tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-n", "-w", str(path), bpf)
        deadline = time.monotonic() + 10
        line = ""
        while "listening" not in line and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
        assert "listening" in line, line

    def stop(self):
        self.proc.terminate()
        self.proc.communicate(timeout=10)

    def packets(self, display_filter, fields):
        out = subprocess.run(
            ["tshark", "-r", str(self.path), "-Y", display_filter, "-T", "fields", "-E", "separator=|",
             *[arg for f in fields for arg in ("-e", f)]],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


# --- addresses ------------------------------------------------------------------


def test_acquire_adds_release_removes_idempotently(lan):
    a = lan["a"]
    events: list[VipEvent] = []
    vips = [Vip.parse(f"{V4}/24", "eth0", label="eth0:vip"), Vip.parse(f"{V6}/64", "eth0")]

    async def scenario():
        mgr = VipManager(vips, settings=AnnounceSettings(repeat=1), on_event=events.append)
        await mgr.start()
        await mgr.start()
        await mgr.acquire()
        held = addresses(a)
        await mgr.acquire()  # again: already present
        await mgr.release()
        released = addresses(a)
        await mgr.release()  # again: already absent
        await mgr.stop()
        return held, released

    held, released = run_in(a, scenario)
    assert (V4, 24, "eth0:vip") in held
    assert any(addr == V6 and plen == 64 for addr, plen, _ in held)
    assert not {addr for addr, _, _ in released} & {V4, V6}
    kinds = [e.kind for e in events if e.kind != "announced"]
    assert kinds == ["added", "added", "present", "present", "removed", "removed", "absent", "absent"]


def test_ipv6_vip_is_not_tentative(lan):
    a = lan["a"]

    async def scenario():
        mgr = VipManager([Vip.parse(f"{V6}/64", "eth0")], settings=AnnounceSettings(repeat=1))
        await mgr.start()
        await mgr.acquire()
        out = json.loads(a.run("ip", "-j", "-6", "addr", "show", "dev", "eth0").stdout)
        await mgr.stop()
        return out

    info = [x for x in run_in(a, scenario)[0]["addr_info"] if x["local"] == V6][0]
    assert not info.get("tentative") and not info.get("dadfailed")
    assert info.get("nodad") is True


def test_stop_releases_everything_and_set_vips_follows_the_desired_set(lan):
    a = lan["a"]

    async def scenario():
        mgr = VipManager([Vip.parse(f"{V4}/24", "eth0")], settings=AnnounceSettings(repeat=1))
        await mgr.start()
        await mgr.acquire()
        await mgr.set_vips([Vip.parse("192.0.2.101/24", "eth0"), Vip.parse(f"{V6}/64", "eth0")])
        changed = addresses(a)
        await mgr.stop()
        await mgr.stop()
        return changed, addresses(a), mgr.held

    changed, after, held = run_in(a, scenario)
    changed_ips = {addr for addr, _, _ in changed}
    assert "192.0.2.101" in changed_ips and V6 in changed_ips and V4 not in changed_ips
    assert not {addr for addr, _, _ in after} & {V4, V6, "192.0.2.101"}
    assert "192.0.2.11" in {addr for addr, _, _ in after}  # the node's own address stays
    assert held is False


def test_no_such_interface_is_a_clear_error(lan):
    a = lan["a"]

    async def scenario():
        mgr = VipManager([Vip.parse(f"{V4}/24", "nope0"), Vip.parse("192.0.2.102/24", "eth0")],
                         settings=AnnounceSettings(repeat=1))
        await mgr.start()
        with pytest.raises(VipError, match="nope0") as caught:
            await mgr.acquire()
        partial = addresses(a)
        await mgr.stop()
        return caught.value, partial

    err, partial = run_in(a, scenario)
    assert [vip.interface for vip, _ in err.failures] == ["nope0"]
    assert err.failures[0][1].errno == 19
    assert "192.0.2.102" in {addr for addr, _, _ in partial}  # the good VIP is still taken

    with a.entered():
        netif = Netif()
        with pytest.raises(NetifError, match='no such interface: "nope0"'):
            netif.link("nope0")
        with pytest.raises(NetifError, match="IPv4 only"):
            netif.add_address("eth0", V6, 64, label="eth0:x")
        with pytest.raises(NetifError, match="must start with"):
            netif.add_address("eth0", V4, 24, label="vip")
        with pytest.raises(NetifError, match="prefix length 33"):
            netif.add_address("eth0", V4, 33)
        with pytest.raises(ValueError, match="not an IP address"):
            netif.add_address("eth0", "192.0.2.300", 24)


def test_link_query_matches_iproute2(lan):
    a = lan["a"]
    with a.entered():
        netif = Netif()
        link = netif.link("eth0")
        names = {x["name"] for x in netif.links()}
        addrs = {(x["address"], x["prefix_len"]) for x in netif.addresses("eth0")}
    shown = json.loads(a.run("ip", "-j", "link", "show", "dev", "eth0").stdout)[0]
    assert (link["index"], link["mac"], link["mtu"], link["operstate"]) == (
        shown["ifindex"], shown["address"], shown["mtu"], shown["operstate"])
    assert link["up"] and link["running"] and link["usable"]
    assert names == {"lo", "eth0"}
    assert {("192.0.2.11", 24), ("2001:db8::11", 64)} <= addrs


# --- announcements --------------------------------------------------------------


def test_announcements_seen_by_tcpdump_and_tshark(lan, tmp_path):
    a, n = lan["a"], lan["n"]
    a_mac = mac(a)
    cap = Capture(n, tmp_path / "announce.pcap")

    async def scenario():
        mgr = VipManager([Vip.parse(f"{V4}/24", "eth0"), Vip.parse(f"{V6}/64", "eth0")],
                         settings=AnnounceSettings(repeat=3, interval=0.1, arp_reply=True, router=False))
        await mgr.start()
        await mgr.acquire()
        await asyncio.sleep(0.5)
        await mgr.stop()

    run_in(a, scenario)
    cap.stop()

    arp = cap.packets("arp", ["eth.dst", "eth.src", "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4",
                              "arp.dst.hw_mac", "arp.dst.proto_ipv4", "arp.isgratuitous"])
    requests = [p for p in arp if p["arp.opcode"] == "1"]
    replies = [p for p in arp if p["arp.opcode"] == "2"]
    assert len(requests) == 3 and len(replies) == 3, arp
    for p in requests + replies:
        assert p["eth.src"] == a_mac and p["arp.src.hw_mac"] == a_mac
        assert p["arp.src.proto_ipv4"] == V4 and p["arp.dst.proto_ipv4"] == V4
        assert p["arp.isgratuitous"] in ("1", "True")
    for p in requests:
        assert p["eth.dst"] == "ff:ff:ff:ff:ff:ff" and p["arp.dst.hw_mac"] == "00:00:00:00:00:00"
    for p in replies:
        assert p["arp.dst.hw_mac"] == a_mac

    na = cap.packets("icmpv6.type == 136", [
        "eth.dst", "eth.src", "ipv6.src", "ipv6.dst", "ipv6.hlim", "icmpv6.nd.na.flag.r", "icmpv6.nd.na.flag.s",
        "icmpv6.nd.na.flag.o", "icmpv6.nd.na.target_address", "icmpv6.opt.type", "icmpv6.opt.linkaddr",
        "icmpv6.checksum.status"])
    assert len(na) == 3, na
    for p in na:
        assert (p["eth.dst"], p["eth.src"]) == ("33:33:00:00:00:01", a_mac)
        assert (p["ipv6.src"], p["ipv6.dst"], p["ipv6.hlim"]) == (V6, "ff02::1", "255")
        assert p["icmpv6.nd.na.target_address"] == V6
        assert [p[f"icmpv6.nd.na.flag.{f}"] for f in "rso"] in (["0", "0", "1"], ["False", "False", "True"])
        assert p["icmpv6.opt.type"] == "2" and p["icmpv6.opt.linkaddr"] == a_mac
        assert p["icmpv6.checksum.status"] in ("1", "Good")


def test_neighbour_cache_follows_the_takeover(lan):
    a, b, n = lan["a"], lan["b"], lan["n"]
    vips = [Vip.parse(f"{V4}/24", "eth0"), Vip.parse(f"{V6}/64", "eth0")]

    def lladdr(ip):
        entries = json.loads(n.run("ip", "-j", "neigh", "show", ip, "dev", "eth0").stdout)
        return entries[0].get("lladdr") if entries else None

    async def hold(ns_mgr):
        await ns_mgr.start()
        await ns_mgr.acquire()

    with a.entered():
        mgr_a = VipManager(vips, settings=FAST)
    with b.entered():
        mgr_b = VipManager(vips, settings=FAST)

    run_in(a, lambda: hold(mgr_a))
    n.run("ping", "-c", "1", "-W", "2", V4)
    n.run("ping", "-6", "-c", "1", "-W", "2", V6)
    assert lladdr(V4) == mac(a) and lladdr(V6) == mac(a)

    time.sleep(1.1)  # past the neighbour's locktime, so only the announcement can explain a change
    run_in(a, mgr_a.stop)

    async def take_over():
        await hold(mgr_b)
        await asyncio.sleep(0.5)  # the whole burst

    run_in(b, take_over)
    try:
        assert lladdr(V4) == mac(b)
        assert lladdr(V6) == mac(b)
        n.run("ping", "-c", "1", "-W", "2", V4)  # and the VIP answers from b
    finally:
        run_in(b, mgr_b.stop)


def test_refresh_keeps_announcing_while_held(lan):
    a = lan["a"]
    events: list[VipEvent] = []

    async def scenario():
        mgr = VipManager([Vip.parse(f"{V4}/24", "eth0")], settings=AnnounceSettings(repeat=2, interval=0.05,
                         refresh=0.1), on_event=events.append)
        await mgr.start()
        await mgr.acquire()
        await asyncio.sleep(0.45)
        await mgr.release()
        count = sum(e.kind == "announced" for e in events)
        await asyncio.sleep(0.3)
        return count, sum(e.kind == "announced" for e in events)

    during, after = run_in(a, scenario)
    assert during >= 5  # 2 in the burst, then about one per 0.1 s
    assert after == during  # release stops the announcements


# --- interface tracking ---------------------------------------------------------


def test_tracker_follows_link_down_and_up(lan, host_netns):
    a = lan["a"]
    lan_ns = next(ns for ns in host_netns.namespaces if ns.name.endswith("-lan"))
    changes: list[LinkState] = []

    async def wait_for(predicate, timeout=5.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, changes
            await asyncio.sleep(0.02)

    async def scenario():
        tracker = InterfaceTracker(["eth0", "eth9"], weights={"eth9": 10}, on_change=changes.append)
        await tracker.start()
        await tracker.start()
        assert tracker.states["eth0"].usable and not tracker.states["eth9"].present
        assert tracker.effective_priority(100) == 90  # eth9 missing, weighted
        a.run("ip", "link", "set", "eth0", "down")
        await wait_for(lambda: not tracker.states["eth0"].usable)
        assert tracker.states["eth0"].up is False
        assert tracker.effective_priority(100) == 0  # unweighted interface down: unfit
        a.run("ip", "link", "set", "eth0", "up")
        await wait_for(lambda: tracker.states["eth0"].usable)
        lan_ns.run("ip", "link", "set", "pa", "down")  # the cable side: carrier lost
        await wait_for(lambda: not tracker.states["eth0"].usable)
        lost_carrier = tracker.states["eth0"]
        lan_ns.run("ip", "link", "set", "pa", "up")
        await wait_for(lambda: tracker.states["eth0"].usable)
        a.run("ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p")
        await wait_for(lambda: tracker.states["eth9"].present)
        a.run("ip", "link", "del", "eth9")
        await wait_for(lambda: not tracker.states["eth9"].present)
        await tracker.stop()
        await tracker.stop()
        return lost_carrier

    lost_carrier = run_in(a, scenario)
    assert lost_carrier.up and not lost_carrier.running and lost_carrier.operstate != "UP"
    seen = [(s.name, s.usable) for s in changes]
    assert ("eth0", False) in seen and ("eth0", True) in seen
    assert ("eth9", False) in seen


def test_monitor_reports_address_events(lan):
    a = lan["a"]
    with a.entered():
        monitor = LinkMonitor()
        Netif().add_address("eth0", "192.0.2.150", 32)
        Netif().del_address("eth0", "192.0.2.150", 32)
        deadline = time.monotonic() + 5
        events = []
        while len(events) < 2 and time.monotonic() < deadline:
            events += [e for e in monitor.read() if e["type"] == "address"]
            time.sleep(0.01)
    assert [(e["address"], e["prefix_len"], e["removed"]) for e in events] == [
        ("192.0.2.150", 32, False), ("192.0.2.150", 32, True)]
    assert monitor.stats()["not_from_kernel"] == 0


def test_announcer_frames_decode_and_junk_is_refused(lan):
    from understudy._core import Announcer, decode_announcement

    a = lan["a"]
    with a.entered():
        ann = Announcer("eth0")
        garp = decode_announcement(ann.frame(V4))
        reply = decode_announcement(ann.frame(V4, reply=True))
        na = decode_announcement(ann.frame(V6, router=True))
        with pytest.raises(NetifError, match="nope0"):
            Announcer("nope0")
    assert ann.mac == mac(a) and ann.interface == "eth0" and ann.sent == 0
    assert (garp["kind"], garp["operation"], garp["sender_ip"], garp["target_ip"]) == ("arp", 1, V4, V4)
    assert (reply["operation"], reply["target_mac"]) == (2, ann.mac)
    assert (na["kind"], na["router"], na["override"], na["solicited"], na["hop_limit"]) == ("na", True, True, False, 255)
    frame = bytearray(ann.frame(V6))
    frame[-1] ^= 0xFF  # the checksum no longer verifies
    for junk in (b"", b"\x00" * 60, bytes(frame)):
        with pytest.raises(ValueError, match="not an announcement"):
            decode_announcement(junk)


def test_forged_link_event_is_dropped_and_counted(lan):
    """Root may send to rtnetlink's multicast groups from user space; only the
    kernel (port 0) is believed."""
    import socket
    import struct

    a = lan["a"]

    async def scenario():
        tracker = InterfaceTracker(["eth0"])
        await tracker.start()
        monitor = tracker._monitor
        index = tracker.states["eth0"].index
        name = b"eth0\0"
        attr = struct.pack("=HH", 4 + len(name), 3) + name + b"\0" * (-len(name) % 4)
        body = struct.pack("=BxHiII", 0, 1, index, 0, 0xFFFFFFFF) + attr  # eth0, every flag clear
        forger = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        forger.bind((0, 0))
        forger.sendto(struct.pack("=IHHII", 16 + len(body), 16, 0, 0, 0) + body, (0, 1))  # RTNLGRP_LINK
        forger.close()
        for _ in range(100):
            if monitor.stats()["not_from_kernel"]:
                break
            await asyncio.sleep(0.01)
        state, stats = tracker.states["eth0"], monitor.stats()
        await tracker.stop()
        return state, stats

    state, stats = run_in(a, scenario)
    assert stats["not_from_kernel"] == 1
    assert state.usable  # the forged "eth0 down" changed nothing
