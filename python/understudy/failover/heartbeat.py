"""The heartbeat, for asyncio: engine events as dataclasses.

The engine (Rust, its own thread, optionally SCHED_FIFO) sends this node's
advert on every path each `keepalive_ms` and watches the peers' silence.
This module only turns its events into the dataclasses below and hands them
out, from the event loop, when the engine's eventfd is readable::

    hb = Heartbeat(HeartbeatConfig(cluster=1, node=0, peers=[1, 2], keys={1: key},
                                   paths=[MulticastPath("eth1", "239.0.0.18", 694, "eth1")],
                                   keepalive_ms=100, warn_ms=300, dead_ms=500, initdead_ms=2000))
    hb.advertise(role="backup", configured_priority=100, effective_priority=100)
    hb.start()                      # inside a running loop: events are delivered as they come
    async for event in hb.events():
        match event:
            case PeerDead(node=n): ...

Node ids are 0-31. A peer is dead only when every path has been silent for
`dead_ms`; a path is down for a peer when that path alone has been.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from understudy._core import HeartbeatEngine

__all__ = [
    "BroadcastPath",
    "GATEWAYS_OK",
    "Heartbeat",
    "HeartbeatConfig",
    "HeartbeatEvent",
    "MulticastPath",
    "PUBLIC_UP",
    "PathDown",
    "PathUp",
    "PeerDead",
    "PeerRestarted",
    "PeerState",
    "PeerStateChanged",
    "PeerUp",
    "PeerView",
    "PeerWarn",
    "SYNC_CAUGHT_UP",
    "SerialPath",
    "UnicastPath",
]

#: Health flag: every public interface is up.
PUBLIC_UP = 1 << 0
#: Health flag: the configured gateways answer.
GATEWAYS_OK = 1 << 1
#: Health flag: the connection table has caught up with the primary's.
SYNC_CAUGHT_UP = 1 << 2

ROLES = ("init", "backup", "primary", "fault", "stopping")


@dataclass(frozen=True, slots=True)
class UnicastPath:
    """UDP from `bind`:`port` to each of `peers` ((address, port) pairs), bound to `device` if given."""

    name: str
    bind: str
    port: int
    peers: Sequence[tuple[str, int]]
    device: str | None = None


@dataclass(frozen=True, slots=True)
class MulticastPath:
    """UDP multicast to `group`:`port` on `interface`."""

    name: str
    group: str
    port: int
    interface: str
    ttl: int = 1


@dataclass(frozen=True, slots=True)
class BroadcastPath:
    """UDP broadcast to 255.255.255.255:`port` out of `interface`."""

    name: str
    interface: str
    port: int


@dataclass(frozen=True, slots=True)
class SerialPath:
    """A serial line: tty `device` in raw mode, frames COBS-encoded."""

    name: str
    device: str
    baud: int = 115200


Path = UnicastPath | MulticastPath | BroadcastPath | SerialPath


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """Who this node is, its keys, paths and timers (milliseconds, as Linux-HA's)."""

    cluster: int
    node: int
    peers: Sequence[int]
    keys: Mapping[int, bytes]
    paths: Sequence[Path]
    current_key: int | None = None
    keepalive_ms: int = 1000
    warn_ms: int = 5000
    dead_ms: int = 10000
    initdead_ms: int = 30000
    #: SCHED_FIFO priority (1-99) for the engine thread; refused quietly (see `stats()["rt_granted"]`).
    rt_priority: int | None = None
    #: Larger after each restart; defaults to the wall clock in seconds.
    incarnation: int | None = None


@dataclass(frozen=True, slots=True)
class PeerState:
    """What a peer advertises."""

    role: str
    configured_priority: int
    effective_priority: int
    flags: int
    #: The nodes the peer hears (itself included).
    members: frozenset[int]
    #: Who the peer believes is primary.
    primary: int | None
    interval_ms: int
    load: tuple[int, ...]

    @property
    def public_up(self) -> bool:
        """Every public interface of the peer is up."""
        return bool(self.flags & PUBLIC_UP)

    @property
    def gateways_ok(self) -> bool:
        """The peer's gateways answer."""
        return bool(self.flags & GATEWAYS_OK)

    @property
    def sync_caught_up(self) -> bool:
        """The peer's connection table has caught up."""
        return bool(self.flags & SYNC_CAUGHT_UP)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PeerState:
        """From the engine's dict."""
        return cls(
            role=d["role"],
            configured_priority=d["configured_priority"],
            effective_priority=d["effective_priority"],
            flags=d["flags"],
            members=frozenset(d["members"]),
            primary=d["primary"],
            interval_ms=d["interval_ms"],
            load=tuple(d["load"]),
        )


@dataclass(frozen=True, slots=True)
class PeerUp:
    """A peer is heard: for the first time (`first`), or again after it was dead."""

    node: int
    incarnation: int
    path: str
    first: bool
    state: PeerState


@dataclass(frozen=True, slots=True)
class PeerDead:
    """Every path silent for `dead_ms`; `silent_ms` None: never heard within `initdead_ms`."""

    node: int
    silent_ms: int | None


@dataclass(frozen=True, slots=True)
class PeerWarn:
    """Silent beyond `warn_ms` on every path, not dead yet (once per silence)."""

    node: int
    silent_ms: int


@dataclass(frozen=True, slots=True)
class PathUp:
    """The peer is heard on `path` again (or first)."""

    node: int
    path: str


@dataclass(frozen=True, slots=True)
class PathDown:
    """The peer has been silent on `path` for `dead_ms`."""

    node: int
    path: str


@dataclass(frozen=True, slots=True)
class PeerStateChanged:
    """What the peer advertises changed (or was first heard); the whole new state."""

    node: int
    incarnation: int
    state: PeerState


@dataclass(frozen=True, slots=True)
class PeerRestarted:
    """The peer restarted: a new incarnation."""

    node: int
    old_incarnation: int
    incarnation: int


HeartbeatEvent = PeerUp | PeerDead | PeerWarn | PathUp | PathDown | PeerStateChanged | PeerRestarted


def event_from_dict(d: Mapping[str, Any]) -> HeartbeatEvent | None:
    """One engine event dict as a dataclass; None for a type this module does not know."""
    kind, node = d["type"], d.get("node", -1)
    if kind == "peer_up":
        return PeerUp(node, d["incarnation"], d["path"], d["first"], PeerState.from_dict(d["state"]))
    if kind == "peer_dead":
        return PeerDead(node, d["silent_ms"])
    if kind == "warn":
        return PeerWarn(node, d["silent_ms"])
    if kind == "path_up":
        return PathUp(node, d["path"])
    if kind == "path_down":
        return PathDown(node, d["path"])
    if kind == "peer_state":
        return PeerStateChanged(node, d["incarnation"], PeerState.from_dict(d["state"]))
    if kind == "peer_restarted":
        return PeerRestarted(node, d["old_incarnation"], d["incarnation"])
    return None


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer now: alive, its incarnation and state once heard, per path (alive, ms since heard)."""

    node: int
    alive: bool
    incarnation: int | None
    state: PeerState | None
    paths: Mapping[str, tuple[bool, int | None]] = field(default_factory=dict)
    last_heard_ms: int | None = None


class Heartbeat:
    """The heartbeat of this node, driven by the engine's thread; idempotent `start()`/`stop()`.

    Events go to `on_event` if given (called from the event loop), otherwise
    to `events()` / `next_event()`. Outside an event loop, `poll()` drains them.
    """

    __slots__ = ("config", "_engine", "_loop", "_queue", "_on_event", "_advert")

    def __init__(self, config: HeartbeatConfig, on_event: Callable[[HeartbeatEvent], None] | None = None) -> None:
        self.config = config
        self._engine: HeartbeatEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[HeartbeatEvent] = asyncio.Queue()
        self._on_event = on_event
        self._advert: dict[str, Any] = {"role": "init", "configured_priority": 0, "effective_priority": 0}

    def advertise(
        self,
        *,
        role: str,
        configured_priority: int,
        effective_priority: int,
        flags: int = 0,
        primary: int | None = None,
        load: Sequence[int] = (),
        send_now: bool = True,
    ) -> None:
        """What this node tells the others from now on; sent at once unless `send_now` is false."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self._advert = dict(
            role=role,
            configured_priority=configured_priority,
            effective_priority=effective_priority,
            flags=flags,
            primary=primary,
            load=list(load),
        )
        if self._engine is not None:
            self._engine.set_advert(**self._advert, send_now=send_now)

    def set_keys(self, keys: Mapping[int, bytes], current_key: int | None = None) -> None:
        """Rotate keys without a flag day: add the new key on every node, then make it
        current on every node, then drop the old one. Applies at once if running."""
        if self._engine is not None:
            self._engine.set_keys(sorted(keys.items()), current_key)
        self.config = replace(self.config, keys=dict(keys), current_key=current_key)

    def start(self) -> None:
        """Open the paths and start the engine; inside a running loop, deliver events from it."""
        if self._engine is not None:
            return
        c = self.config
        incarnation = c.incarnation if c.incarnation is not None else int(time.time()) & 0xFFFFFFFF
        engine = HeartbeatEngine(
            cluster=c.cluster,
            node=c.node,
            incarnation=incarnation,
            keys=sorted(c.keys.items()),
            peers=list(c.peers),
            current_key=c.current_key,
            keepalive_ms=c.keepalive_ms,
            warn_ms=c.warn_ms,
            dead_ms=c.dead_ms,
            initdead_ms=c.initdead_ms,
            rt_priority=c.rt_priority,
        )
        for p in c.paths:
            if isinstance(p, UnicastPath):
                engine.add_unicast_path(p.name, p.bind, p.port, list(p.peers), p.device)
            elif isinstance(p, MulticastPath):
                engine.add_multicast_path(p.name, p.group, p.port, p.interface, p.ttl)
            elif isinstance(p, BroadcastPath):
                engine.add_broadcast_path(p.name, p.interface, p.port)
            else:
                engine.add_serial_path(p.name, os.fspath(p.device), p.baud)
        engine.set_advert(**self._advert, send_now=False)
        engine.start()
        self._engine = engine
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        if self._loop is not None:
            self._loop.add_reader(engine.fileno(), self._deliver)

    def stop(self) -> None:
        """Stop the engine and close its paths."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(engine.fileno())
            self._loop = None
        engine.stop()

    @property
    def running(self) -> bool:
        """Whether the engine runs."""
        return self._engine is not None and self._engine.running()

    def poll(self) -> list[HeartbeatEvent]:
        """Drain the engine's events now (without an event loop); also passed to `on_event`."""
        if self._engine is None:
            return []
        events = [e for d in self._engine.drain() if (e := event_from_dict(d)) is not None]
        if self._on_event is not None:
            for e in events:
                self._on_event(e)
        return events

    def _deliver(self) -> None:
        events = self.poll()
        if self._on_event is None:
            for e in events:
                self._queue.put_nowait(e)

    async def events(self) -> AsyncIterator[HeartbeatEvent]:
        """Events as they come, until cancelled."""
        while True:
            yield await self._queue.get()

    async def next_event(self, timeout: float | None = None) -> HeartbeatEvent:
        """The next event; `TimeoutError` after `timeout` seconds."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    def peers(self) -> list[PeerView]:
        """Every configured peer now."""
        if self._engine is None:
            return []
        return [
            PeerView(
                node=p["node"],
                alive=p["alive"],
                incarnation=p["incarnation"],
                state=PeerState.from_dict(p["state"]) if p["state"] is not None else None,
                paths={name: (alive, ago) for name, (alive, ago) in p["paths"].items()},
                last_heard_ms=p["last_heard_ms"],
            )
            for p in self._engine.peers()
        ]

    def stats(self) -> dict[str, Any]:
        """Per path: sent, send_errors, received, dropped by reason (bad_tag: forged, replayed,
        wrong_cluster, ...); lateness (count, max_us, p50_us, p99_us, p999_us, overruns);
        rt_granted, rt_error; cpu_us, wall_us; events_lost."""
        return self._engine.stats() if self._engine is not None else {}

    def reset_lateness(self) -> None:
        """Forget the timer lateness measured so far."""
        if self._engine is not None:
            self._engine.reset_lateness()
