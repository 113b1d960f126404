"""The cluster's half of the config: nodes, heartbeat paths and timers,
failover policy, virtual IPs, tracking and notification.

One file can serve every director: each node is listed with its priority and
its address on each unicast path, and the node a process runs as is chosen on
its command line (or by `node = N` at the top).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from understudy.config.reader import Table

__all__ = [
    "AnnounceConfig",
    "ClusterConfig",
    "GatewayConfig",
    "NodeConfig",
    "NotifyConfig",
    "PathConfig",
    "TrackScript",
    "TrackingConfig",
    "VipConfig",
    "read_cluster",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: Node ids run 0..31: up to 32 directors, one bit each in the heartbeat's membership view.
MAX_NODES = 32
PATH_KINDS = ("unicast", "multicast", "broadcast", "serial")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One director of the cluster."""

    id: int
    name: str
    priority: int
    #: Its address on each unicast path, by path name.
    addresses: dict[str, IpAddress] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PathConfig:
    """One heartbeat path; every configured path carries every heartbeat."""

    name: str
    kind: str
    interface: str | None = None
    port: int = 694
    group: IpAddress | None = None
    ttl: int = 1
    device: str | None = None
    baud: int = 115200


@dataclass(frozen=True, slots=True)
class AnnounceConfig:
    """Gratuitous ARP / unsolicited NA after taking the VIPs."""

    repeat: int = 5
    interval: float = 0.2
    #: Re-announce every so many seconds while primary (0: never).
    refresh: float = 0.0


