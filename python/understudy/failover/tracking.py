"""What makes a director fit to hold the VIPs: its public interfaces, its
gateways and the operator's track scripts, folded into the election's
PUBLIC_UP / GATEWAY_UP flags and effective priority.

Gateways (ping nodes) and scripts are health checks like any other, run by the
same monitor with rise/fall; interface state comes from the kernel's link
notifications. A script with weight 0 faults the node when it fails; a
negative weight lowers the priority instead (keepalived's track_script idea).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from understudy.config.cluster import TrackingConfig
from understudy.health import Check, IcmpProbe, Monitor, ScriptProbe, StateChange, Watch

__all__ = ["LinkWatch", "Tracking"]

log = logging.getLogger("understudy.tracking")


class LinkState(Protocol):
    @property
    def usable(self) -> bool: ...


class LinkWatch(Protocol):
    """Interface states from the kernel (the VIP package's `InterfaceTracker`)."""

    @property
    def states(self) -> Mapping[str, LinkState]: ...


class Tracking:
    """Recompute health flags and effective priority on every change; `apply` gets them."""

    def __init__(
        self,
        config: TrackingConfig,
        priority: int,
        monitor: Monitor,
        apply: Callable[..., None],
        links: LinkWatch | None = None,
        tiebreaker: str | None = None,
    ) -> None:
        self.config = config
        self.priority = priority
        self.monitor = monitor
        self.links = links
        self._apply = apply
        self._watches: list[Watch] = []
        self.gateways: dict[str, bool] = {}
        self.scripts: dict[int, bool] = {}
        self.tiebreaker = tiebreaker
        #: The witness answers (it decides an exact half: two-node clusters).
        self.tiebreaker_up = False

    async def start(self) -> None:
        if self._watches:
            return
        g = self.config.gateways
        for address in g.addresses:
            check = Check(IcmpProbe(str(address)), interval=g.interval, timeout=g.timeout, rise=g.rise, fall=g.fall)
            self.gateways[str(address)] = True
            self._watches.append(self.monitor.watch(check, functools.partial(self._gateway, str(address))))
        if self.tiebreaker is not None:
            g = self.config.gateways
            check = Check(IcmpProbe(self.tiebreaker), interval=g.interval, timeout=g.timeout, rise=1, fall=g.fall)
            self._watches.append(self.monitor.watch(check, self._witness))
        for i, s in enumerate(self.config.scripts):
            check = Check(ScriptProbe(s.command), interval=s.interval, timeout=s.timeout, rise=s.rise, fall=s.fall)
            self.scripts[i] = True
            self._watches.append(self.monitor.watch(check, functools.partial(self._script, i)))
        self.update()

    async def stop(self) -> None:
        for w in self._watches:
            w.cancel()
        self._watches.clear()

    def _gateway(self, address: str, change: StateChange) -> None:
        self.gateways[address] = change.up
        log.warning("gateway %s %s (%s)", address, "answers" if change.up else "DOES NOT ANSWER", change.reason)
        self.update()

    def _witness(self, change: StateChange) -> None:
        self.tiebreaker_up = change.up
        log.warning("tie-breaker %s %s (%s)", self.tiebreaker, "answers" if change.up else "DOES NOT ANSWER",
                    change.reason)
        self.update()

    def _script(self, index: int, change: StateChange) -> None:
        self.scripts[index] = change.up
        log.warning("track script %s %s (%s)", " ".join(self.config.scripts[index].command),
                    "ok" if change.up else "FAILED", change.reason)
        self.update()

    def links_changed(self) -> None:
        """The interface tracker saw a change."""
        self.update()

    def down_interfaces(self) -> list[str]:
        if self.links is None:
            return []
        states = self.links.states
        return [i for i in self.config.interfaces if i not in states or not states[i].usable]

    def update(self) -> None:
        public_up = not self.down_interfaces()
        gateway_up = not self.gateways or any(self.gateways.values())
        effective = self.priority
        for i, ok in self.scripts.items():
            if not ok:
                weight = self.config.scripts[i].weight
                effective = 0 if weight == 0 else effective + weight
        self._apply(effective=max(0, min(255, effective)), PUBLIC_UP=public_up, GATEWAY_UP=gateway_up)
