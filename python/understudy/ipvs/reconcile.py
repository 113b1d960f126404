"""Bring the kernel's IPVS table to a desired state with the smallest change.

Never a flush and reload: a service or destination that exists is edited in
place (a weight change is SET_DEST, never delete-then-add). A destination
that must go is drained first -- weight 0, so it takes no new connections --
and deleted once its connections are gone or its drain time has passed.
Services the desired state does not name are left alone unless `prune`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from understudy.ipvs.model import Destination, Service

Key = tuple[object, ...]


@dataclass(frozen=True)
class Change:
    """One kernel operation, with the reason it is needed."""

    verb: str  # add_service, edit_service, del_service, add_dest, edit_dest, del_dest
    service: Service
    dest: Destination | None = None
    why: str = ""

    def op(self) -> tuple[Any, ...]:
        svc = self.service.to_kernel()
        return (self.verb, svc) if self.dest is None else (self.verb, svc, self.dest.to_kernel())

    def __str__(self) -> str:
        noun = {"service": "service", "dest": "destination"}[self.verb.split("_")[1]]
        verb = {"add": "add", "edit": "edit", "del": "delete"}[self.verb.split("_")[0]]
        what = str(self.service) if self.dest is None else f"{self.dest.endpoint} of {self.service}"
        return f"{verb} {noun} {what}" + (f" ({self.why})" if self.why else "")


def _diff(old: Any, new: Any, fields: Iterable[str]) -> str:
    return ", ".join(f"{f} {getattr(old, f)!r} -> {getattr(new, f)!r}" for f in fields
                     if getattr(old, f) != getattr(new, f))


_SERVICE_FIELDS = ("scheduler", "flags", "timeout", "netmask", "pe_name")
_DEST_FIELDS = ("forward", "weight", "u_threshold", "l_threshold", "tunnel_type", "tunnel_port", "tunnel_flags")


class Reconciler:
    """Plans changes; remembers which destinations it is draining and since when."""

    def __init__(self, *, drain_timeout: float = 300.0, prune: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.drain_timeout = drain_timeout
        self.prune = prune
        self.clock = clock
        self.draining: dict[Key, float] = {}

    def plan(self, desired: Iterable[Service], current: Iterable[Service]) -> list[Change]:
        now = self.clock()
        cur = {s.key: s for s in current}
        want = {s.key: s for s in desired}
        adds: list[Change] = []
        edits: list[Change] = []
        drains: list[Change] = []
        deletes: list[Change] = []
        still_draining: set[Key] = set()

        def drain(svc: Service, dest: Destination) -> bool:
            """One step of removing `dest`; True once it is deleted."""
            key = (svc.key, dest.key)
            started = self.draining.setdefault(key, now)
            if dest.connections == 0 or now - started >= self.drain_timeout:
                why = "drained" if dest.connections == 0 else \
                    f"drain time over, {dest.connections} active connections left"
                deletes.append(Change("del_dest", svc, dest, why))
                return True
            still_draining.add(key)
            if dest.weight != 0:
                drains.append(Change("edit_dest", svc, dest.with_weight(0),
                                     f"drain: weight {dest.weight} -> 0, {dest.connections} active connections"))
            return False

        for key, svc in want.items():
            have = cur.get(key)
            if have is None:
                adds.append(Change("add_service", svc))
                adds.extend(Change("add_dest", svc, d) for d in svc.destinations)
                continue
            if have.settings != svc.settings:
                edits.append(Change("edit_service", svc, why=_diff(have, svc, _SERVICE_FIELDS)))
            have_dests = {d.key: d for d in have.destinations}
            for dest in svc.destinations:
                old = have_dests.get(dest.key)
                if old is None:
                    adds.append(Change("add_dest", svc, dest))
                elif old != dest:
                    edits.append(Change("edit_dest", svc, dest, _diff(old, dest, _DEST_FIELDS)))
            wanted = {d.key for d in svc.destinations}
            for dest in have.destinations:
                if dest.key not in wanted:
                    drain(svc, dest)

        for key, have in cur.items():
            if key in want or not self.prune:
                continue
            gone = [drain(have, d) for d in have.destinations]
            if all(gone):
                deletes.append(Change("del_service", have, why="not in the desired state"))

        self.draining = {k: v for k, v in self.draining.items() if k in still_draining}
        # Services exist before their destinations; deletions come last.
        return adds + edits + drains + deletes

    @property
    def pending(self) -> bool:
        """Destinations are still draining: planning again later will delete them."""
        return bool(self.draining)
