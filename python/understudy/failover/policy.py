"""Who holds the virtual IPs: the election, decided from what heartbeats say.

Pure and deterministic: `decide()` sees this node's state and the latest state
each live peer advertised, and returns the role this node should take now.
Every node runs the same rule on (nearly) the same view, so they agree without
a coordinator; where views differ for a moment (asymmetric loss, a partition
healing) two nodes may both claim, and the dual-primary rule settles it within
one heartbeat.

The rule, in order:

1. A stopping node stops. A node without quorum (it sees at most half of the
   configured nodes; exactly half counts only with the tie-breaker reachable)
   is FAULT: it must hold nothing, or both halves of a split would. Two nodes
   without a tie-breaker run without quorum, as classic heartbeat did.
2. A node that is not *eligible* (public interfaces down, gateway unreachable,
   effective priority 0) is FAULT; one in manual standby is BACKUP.
3. If eligible primaries are visible, the *holder* is the best of them by
   (pinned, rank): the others yield (dual-primary healing). The holder yields
   too when a member asks to take over (manual switch), or -- with failback on
   and the holder not pinned by a manual switch -- when a better-ranked member
   is ready to preempt (caught up and eligible for the failback delay).
   Yielding first and claiming after, instead of claiming over the holder,
   means a planned handover never puts the VIPs on two nodes at once.
4. If no eligible primary is visible, the best eligible member by
   (takeover request, rank) becomes primary; the others are backups -- unless
   a peer still follows a primary we do not hear (we have just rejoined, or it
   has just died and the peer will notice within one dead time): then we wait,
   rather than take the VIPs from a live primary.

Rank is (effective priority, sync caught up, lower node id): priority decides,
a backup with the full connection table beats one without, the id breaks ties.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = [
    "Decision",
    "Election",
    "Flags",
    "NodeState",
    "Policy",
    "Role",
    "decide",
    "has_quorum",
]


class Role(enum.IntEnum):
    """A node's role, as it advertises it in its heartbeats."""

    INIT = 0
    BACKUP = 1
    PRIMARY = 2
    FAULT = 3
    STOPPING = 4


class Flags(enum.IntFlag):
    """What a node advertises about itself besides role and priority."""

    NONE = 0
    #: Every tracked public interface is up.
    PUBLIC_UP = 1 << 0
    #: Every tracked gateway (ping node) answers.
    GATEWAY_UP = 1 << 1
    #: Its connection table holds the primary's state (sync caught up).
    CAUGHT_UP = 1 << 2
    #: Manual standby: never make this node primary.
    STANDBY = 1 << 3
    #: A manual switch asked this node to take over.
    TAKEOVER = 1 << 4
    #: Primary by a manual switch: failback does not preempt it.
    PINNED = 1 << 5
    #: Ready and wanting to reclaim the primary role (failback).
    PREEMPT = 1 << 6
    #: Just gave up the primary role: its announcements may still point the
    #: neighbours at it, so the holder should announce again.
    REANNOUNCE = 1 << 7

    HEALTHY = PUBLIC_UP | GATEWAY_UP | CAUGHT_UP


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node's advertised state: this node's own, or a peer's last heartbeat."""

    node: int
    role: Role = Role.INIT
    #: Priority after tracking penalties (1..255 to be eligible; 0 never wins).
    effective: int = 100
    flags: Flags = Flags.HEALTHY
    #: A manual switch this node relays: the node it asks to take over.
    handover: int | None = None
    #: Who this node believes is primary (from its heartbeat), None: nobody.
    primary_view: int | None = None

    @property
    def eligible(self) -> bool:
        """May hold the virtual IPs: healthy public side, not stopping, not in standby."""
        need = Flags.PUBLIC_UP | Flags.GATEWAY_UP
        return (
            self.role != Role.STOPPING
            and self.flags & need == need
            and not self.flags & Flags.STANDBY
            and self.effective > 0
        )

    @property
    def rank(self) -> tuple[int, bool, int]:
        """Greater is better: priority, then a full table, then the lower node id."""
        return (self.effective, bool(self.flags & Flags.CAUGHT_UP), -self.node)


