"""Pieces of small networks inside a guest: switches, links inside one host,
and a look at a kernel's IPVS connection table. Shared by the real-kernel
tests and the demo."""

from __future__ import annotations

from understudy.uml.netns import Netns

__all__ = ["kernel_conns", "local_pair", "switch"]


def local_pair(ns: Netns, a: str, b: str, addr_a: str, addr_b: str) -> None:
    """A veth pair inside one namespace: a kernel sync daemon on one end, Understudy on the other.

    The kernel master sends with multicast loop off, so a listener on the same
    host needs a second interface that the datagrams cross to."""
    ns.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    for dev, addr in ((a, addr_a), (b, addr_b)):
        ns.run("ip", "addr", "add", addr, "dev", dev)
        ns.run("ip", "link", "set", dev, "up")
        # Their packets come from an address of this same host.
        ns.run("sysctl", "-qw", f"net.ipv4.conf.{dev}.accept_local=1", f"net.ipv4.conf.{dev}.rp_filter=0")
    ns.run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")


def switch(sw: Netns, name: str, ports: list[str]) -> None:
    """A bridge in `sw` joining `ports`."""
    sw.run("ip", "link", "add", name, "type", "bridge")
    for port in ports:
        sw.run("ip", "link", "set", port, "master", name)
    sw.run("ip", "link", "set", name, "up")


def kernel_conns(ns: Netns) -> set[tuple[int, str, int, str]]:
    """(cport, daddr, dport, state) of the TCP connections in a namespace's IPVS table."""
    rows = set()
    for line in ns.run("cat", "/proc/net/ip_vs_conn").stdout.splitlines()[1:]:
        f = line.split()
        if f[0] == "TCP" and int(f[2], 16) != 0:
            daddr = ".".join(str(int(f[5][i:i + 2], 16)) for i in range(0, 8, 2))
            rows.add((int(f[2], 16), daddr, int(f[6], 16), f[7]))
    return rows
