"""Interface tracking: the link state of the interfaces a node's VIPs need,
kept current from the kernel's rtnetlink notifications."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from understudy._core import LinkMonitor, Netif, NetifError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkState:
    """One tracked interface as last seen. `usable`: present, administratively
    up, with carrier (IFF_RUNNING) and operstate UP (or UNKNOWN)."""

    name: str
    present: bool
    up: bool = False
    running: bool = False
    operstate: str = "ABSENT"
    index: int = 0

    @property
    def usable(self) -> bool:
        return self.present and self.up and self.running and self.operstate in ("UP", "UNKNOWN")

    @classmethod
    def from_link(cls, link: Mapping[str, Any]) -> LinkState:
        return cls(link["name"], True, link["up"], link["running"], link["operstate"], link["index"])


class InterfaceTracker:
    """Watches the tracked interfaces through an rtnetlink monitor on the
    event loop; calls `on_change(state)` whenever one's state changes.

    `weights` lowers the priority by that much per unusable interface; an
    interface without a weight (or weight 0) makes the node unfit (priority
    0), as keepalived's track_interface does.
    """

    def __init__(
        self,
        interfaces: Iterable[str],
        *,
        weights: Mapping[str, int] | None = None,
        on_change: Callable[[LinkState], None] | None = None,
    ) -> None:
        self.interfaces = tuple(dict.fromkeys(interfaces))
        self.weights = dict(weights or {})
        self.on_change = on_change
        self.states: dict[str, LinkState] = {}
        self._monitor: LinkMonitor | None = None
        self._netif: Netif | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def usable(self) -> bool:
        """Every tracked interface is usable."""
        return all(s.usable for s in self.states.values())

    def effective_priority(self, base: int) -> int:
        """`base` less the weight of each unusable interface; 0 if one without a weight is down."""
        priority = base
        for name, state in self.states.items():
            if not state.usable:
                weight = self.weights.get(name, 0)
                if weight == 0:
                    return 0
                priority -= abs(weight)
        return max(priority, 0)

    async def start(self) -> None:
        """Subscribe, read the current states, watch (idempotent)."""
        if self._monitor is not None:
            return
        # Subscribe before reading, so a change between the two is not missed.
        self._monitor = LinkMonitor()
        self._netif = Netif()
        self._loop = asyncio.get_running_loop()
        self._resync(notify=False)
        self._loop.add_reader(self._monitor.fileno(), self._readable)

    async def stop(self) -> None:
        """Stop watching (idempotent)."""
        if self._monitor is None or self._loop is None:
            return
        self._loop.remove_reader(self._monitor.fileno())
        self._monitor = None
        self._netif = None

    def _set(self, state: LinkState, notify: bool = True) -> None:
        old = self.states.get(state.name)
        self.states[state.name] = state
        if old != state and notify:
            log.info("interface %s: %s", state.name, "usable" if state.usable else f"unusable ({state.operstate})")
            if self.on_change is not None:
                self.on_change(state)

    def _resync(self, notify: bool = True) -> None:
        assert self._netif is not None
        for name in self.interfaces:
            try:
                self._set(LinkState.from_link(self._netif.link(name)), notify)
            except NetifError:
                self._set(LinkState(name, present=False), notify)

    def _readable(self) -> None:
        if self._monitor is None:
            return
        try:
            events = self._monitor.read()
        except OSError as err:
            log.warning("rtnetlink monitor: %s; re-reading link states", err)
            self._resync()
            return
        for event in events:
            if event["type"] == "overrun":
                self._resync()
            elif event["type"] == "link" and event["name"] in self.interfaces:
                if event["removed"]:
                    self._set(LinkState(event["name"], present=False))
                else:
                    self._set(LinkState.from_link(event))
