"""The whole director config: cluster (optional), services, sync, admin, metrics."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from understudy.config.cluster import ClusterConfig, IpAddress, read_cluster
from understudy.config.reader import Table
from understudy.config.services import ServiceConfig, read_services

__all__ = ["AdminConfig", "DirectorConfig", "MetricsConfig", "SyncConfig", "read_director"]

DEFAULT_SOCKET = "/run/understudy/admin.sock"


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Connection sync between directors: the kernel daemons relayed by Understudy."""

    mode: str = "off"  # off | relay
    #: Where Understudy hears the kernel master and feeds the kernel backup.
    interface: str | None = None
    #: The kernel sync daemons' own interface. The master turns multicast loop
    #: off, so a local listener needs the other end of a veth pair (or a wire).
    kernel_interface: str | None = None
    syncid: int = 0
    #: Understudy-to-Understudy port.
    port: int = 8849
    #: Each node's address for Understudy-to-Understudy sync, by node id.
    addresses: tuple[tuple[int, IpAddress], ...] = ()
    state_file: str | None = None

    def address(self, node: int) -> IpAddress:
        return dict(self.addresses)[node]


@dataclass(frozen=True, slots=True)
class AdminConfig:
    socket: str = DEFAULT_SOCKET


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (`listen` None: off)."""

    listen: str | None = None
    port: int = 9469


@dataclass(frozen=True, slots=True)
class DirectorConfig:
    file: str
    cluster: ClusterConfig | None
    services: tuple[ServiceConfig, ...]
    sync: SyncConfig
    admin: AdminConfig
    metrics: MetricsConfig
    drain_timeout: float = 300.0


def read_director(root: Table, node: int | None, base: Path) -> DirectorConfig:
    cluster = read_cluster(root, node, base) if root.has("cluster") else None
    if cluster is None:
        root.raw("node")
        for key in ("vip", "tracking", "notify", "announce"):
            if root.has(key):
                raise root.error(key, "needs a [cluster] section (virtual IPs move between directors)")
    services = read_services(root)
    sync = _read_sync(root.table("sync"), cluster)
    a = root.table("admin")
    admin = AdminConfig(socket=a.string("socket", DEFAULT_SOCKET))
    a.done()
    m = root.table("metrics")
    metrics = MetricsConfig(listen=m.string("listen", None), port=m.integer("port", 9469, min=1, max=65535))
    if metrics.listen is not None:
        try:
            ipaddress.ip_address(metrics.listen)
        except ValueError:
            raise m.error("listen", f"not an IP address: {metrics.listen!r}") from None
    m.done()
    h = root.table("health")
    drain = h.number("drain_timeout", 300.0, min=0.0)
    h.done()
    root.done()
    return DirectorConfig(root.src.file, cluster, services, sync, admin, metrics, drain)


def _read_sync(t: Table, cluster: ClusterConfig | None) -> SyncConfig:
    mode = t.string("mode", "off", choices=("off", "relay"))
    if mode == "off":
        for key in list(t.data):
            t.raw(key)
        return SyncConfig()
    if cluster is None:
        raise t.error("mode", "sync between directors needs a [cluster] section")
    at = t.table("addresses", required=True)
    addresses = []
    ids = {n.id for n in cluster.nodes}
    for key in list(at.data):
        if not key.isdigit() or int(key) not in ids:
            raise at.error(key, f"expected a node id of the cluster ({sorted(ids)})")
        addresses.append((int(key), at.address(key)))
    at.done()
    missing = ids - {n for n, _ in addresses}
    if missing:
        raise t.error("addresses", f"no sync address for node(s) {sorted(missing)}")
    sync = SyncConfig(
        mode=mode,
        interface=(interface := t.string("interface")),
        kernel_interface=t.string("kernel_interface", interface),
        syncid=t.integer("syncid", 0, min=0, max=255),
        port=t.integer("port", 8849, min=1, max=65535),
        addresses=tuple(sorted(addresses)),
        state_file=t.string("state_file", None),
    )
    t.done()
    return sync
