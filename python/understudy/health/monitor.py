"""The service monitor: runs every check on its schedule and reports state changes.

One probe loop per distinct `Check` however many virtual services watch it.
Runs are on a fixed-rate grid (epoch + offset + k * interval): the offset
spreads checks across their interval by a hash of the check (the same check
always lands at the same phase), and the lateness of every run (actual start
minus scheduled start) is recorded. A run that overruns its slot skips the
slots it missed rather than firing them late in a burst.

TCP checks, the bulk of a large director's, run in the core's prober
(`_core.TcpProber`): it owns their grid, connects, timeouts and retries on its
own thread, and hands results over in batches; here each result only updates
rise/fall state. The other kinds run as loop callbacks and tasks on the same
grid rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from understudy._core import TcpProber
from understudy.health import dns, http, icmp, script, tcp, udp
from understudy.health.model import (Check, DnsProbe, HttpProbe, IcmpProbe, Probe, ScriptProbe, TcpProbe,
                                     UdpProbe)
from understudy.health.result import Result, os_reason

__all__ = ["CheckStatus", "Lateness", "Monitor", "StateChange", "Watch", "run_probe"]

log = logging.getLogger("understudy.health")

_PROBES: dict[type[Any], Callable[[Any, float], Awaitable[Result]]] = {
    TcpProbe: tcp.probe, HttpProbe: http.probe, IcmpProbe: icmp.probe, UdpProbe: udp.probe,
    DnsProbe: dns.probe, ScriptProbe: script.probe,
}


async def run_probe(probe: Probe, timeout: float) -> Result:
    """Run one probe of any kind; a checker bug becomes a failed result, never an exception."""
    try:
        return await _PROBES[type(probe)](probe, timeout)
    except Exception as exc:  # noqa: BLE001 -- a checker must not take the monitor down
        log.exception("health checker %s failed", type(probe).__name__)
        return Result(False, f"checker error: {type(exc).__name__}: {exc}", 0.0)


@dataclass(frozen=True)
class StateChange:
    """A server went up or down (or, while up, its dynamic weight changed)."""

    check: Check
    up: bool
    # Why it is down (the last failure's reason); "" when up.
    reason: str
    # From a script check with dynamic weight; None means "the configured weight".
    weight: int | None
    result: Result


@dataclass(frozen=True)
class CheckStatus:
    """A snapshot of one check's state and counters."""

    up: bool | None  # None until the first run
    weight: int | None
    consecutive_ok: int
    consecutive_failed: int
    runs: int
    failed_runs: int
    retries: int
    skipped: int
    last: Result | None
    watchers: int


@dataclass(frozen=True)
class Lateness:
    """How late runs started, in seconds, over the recent window (max since start or reset)."""

    count: int
    p50: float
    p99: float
    max: float


class Watch:
    """One subscriber's interest in a check; `cancel()` ends it (idempotent)."""

    __slots__ = ("check", "on_change", "_monitor", "active")

    def __init__(self, monitor: Monitor, check: Check, on_change: Callable[[StateChange], None]) -> None:
        self.check = check
        self.on_change = on_change
        self._monitor = monitor
        self.active = True

    def cancel(self) -> None:
        """Stop receiving changes; the probe stops when its last watch is cancelled."""
        if self.active:
            self.active = False
            self._monitor._unwatch(self)


_FIRE, _RETRY = 0, 1  # what a timer-heap item does when it comes due
_MIN_TICK = 0.001  # s; due items are served in batches at most this often
_MAX_BATCH = 256  # items served per tick before the loop polls I/O again


class _Entry:
    __slots__ = ("check", "offset", "watches", "due", "attempt", "gen", "pending", "probe_id", "up", "weight",
                 "ok_run", "failed_run", "runs", "failed_runs", "retries", "skipped", "last")

    def __init__(self, check: Check, offset: float) -> None:
        self.check = check
        self.offset = offset
        self.watches: list[Watch] = []
        self.due = 0.0  # monotonic time of the next (or current) run
        self.attempt = 0
        self.gen = 0  # bumped per attempt and at halt: older heap items for this entry are stale
        self.pending: asyncio.Task[Result] | None = None
        self.probe_id = 0  # the TCP prober's id for this check; 0 when not there
        self.up: bool | None = None
        self.weight: int | None = None
        self.ok_run = self.failed_run = self.runs = self.failed_runs = self.retries = self.skipped = 0
        self.last: Result | None = None


