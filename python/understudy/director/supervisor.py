"""Restart a crashed subsystem without touching the others.

Each subsystem is an object with idempotent `start()` / `stop()` and, while it
runs, a task the supervisor watches (`watch()` returns it). When that task dies
with an exception, the subsystem is stopped, started again after a backoff that
doubles up to a cap, and an event says so. Heartbeats are not among the things
that can stall here: they run in the core's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from understudy.events import EventBus

__all__ = ["Subsystem", "Supervisor"]

log = logging.getLogger("understudy.supervisor")


class Subsystem(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(slots=True)
class _Child:
    name: str
    subsystem: Subsystem
    #: The task that ends if the subsystem fails (None: nothing to watch).
    watch: Callable[[], asyncio.Task[None] | None]
    restarts: int = 0
    backoff: float = 0.5
    task: asyncio.Task[None] | None = field(default=None)


class Supervisor:
    """Start subsystems in order, stop them in reverse, restart the ones that crash."""

    def __init__(self, events: EventBus, *, max_backoff: float = 30.0) -> None:
        self.events = events
        self.max_backoff = max_backoff
        self.children: list[_Child] = []
        self._guard: asyncio.Task[None] | None = None

    def add(self, name: str, subsystem: Subsystem,
            watch: Callable[[], asyncio.Task[None] | None] = lambda: None) -> None:
        self.children.append(_Child(name, subsystem, watch))

    async def start(self) -> None:
        for child in self.children:
            await child.subsystem.start()
            log.info("started %s", child.name)
        self._guard = asyncio.get_running_loop().create_task(self._supervise(), name="supervisor")

    async def stop(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._guard
            self._guard = None
        for child in reversed(self.children):
            try:
                await child.subsystem.stop()
            except Exception:
                log.exception("stopping %s failed", child.name)

    async def _supervise(self) -> None:
        handled: set[asyncio.Task[None]] = set()
        while True:
            watched = {}
            for child in self.children:
                task = child.watch()
                if task is not None and task not in handled:
                    watched[task] = child
            if not watched:
                await asyncio.sleep(1.0)
                continue
            done, _ = await asyncio.wait(watched, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                handled.add(task)
                if not task.cancelled() and task.exception() is not None:
                    await self._restart(watched[task], task.exception() or RuntimeError())

    async def _restart(self, child: _Child, error: BaseException) -> None:
        child.restarts += 1
        log.error("%s crashed (%s: %s); restarting in %.1f s", child.name, type(error).__name__, error,
                  child.backoff, exc_info=error)
        self.events.publish("crash", subsystem=child.name, error=f"{type(error).__name__}: {error}",
                            restarts=child.restarts)
        with contextlib.suppress(Exception):
            await child.subsystem.stop()
        await asyncio.sleep(child.backoff)
        child.backoff = min(child.backoff * 2, self.max_backoff)
        try:
            await child.subsystem.start()
        except Exception as e:
            log.error("restarting %s failed: %s", child.name, e)
        else:
            self.events.publish("restarted", subsystem=child.name)

    def status(self) -> list[dict[str, object]]:
        return [{"name": c.name, "restarts": c.restarts} for c in self.children]

