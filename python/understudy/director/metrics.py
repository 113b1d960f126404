"""Prometheus metrics, read from the subsystems' status when scraped.

Nothing is counted on a hot path for Prometheus' sake: a scrape asks each
subsystem for the status it keeps anyway and turns it into metric families.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, CounterMetricFamily, Metric
from prometheus_client.exposition import start_http_server

__all__ = ["Metrics"]

ROLES = ("init", "backup", "primary", "fault", "stop")


class _Collector:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        failover = s.get("failover")
        if failover:
            role = GaugeMetricFamily("understudy_role", "1 for this node's current role", labels=["role"])
            for name in ROLES:
                role.add_metric([name], 1.0 if failover["role"] == name else 0.0)
            yield role
            yield GaugeMetricFamily("understudy_effective_priority", "Priority after tracking",
                                    value=failover["effective"])
            yield CounterMetricFamily("understudy_role_transitions", "Role changes since start",
                                      value=failover["transitions"])
            yield GaugeMetricFamily("understudy_peers_alive", "Peers heard within the dead time",
                                    value=len(failover["peers"]))
        up = GaugeMetricFamily("understudy_server_up", "Real server health (1 up)", labels=["service", "server"])
        weight = GaugeMetricFamily("understudy_server_weight", "Weight in the kernel", labels=["service", "server"])
        for svc in s.get("services", []):
            for srv in svc["servers"]:
                up.add_metric([svc["service"], srv["server"]], 1.0 if srv["up"] else 0.0)
                weight.add_metric([svc["service"], srv["server"]], float(srv["weight"]))
        yield up
        yield weight
        lateness = s.get("health", {}).get("lateness")
        if lateness:
            late = GaugeMetricFamily("understudy_check_lateness_seconds", "Check start lateness", labels=["quantile"])
            for q in ("p50", "p99", "max"):
                late.add_metric([q], float(lateness.get(q, 0.0)))
            yield late
        sync = s.get("sync")
        if sync:
            yield GaugeMetricFamily("understudy_sync_connections", "Connections in the replicated table",
                                    value=float(sync.get("connections", 0)))
            yield GaugeMetricFamily("understudy_sync_caught_up", "1 when this node holds the primary's table",
                                    value=1.0 if sync.get("caught_up") else 0.0)
        yield CounterMetricFamily("understudy_events", "Events published", value=s.get("events", 0))


class Metrics:
    """The /metrics endpoint (an HTTP server thread), started and stopped with the daemon."""

    def __init__(self, listen: str | None, port: int, status: Callable[[], dict[str, Any]]) -> None:
        self.listen, self.port = listen, port
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(status))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        if self.listen is None or self._server is not None:
            return
        self._server, self._thread = start_http_server(self.port, addr=self.listen, registry=self.registry)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            self._thread = None
