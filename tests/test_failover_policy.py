"""The election rule, on a simulated cluster: nodes exchange their states in
rounds over a connectivity matrix, as heartbeats would, and the invariants an
operator relies on are checked -- one primary per quorate partition, none
without quorum, never a primary that lost its public side, handovers that never
put the VIPs on two nodes at once."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from understudy.failover.policy import Election, Flags, NodeState, Policy, Role, decide, has_quorum


class Cluster:
    """N elections and who hears whom; one `round()` is one heartbeat exchange."""

    def __init__(self, priorities: dict[int, int], **policy: object) -> None:
        self.policy = Policy(nodes=frozenset(priorities), **policy)  # type: ignore[arg-type]
        self.nodes = {n: Election(self.policy, NodeState(n, effective=p)) for n, p in priorities.items()}
        self.down: set[int] = set()
        self.cut: set[frozenset[int]] = set()
        self.now = 0.0
        self.history: list[dict[int, Role]] = []

    def hears(self, a: int, b: int) -> bool:
        return a != b and b not in self.down and frozenset((a, b)) not in self.cut

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        self.cut = {frozenset((a, b)) for i, g in enumerate(sets) for h in sets[i + 1 :] for a in g for b in h}

    def round(self, dt: float = 1.0) -> dict[int, Role]:
        self.now += dt
        seen = {n: e.state for n, e in self.nodes.items()}  # everyone decides on the last round's view
        for n, e in self.nodes.items():
            if n in self.down:
                continue
            e.update(self.now, [s for m, s in seen.items() if self.hears(n, m)])
        roles = {n: e.state.role for n, e in self.nodes.items() if n not in self.down}
        self.history.append(roles)
        return roles

    def settle(self, rounds: int = 6) -> dict[int, Role]:
        for _ in range(rounds):
            roles = self.round()
        return roles

    def primaries(self) -> list[int]:
        return [n for n, e in self.nodes.items() if n not in self.down and e.state.role == Role.PRIMARY]

    def kill(self, n: int) -> None:
        self.down.add(n)

    def restart(self, n: int) -> None:
        old = self.nodes[n].state
        self.nodes[n] = Election(self.policy, NodeState(n, effective=old.effective, flags=old.flags & Flags.HEALTHY))
        self.down.discard(n)


def test_highest_priority_becomes_primary_and_backup_takes_over():
    c = Cluster({1: 100, 2: 200, 3: 150})
    c.settle()
    assert c.primaries() == [2]
    c.kill(2)
    c.settle()
    assert c.primaries() == [3]


def test_returning_node_stays_backup_without_failback():
    c = Cluster({1: 200, 2: 100})
    c.settle()
    c.kill(1)
    c.settle()
    assert c.primaries() == [2]
    c.restart(1)
    c.settle(10)
    assert c.primaries() == [2]
    assert c.nodes[1].state.role == Role.BACKUP


def test_failback_waits_for_the_delay_and_never_overlaps():
    c = Cluster({1: 200, 2: 100}, auto_failback=True, failback_delay=5.0)
    c.settle()
    c.kill(1)
    c.settle()
    c.restart(1)
    c.round()
    c.round()
    assert c.primaries() == [2], "preempted before the failback delay"
    c.settle(10)
    assert c.primaries() == [1]
    assert all(sum(r == Role.PRIMARY for r in roles.values()) <= 1 for roles in c.history)


def test_failback_waits_until_caught_up():
    c = Cluster({1: 200, 2: 100}, auto_failback=True)
    c.settle()
    c.kill(1)
    c.settle()
    c.restart(1)
    c.nodes[1].set_health(CAUGHT_UP=False)
    c.settle(10)
    assert c.primaries() == [2]
    c.nodes[1].set_health(CAUGHT_UP=True)
    c.settle(10)
    assert c.primaries() == [1]


def test_lost_public_interface_never_wins():
    c = Cluster({1: 250, 2: 100, 3: 90})
    c.settle()
    assert c.primaries() == [1]
    c.nodes[1].set_health(PUBLIC_UP=False)
    c.settle()
    assert c.primaries() == [2]
    assert c.nodes[1].state.role == Role.FAULT
    assert "interface" in c.nodes[1].decision.reason


def test_unreachable_gateway_never_wins():
    c = Cluster({1: 250, 2: 100})
    c.nodes[1].set_health(GATEWAY_UP=False)
    c.settle()
    assert c.primaries() == [2]


def test_minority_partition_releases():
    c = Cluster({1: 200, 2: 150, 3: 100, 4: 90, 5: 80})
    c.settle()
    assert c.primaries() == [1]
    c.partition({1, 2}, {3, 4, 5})
    c.settle()
    assert c.primaries() == [3]
    assert c.nodes[1].state.role == Role.FAULT
    c.partition()
    c.settle()
    assert c.primaries() == [3]  # no failback configured


def test_two_nodes_need_the_tiebreaker():
    c = Cluster({1: 200, 2: 100}, tiebreaker=True)
    c.settle()
    c.partition({1}, {2})
    c.settle()
    assert c.primaries() == []
    assert not has_quorum(c.policy, 1, tiebreaker_up=False)
    assert has_quorum(c.policy, 1, tiebreaker_up=True)
    without = Cluster({1: 200, 2: 100})
    without.partition({1}, {2})
    without.settle()
    assert sorted(without.primaries()) == [1, 2]  # the classic split brain, when asked for


def test_dual_primary_heals_to_the_better_one():
    c = Cluster({1: 200, 2: 100}, quorum=False)
    c.partition({1}, {2})
    c.settle()
    assert sorted(c.primaries()) == [1, 2]
    c.partition()
    c.round()
    assert c.primaries() == [1]
    assert "outranks" in c.nodes[2].decision.reason


def test_manual_switch_sticks_against_failback():
    c = Cluster({1: 200, 2: 100, 3: 50}, auto_failback=True)
    c.settle()
    assert c.primaries() == [1]
    c.nodes[3].switch_here()
    c.settle()
    assert c.primaries() == [3]
    assert c.nodes[3].state.flags & Flags.PINNED
    assert all(sum(r == Role.PRIMARY for r in roles.values()) <= 1 for roles in c.history)
    c.kill(3)
    c.settle()
    assert c.primaries() == [1]


def test_switch_asked_on_another_node():
    c = Cluster({1: 200, 2: 100, 3: 50})
    c.settle()
    c.nodes[1].switch_to(3)
    c.settle()
    assert c.primaries() == [3]
    assert c.nodes[1].state.handover is None
    assert all(sum(r == Role.PRIMARY for r in roles.values()) <= 1 for roles in c.history)


def test_rejoining_node_waits_to_hear_the_primary_its_peers_follow():
    c = Cluster({0: 250, 1: 200, 2: 100})
    c.settle()
    c.partition({0}, {1, 2})
    c.settle()
    assert c.primaries() == [1] and c.nodes[0].state.role == Role.FAULT
    # Node 0 comes back but hears node 2 before node 1: it must not claim.
    c.cut = {frozenset((0, 1))}
    c.settle()
    assert c.nodes[0].state.role == Role.BACKUP and "waiting to hear" in c.nodes[0].decision.reason
    assert c.primaries() == [1]
    c.partition()
    c.settle()
    assert c.primaries() == [1]


def test_stopping_node_hands_over_without_dead_time():
    c = Cluster({1: 200, 2: 100})
    c.settle()
    c.nodes[1].stop()
    c.round()
    c.round()
    assert c.primaries() == [2]


def test_equal_priorities_break_ties_by_id_then_table():
    me = NodeState(2, effective=100)
    assert decide(me, [NodeState(1, effective=100)], Policy(frozenset({1, 2}))).role == Role.BACKUP
    behind = NodeState(1, effective=100, flags=Flags.PUBLIC_UP | Flags.GATEWAY_UP)
    assert decide(me, [behind], Policy(frozenset({1, 2}))).role == Role.PRIMARY


def test_unknown_nodes_do_not_count_for_quorum():
    me = NodeState(1)
    strangers = [NodeState(n) for n in (7, 8, 9)]
    d = decide(me, strangers, Policy(frozenset({1, 2, 3})))
    assert d.role == Role.FAULT and "quorum" in d.reason


@settings(max_examples=300, deadline=None)
@given(
    prios=st.lists(st.integers(0, 255), min_size=1, max_size=9),
    groups=st.lists(st.integers(0, 2), min_size=9, max_size=9),
    broken=st.lists(st.booleans(), min_size=9, max_size=9),
    failback=st.booleans(),
)
def test_partitions_converge_to_one_primary_per_quorate_side(prios, groups, broken, failback):
    ids = list(range(1, len(prios) + 1))
    c = Cluster(dict(zip(ids, prios)), auto_failback=failback)
    for n, bad in zip(ids, broken):
        if bad:
            c.nodes[n].set_health(PUBLIC_UP=False)
    c.settle(3)
    sides: dict[int, set[int]] = {}
    for n in ids:
        sides.setdefault(groups[n - 1], set()).add(n)
    c.partition(*sides.values())
    c.settle(8)
    for side in sides.values():
        primaries = [n for n in side if c.nodes[n].state.role == Role.PRIMARY]
        quorate = has_quorum(c.policy, len(side), tiebreaker_up=False)
        eligible = [n for n in side if c.nodes[n].state.eligible]
        if not quorate or not eligible:
            assert primaries == []
        else:
            assert len(primaries) == 1
            assert c.nodes[primaries[0]].state.eligible
            if failback:
                best = max(eligible, key=lambda n: c.nodes[n].state.rank)
                assert primaries == [best]
    if len(ids) != 2:
        assert len(c.primaries()) <= 1  # a majority exists on one side at most