@dataclass(frozen=True, slots=True)
class Policy:
    """The cluster-wide settings every node must share."""

    #: Configured node ids (all of them, not only those alive).
    nodes: frozenset[int]
    #: The recovered better node reclaims the primary role (else it stays backup).
    auto_failback: bool = False
    #: Seconds a better node must have been ready before it preempts.
    failback_delay: float = 0.0
    #: Hold VIPs only with a majority of `nodes` in sight.
    quorum: bool = True
    #: A tie-breaker (witness or ping node) decides an exact half (two-node clusters).
    tiebreaker: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The role to take and why, in words an operator reads in a log."""

    role: Role
    reason: str


def has_quorum(policy: Policy, members: int, tiebreaker_up: bool) -> bool:
    """A strict majority of the configured nodes, or exactly half with the tie-breaker."""
    total = len(policy.nodes)
    if not policy.quorum or total <= 1:
        return True
    if total == 2 and not policy.tiebreaker:
        # Without a witness, a lone survivor of two could never take over: run as
        # classic two-node heartbeat (a split is healed when the nodes meet again).
        return True
    if 2 * members > total:
        return True
    return 2 * members == total and policy.tiebreaker and tiebreaker_up


def decide(
    me: NodeState,
    peers: Iterable[NodeState],
    policy: Policy,
    *,
    tiebreaker_up: bool = False,
) -> Decision:
    """The role `me` should take now, given the live peers' latest states.

    Time plays no part here: `Election` sets PREEMPT once this node has been
    ready for the failback delay.
    """
    members = [me] + [p for p in peers if p.node in policy.nodes and p.node != me.node]
    if me.role == Role.STOPPING:
        return Decision(Role.STOPPING, "stopping")
    if not has_quorum(policy, len(members), tiebreaker_up):
        return Decision(Role.FAULT, f"no quorum: {len(members)} of {len(policy.nodes)} nodes in sight")
    if not me.eligible:
        if me.flags & Flags.STANDBY and me.flags & Flags.PUBLIC_UP and me.flags & Flags.GATEWAY_UP:
            return Decision(Role.BACKUP, "standby")
        return Decision(Role.FAULT, _why_ineligible(me))

    candidates = [m for m in members if m.eligible]
    primaries = [m for m in candidates if m.role == Role.PRIMARY]
    if primaries:
        holder = max(primaries, key=lambda m: (bool(m.flags & Flags.PINNED), m.rank))
        if holder.node != me.node:
            if me.role == Role.PRIMARY:
                return Decision(Role.BACKUP, f"node {holder.node} is also primary and outranks us")
            return Decision(Role.BACKUP, f"node {holder.node} is primary")
        taker = _takeover_request(candidates, me)
        if taker is not None:
            return Decision(Role.BACKUP, f"handing over to node {taker.node} (manual switch)")
        if policy.auto_failback and not me.flags & Flags.PINNED:
            better = [m for m in candidates if m.flags & Flags.PREEMPT and m.rank > me.rank]
            if better:
                return Decision(Role.BACKUP, f"failing back to node {max(better, key=lambda m: m.rank).node}")
        return Decision(Role.PRIMARY, "primary")

    # A peer still follows a primary we do not hear: we may have just (re)joined and
    # not heard it yet, or it may have just died. Claiming now could take the VIPs
    # from a live primary; wait until we hear it, or the peer stops following it.
    followed = {m.primary_view for m in members if m.node != me.node and m.primary_view is not None}
    unseen = followed - {m.node for m in members} - {me.node}
    if unseen:
        return Decision(Role.BACKUP, f"node {min(unseen)} is primary for our peers; waiting to hear it")
    best = max(candidates, key=lambda m: (bool(m.flags & Flags.TAKEOVER), m.rank))
    if best.node == me.node:
        return Decision(Role.PRIMARY, "no primary in sight; we rank first")
    return Decision(Role.BACKUP, f"no primary in sight; node {best.node} ranks first")


def _takeover_request(candidates: list[NodeState], me: NodeState) -> NodeState | None:
    asking = [m for m in candidates if m.flags & Flags.TAKEOVER and m.node != me.node]
    return max(asking, key=lambda m: m.rank) if asking else None


def _why_ineligible(me: NodeState) -> str:
    if me.role == Role.STOPPING:
        return "stopping"
    if not me.flags & Flags.PUBLIC_UP:
        return "a tracked public interface is down"
    if not me.flags & Flags.GATEWAY_UP:
        return "a tracked gateway does not answer"
    return "effective priority is 0"


@dataclass(slots=True)
class Election:
    """This node's side of the election over time: flags it advertises and the
    failback timer, around the pure `decide()`.

    Feed it the current peer view with `update(now, peers)`; it returns the
    decision and keeps `state` (what to advertise) in step: PREEMPT once ready
    to fail back, TAKEOVER from a manual switch until the role is ours, then
    PINNED while we hold it.
    """

    policy: Policy
    state: NodeState
    #: Monotonic time since which this node has been eligible and caught up (None: it is not).
    ready_since: float | None = None
    decision: Decision = field(default_factory=lambda: Decision(Role.INIT, "starting"))

    def update(self, now: float, peers: Iterable[NodeState], *, tiebreaker_up: bool = False) -> Decision:
        """Decide again; returns the decision (its role also set in `state`)."""
        peers = list(peers)
        if any(p.handover == self.state.node for p in peers) and self.state.role != Role.PRIMARY:
            self.switch_here()  # a switch asked on another node, naming us
        me = self.state
        if me.handover is not None:
            target = next((p for p in peers if p.node == me.handover), None)
            if target is None or target.role == Role.PRIMARY:
                me = replace(me, handover=None)  # done, or the target is gone
        ready = me.eligible and bool(me.flags & Flags.CAUGHT_UP)
        if not ready:
            self.ready_since = None
        elif self.ready_since is None:
            self.ready_since = now
        preempt = (
            self.policy.auto_failback
            and self.ready_since is not None
            and now - self.ready_since >= self.policy.failback_delay
        )
        flags = (me.flags | Flags.PREEMPT) if preempt else (me.flags & ~Flags.PREEMPT)
        me = replace(me, flags=flags)
        decision = decide(me, peers, self.policy, tiebreaker_up=tiebreaker_up)
        flags = me.flags
        if decision.role == Role.PRIMARY:
            alone = not any(p.role == Role.PRIMARY and p.node != me.node for p in peers)
            if flags & Flags.TAKEOVER and alone:
                # The switch is done: hold the role against failback until we lose it.
                flags = (flags & ~Flags.TAKEOVER) | Flags.PINNED
        elif decision.role in (Role.FAULT, Role.STOPPING) or (
            decision.role == Role.BACKUP and me.role == Role.PRIMARY
        ):
            flags &= ~Flags.PINNED
            if decision.role != Role.BACKUP:
                flags &= ~Flags.TAKEOVER
        if decision.role == Role.PRIMARY:
            view: int | None = me.node
        else:
            holders = [p for p in peers if p.role == Role.PRIMARY and p.eligible]
            view = max(holders, key=lambda p: (bool(p.flags & Flags.PINNED), p.rank)).node if holders else None
        self.state = replace(me, role=decision.role, flags=flags, primary_view=view)
        self.decision = decision
        return decision

    def set_health(self, *, effective: int | None = None, **flags: bool) -> None:
        """Change the advertised priority or health flags (PUBLIC_UP=..., CAUGHT_UP=...)."""
        value = self.state.flags
        for name, on in flags.items():
            bit = Flags[name]
            value = (value | bit) if on else (value & ~bit)
        self.state = replace(
            self.state, flags=value, effective=self.state.effective if effective is None else effective
        )

    def switch_here(self) -> None:
        """Manual switch to this node: ask the holder to hand over."""
        self.set_health(TAKEOVER=True, STANDBY=False)

    def switch_to(self, node: int) -> None:
        """Manual switch to another node: name it in our heartbeats until it holds the role."""
        if node == self.state.node:
            self.switch_here()
        else:
            self.state = replace(self.state, handover=node)

    def stop(self) -> None:
        """Advertise STOPPING: peers take over at once instead of waiting for the dead time."""
        self.state = replace(self.state, role=Role.STOPPING, flags=self.state.flags & ~(Flags.PINNED | Flags.TAKEOVER))
        self.decision = Decision(Role.STOPPING, "stopping")
