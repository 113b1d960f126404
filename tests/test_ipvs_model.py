"""Desired-state parsing and reconcile planning (no kernel needed; the same
planner is exercised against the real kernel in test_ipvs_kernel.py)."""

from dataclasses import replace

import pytest

from understudy.ipvs import Destination, ModelError, Reconciler, Service, parse_state
from understudy.ipvs.model import AF_INET6


def state(*services):
    return parse_state({"services": list(services)})


WEB = {"protocol": "tcp", "address": "10.0.0.100", "port": 80, "scheduler": "wlc",
       "destinations": [{"address": "192.168.1.11", "port": 8000, "weight": 1},
                        {"address": "192.168.1.12", "port": 8000, "weight": 2}]}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def with_conns(service, address, active, weight=None):
    dests = tuple(replace(d, active_conns=active, weight=d.weight if weight is None else weight)
                  if d.address == address else d for d in service.destinations)
    return replace(service, destinations=dests)


def test_json_round_trip_and_defaults():
    (svc,) = state({"protocol": "udp", "address": "2001:db8::1", "port": 53, "scheduler": "sh",
                    "flags": ["sh-fallback", "sh-port"], "destinations": [
                        {"address": "2001:db8::10", "port": 53, "forward": "route", "weight": 3}]})
    assert (svc.af, svc.flags, svc.netmask) == (AF_INET6, 0x18, 128)
    j = svc.to_json()
    assert j["flags"] == ["sh-fallback", "sh-port"] and j["netmask"] == 128
    assert parse_state({"services": [j]})[0] == svc
    (fw,) = state({"fwmark": 7, "scheduler": "wlc", "flags": ["persistent"], "timeout": 300,
                   "netmask": "255.255.255.0"})
    assert (fw.protocol, fw.netmask, fw.to_json()["netmask"]) == (None, 0xFFFFFF00, "255.255.255.0")
    assert state(dict(WEB, netmask=24))[0].netmask == 0xFFFFFF00


@pytest.mark.parametrize("bad, message", [
    ({"protocol": "icmp", "address": "10.0.0.1", "port": 1}, "protocol must be one of"),
    ({"protocol": "tcp", "address": "10.0.0.300", "port": 1}, "not an IP address"),
    ({"protocol": "tcp", "address": "10.0.0.1", "port": 70000}, "port must be an integer"),
    ({"protocol": "tcp", "address": "10.0.0.1", "port": 1, "flags": ["sticky"]}, "unknown service flag"),
    ({"protocol": "tcp", "address": "10.0.0.1", "port": 1, "colour": "red"}, "unknown key"),
    (dict(WEB, destinations=[{"address": "192.168.1.11", "port": 1, "forward": "nat"}]), "forward must be"),
    (dict(WEB, destinations=[{"address": "192.168.1.11", "port": 1, "weight": -1}]), "weight must be"),
    (dict(WEB, destinations=[{"address": "192.168.1.11", "port": 1, "l_threshold": 5}]), "above u_threshold"),
    (dict(WEB, destinations=[{"address": "fd00::1", "port": 1}]), "needs forward 'tunnel'"),
    (dict(WEB, destinations=[WEB["destinations"][0]] * 2), "listed twice"),
])
def test_bad_desired_states_are_named(bad, message):
    with pytest.raises(ModelError, match=message):
        state(bad)


def test_plan_from_empty_adds_everything_in_order():
    (svc,) = state(WEB)
    changes = Reconciler().plan([svc], [])
    assert [c.verb for c in changes] == ["add_service", "add_dest", "add_dest"]
    assert str(changes[0]) == "add service tcp 10.0.0.100:80"


def test_same_state_plans_nothing_and_unmanaged_services_stay():
    (svc,) = state(WEB)
    other = state({"protocol": "tcp", "address": "10.9.9.9", "port": 22})[0]
    assert Reconciler().plan([svc], [svc, other]) == []


def test_weight_change_is_an_edit_never_delete_and_add():
    (svc,) = state(WEB)
    want = replace(svc, destinations=(svc.destinations[0].with_weight(5), svc.destinations[1]))
    (change,) = Reconciler().plan([want], [svc])
    assert (change.verb, change.dest.weight, change.why) == ("edit_dest", 5, "weight 1 -> 5")


def test_scheduler_change_edits_the_service():
    (svc,) = state(WEB)
    (change,) = Reconciler().plan([replace(svc, scheduler="rr")], [svc])
    assert (change.verb, change.why) == ("edit_service", "scheduler 'wlc' -> 'rr'")


def test_removed_destination_drains_then_goes():
    clock = Clock()
    r = Reconciler(drain_timeout=60, clock=clock)
    (svc,) = state(WEB)
    want = replace(svc, destinations=svc.destinations[:1])
    current = with_conns(svc, "192.168.1.12", active=3)
    (drain,) = r.plan([want], [current])
    assert (drain.verb, drain.dest.weight) == ("edit_dest", 0) and r.pending
    current = with_conns(svc, "192.168.1.12", active=2, weight=0)
    clock.t += 10
    assert r.plan([want], [current]) == []  # still draining, nothing new to do
    current = with_conns(svc, "192.168.1.12", active=0, weight=0)
    (delete,) = r.plan([want], [current])
    assert (delete.verb, delete.why) == ("del_dest", "drained") and not r.pending


def test_drain_gives_up_after_the_timeout():
    clock = Clock()
    r = Reconciler(drain_timeout=60, clock=clock)
    (svc,) = state(WEB)
    want = replace(svc, destinations=svc.destinations[:1])
    r.plan([want], [with_conns(svc, "192.168.1.12", active=3)])
    clock.t += 61
    (delete,) = r.plan([want], [with_conns(svc, "192.168.1.12", active=3, weight=0)])
    assert delete.verb == "del_dest" and "3 active connections left" in delete.why


def test_idle_destination_is_deleted_at_once():
    (svc,) = state(WEB)
    want = replace(svc, destinations=svc.destinations[:1])
    (delete,) = Reconciler().plan([want], [svc])
    assert delete.verb == "del_dest"


def test_prune_drains_and_deletes_unlisted_services():
    (svc,) = state(WEB)
    r = Reconciler(prune=True)
    busy = with_conns(svc, "192.168.1.11", active=1)
    changes = r.plan([], [busy])
    assert [c.verb for c in changes] == ["edit_dest", "del_dest"]  # .12 idle goes, .11 drains
    assert [c.verb for c in r.plan([], [replace(busy, destinations=(replace(busy.destinations[0], weight=0,
                                                                            active_conns=0),))])] == \
        ["del_dest", "del_service"]


def test_readding_a_draining_destination_restores_it():
    r = Reconciler()
    (svc,) = state(WEB)
    want = replace(svc, destinations=svc.destinations[:1])
    r.plan([want], [with_conns(svc, "192.168.1.12", active=3)])
    (restore,) = r.plan([svc], [with_conns(svc, "192.168.1.12", active=3, weight=0)])
    assert (restore.verb, restore.dest.weight) == ("edit_dest", 2) and not r.pending


def test_destination_model_ignores_counters_when_comparing():
    d = Destination("10.0.0.1", 80)
    assert d == replace(d, active_conns=9, stats={"conns": 4})
    assert Service.from_json(WEB) == Service.from_json(dict(WEB, stats={"conns": 1}))
