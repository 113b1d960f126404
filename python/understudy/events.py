"""The event stream: what changed, for logs, the admin socket and other daemons.

Publishers never wait: each subscriber has a bounded queue, and one that falls
behind loses its oldest events (counted, and told so by a `lost` event) rather
than slowing the failover loop that published them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["Event", "EventBus"]

log = logging.getLogger("understudy.events")

#: An event: {"time": unix seconds, "kind": "role" | "peer" | "vip" | ..., **fields}.
Event = dict[str, Any]


class EventBus:
    """Fan-out of events to any number of subscribers."""

    def __init__(self, *, queue_size: int = 1024, history: int = 64) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._size = queue_size
        self._history: list[Event] = []
        self._keep = history
        self.published = 0
        self.lost = 0

    def publish(self, kind: str, **fields: Any) -> Event:
        """Record an event and hand it to every subscriber; never blocks."""
        event: Event = {"time": time.time(), "kind": kind, **fields}
        self.published += 1
        self._history = (self._history + [event])[-self._keep :]
        log.info("%s %s", kind, " ".join(f"{k}={v}" for k, v in fields.items()))
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.lost += 1
                queue.put_nowait({"time": event["time"], "kind": "lost", "count": 1})
                if queue.full():
                    continue
            queue.put_nowait(event)
        return event

    def recent(self) -> list[Event]:
        """The last events published, oldest first."""
        return list(self._history)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Events from now on, until the caller stops iterating."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self._size)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
