"""Kernel IPVS through the engine: dump, apply, reconcile, sync-daemon control.

>>> ipvs = Ipvs()                        # netlink, in this network namespace
>>> desired = parse_state(json.load(f))
>>> converge(ipvs, desired)              # minimal diff; drains before deleting
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from understudy._core import IpvsClient, IpvsError
from understudy.ipvs.model import Destination, ModelError, Service, parse_state
from understudy.ipvs.reconcile import Change, Reconciler

__all__ = [
    "Change",
    "Destination",
    "Ipvs",
    "IpvsApplyError",
    "IpvsError",
    "ModelError",
    "Reconciler",
    "Service",
    "converge",
    "parse_state",
]

#: Stopping a kernel sync daemon right after starting it can hang a UML
#: kernel (and gives EINTR elsewhere): keep starts and stops this far apart.
DAEMON_SETTLE = 0.05


class IpvsApplyError(IpvsError):
    """Some operations of a batch failed; `.errors` lists (change, errno, message)."""

    def __init__(self, errors: list[tuple[Change, int, str]]) -> None:
        super().__init__(errors[0][1], "; ".join(msg for _, _, msg in errors))
        self.errors = errors


class Ipvs:
    """The IPVS table of the current network namespace."""

    def __init__(self) -> None:
        self._client = IpvsClient()
        self._daemon_started: dict[str, float] = {}

    def dump(self, stats: bool = True) -> list[Service]:
        """Every service with its destinations and counters (and statistics, unless told not to)."""
        return [Service.from_kernel(s) for s in self._client.dump(stats)]

    def execute(self, changes: Sequence[Change]) -> None:
        """Apply changes in order, in batches; raise once with every failure."""
        results = self._client.execute([c.op() for c in changes])
        errors = [(c, r[0], r[1]) for c, r in zip(changes, results) if r is not None]
        if errors:
            raise IpvsApplyError(errors)

    def daemons(self) -> list[dict[str, Any]]:
        return self._client.daemons()

    def start_daemon(self, state: str, ifname: str, syncid: int, *, maxlen: int = 0, group: str | None = None,
                     port: int = 0, ttl: int = 0) -> None:
        daemon = {"state": state, "ifname": ifname, "syncid": syncid, "maxlen": maxlen, "group": group,
                  "port": port, "ttl": ttl}
        self._run(("start_daemon", daemon))
        self._daemon_started[state] = time.monotonic()

    def stop_daemon(self, state: str) -> None:
        started = self._daemon_started.pop(state, None)
        if started is not None:
            time.sleep(max(0.0, started + DAEMON_SETTLE - time.monotonic()))
        self._run(("stop_daemon", state))

    def timeouts(self) -> dict[str, int]:
        tcp, tcp_fin, udp = self._client.timeouts()
        return {"tcp": tcp, "tcp_fin": tcp_fin, "udp": udp}

    def set_timeouts(self, tcp: int = 0, tcp_fin: int = 0, udp: int = 0) -> None:
        """Seconds; 0 leaves a timeout unchanged."""
        self._run(("set_timeouts", {"tcp": tcp, "tcp_fin": tcp_fin, "udp": udp}))

    def zero(self, service: Service | None = None) -> None:
        """Reset the counters of one service (and its real servers), or of all."""
        self._run(("zero", service.to_kernel() if service else None))

    def flush(self) -> None:
        """Delete every service. Reconcile never does this; it is for operators."""
        self._run(("flush",))

    def info(self) -> dict[str, Any]:
        version, size = self._client.info()
        return {"version": f"{version >> 16}.{version >> 8 & 255}.{version & 255}", "conn_tab_size": size}

    def _run(self, op: tuple[Any, ...]) -> None:
        (result,) = self._client.execute([op])
        if result is not None:
            raise IpvsError(*result)


def converge(ipvs: Ipvs, desired: Iterable[Service], *, reconciler: Reconciler | None = None,
             wait: bool = True, poll: float = 1.0, on_change: Callable[[Change], None] | None = None) -> list[Change]:
    """Apply the minimal difference, then keep draining until removals are done
    (or return after the first pass if not `wait`). Returns what was applied."""
    reconciler = reconciler or Reconciler()
    desired = list(desired)
    applied: list[Change] = []
    while True:
        changes = reconciler.plan(desired, ipvs.dump(stats=False))
        if changes:
            ipvs.execute(changes)
            applied.extend(changes)
            for change in changes:
                if on_change:
                    on_change(change)
        if not reconciler.pending or not wait:
            return applied
        time.sleep(poll)
