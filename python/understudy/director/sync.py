"""Connection sync that follows the failover role.

One connection table lives as long as the daemon: as a backup it fills from
the primary (RelayBackup), and on takeover the same table seeds the new
primary (RelayPrimary), so the first full copy it sends the others is
complete. The kernel's own sync daemons follow too: master on the primary,
backup elsewhere. `caught_up` feeds the failover policy (no failback before
the table is here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from understudy._core import ConnTable
from understudy.config.director import DirectorConfig
from understudy.failover.policy import Role

__all__ = ["SyncSwitch"]

log = logging.getLogger("understudy.sync")


class SyncSwitch:
    """The sync roles of one director, switched with its failover role."""

    def __init__(self, config: DirectorConfig, *, ipvs: Any = None) -> None:
        assert config.cluster is not None
        self.config = config
        self.cluster = config.cluster
        self.sync = config.sync
        self.table = ConnTable()
        self.role: Role = Role.INIT
        self.primary: int | None = None
        self.relay: Any = None
        self._ipvs = ipvs
        self._lock = asyncio.Lock()
        self.switches = 0
        self.state: Any = None

    # --- subsystem ----------------------------------------------------------------

    async def start(self) -> None:
        """Nothing runs until failover gives a role."""

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_relay()
            await self._kernel_daemons(None)
            self.role = Role.STOPPING

    # --- switching ------------------------------------------------------------------

    async def on_role(self, role: Role, primary: int | None) -> None:
        """Failover's role (and who is primary, for a backup) changed."""
        async with self._lock:
            role = Role.BACKUP if role in (Role.INIT, Role.FAULT) else role
            if role == self.role and (role != Role.BACKUP or primary == self.primary):
                return
            await self._stop_relay()
            self.role, self.primary = role, primary
            if role == Role.STOPPING:
                await self._kernel_daemons(None)
                return
            await self._kernel_daemons("master" if role == Role.PRIMARY else "backup")
            self.relay = self._make_relay(role, primary)
            if self.relay is not None:
                await self.relay.start()
                self.switches += 1
                log.info("sync: %s%s", self.relay.name, f" (primary node {primary})" if primary is not None else "")

    def _make_relay(self, role: Role, primary: int | None) -> Any:
        from understudy.sync.roles import RelayBackup, RelayPrimary

        me, c, s = self.cluster.node, self.cluster, self.sync
        assert s.interface is not None
        if role == Role.PRIMARY:
            peers = [str(addr) for node, addr in s.addresses if node != me]
            return RelayPrimary(node=me, key=c.key, key_id=c.key_id, port=s.port, table=self.table,
                                kernel_interface=s.interface, bind=str(s.address(me)),
                                peers=peers, seed=True, syncid=s.syncid)
        if primary is None or primary == me:
            return None  # no primary to hear yet
        return RelayBackup(node=me, key=c.key, key_id=c.key_id, port=s.port, table=self.table,
                           bind=str(s.address(me)), primary=str(s.address(primary)),
                           kernel_interface=s.interface)

    async def _stop_relay(self) -> None:
        if self.relay is not None:
            with contextlib.suppress(Exception):
                await self.relay.stop()
            self.relay = None

    async def _kernel_daemons(self, state: str | None) -> None:
        """Run the kernel's sync daemon for `state` (master/backup) only, or none."""
        if self._ipvs is None:
            from understudy.director.services import IpvsThread

            self._ipvs = IpvsThread()
        running = {d["state"] for d in await self._ipvs.call("daemons")}
        for other in running - {state}:
            with contextlib.suppress(OSError):
                await self._ipvs.call("stop_daemon", other)
        if state is not None and state not in running:
            try:
                await self._ipvs.call("start_daemon", state, self.sync.kernel_interface, self.sync.syncid)
            except OSError as e:
                log.error("starting the kernel %s sync daemon on %s failed: %s", state, self.sync.kernel_interface, e)

    # --- queries --------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        if self.role == Role.PRIMARY:
            return True
        return bool(getattr(self.relay, "caught_up", False))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": getattr(self.relay, "name", "idle"), "connections": len(self.table),
                               "caught_up": self.caught_up, "primary": self.primary, "switches": self.switches}
        if self.relay is not None:
            out["relay"] = self.relay.stats().get("relay", {})
        if self.state is not None:
            out["state"] = self.state.stats()
        return out


def watch_caught_up(switch: SyncSwitch, report: Callable[[bool], None], period: float = 0.2) -> asyncio.Task[None]:
    """Tell failover whenever `caught_up` changes."""

    async def loop() -> None:
        last: bool | None = None
        while True:
            now = switch.caught_up
            if now != last:
                report(now)
                last = now
            await asyncio.sleep(period)

    return asyncio.get_running_loop().create_task(loop(), name="sync-caught-up")
