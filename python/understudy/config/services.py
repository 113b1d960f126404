"""The `[[service]]` sections: virtual services, their real servers and checks.

A service is written as `ipvs show --json` would print it (address, port,
protocol or fwmark, scheduler, flags, persistence), plus what the service
monitor needs: a default check for its servers, what to do with a failed
server, a sorry server and a quorum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from understudy.config.reader import Table
from understudy.health.model import Check, CheckConfigError, check_from_mapping
from understudy.ipvs.model import Destination, ModelError, Service

__all__ = ["ServerConfig", "ServiceConfig", "read_services", "split_endpoint"]

ON_FAILURE = ("quiesce", "remove")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One real server of a service, as configured (its weight when healthy)."""

    destination: Destination
    check: Check | None

    @property
    def name(self) -> str:
        return self.destination.endpoint


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A virtual service and the policy the monitor applies to it."""

    name: str
    #: The kernel's form, without destinations (the monitor decides those).
    service: Service
    servers: tuple[ServerConfig, ...]
    #: A failed server keeps its entry at weight 0 (quiesce: its connections finish) or is removed.
    on_failure: str = "quiesce"
    sorry: Destination | None = None
    #: Fewer servers up than this runs `quorum_down` (and `quorum_up` when restored).
    quorum: int = 1
    quorum_up: tuple[str, ...] | None = None
    quorum_down: tuple[str, ...] | None = None


def read_services(root: Table) -> tuple[ServiceConfig, ...]:
    services = tuple(_read_service(t) for t in root.tables("service"))
    seen: dict[Any, str] = {}
    for s in services:
        if s.service.key in seen:
            raise root.error("service", f"{s.name} and {seen[s.service.key]} are the same virtual service")
        seen[s.service.key] = s.name
    return services


_SERVICE_KEYS = ("af", "protocol", "address", "port", "fwmark", "scheduler", "flags", "timeout", "netmask", "pe_name")
_SERVER_KEYS = ("address", "port", "forward", "weight", "u_threshold", "l_threshold", "tunnel")


#: The kernel's schedulers (net/netfilter/ipvs/ip_vs_*.c), for an early, clear error.
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")


def _read_service(t: Table) -> ServiceConfig:
    t.string("scheduler", "wlc", choices=SCHEDULERS)
    t.string("protocol", "tcp", choices=("tcp", "udp", "sctp"))
    t.string("address", None)
    t.integer("port", None, min=0, max=65535)
    t.integer("fwmark", None, min=1, max=2**32 - 1)
    raw = {k: t.raw(k) for k in _SERVICE_KEYS if t.has(k)}
    if "fwmark" not in raw:
        raw.setdefault("protocol", "tcp")
    try:
        service = Service.from_json(raw, "service")
    except ModelError as e:
        raise t.error(_first_key(raw, str(e)), str(e).removeprefix("service: ")) from None
    name = t.string("name", str(service))
    check_table = t.raw("check")
    if check_table is not None and not isinstance(check_table, dict):
        raise t.error("check", "expected a table: the default check of this service's servers")
    forward = t.string("forward", "masq")
    servers = []
    for st in t.tables("server"):
        servers.append(_read_server(st, service, forward, check_table, t))
    endpoints = [s.name for s in servers]
    if len(set(endpoints)) != len(endpoints):
        raise t.error("server", f"a real server is listed twice in {name}")
    sorry = None
    if t.has("sorry_server"):
        sorry = _destination(t, "sorry_server", {"address": t.string("sorry_server"), "forward": forward}, service)
    config = ServiceConfig(
        name=name,
        service=service,
        servers=tuple(servers),
        on_failure=t.string("on_failure", "quiesce", choices=ON_FAILURE),
        sorry=sorry,
        quorum=t.integer("quorum", 1, min=0, max=len(servers) or 1),
        quorum_up=t.command("quorum_up"),
        quorum_down=t.command("quorum_down"),
    )
    t.done()
    return config


def _read_server(t: Table, service: Service, forward: str, default_check: dict[str, Any] | None,
                 parent: Table) -> ServerConfig:
    t.string("address")
    t.integer("weight", 1, min=0, max=2**31 - 1)
    t.string("forward", forward, choices=("masq", "route", "tunnel", "local", "bypass"))
    raw = {k: t.raw(k) for k in _SERVER_KEYS if t.has(k)}
    raw.setdefault("forward", forward)
    destination = _destination(t, "address", raw, service)
    check_raw: Any = t.raw("check", default_check)
    check = None
    if check_raw is not None and check_raw is not False:
        if not isinstance(check_raw, dict):
            raise t.error("check", "expected a table, or false for no check")
        try:
            check = check_from_mapping(check_raw, address=destination.address, port=destination.port)
        except CheckConfigError as e:
            # Point at the table that wrote the check: the server's own, or the service's default.
            raise (t if "check" in t.data else parent).error("check", str(e)) from None
    t.done()
    return ServerConfig(destination, check)


def _destination(t: Table, key: str, raw: dict[str, Any], service: Service) -> Destination:
    """A destination from `address = "host:port"` (or `address` + `port`)."""
    raw = dict(raw)
    address = raw.get("address")
    if isinstance(address, str) and "port" not in raw:
        host, port = split_endpoint(address, service.port)
        if port is None:
            raise t.error(key, f"{address!r} needs a port (the service has none: fwmark)")
        raw["address"], raw["port"] = host, port
    try:
        return Destination.from_json(raw, "server")
    except ModelError as e:
        raise t.error(_first_key(raw, str(e), key), str(e).removeprefix("server: ")) from None


def split_endpoint(text: str, default_port: int | None) -> tuple[str, int | None]:
    """`host:port` or `[v6]:port` (or a bare host, with `default_port`)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        if port.isdigit():
            return host, int(port)
    return text, default_port


def _first_key(raw: dict[str, Any], message: str, default: str | None = None) -> str | None:
    """The key a model error message is about (it names it after the colon)."""
    for key in raw:
        if f": {key}" in message:
            return key
    return default
