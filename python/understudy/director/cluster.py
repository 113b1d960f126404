"""Wiring of the cluster subsystems: heartbeat membership, election, VIPs,
tracking and the sync roles, built from the config."""

from __future__ import annotations

import asyncio
from typing import Any

from understudy.config.cluster import ClusterConfig
from understudy.config.director import DirectorConfig
from understudy.director.sync import SyncSwitch, watch_caught_up
from understudy.events import EventBus
from understudy.failover.membership import Membership
from understudy.failover.node import FailoverNode
from understudy.failover.policy import Role
from understudy.failover.tracking import Tracking
from understudy.health import Monitor
from understudy.vip import AnnounceSettings, InterfaceTracker, Vip, VipEvent, VipManager

__all__ = ["ClusterSubsystem", "build_failover", "build_sync"]


class Vips:
    """The VIP manager as the failover node's `VipPort`, its steps published as events."""

    def __init__(self, config: ClusterConfig, events: EventBus) -> None:
        self.events = events
        a = config.announce
        vips = [Vip.parse(str(v.address), v.interface, v.label) for v in config.vips]
        self.manager = VipManager(vips, settings=AnnounceSettings(repeat=a.repeat, interval=a.interval,
                                                                   refresh=a.refresh), on_event=self._event)

    def _event(self, e: VipEvent) -> None:
        if e.kind in ("added", "removed", "error"):
            self.events.publish("vip", change=e.kind, vip=str(e.vip) if e.vip else None, detail=e.detail)

    async def start(self) -> None:
        await self.manager.start()
        # A node that starts holds nothing: addresses left by a killed predecessor go.
        await self.manager.release()

    async def stop(self) -> None:
        await self.manager.stop()

    async def acquire(self) -> None:
        await self.manager.acquire()

    async def announce(self) -> None:
        await self.manager.announce()

    async def release(self) -> None:
        await self.manager.release()

    def status(self) -> dict[str, Any]:
        return {"held": [str(v) for v in self.manager.vips] if self.manager.held else [],
                "configured": [str(v) for v in self.manager.vips]}


class ClusterSubsystem:
    """Failover with its helpers, started and stopped as one subsystem."""

    def __init__(self, config: ClusterConfig, events: EventBus, monitor: Monitor, sync: SyncSwitch | None) -> None:
        self.config = config
        self.vips = Vips(config, events)
        self.membership = Membership(config)
        self.sync = sync
        self.node = FailoverNode(config, self.membership, self.vips, events=events,
                                 on_role=self._on_role, tiebreaker_up=lambda: self.tracking.tiebreaker_up)
        self.links = InterfaceTracker(config.tracking.interfaces, on_change=self._links_changed)
        self.tracking = Tracking(config.tracking, config.me.priority, monitor, self.node.set_health, self.links,
                                 str(config.tiebreaker) if config.tiebreaker is not None else None)
        self._caught_up: asyncio.Task[None] | None = None

    def _links_changed(self, _state: object) -> None:
        self.tracking.links_changed()

    async def _on_role(self, role: Role, primary: int | None) -> None:
        if self.sync is not None:
            await self.sync.on_role(role, primary)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self.node.task

    async def start(self) -> None:
        await self.vips.start()
        await self.links.start()
        await self.tracking.start()
        if self.sync is not None:
            self._caught_up = watch_caught_up(self.sync, lambda ok: self.node.set_health(CAUGHT_UP=ok))
        else:
            self.node.set_health(CAUGHT_UP=True)
        await self.node.start()

    async def stop(self) -> None:
        await self.node.stop()
        if self._caught_up is not None:
            self._caught_up.cancel()
            self._caught_up = None
        await self.tracking.stop()
        await self.links.stop()
        await self.vips.stop()

    def switch_to(self, node: int) -> None:
        self.node.switch_to(node)

    def status(self) -> dict[str, Any]:
        return self.node.status()


def build_sync(config: DirectorConfig, ipvs: Any = None) -> SyncSwitch:
    return SyncSwitch(config, ipvs=ipvs)


def build_failover(config: ClusterConfig, events: EventBus, sync: SyncSwitch | None,
                   monitor: Monitor | None = None) -> ClusterSubsystem:
    return ClusterSubsystem(config, events, monitor or Monitor(), sync)
