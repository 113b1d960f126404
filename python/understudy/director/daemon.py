"""`understudy run`: every subsystem of one director, supervised.

Order of start: health checks, the service monitor (IPVS), sync, failover
(last: it may take the VIPs at once), then the admin socket and metrics; stop
runs in reverse, so a director going down releases its VIPs while its tables
are still intact. SIGTERM/SIGINT stop cleanly; SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import signal
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

from understudy.admin import AdminServer
from understudy.config import ConfigError, DirectorConfig, load_config
from understudy.director.metrics import Metrics
from understudy.director.services import IpvsThread, ServiceMonitor
from understudy.director.supervisor import Supervisor
from understudy.events import EventBus
from understudy.health import Monitor

__all__ = ["Director"]

log = logging.getLogger("understudy.director")


class _Health:
    """The health monitor as a subsystem."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def start(self) -> None:
        await self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()


class Director:
    """One director: build from a config, `run()` until stopped."""

    def __init__(self, config: DirectorConfig, *, ipvs: Any = None) -> None:
        self.config = config
        self.events = EventBus()
        self.health = Monitor()
        if ipvs is None and (config.services or config.sync.mode != "off"):
            ipvs = IpvsThread()
        self.services = ServiceMonitor(config.services, ipvs, self.health, events=self.events,
                                       drain_timeout=config.drain_timeout)
        self.sync: Any = None
        self.failover: Any = None
        if config.cluster is not None:
            from understudy.director.cluster import build_failover, build_sync

            self.sync = build_sync(config, ipvs) if config.sync.mode != "off" else None
            self.failover = build_failover(config.cluster, self.events, self.sync, self.health)
        self.admin = AdminServer(config.admin.socket)
        self.metrics = Metrics(config.metrics.listen, config.metrics.port, self.status)
        self.supervisor = Supervisor(self.events)
        self.supervisor.add("health", _Health(self.health))
        self.supervisor.add("services", self.services, lambda: self.services.task)
        if self.sync is not None:
            self.supervisor.add("sync", self.sync)
        if self.failover is not None:
            self.supervisor.add("failover", self.failover, lambda: self.failover.task)
        self.supervisor.add("admin", self.admin)
        self.supervisor.add("metrics", self.metrics)
        self._register_commands()
        self._stopping = asyncio.Event()

    # --- running ----------------------------------------------------------------

    def _lock(self) -> Any:
        """One daemon per admin socket: a second one must fail before it touches
        anything (it would release the VIPs the running one holds)."""
        path = Path(self.config.admin.socket).with_suffix(".lock")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise OSError(errno.EADDRINUSE, f"another daemon (pid {pid}) runs with {self.config.admin.socket}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        return f

    async def run(self) -> None:
        lock = self._lock()  # held (by the open file) until this process ends
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._reload_logged()))
        await self.supervisor.start()
        self.events.publish("started", node=self.config.cluster.node if self.config.cluster else None)
        try:
            await self._stopping.wait()
        finally:
            log.info("stopping")
            await self.supervisor.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            lock.close()

    def stop(self) -> None:
        self._stopping.set()

    async def reload(self) -> dict[str, Any]:
        """Apply the config file's changes to services (minimal IPVS diff);
        cluster, sync and admin changes are reported as needing a restart."""
        node = self.config.cluster.node if self.config.cluster else None
        new = await asyncio.to_thread(load_config, self.config.file, node)
        restart = [name for name in ("cluster", "sync", "admin", "metrics")
                   if getattr(new, name) != getattr(self.config, name)]
        changes = await self.services.reload(new.services)
        self.config = dataclasses.replace(self.config, services=new.services, drain_timeout=new.drain_timeout)
        self.events.publish("reload", changes=len(changes), restart_needed=restart)
        return {"changes": changes, "restart_needed": restart}

    async def _reload_logged(self) -> None:
        try:
            result = await self.reload()
            log.warning("reloaded: %d IPVS changes%s", len(result["changes"]),
                        f"; restart needed for {', '.join(result['restart_needed'])}" if result["restart_needed"] else "")
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            self.events.publish("reload-error", error=str(e))

    # --- status and admin commands ---------------------------------------------

    def status(self) -> dict[str, Any]:
        late = self.health.lateness()
        out: dict[str, Any] = {
            "services": self.services.status(),
            "health": {"checks": len(self.health.checks),
                       "lateness": {"p50": late.p50, "p99": late.p99, "max": late.max, "count": late.count}},
            "subsystems": self.supervisor.status(),
            "events": self.events.published,
        }
        if self.failover is not None:
            out["failover"] = self.failover.status()
        if self.sync is not None:
            out["sync"] = self.sync.status()
        return out

    def _register_commands(self) -> None:
        a = self.admin

        async def status(args: dict[str, Any]) -> Any:
            return self.status()

        async def server(args: dict[str, Any]) -> Any:
            action, service, address = args.get("action"), str(args.get("service")), str(args.get("server"))
            if action == "add":
                self.services.add_server_at(service, address, weight=int(args.get("weight", 1)),
                                            forward=args.get("forward"), check=args.get("check"))
            elif action == "remove":
                self.services.remove_server(service, address)
            elif action in ("drain", "enable"):
                self.services.set_admin(service, address, "drained" if action == "drain" else "enabled")
            else:
                raise ValueError("action must be add, remove, drain or enable")
            return [str(c) for c in await self.services.converge()]

        async def reload(args: dict[str, Any]) -> Any:
            try:
                return await self.reload()
            except ConfigError as e:
                raise ValueError(f"reload refused, running config kept: {e}") from None

        async def switch(args: dict[str, Any]) -> Any:
            if self.failover is None:
                raise ValueError("no [cluster] configured: nothing to switch")
            target = int(args["to"])
            self.failover.switch_to(target)
            return {"switching_to": target}

        async def standby(args: dict[str, Any]) -> Any:
            if self.failover is None:
                raise ValueError("no [cluster] configured")
            on = bool(args.get("on", True))
            self.failover.node.standby(on)
            return {"standby": on}

        async def events(args: dict[str, Any]) -> AsyncIterator[Any]:
            for e in self.events.recent() if args.get("recent") else []:
                yield e
            async for e in self.events.subscribe():
                yield e

        a.command("status", status)
        a.command("server", server)
        a.command("reload", reload)
        a.command("switch", switch)
        a.command("standby", standby)
        a.stream("events", events)


async def serve(config: DirectorConfig) -> None:
    """Run a director until SIGTERM/SIGINT."""
    director = Director(config)
    with contextlib.suppress(asyncio.CancelledError):
        await director.run()
