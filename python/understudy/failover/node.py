"""One director's failover: heartbeats in, election, VIPs and sync roles out.

The heartbeat engine (a core thread) tells us who is alive and what each peer
advertises; `Election` turns that into our role; a change of role moves the
virtual IPs, switches the sync role, runs the notify scripts and publishes an
event. We decide again on every heartbeat event, every tracking change and
once per heartbeat interval (the failback delay is a matter of time alone).

Acting on a role is ordered for safety: a node giving up the primary role
advertises it first and releases its addresses at once; a node taking it
adds the addresses, announces them, then switches sync. Releasing is never
delayed by a notify script or a slow peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from understudy.config.cluster import ClusterConfig
from understudy.events import EventBus
from understudy.failover.notify import STATE_NAMES, Notifier
from understudy.failover.policy import Decision, Election, Flags, NodeState, Policy, Role

__all__ = ["FailoverNode", "HeartbeatPort", "VipPort", "policy_of"]

log = logging.getLogger("understudy.failover")

#: How long a node that gave up the primary role asks the holder to announce.
REANNOUNCE_FOR = 1.0


class HeartbeatPort(Protocol):
    """What the node needs of the heartbeat engine."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def advertise(self, state: NodeState, *, primary: int | None, now: bool) -> None: ...
    def peers(self) -> list[NodeState]: ...
    def wait_changed(self) -> Awaitable[None]: ...
    def initial_wait_over(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...


class VipPort(Protocol):
    """What the node needs of the VIP manager."""

    async def acquire(self) -> None: ...
    async def announce(self) -> None: ...
    async def release(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


def policy_of(config: ClusterConfig) -> Policy:
    return Policy(
        nodes=frozenset(n.id for n in config.nodes),
        auto_failback=config.auto_failback,
        failback_delay=config.failback_delay,
        quorum=config.quorum,
        tiebreaker=config.tiebreaker is not None,
    )


class FailoverNode:
    """The failover subsystem of one director; `start()` / `stop()` are idempotent."""

    def __init__(
        self,
        config: ClusterConfig,
        heartbeat: HeartbeatPort,
        vips: VipPort,
        *,
        events: EventBus | None = None,
        on_role: Callable[[Role, int | None], Awaitable[None]] | None = None,
        tiebreaker_up: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.heartbeat, self.vips = heartbeat, vips
        self.events = events or EventBus()
        self.notifier = Notifier(config.notify, node=config.node, cluster=config.id)
        self.election = Election(policy_of(config), NodeState(config.node, effective=config.me.priority))
        self._on_role = on_role
        self._tiebreaker_up = tiebreaker_up
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.role = Role.INIT
        self.known_primary: int | None = None
        self._advertised: NodeState | None = None
        self._advertised_primary: int | None = None
        self._seen: set[int] = set()
        self._asking: set[int] = set()
        self._dual = False
        self._yielded_at: float | None = None
        self.since = clock()
        self.transitions = 0

    # --- inputs -------------------------------------------------------------

    def set_health(self, *, effective: int | None = None, **flags: bool) -> None:
        """Tracking changed our priority or health flags: decide again now."""
        self.election.set_health(effective=effective, **flags)
        self._wake.set()

    def switch_here(self) -> None:
        """Manual switch: ask the current primary to hand over to this node."""
        self.election.switch_here()
        self.events.publish("switch", node=self.config.node)
        self._wake.set()

    def switch_to(self, node: int) -> None:
        """Manual switch to `node`, asked here: our heartbeats name it until it holds the role."""
        if node not in self.election.policy.nodes:
            raise ValueError(f"no node {node} in the cluster (nodes: {sorted(self.election.policy.nodes)})")
        self.election.switch_to(node)
        self.events.publish("switch", to=node, asked_on=self.config.node)
        self._wake.set()

    def standby(self, on: bool) -> None:
        """Manual standby: this node stays backup (handing over first if primary)."""
        self.election.set_health(STANDBY=on)
        self._wake.set()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self.notifier.start()
        # The engine's very first frame must carry our priority and health: a peer
        # deciding on it would otherwise see priority 0 and count us out.
        self._advertise(now=False)
        await self.heartbeat.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="failover")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running loop (the supervisor restarts the subsystem if it dies)."""
        return self._task

    async def stop(self) -> None:
        """Advertise STOPPING (peers take over at once), release everything, stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.election.stop()
        self._advertise(now=True)
        await self._enter(Role.STOPPING, Decision(Role.STOPPING, "stopping"))
        await asyncio.sleep(self.config.interval_ms / 1000)  # let the STOPPING frame go out
        await self.heartbeat.stop()
        await self.notifier.stop()

    # --- the loop -----------------------------------------------------------

    async def _loop(self) -> None:
        # Heartbeat events wake us for every change; the timer is only for what time
        # alone decides (initial dead time, failback delay): no need to follow a 2 ms
        # heartbeat, which would wake Python 500 times a second for nothing.
        period = max(self.config.interval_ms / 1000, 0.05)
        changed: asyncio.Future[Any] | None = None
        woken: asyncio.Task[bool] | None = None
        try:
            while True:
                if self.heartbeat.initial_wait_over():
                    await self.decide()
                if changed is None or changed.done():
                    changed = asyncio.ensure_future(self.heartbeat.wait_changed())
                if woken is None or woken.done():
                    self._wake.clear()
                    woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({changed, woken}, timeout=period, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (changed, woken):
                if f is not None:
                    f.cancel()

    async def decide(self) -> Decision:
        """Run the election on the current view and act on a change of role."""
        decision = self.election.update(
            self._clock(), self.heartbeat.peers(), tiebreaker_up=self._tiebreaker_up()
        )
        if decision.role != self.role:
            # Act, then tell: a node giving up the VIPs has released them before
            # any peer can read its new role and take them.
            await self._enter(decision.role, decision)
        elif self.election.state != self._advertised or self.primary != self._advertised_primary:
            # Flags, priority or the primary we follow changed: tell at once.
            self._advertise(now=True)
        peers = self.heartbeat.peers()
        seen = {p.node for p in peers}
        asking = {p.node for p in peers if p.flags & Flags.REANNOUNCE}
        if self.role == Role.PRIMARY:
            dual = [p.node for p in peers if p.role == Role.PRIMARY]
            if dual and not self._dual:
                self.events.publish("dual-primary", node=self.config.node, others=dual, kept=True)
            if (dual and not self._dual) or seen - self._seen or asking - self._asking:
                # Another primary met, a peer (re)joined, or one just gave the role up:
                # it may have pointed the neighbours at itself. Announce ours again.
                await self.vips.announce()
            self._dual = bool(dual)
        self._seen, self._asking = seen, asking
        if self._yielded_at is not None and self._clock() - self._yielded_at > REANNOUNCE_FOR:
            self._yielded_at = None
            self.election.set_health(REANNOUNCE=False)
        if decision.role == self.role and self.primary != self.known_primary and self._on_role is not None:
            # Same role, new primary (a backup among three): follow it.
            self.known_primary = self.primary
            await self._call_on_role(self.role)
        return decision

    async def _call_on_role(self, role: Role) -> None:
        if self._on_role is None:
            return
        try:
            await self._on_role(role, self.primary)
        except Exception:  # the sync roles are another subsystem: log, keep failing over
            log.exception("switching the sync role for %s failed", STATE_NAMES[role])

    def _advertise(self, *, now: bool) -> None:
        self._advertised = self.election.state
        self._advertised_primary = self.primary
        self.heartbeat.advertise(self.election.state, primary=self.primary, now=now)

    @property
    def primary(self) -> int | None:
        """The node we believe holds the VIPs (ourselves included), as of the last decision."""
        return self.election.state.primary_view

    async def _enter(self, role: Role, decision: Decision) -> None:
        old, self.role = self.role, role
        self.since = self._clock()
        self.transitions += 1
        log.warning("role %s -> %s: %s", STATE_NAMES[old], STATE_NAMES[role], decision.reason)
        self.events.publish("role", node=self.config.node, old=STATE_NAMES[old], new=STATE_NAMES[role],
                            reason=decision.reason)
        if old == Role.PRIMARY and role != Role.PRIMARY:
            # Ask whoever holds the role now to announce over our last announcements.
            self._yielded_at = self._clock()
            self.election.set_health(REANNOUNCE=True)
        try:
            if role == Role.PRIMARY:
                await self.vips.acquire()
            elif old == Role.PRIMARY or role in (Role.FAULT, Role.STOPPING):
                await self.vips.release()
        except OSError as e:
            log.error("moving the virtual IPs for %s failed: %s", STATE_NAMES[role], e)
            self.events.publish("vip-error", node=self.config.node, role=STATE_NAMES[role], error=str(e))
        self._advertise(now=True)
        self.known_primary = self.primary
        await self._call_on_role(role)
        self.notifier.changed(old, role, decision.reason)

    # --- queries --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s = self.election.state
        return {
            "node": self.config.node,
            "cluster": self.config.id,
            "role": STATE_NAMES[self.role],
            "reason": self.election.decision.reason,
            "since": round(self._clock() - self.since, 3),
            "priority": self.config.me.priority,
            "effective": s.effective,
            "flags": [f.name for f in Flags if f.name and f in s.flags and f not in (Flags.NONE, Flags.HEALTHY)],
            "peers": [
                {"node": p.node, "role": STATE_NAMES.get(p.role, str(p.role)), "effective": p.effective,
                 "flags": int(p.flags)}
                for p in self.heartbeat.peers()
            ],
            "heartbeat": self.heartbeat.status(),
            "vips": self.vips.status(),
            "transitions": self.transitions,
        }