@dataclass(frozen=True, slots=True)
class VipConfig:
    """A virtual address the primary holds."""

    address: IpInterface
    interface: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Ping nodes: the node is ineligible when none of them answers."""

    addresses: tuple[IpAddress, ...] = ()
    interval: float = 1.0
    timeout: float = 1.0
    fall: int = 3
    rise: int = 2


@dataclass(frozen=True, slots=True)
class TrackScript:
    """A script whose failure lowers the priority (weight < 0) or faults the node (weight 0)."""

    command: tuple[str, ...]
    interval: float = 2.0
    timeout: float = 2.0
    weight: int = 0
    fall: int = 1
    rise: int = 1


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    interfaces: tuple[str, ...] = ()
    gateways: GatewayConfig = GatewayConfig()
    scripts: tuple[TrackScript, ...] = ()


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Commands run on a change of role; each gets the new state as its last argument."""

    primary: tuple[str, ...] | None = None
    backup: tuple[str, ...] | None = None
    fault: tuple[str, ...] | None = None
    stop: tuple[str, ...] | None = None
    #: Run on every change, after the specific one.
    any: tuple[str, ...] | None = None
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Everything failover needs, for the node `node`."""

    id: int
    node: int
    nodes: tuple[NodeConfig, ...]
    paths: tuple[PathConfig, ...]
    key: bytes
    key_id: int = 1
    interval_ms: int = 1000
    warn_ms: int = 3000
    dead_ms: int = 5000
    initdead_ms: int = 10000
    auto_failback: bool = False
    failback_delay: float = 0.0
    quorum: bool = True
    tiebreaker: IpAddress | None = None
    rt_priority: int | None = None
    #: Where the node keeps its incarnation counter (it must grow across restarts).
    state_dir: str = "/var/lib/understudy"
    vips: tuple[VipConfig, ...] = ()
    announce: AnnounceConfig = AnnounceConfig()
    tracking: TrackingConfig = TrackingConfig()
    notify: NotifyConfig = NotifyConfig()

    @property
    def me(self) -> NodeConfig:
        return next(n for n in self.nodes if n.id == self.node)

    @property
    def peers(self) -> tuple[NodeConfig, ...]:
        return tuple(n for n in self.nodes if n.id != self.node)


def _read_key(t: Table, base: Path) -> tuple[bytes, int]:
    key_id = t.integer("key_id", 1, min=0, max=0xFFFF)
    if t.has("key") and t.has("key_file"):
        raise t.error("key_file", "give either key or key_file, not both")
    if t.has("key"):
        text = t.string("key")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise t.error("key", "expected hex digits (prefer key_file, readable by root only)") from None
    else:
        path = base / t.string("key_file")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise t.error("key_file", f"cannot read {path}: {e.strerror}") from None
        stripped = raw.strip()
        try:
            key = bytes.fromhex(stripped.decode())
        except (UnicodeDecodeError, ValueError):
            key = raw
    if len(key) < 16:
        raise t.error("key_file" if t.has("key_file") else "key", f"the key has {len(key)} bytes; use at least 16")
    return key, key_id


def _read_path(t: Table, index: int) -> PathConfig:
    kind = t.string("type", choices=PATH_KINDS)
    name = t.string("name", f"{kind}{index}")
    if kind == "serial":
        path = PathConfig(name, kind, device=t.string("device"), baud=t.integer("baud", 115200, min=1200))
    else:
        group = t.address("group", None) if kind == "multicast" else None
        if kind == "multicast" and group is None:
            raise t.error(None, "a multicast path needs 'group'")
        if group is not None and not group.is_multicast:
            raise t.error("group", f"{group} is not a multicast address")
        path = PathConfig(
            name,
            kind,
            interface=t.string("interface", None),
            port=t.integer("port", 694, min=1, max=65535),
            group=group,
            ttl=t.integer("ttl", 1, min=1, max=255),
        )
        if kind in ("multicast", "broadcast") and path.interface is None:
            raise t.error(None, f"a {kind} path needs 'interface'")
    t.done()
    return path


def read_cluster(root: Table, node: int | None, base: Path) -> ClusterConfig:
    """The `[cluster]`, `[[vip]]`, `[tracking]` and `[notify]` sections, for node `node`."""
    c = root.table("cluster", required=True)
    paths = tuple(_read_path(p, i) for i, p in enumerate(c.tables("path")))
    if not paths:
        raise c.error(None, "no heartbeat path: add at least one [[cluster.path]]")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise c.error("path", f"path names repeat: {names}")
    unicast = {p.name for p in paths if p.kind == "unicast"}

    nodes: list[NodeConfig] = []
    for nt in c.tables("node"):
        addresses = {}
        at = nt.table("addresses")
        for path_name in list(at.data):
            if path_name not in unicast:
                raise at.error(path_name, f"no unicast path named {path_name!r} (paths: {', '.join(names)})")
            addresses[path_name] = at.address(path_name)
        at.done()
        node_id = nt.integer("id", min=0, max=MAX_NODES - 1)
        name = nt.string("name", f"node{node_id}")
        nodes.append(NodeConfig(node_id, name, nt.integer("priority", 100, min=0, max=255), addresses))
        nt.done()
    if not nodes:
        raise c.error(None, "no nodes: list each director as a [[cluster.node]]")
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise c.error("node", f"node ids repeat: {ids}")
    for n in nodes:
        missing = unicast - set(n.addresses)
        if missing:
            raise c.error("node", f"node {n.id} has no address for unicast path(s) {', '.join(sorted(missing))}")

    if node is None:
        node = root.integer("node", None, min=0, max=MAX_NODES - 1)
    else:
        root.raw("node")
    if node is None:
        raise root.error(None, "which node is this? give --node ID or `node = ID` at the top")
    if node not in ids:
        raise root.error("node", f"node {node} is not among the cluster's nodes {sorted(ids)}")

    key, key_id = _read_key(c, base)
    interval = c.integer("interval_ms", 1000, min=1, max=60_000)
    warn = c.integer("warn_ms", 3 * interval, min=interval)
    dead = c.integer("dead_ms", 5 * interval, min=interval)
    if warn > dead:
        raise c.error("warn_ms", f"warn_ms ({warn}) must not exceed dead_ms ({dead})")
    initdead = c.integer("initdead_ms", max(2 * dead, dead + 1), min=dead)
    tiebreaker = c.address("tiebreaker", None)
    config = ClusterConfig(
        id=c.integer("id", min=0, max=0xFFFF_FFFF),
        node=node,
        nodes=tuple(nodes),
        paths=paths,
        key=key,
        key_id=key_id,
        interval_ms=interval,
        warn_ms=warn,
        dead_ms=dead,
        initdead_ms=initdead,
        auto_failback=c.boolean("auto_failback", False),
        failback_delay=c.number("failback_delay", 0.0, min=0.0),
        quorum=c.boolean("quorum", True),
        tiebreaker=tiebreaker,
        rt_priority=c.integer("rt_priority", None, min=1, max=99),
        state_dir=c.string("state_dir", "/var/lib/understudy"),
        vips=tuple(_read_vip(v) for v in root.tables("vip")),
        announce=_read_announce(root.table("announce")),
        tracking=_read_tracking(root.table("tracking")),
        notify=_read_notify(root.table("notify")),
    )
    c.done()
    return config


def _read_vip(t: Table) -> VipConfig:
    vip = VipConfig(t.interface_address("address"), t.string("interface"), t.string("label", None))
    if vip.label is not None and not vip.label.startswith(vip.interface):
        raise t.error("label", f"a label must start with the interface name ({vip.interface}:...)")
    t.done()
    return vip


def _read_announce(t: Table) -> AnnounceConfig:
    a = AnnounceConfig(
        repeat=t.integer("repeat", 5, min=0, max=100),
        interval=t.number("interval", 0.2, min=0.0),
        refresh=t.number("refresh", 0.0, min=0.0),
    )
    t.done()
    return a


def _read_tracking(t: Table) -> TrackingConfig:
    g = t.table("gateways")
    gateways = GatewayConfig(
        addresses=tuple(_addresses(g, "addresses")),
        interval=g.number("interval", 1.0, min=0.01),
        timeout=g.number("timeout", 1.0, min=0.01),
        fall=g.integer("fall", 3, min=1),
        rise=g.integer("rise", 2, min=1),
    )
    if gateways.timeout > gateways.interval:
        raise g.error("timeout", f"{gateways.timeout} s is longer than the interval ({gateways.interval} s)")
    g.done()
    scripts = []
    for s in t.tables("script"):
        scripts.append(TrackScript(
            command=s.command("command", None) or _missing(s, "command"),
            interval=s.number("interval", 2.0, min=0.01),
            timeout=s.number("timeout", 2.0, min=0.01),
            weight=s.integer("weight", 0, min=-255, max=0),
            fall=s.integer("fall", 1, min=1),
            rise=s.integer("rise", 1, min=1),
        ))
        if scripts[-1].timeout > scripts[-1].interval:
            raise s.error("timeout", f"{scripts[-1].timeout} s is longer than the interval ({scripts[-1].interval} s)")
        s.done()
    tracking = TrackingConfig(interfaces=t.strings("interfaces", ()), gateways=gateways, scripts=tuple(scripts))
    t.done()
    return tracking


def _addresses(t: Table, key: str) -> list[IpAddress]:
    out = []
    for i, text in enumerate(t.strings(key, ())):
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            raise t.error(key, f"entry {i}: not an IP address: {text!r}") from None
    return out


def _missing(t: Table, key: str) -> tuple[str, ...]:
    raise t.error(None, f"missing required key {key!r}")


def _read_notify(t: Table) -> NotifyConfig:
    n = NotifyConfig(
        primary=t.command("primary"),
        backup=t.command("backup"),
        fault=t.command("fault"),
        stop=t.command("stop"),
        any=t.command("any"),
        timeout=t.number("timeout", 10.0, min=0.1),
    )
    t.done()
    return n
