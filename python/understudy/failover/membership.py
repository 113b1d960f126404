"""The cluster's members as the election sees them, from the heartbeat engine.

Builds the engine's paths from the cluster config (each unicast path binds
this node's address on it and sends to every peer's), advertises this node's
election state, and turns the peers the engine hears into `NodeState`s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from understudy.config.cluster import ClusterConfig
from understudy.failover.heartbeat import (
    BroadcastPath,
    Heartbeat,
    HeartbeatConfig,
    HeartbeatEvent,
    MulticastPath,
    SerialPath,
    UnicastPath,
)
from understudy.failover.policy import Flags, NodeState, Role

__all__ = ["Membership", "heartbeat_config", "next_incarnation"]

log = logging.getLogger("understudy.failover")

#: The election's flags live in the low byte; a relayed switch target (id + 1) in bits 16-21.
FLAG_MASK = 0xFF
HANDOVER_SHIFT = 16
HANDOVER_MASK = 0x3F

ROLE_NAMES = {Role.INIT: "init", Role.BACKUP: "backup", Role.PRIMARY: "primary", Role.FAULT: "fault",
              Role.STOPPING: "stopping"}
ROLES_BY_NAME = {v: k for k, v in ROLE_NAMES.items()}


def next_incarnation(config: ClusterConfig, *, now: float | None = None) -> int:
    """This start's incarnation: larger than the last one this node used.

    Peers reject frames of an older incarnation as replays, so two restarts
    within one second must not reuse the wall-clock second: the last value is
    kept on disk and the next is max(seconds now, last + 1)."""
    path = Path(config.state_dir) / f"incarnation-{config.id}-{config.node}"
    try:
        last = int(path.read_text().strip())
    except (OSError, ValueError):
        last = 0
    value = max(int(time.time() if now is None else now), last + 1) & 0xFFFFFFFF
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{value}\n")
        tmp.replace(path)
    except OSError as e:
        log.warning("cannot keep the incarnation in %s (%s): a restart within a second may be "
                    "rejected by peers until its sequence catches up", path, e.strerror)
    return value


def heartbeat_config(config: ClusterConfig) -> HeartbeatConfig:
    """The engine's settings for this node of `config`."""
    paths: list[Any] = []
    for p in config.paths:
        if p.kind == "unicast":
            me = config.me.addresses[p.name]
            peers = [(str(n.addresses[p.name]), p.port) for n in config.peers]
            paths.append(UnicastPath(p.name, str(me), p.port, peers, p.interface))
        elif p.kind == "multicast":
            assert p.group is not None and p.interface is not None
            paths.append(MulticastPath(p.name, str(p.group), p.port, p.interface, p.ttl))
        elif p.kind == "broadcast":
            assert p.interface is not None
            paths.append(BroadcastPath(p.name, p.interface, p.port))
        else:
            assert p.device is not None
            paths.append(SerialPath(p.name, p.device, p.baud))
    return HeartbeatConfig(
        cluster=config.id,
        node=config.node,
        peers=[n.id for n in config.peers],
        keys={config.key_id: config.key},
        current_key=config.key_id,
        paths=paths,
        keepalive_ms=config.interval_ms,
        warn_ms=config.warn_ms,
        dead_ms=config.dead_ms,
        initdead_ms=config.initdead_ms,
        rt_priority=config.rt_priority,
        incarnation=next_incarnation(config),
    )


def encode_flags(state: NodeState) -> int:
    handover = 0 if state.handover is None else (state.handover + 1) & HANDOVER_MASK
    return (int(state.flags) & FLAG_MASK) | (handover << HANDOVER_SHIFT)


def decode_flags(value: int) -> tuple[Flags, int | None]:
    handover = (value >> HANDOVER_SHIFT) & HANDOVER_MASK
    return Flags(value & FLAG_MASK), (handover - 1 if handover else None)


class Membership:
    """The heartbeat engine behind the failover node's `HeartbeatPort`."""

    def __init__(self, config: ClusterConfig, *, clock: Any = time.monotonic) -> None:
        self.config = config
        self.heartbeat = Heartbeat(heartbeat_config(config), on_event=self._event)
        self._changed = asyncio.Event()
        self._clock = clock
        self._started: float | None = None
        self.events: list[HeartbeatEvent] = []

    def _event(self, event: HeartbeatEvent) -> None:
        self._changed.set()

    async def start(self) -> None:
        if self._started is None:
            self.heartbeat.start()
            self._started = self._clock()

    async def stop(self) -> None:
        self.heartbeat.stop()
        self._started = None

    def advertise(self, state: NodeState, *, primary: int | None, now: bool) -> None:
        self.heartbeat.advertise(
            role=ROLE_NAMES[state.role],
            configured_priority=self.config.me.priority,
            effective_priority=state.effective,
            flags=encode_flags(state),
            primary=primary,
            send_now=now,
        )

    def peers(self) -> list[NodeState]:
        out = []
        for view in self.heartbeat.peers():
            if not view.alive or view.state is None:
                continue
            flags, handover = decode_flags(view.state.flags)
            out.append(NodeState(view.node, ROLES_BY_NAME.get(view.state.role, Role.INIT),
                                 view.state.effective_priority, flags, handover, view.state.primary))
        return out

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def initial_wait_over(self) -> bool:
        """Decide only after the initial dead time, or once every peer has been heard."""
        if self._started is None:
            return False
        if (self._clock() - self._started) * 1000 >= self.config.initdead_ms:
            return True
        views = self.heartbeat.peers()
        return bool(views) and all(v.alive for v in views)

    def status(self) -> dict[str, Any]:
        stats = self.heartbeat.stats()
        views = self.heartbeat.peers()
        return {
            "peers_heard_per_path": {
                p.name: sum(1 for v in views if v.paths.get(p.name, (False, None))[0]) for p in self.config.paths
            },
            "rt_granted": stats.get("rt_granted"),
            "lateness": stats.get("lateness"),
            "counters": {k: v for k, v in stats.items() if k not in ("lateness",)},
        }
