"""The IPVS table as operators write it (JSON) and as the kernel holds it.

`Service` and `Destination` are immutable values. `from_json` accepts what
`understudy ipvs show --json` prints (statistics and counters are ignored),
`to_json` prints it; `from_kernel` / `to_kernel` convert the engine's raw
dicts (numeric fields, as netlink carries them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

AF_INET, AF_INET6 = 2, 10
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
FORWARDS = {"masq": 0, "local": 1, "tunnel": 2, "route": 3, "bypass": 4}
FORWARD_NAMES = {v: k for k, v in FORWARDS.items()}
TUNNEL_TYPES = {"ipip": 0, "gue": 1, "gre": 2}
TUNNEL_TYPE_NAMES = {v: k for k, v in TUNNEL_TYPES.items()}
TUNNEL_FLAGS = {"csum": 1, "remcsum": 2}

F_PERSISTENT, F_ONEPACKET, F_SCHED1, F_SCHED2, F_SCHED3 = 0x1, 0x4, 0x8, 0x10, 0x20
# Scheduler flag names as ipvsadm prints them; sh and mh give bits 1-2 meanings.
SCHED_FLAG_NAMES = {
    "sh": {F_SCHED1: "sh-fallback", F_SCHED2: "sh-port"},
    "mh": {F_SCHED1: "mh-fallback", F_SCHED2: "mh-port"},
}
GENERIC_FLAGS = {F_PERSISTENT: "persistent", F_ONEPACKET: "one-packet", F_SCHED1: "flag-1", F_SCHED2: "flag-2",
                 F_SCHED3: "flag-3"}


class ModelError(ValueError):
    """A desired state that cannot describe an IPVS table."""


def _flag_names(scheduler: str) -> dict[int, str]:
    return {**GENERIC_FLAGS, **SCHED_FLAG_NAMES.get(scheduler, {})}


def flags_to_names(flags: int, scheduler: str) -> list[str]:
    names = _flag_names(scheduler)
    return [name for bit, name in sorted(names.items()) if flags & bit]


def flags_from_names(names: list[str], scheduler: str) -> int:
    by_name = {name: bit for bit, name in _flag_names(scheduler).items()}
    # Accept every scheduler's spelling: "sh-port" means bit 2 whatever the scheduler.
    for table in SCHED_FLAG_NAMES.values():
        for bit, name in table.items():
            by_name.setdefault(name, bit)
    try:
        return sum({by_name[n] for n in names})
    except KeyError as e:
        raise ModelError(f"unknown service flag {e.args[0]!r} (known: {', '.join(sorted(by_name))})") from None


@dataclass(frozen=True)
class Destination:
    address: str
    port: int
    forward: str = "masq"
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tunnel_type: str = "ipip"
    tunnel_port: int = 0
    tunnel_flags: tuple[str, ...] = ()
    # Read from the kernel, never written.
    active_conns: int = field(default=0, compare=False)
    inactive_conns: int = field(default=0, compare=False)
    persist_conns: int = field(default=0, compare=False)
    stats: Mapping[str, int] | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def connections(self) -> int:
        """Established connections: what a drain waits for. Closing ones
        (TIME_WAIT lingers 120 s) count as inactive and are not waited for."""
        return self.active_conns

    def with_weight(self, weight: int) -> Destination:
        return replace(self, weight=weight)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "destination") -> Destination:
        _known(d, {"address", "port", "forward", "weight", "u_threshold", "l_threshold", "tunnel", "stats",
                   "active_conns", "inactive_conns", "persist_conns"}, where)
        forward = d.get("forward", "masq")
        if forward not in FORWARDS:
            raise ModelError(f"{where}: forward must be one of {', '.join(FORWARDS)}, not {forward!r}")
        tunnel = d.get("tunnel") or {}
        tun_type = tunnel.get("type", "ipip")
        if tun_type not in TUNNEL_TYPES:
            raise ModelError(f"{where}: tunnel type must be one of {', '.join(TUNNEL_TYPES)}, not {tun_type!r}")
        weight = _int(d.get("weight", 1), f"{where}: weight", 0, 2**31 - 1)
        u, l_ = (_int(d.get(k, 0), f"{where}: {k}", 0, 2**32 - 1) for k in ("u_threshold", "l_threshold"))
        if l_ > u:
            raise ModelError(f"{where}: l_threshold {l_} above u_threshold {u}")
        return cls(
            address=_address(d.get("address"), f"{where}: address"),
            port=_int(d.get("port"), f"{where}: port", 0, 65535),
            forward=forward,
            weight=weight,
            u_threshold=u,
            l_threshold=l_,
            tunnel_type=tun_type,
            tunnel_port=_int(tunnel.get("port", 0), f"{where}: tunnel port", 0, 65535),
            tunnel_flags=tuple(sorted(tunnel.get("flags", ()))),
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "address": self.address, "port": self.port, "forward": self.forward, "weight": self.weight,
            "u_threshold": self.u_threshold, "l_threshold": self.l_threshold,
        }
        if self.forward == "tunnel":
            d["tunnel"] = {"type": self.tunnel_type, "port": self.tunnel_port, "flags": list(self.tunnel_flags)}
        d.update(active_conns=self.active_conns, inactive_conns=self.inactive_conns,
                 persist_conns=self.persist_conns, stats=dict(self.stats) if self.stats is not None else None)
        return d

    @classmethod
    def from_kernel(cls, d: Mapping[str, Any]) -> Destination:
        return cls(
            address=d["address"], port=d["port"], forward=FORWARD_NAMES.get(d["forward"], str(d["forward"])),
            weight=d["weight"], u_threshold=d["u_threshold"], l_threshold=d["l_threshold"],
            tunnel_type=TUNNEL_TYPE_NAMES.get(d["tun_type"], "ipip"), tunnel_port=d["tun_port"],
            tunnel_flags=tuple(sorted(n for n, bit in TUNNEL_FLAGS.items() if d["tun_flags"] & bit)),
            active_conns=d["active_conns"], inactive_conns=d["inactive_conns"], persist_conns=d["persist_conns"],
            stats=d["stats"],
        )

    def to_kernel(self) -> dict[str, Any]:
        return {
            "address": self.address, "port": self.port, "forward": FORWARDS[self.forward], "weight": self.weight,
            "u_threshold": self.u_threshold, "l_threshold": self.l_threshold,
            "tun_type": TUNNEL_TYPES[self.tunnel_type], "tun_port": self.tunnel_port,
            "tun_flags": sum(TUNNEL_FLAGS[f] for f in self.tunnel_flags),
        }


@dataclass(frozen=True)
class Service:
    af: int
    protocol: str | None
    address: str | None
    port: int | None
    fwmark: int
    scheduler: str = "wlc"
    flags: int = 0
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    pe_name: str | None = None
    destinations: tuple[Destination, ...] = field(default=(), compare=False)
    stats: Mapping[str, int] | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[int, str | None, str | None, int | None, int]:
        return (self.af, self.protocol, self.address, self.port, self.fwmark)

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark {self.fwmark}" + (" (inet6)" if self.af == AF_INET6 else "")
        host = f"[{self.address}]" if self.af == AF_INET6 else self.address
        return f"{self.protocol} {host}:{self.port}"

    @property
    def settings(self) -> tuple[object, ...]:
        """What SET_SERVICE changes."""
        return (self.scheduler, self.flags, self.timeout, self.netmask, self.pe_name)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "service") -> Service:
        _known(d, {"af", "protocol", "address", "port", "fwmark", "scheduler", "flags", "timeout", "netmask",
                   "pe_name", "destinations", "stats"}, where)
        fwmark = _int(d.get("fwmark") or 0, f"{where}: fwmark", 0, 2**32 - 1)
        if fwmark:
            af = {"inet": AF_INET, "inet6": AF_INET6}.get(d.get("af") or "inet")
            if af is None:
                raise ModelError(f"{where}: af must be inet or inet6")
            protocol, address, port = None, None, None
        else:
            protocol = d.get("protocol")
            if protocol not in PROTOCOLS:
                raise ModelError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)} (or give a fwmark)")
            address = _address(d.get("address"), f"{where}: address")
            port = _int(d.get("port"), f"{where}: port", 0, 65535)
            af = AF_INET6 if ":" in address else AF_INET
        scheduler = d.get("scheduler") or "wlc"
        flags = flags_from_names(list(d.get("flags") or []), scheduler)
        svc = cls(
            af=af, protocol=protocol, address=address, port=port, fwmark=fwmark, scheduler=scheduler,
            flags=flags, timeout=_int(d.get("timeout", 0), f"{where}: timeout", 0, 2**32 - 1),
            netmask=_netmask(d.get("netmask"), af, where), pe_name=d.get("pe_name"),
        )
        dests = [Destination.from_json(x, f"{where} {svc} destination {i}")
                 for i, x in enumerate(d.get("destinations") or [])]
        seen: set[tuple[str, int]] = set()
        for dest in dests:
            if dest.key in seen:
                raise ModelError(f"{where} {svc}: destination {dest.endpoint} listed twice")
            seen.add(dest.key)
            if (":" in dest.address) != (af == AF_INET6) and dest.forward != "tunnel":
                raise ModelError(f"{where} {svc}: destination {dest.endpoint} of another address family "
                                 "needs forward 'tunnel'")
        return replace(svc, destinations=tuple(dests))

    def to_json(self) -> dict[str, Any]:
        if self.af == AF_INET6:
            netmask: int | str = self.netmask
        else:
            netmask = str(ipaddress.IPv4Address(self.netmask))
        return {
            "af": "inet6" if self.af == AF_INET6 else "inet",
            "protocol": self.protocol, "address": self.address, "port": self.port,
            "fwmark": self.fwmark or None, "scheduler": self.scheduler,
            "flags": flags_to_names(self.flags, self.scheduler), "timeout": self.timeout, "netmask": netmask,
            "pe_name": self.pe_name, "destinations": [x.to_json() for x in self.destinations],
            "stats": dict(self.stats) if self.stats is not None else None,
        }

    @classmethod
    def from_kernel(cls, d: Mapping[str, Any]) -> Service:
        return cls(
            af=d["af"], protocol=PROTOCOL_NAMES.get(d["protocol"]) if d["protocol"] is not None else None,
            address=d["address"], port=d["port"], fwmark=d["fwmark"], scheduler=d["scheduler"],
            flags=d["flags"], timeout=d["timeout"], netmask=d["netmask"], pe_name=d["pe_name"],
            destinations=tuple(Destination.from_kernel(x) for x in d.get("destinations", ())),
            stats=d["stats"],
        )

    def to_kernel(self) -> dict[str, Any]:
        return {
            "af": self.af, "protocol": PROTOCOLS[self.protocol] if self.protocol else None,
            "address": self.address, "port": self.port, "fwmark": self.fwmark, "scheduler": self.scheduler,
            "flags": self.flags, "timeout": self.timeout, "netmask": self.netmask, "pe_name": self.pe_name,
        }


def parse_state(doc: Mapping[str, Any]) -> list[Service]:
    """A desired state: `{"services": [...]}` as `ipvs show --json` prints it."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("services"), list):
        raise ModelError('expected an object with a "services" list')
    services = [Service.from_json(s, f"services[{i}]") for i, s in enumerate(doc["services"])]
    seen: set[object] = set()
    for svc in services:
        if svc.key in seen:
            raise ModelError(f"service {svc} listed twice")
        seen.add(svc.key)
    return services


def _known(d: Mapping[str, Any], keys: set[str], where: str) -> None:
    if not isinstance(d, Mapping):
        raise ModelError(f"{where}: expected an object")
    unknown = set(d) - keys
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(f"{what} must be an integer in {low}..{high}, not {value!r}")
    return value


def _address(value: Any, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ModelError(f"{what}: {value!r} is not an IP address") from None


def _netmask(value: Any, af: int, where: str) -> int:
    """IPv4: a dotted mask or a prefix length; IPv6: a prefix length (the kernel's encodings)."""
    if af == AF_INET6:
        return _int(128 if value is None else value, f"{where}: netmask (IPv6 prefix length)", 1, 128)
    if value is None:
        return 0xFFFFFFFF
    if isinstance(value, int) and not isinstance(value, bool):
        prefix = _int(value, f"{where}: netmask (prefix length)", 0, 32)
        return (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    try:
        return int(ipaddress.IPv4Address(value))
    except ValueError:
        raise ModelError(f"{where}: netmask {value!r} is not an IPv4 mask") from None
