"""ICMP echo checks across network namespaces (a checker host and a server host
linked by a veth pair): IPv4 and IPv6, raw and datagram sockets, unreachable
addresses, ICMP errors, a server switched off and on, thousands of probes on
one socket, and iputils ping pinging beside us."""

import asyncio
import os
import socket
import subprocess

import pytest
from health_servers import run

from understudy.health import Check, IcmpProbe, Monitor, run_probe
from understudy.health.icmp import Pinger, close_pingers, pinger
from understudy.uml.netns import NetnsFactory


@pytest.fixture(scope="module")
def hosts():
    netns = NetnsFactory(prefix=f"hc{os.getpid()}-")
    try:
        checker, server = netns("checker"), netns("server")
        netns.veth(checker, server, ["10.77.0.1/24", "fd77::1/64"], ["10.77.0.2/24", "fd77::2/64"])
        server.run("ip", "addr", "add", "10.77.0.3/24", "dev", "eth0")
        # Behind the server: routes that answer with ICMP errors.
        server.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        server.run("ip", "route", "add", "unreachable", "10.88.0.0/24")
        server.run("ip", "-6", "route", "add", "unreachable", "fd88::/64")
        checker.run("ip", "route", "add", "10.88.0.0/24", "via", "10.77.0.2")
        checker.run("ip", "-6", "route", "add", "fd88::/64", "via", "fd77::2")
        # Datagram ICMP sockets are for the groups listed here (none by default).
        checker.run("sysctl", "-qw", "net.ipv4.ping_group_range=0 0")
        yield checker, server
    finally:
        netns.cleanup()


def in_checker(hosts, coro_fn, timeout=30.0):
    with hosts[0].entered():
        return run(coro_fn, timeout)


@pytest.mark.parametrize("kind", ["raw", "dgram"])
def test_echo_v4_and_v6_up_and_unreachable(hosts, kind):
    async def go():
        results = {}
        for family, alive, absent, refused in ((socket.AF_INET, "10.77.0.2", "10.77.0.9", "10.88.0.1"),
                                               (socket.AF_INET6, "fd77::2", "fd77::9", "fd88::1")):
            p = Pinger(family, kind)
            assert p.kind == kind
            results[family] = [await p.ping(a, 1.0) for a in (alive, absent, refused)]
            p.close()
        return results

    for family, (alive, absent, refused) in in_checker(hosts, go).items():
        assert alive.ok and alive.reason == "" and alive.latency < 1
        # No such neighbour: no reply at all (or, late, the kernel's own unreachable).
        assert not absent.ok and absent.reason in ("timeout", "host unreachable", "address unreachable")
        assert not refused.ok and refused.reason != "", refused
        if kind == "raw":  # raw sockets see the router's ICMP error itself: down at once, not at the timeout
            assert refused.reason in ("host unreachable", "no route") and refused.latency < 0.9, refused


def test_no_route_fails_at_once(hosts):
    result = in_checker(hosts, lambda: run_probe(IcmpProbe("10.99.0.1"), 1.0))
    assert (result.ok, result.reason) == (False, "network unreachable")


def test_thousands_of_probes_share_one_socket_beside_iputils_ping(hosts):
    checker, server = hosts
    addresses = ["10.77.0.2", "10.77.0.3", "fd77::2"]
    ping = checker.popen("ping", "-i", "0.01", "-q", "10.77.0.2")  # an independent pinger on the same host

    async def go():
        results = await asyncio.gather(*(run_probe(IcmpProbe(addresses[i % 3]), 5.0) for i in range(3000)))
        shared = pinger(socket.AF_INET)
        stats = (shared.kind, dict(shared.drops))
        close_pingers()
        return results, stats

    try:
        results, (kind, drops) = in_checker(hosts, go)
    finally:
        ping.kill()
        ping.wait()
    assert kind == "dgram"  # the checker namespace allows datagram ICMP sockets
    failed = [r for r in results if not r.ok]
    assert not failed, failed[:3]


def test_a_server_switched_off_is_reported_down_then_up(hosts):
    checker, server = hosts
    changes = []

    async def go():
        monitor = Monitor()
        monitor.watch(Check(IcmpProbe("10.77.0.2"), interval=0.1, timeout=0.08, rise=2, fall=2), changes.append)
        await monitor.start()
        try:
            while not changes:
                await asyncio.sleep(0.02)
            server.run("ip", "link", "set", "eth0", "down")
            while len(changes) < 2:
                await asyncio.sleep(0.02)
            server.run("ip", "link", "set", "eth0", "up")
            while len(changes) < 3:
                await asyncio.sleep(0.02)
        finally:
            await monitor.stop()
            subprocess.run(["ip", "-n", server.name, "link", "set", "eth0", "up"], check=True)

    in_checker(hosts, go)
    assert [c.up for c in changes] == [True, False, True]
    assert changes[1].reason in ("timeout", "no buffer space (link down?)")