def spread_offset(check: Check) -> float:
    """The check's phase within its interval: a hash, so stable across runs and restarts."""
    digest = hashlib.blake2b(repr(check).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 * check.interval


class Monitor:
    """Runs health checks and calls each watcher back when its server's state changes.

    `watch(check, on_change)` before or after `start()`; equal checks share one
    probe. A watcher added to a check whose state is known hears it at once.
    """

    def __init__(self, *, spread: bool = True, lateness_window: int = 100_000) -> None:
        self.spread = spread
        self._entries: dict[Check, _Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoch = 0.0
        self._late: deque[float] = deque(maxlen=lateness_window)
        self._late_max = 0.0
        self._late_count = 0
        self._heap: list[tuple[float, int, int, _Entry, int]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._ticking = False
        self._prober: TcpProber | None = None
        self._probe_ids: dict[int, _Entry] = {}
        self._last_id = 0
        self._to_submit: list[tuple[int, str, int, int, float, float, float, int, float]] = []

    # --- subscriptions ----------------------------------------------------------
    def watch(self, check: Check, on_change: Callable[[StateChange], None]) -> Watch:
        """Start (or join) `check`; `on_change` is called with each `StateChange`."""
        entry = self._entries.get(check)
        if entry is None:
            entry = self._entries[check] = _Entry(check, spread_offset(check) if self.spread else 0.0)
            if self._loop is not None:
                self._spawn(entry, time.monotonic())
        w = Watch(self, check, on_change)
        entry.watches.append(w)
        if entry.up is not None and entry.last is not None and self._loop is not None:
            change = StateChange(check, entry.up, "" if entry.up else entry.last.reason, entry.weight, entry.last)
            self._loop.call_soon(self._deliver, w, change)
        return w

    def _unwatch(self, w: Watch) -> None:
        entry = self._entries.get(w.check)
        if entry is None:
            return
        entry.watches.remove(w)
        if not entry.watches:
            del self._entries[w.check]
            self._halt(entry)

    @property
    def checks(self) -> list[Check]:
        """The distinct checks being run."""
        return list(self._entries)

    def status(self, check: Check) -> CheckStatus | None:
        """The check's current state and counters, or None if nobody watches it."""
        e = self._entries.get(check)
        if e is None:
            return None
        return CheckStatus(e.up, e.weight, e.ok_run, e.failed_run, e.runs, e.failed_runs, e.retries, e.skipped,
                           e.last, len(e.watches))

    # --- lateness ---------------------------------------------------------------
    def lateness(self) -> Lateness:
        """Percentiles of run lateness over the recent window."""
        if not self._late:
            return Lateness(0, 0.0, 0.0, 0.0)
        ordered = sorted(self._late)
        n = len(ordered)
        return Lateness(self._late_count, ordered[(n - 1) // 2], ordered[min(n - 1, math.ceil(0.99 * n) - 1)],
                        self._late_max)

    def reset_lateness(self) -> None:
        """Forget lateness samples (after a warm-up, say)."""
        self._late.clear()
        self._late_max = 0.0
        self._late_count = 0

    # --- lifecycle --------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether `start()` has run and `stop()` has not since."""
        return self._loop is not None

    async def start(self) -> None:
        """Start every watched check on the running loop (idempotent)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._epoch = time.monotonic()
        for entry in self._entries.values():
            self._spawn(entry, self._epoch)

    async def stop(self) -> None:
        """Stop all probes and close shared sockets (idempotent); watches are kept."""
        if self._loop is None:
            return
        tasks = [t for e in self._entries.values() if (t := e.pending) is not None]
        if self._prober is not None:  # first: then halting each check needs no call into it
            self._loop.remove_reader(self._prober.fileno())
            self._prober.stop()
            self._prober = None
        self._to_submit.clear()
        for entry in self._entries.values():
            self._halt(entry)
        self._heap.clear()
        self._rearm()  # an empty heap: cancels the timer
        await asyncio.gather(*tasks, return_exceptions=True)
        icmp.close_pingers()
        self._loop = None

    # --- running ----------------------------------------------------------------
    # Each non-TCP check is a small state machine on loop callbacks (fire ->
    # attempt -> result -> next fire), not a task, and its times (next run,
    # retry) wait in one heap served by a single loop timer: a sleeping task
    # per check, or a loop timer per run, cost up to twice the CPU.
    def _push(self, when: float, action: int, entry: _Entry) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action, entry, entry.gen))
        if when < self._timer_at and not self._ticking:
            self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        if self._heap and self._loop is not None:
            now = time.monotonic()
            self._timer_at = max(self._heap[0][0], now + _MIN_TICK)
            self._timer = self._loop.call_later(self._timer_at - now, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._ticking = True
        try:
            self._serve_due()
        finally:
            self._ticking = False
            self._rearm()

    def _serve_due(self) -> None:
        # Only what was due when the tick began, and a bounded batch: a loop that
        # has fallen behind must still get back to its I/O (connects completing).
        heap, now = self._heap, time.monotonic()
        for _ in range(_MAX_BATCH):
            if not heap or heap[0][0] > now:
                return
            _, _, action, entry, gen = heapq.heappop(heap)
            if gen != entry.gen or self._entries.get(entry.check) is not entry:
                continue  # halted, removed, or an attempt that already ended
            if action == _FIRE:
                self._fire(entry)
            else:
                self._attempt(entry)

    def _spawn(self, entry: _Entry, now: float) -> None:
        # The first slot of this check's grid that is not before `now`.
        entry.due = self._epoch + entry.offset
        if entry.due < now:
            entry.due += math.ceil((now - entry.due) / entry.check.interval) * entry.check.interval
        if type(entry.check.probe) is TcpProbe:
            self._submit(entry)
        else:
            self._push(entry.due, _FIRE, entry)

    # --- TCP checks, in the core's prober ---------------------------------------
    def _submit(self, entry: _Entry) -> None:
        # Checks spawned together (all of them at start) go to the prober in one call.
        assert self._loop is not None
        self._last_id += 1
        entry.probe_id = self._last_id
        self._probe_ids[entry.probe_id] = entry
        c = entry.check
        probe = c.probe
        assert isinstance(probe, TcpProbe)
        address, scope = tcp.target(probe.address)
        self._to_submit.append((entry.probe_id, address, probe.port, scope, entry.due, c.interval, c.timeout,
                                c.retries, c.retry_delay))
        if len(self._to_submit) == 1:
            self._loop.call_soon(self._flush_submits)

    def _flush_submits(self) -> None:
        batch = [t for t in self._to_submit if t[0] in self._probe_ids]  # not halted meanwhile
        self._to_submit = []
        if not batch or self._loop is None:
            return
        if self._prober is None:
            self._prober = TcpProber()
            self._loop.add_reader(self._prober.fileno(), self._probed)
        self._prober.add(batch)

    def _probed(self) -> None:
        if self._prober is None:
            return
        ids, late = self._probe_ids, self._late
        for probe_id, err, latency, late_s, retries, skipped in self._prober.drain():
            entry = ids.get(probe_id)
            if entry is None:
                continue  # removed while its result was queued
            late.append(late_s)
            self._late_count += 1
            if late_s > self._late_max:
                self._late_max = late_s
            entry.retries += retries
            entry.skipped += skipped
            self._record(entry, Result(True, "", latency) if err == 0 else Result(False, os_reason(err), latency))

    def _halt(self, entry: _Entry) -> None:
        entry.gen += 1
        if entry.probe_id:
            del self._probe_ids[entry.probe_id]
            if self._prober is not None:
                self._prober.remove([entry.probe_id])
            entry.probe_id = 0
        if entry.pending is not None:
            entry.pending.cancel()
            entry.pending = None

    def _fire(self, entry: _Entry) -> None:
        late = time.monotonic() - entry.due
        self._late.append(late)
        self._late_count += 1
        if late > self._late_max:
            self._late_max = late
        entry.attempt = 0
        self._attempt(entry)

    def _attempt(self, entry: _Entry) -> None:
        assert self._loop is not None
        entry.gen += 1
        task = self._loop.create_task(run_probe(entry.check.probe, entry.check.timeout))
        task.add_done_callback(lambda t: self._task_done(entry, t))
        entry.pending = task

    def _task_done(self, entry: _Entry, task: asyncio.Task[Result]) -> None:
        if not task.cancelled():
            self._attempted(entry, task.result())

    def _attempted(self, entry: _Entry, result: Result) -> None:
        if self._loop is None or self._entries.get(entry.check) is not entry:
            return  # stopped or removed meanwhile
        entry.pending = None
        entry.gen += 1
        if not result.ok and entry.attempt < entry.check.retries:
            entry.attempt += 1
            entry.retries += 1
            self._push(time.monotonic() + entry.check.retry_delay, _RETRY, entry)
            return
        self._record(entry, result)
        interval = entry.check.interval
        entry.due += interval
        now = time.monotonic()
        if entry.due < now:  # the run overran its slot: skip the missed ones, no burst
            missed = math.ceil((now - entry.due) / interval)
            entry.skipped += missed
            entry.due += missed * interval
        self._push(entry.due, _FIRE, entry)

    def _record(self, e: _Entry, result: Result) -> None:
        e.runs += 1
        e.last = result
        if result.ok:
            e.ok_run, e.failed_run = e.ok_run + 1, 0
        else:
            e.ok_run, e.failed_run = 0, e.failed_run + 1
            e.failed_runs += 1
        up = e.up
        if up is None:
            up = result.ok  # the first result decides: no rise/fall wait at start
        elif up and e.failed_run >= e.check.fall:
            up = False
        elif not up and e.ok_run >= e.check.rise:
            up = True
        weight = result.weight if up and result.ok else e.weight
        if up == e.up and weight == e.weight:
            return
        e.up, e.weight = up, weight
        change = StateChange(e.check, up, "" if up else result.reason, weight, result)
        log.info("%s is %s%s", e.check.title, "up" if up else "down", "" if up else f" ({result.reason})")
        for w in list(e.watches):
            self._deliver(w, change)

    @staticmethod
    def _deliver(w: Watch, change: StateChange) -> None:
        if not w.active:
            return
        try:
            w.on_change(change)
        except Exception:  # noqa: BLE001 -- one bad subscriber must not stop the others
            log.exception("health state-change callback failed for %s", change.check.title)
