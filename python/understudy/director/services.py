"""The service monitor: health and operator commands decide each real server's
place in the kernel's IPVS table.

Each server's state is what its check last said (up until a check says
otherwise, as keepalived starts), what the operator asked (drained servers
take no new connections whatever their health), and a weight a check script
may set. `desired()` turns all of it into the IPVS table; `converge()` brings
the kernel there with the reconciler's minimal diff. Health changes arrive in
bursts (a switch port dies, fifty servers fail at once): they are coalesced
into one reconcile a few milliseconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from understudy.config.services import ServerConfig, ServiceConfig, split_endpoint
from understudy.events import EventBus
from understudy.health import Check, Monitor, StateChange, Watch, check_from_mapping
from understudy.ipvs.model import Destination, Service
from understudy.ipvs.reconcile import Change, Reconciler

__all__ = ["ServerState", "ServiceMonitor", "desired_table"]

log = logging.getLogger("understudy.services")

ADMIN_STATES = ("enabled", "drained")


class IpvsPort(Protocol):
    def dump(self, stats: bool = True) -> list[Service]: ...
    def execute(self, changes: Sequence[Change]) -> None: ...


class IpvsThread:
    """The kernel's IPVS table, programmed from one thread of its own.

    The netlink client may only be used by the thread that made it; a dump of a
    large table takes a while, so it must not run on the event loop either.
    """

    def __init__(self, factory: Callable[[], IpvsPort] | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if factory is None:
            from understudy.ipvs import Ipvs

            factory = Ipvs
        self._ipvs: IpvsPort | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvs")
        self._factory = factory
        # Open it now, so an error (no IPVS in this kernel) stops the daemon at start.
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        self._ipvs = self._factory()

    async def call(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: getattr(self._ipvs, method)(*args))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


@dataclass(frozen=True, slots=True)
class ServerState:
    """What is known of one real server of one service."""

    config: ServerConfig
    up: bool = True
    reason: str = "not checked yet"
    #: A weight set by a check script (None: the configured one).
    weight: int | None = None
    admin: str = "enabled"
    #: Added at runtime (`server add`), not from the config file.
    runtime: bool = False

    @property
    def effective_weight(self) -> int:
        if self.admin == "drained" or not self.up:
            return 0
        return self.config.destination.weight if self.weight is None else self.weight


def desired_table(services: Sequence[ServiceConfig], states: dict[tuple[str, str], ServerState]) -> list[Service]:
    """The IPVS table that health and operators ask for."""
    table = []
    for svc in services:
        dests: list[Destination] = []
        up = 0
        for key, st in states.items():
            if key[0] != svc.name:
                continue
            up += st.up and st.admin == "enabled"
            if not st.up and st.admin == "enabled" and svc.on_failure == "remove":
                continue
            dests.append(st.config.destination.with_weight(st.effective_weight))
        if up == 0 and svc.sorry is not None:
            dests.append(svc.sorry)
        table.append(replace(svc.service, destinations=tuple(dests)))
    return table


class ServiceMonitor:
    """Health checks and admin commands, applied to the kernel's IPVS table."""

    def __init__(
        self,
        services: Sequence[ServiceConfig],
        ipvs: IpvsThread | None,
        monitor: Monitor,
        *,
        events: EventBus | None = None,
        drain_timeout: float = 300.0,
        coalesce: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = list(services)
        self.ipvs = ipvs
        self.monitor = monitor
        self.events = events or EventBus()
        # Prune, but only among services this daemon manages: a service dropped from
        # the config is drained and deleted; one the operator made by hand is not ours.
        self.reconciler = Reconciler(drain_timeout=drain_timeout, prune=True, clock=clock)
        self._managed = {svc.service.key for svc in self.services}
        self.coalesce = coalesce
        self.states: dict[tuple[str, str], ServerState] = {}
        self._watches: dict[tuple[str, str], Watch] = {}
        self._quorate: dict[str, bool] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.applied = 0
        self.errors = 0

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        for svc in self.services:
            for server in svc.servers:
                self._add(svc, server, runtime=False)
        await self.converge()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="services")

    async def stop(self) -> None:
        """Stop checking; the kernel table stays as it is (connections keep flowing)."""
        for w in self._watches.values():
            w.cancel()
        self._watches.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running loop (the supervisor restarts the subsystem if it dies)."""
        return self._task

    async def reload(self, services: Sequence[ServiceConfig]) -> list[str]:
        """Adopt a new config: keep the state of servers that stay, check new ones,
        drain removed ones (the reconciler deletes them once their connections end)."""
        old = {(s.name, srv.name): srv for s in self.services for srv in s.servers}
        new = {(s.name, srv.name): (s, srv) for s in services for srv in s.servers}
        self.services = list(services)
        self._managed |= {svc.service.key for svc in self.services}
        for key in [k for k, st in self.states.items() if not st.runtime and k not in new]:
            self._remove(key)
        for key, (svc, server) in new.items():
            if key not in self.states or old.get(key) != server:
                previous = self.states.get(key)
                if previous is not None:
                    self._remove(key)
                self._add(svc, server, runtime=False, admin=previous.admin if previous else "enabled",
                          up=previous.up if previous else True)
        return [str(c) for c in await self.converge()]

    # --- admin commands -----------------------------------------------------------

    def service(self, name: str) -> ServiceConfig:
        """A service by its name or as printed (`tcp 192.0.2.10:80`)."""
        for svc in self.services:
            if name in (svc.name, str(svc.service)):
                return svc
        raise LookupError(f"no service {name!r} (services: {', '.join(s.name for s in self.services)})")

    def _key(self, service: str, server: str) -> tuple[str, str]:
        svc = self.service(service)
        for key in self.states:
            if key[0] == svc.name and key[1] == server:
                return key
        raise LookupError(f"service {svc.name} has no real server {server}")

    def add_server(self, service: str, destination: Destination, check: Check | None) -> None:
        svc = self.service(service)
        if (svc.name, destination.endpoint) in self.states:
            raise ValueError(f"{destination.endpoint} is already a real server of {svc.name}")
        self._add(svc, ServerConfig(destination, check), runtime=True)
        self.events.publish("server", service=svc.name, server=destination.endpoint, change="added")

    def add_server_at(self, service: str, address: str, *, weight: int = 1, forward: str | None = None,
                      check: dict[str, Any] | None = None) -> None:
        """`server add`: a real server from its endpoint, checked as `check` says or,
        by default, like the service's other servers (the same probe, aimed at it)."""
        svc = self.service(service)
        host, port = split_endpoint(address, svc.service.port)
        dest = Destination.from_json({"address": host, "port": port, "weight": weight,
                                      "forward": forward or "masq"}, "server")
        probe_check = None
        if check is not None:
            probe_check = check_from_mapping(check, address=dest.address, port=dest.port)
        else:
            default = next((s.check for s in svc.servers if s.check is not None), None)
            if default is not None:
                probe_check = replace(default, probe=replace(default.probe, **_retarget(default.probe, dest)))
        self.add_server(service, dest, probe_check)

    def remove_server(self, service: str, server: str) -> None:
        key = self._key(service, server)
        self._remove(key)
        self.events.publish("server", service=key[0], server=server, change="removed")

    def set_admin(self, service: str, server: str, admin: str) -> None:
        if admin not in ADMIN_STATES:
            raise ValueError(f"admin state must be one of {', '.join(ADMIN_STATES)}")
        key = self._key(service, server)
        self.states[key] = replace(self.states[key], admin=admin)
        self.events.publish("server", service=key[0], server=server, change=admin)
        self._dirty.set()

    # --- state --------------------------------------------------------------

    def _add(self, svc: ServiceConfig, server: ServerConfig, *, runtime: bool, admin: str = "enabled",
             up: bool = True) -> None:
        key = (svc.name, server.name)
        self.states[key] = ServerState(server, up=up, admin=admin, runtime=runtime,
                                       reason="not checked" if server.check is None else "not checked yet")
        if server.check is not None:
            self._watches[key] = self.monitor.watch(server.check, functools.partial(self._health, key))
            status = self.monitor.status(server.check)
            if status is not None and status.up is not None:  # a probe other services already share
                self.states[key] = replace(self.states[key], up=status.up, weight=status.weight)
        self._dirty.set()

    def _remove(self, key: tuple[str, str]) -> None:
        watch = self._watches.pop(key, None)
        if watch is not None:
            watch.cancel()
        del self.states[key]
        self._dirty.set()

    def _health(self, key: tuple[str, str], change: StateChange) -> None:
        st = self.states.get(key)
        if st is None:
            return
        self.states[key] = replace(st, up=change.up, reason=change.reason, weight=change.weight)
        if st.up != change.up:
            self.events.publish("health", service=key[0], server=key[1], up=change.up, reason=change.reason)
        self._dirty.set()

    # --- applying -----------------------------------------------------------

    def desired(self) -> list[Service]:
        return desired_table(self.services, self.states)

    async def converge(self) -> list[Change]:
        """One reconcile of the kernel to `desired()`; returns what it changed."""
        self._dirty.clear()
        desired = self.desired()
        if not desired and not self._managed:
            return []  # nothing to manage (failover-only): do not even open IPVS
        try:
            assert self.ipvs is not None
            current = [s for s in await self.ipvs.call("dump", False) if s.key in self._managed]
            changes = self.reconciler.plan(desired, current)
            if changes:
                await self.ipvs.call("execute", changes)
        except OSError as e:
            self.errors += 1
            log.error("programming IPVS failed: %s", e)
            self.events.publish("ipvs-error", error=str(e))
            self._dirty.set()  # try again on the next round
            return []
        self.applied += len(changes)
        for change in changes:
            log.info("ipvs: %s", change)
        self._check_quorum()
        return changes

    def _check_quorum(self) -> None:
        for svc in self.services:
            up = sum(1 for k, st in self.states.items() if k[0] == svc.name and st.up and st.admin == "enabled")
            ok = up >= svc.quorum
            if self._quorate.get(svc.name, True) != ok:
                self.events.publish("quorum", service=svc.name, up=up, needed=svc.quorum, ok=ok)
                command = svc.quorum_up if ok else svc.quorum_down
                if command:
                    asyncio.get_running_loop().create_task(self._run(command))
            self._quorate[svc.name] = ok

    @staticmethod
    async def _run(argv: tuple[str, ...]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
            await asyncio.wait_for(proc.wait(), 30)
        except (OSError, asyncio.TimeoutError) as e:
            log.error("quorum command %s failed: %s", argv[0], e)

    async def _loop(self) -> None:
        while True:
            # Drains finish by themselves: look again now and then even without news.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), 5.0 if self.reconciler.pending else 30.0)
            await asyncio.sleep(self.coalesce)
            await self.converge()

    def status(self) -> list[dict[str, Any]]:
        out = []
        for svc in self.services:
            servers = [
                {"server": k[1], "up": st.up, "reason": st.reason, "admin": st.admin,
                 "weight": st.effective_weight, "configured_weight": st.config.destination.weight,
                 "runtime": st.runtime}
                for k, st in self.states.items() if k[0] == svc.name
            ]
            out.append({"service": svc.name, "virtual": str(svc.service), "scheduler": svc.service.scheduler,
                        "quorum": {"needed": svc.quorum, "ok": self._quorate.get(svc.name, True)},
                        "servers": servers})
        return out


def _retarget(probe: Any, dest: Destination) -> dict[str, Any]:
    """The fields that aim a copy of a service's default check at another server."""
    names = {f.name for f in fields(probe)}
    out: dict[str, Any] = {}
    if "address" in names:
        out["address"] = dest.address
    if "port" in names and getattr(probe, "kind", "") != "dns":  # a DNS check keeps port 53
        out["port"] = dest.port
    return out
