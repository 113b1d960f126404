"""TCP check: up when the three-way handshake completes."""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct
import time
import weakref
from collections.abc import Callable

from understudy.health.model import TcpProbe
from understudy.health.result import Result, os_reason

__all__ = ["Connect", "close_poller", "probe"]

# Close with RST, as HAProxy's TCP checks do: thousands of checks a second would
# otherwise leave as many TIME_WAIT sockets on the director.
_LINGER_RST = struct.pack("ii", 1, 0)
_FLAGS = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class _Poller:
    """One epoll set for every connect in flight on a loop; the loop watches only its fd.

    Per connect that is one epoll_ctl and no loop handle (add_writer makes and
    closes one per socket); closing a socket drops it from the set.
    """

    __slots__ = ("_ep", "_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ep = select.epoll()
        self._loop = loop
        self._waiting: dict[int, Connect] = {}
        loop.add_reader(self._ep.fileno(), self._ready)

    def watch(self, fd: int, conn: Connect) -> None:
        self._ep.register(fd, select.EPOLLOUT | select.EPOLLONESHOT)
        self._waiting[fd] = conn

    def unwatch(self, fd: int) -> None:
        self._waiting.pop(fd, None)

    def _ready(self) -> None:
        for fd, _ in self._ep.poll(0, 1024):
            conn = self._waiting.get(fd)
            if conn is not None:
                conn._writable()

    def close(self) -> None:
        if not self._ep.closed:
            self._loop.remove_reader(self._ep.fileno())
            self._ep.close()


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Poller] = weakref.WeakKeyDictionary()


def _poller(loop: asyncio.AbstractEventLoop) -> _Poller:
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = _Poller(loop)
    return poller


def close_poller() -> None:
    """Close the running loop's connect poller (after its connects have ended)."""
    poller = _pollers.pop(asyncio.get_running_loop(), None)
    if poller is not None:
        poller.close()


class Connect:
    """One connect in flight, driven by loop callbacks alone; `done(result)` is called once.

    With `timeout` None it waits until `expire()` (the monitor keeps timeouts in its own heap).

    No task, no future: the monitor's hot path (10,000 checks a second) runs
    at less than half the CPU of a coroutine on loop.sock_connect (measured,
    bench/health_bench.py).
    """

    __slots__ = ("_done", "_fd", "_loop", "_poller", "_sock", "_start", "_timer")

    def __init__(self, cfg: TcpProbe, timeout: float | None, done: Callable[[Result], None]) -> None:
        self._done: Callable[[Result], None] | None = done
        self._loop = loop = asyncio.get_running_loop()
        self._start = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._fd = -1
        self._sock: socket.socket | None = None
        try:
            self._sock = sock = socket.socket(socket.AF_INET6 if ":" in cfg.address else socket.AF_INET, _FLAGS)
        except OSError as exc:
            loop.call_soon(self._finish, exc.errno or errno.EIO)
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            err = sock.connect_ex((cfg.address, cfg.port))
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err != errno.EINPROGRESS:
            loop.call_soon(self._finish, err)
            return
        self._fd = sock.fileno()
        self._poller = _poller(loop)
        self._poller.watch(self._fd, self)
        if timeout is not None:  # else the owner calls expire()
            self._timer = loop.call_later(timeout, self._finish, errno.ETIMEDOUT)

    def _writable(self) -> None:
        if self._sock is not None:
            self._finish(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _finish(self, err: int) -> None:
        done = self._done
        if done is None:
            return
        self.cancel()
        latency = time.monotonic() - self._start
        done(Result(True, "", latency) if err == 0 else Result(False, os_reason(err), latency))

    def expire(self) -> None:
        """Give up now: `done` gets a timeout result (unless it already got one)."""
        self._finish(errno.ETIMEDOUT)

    def cancel(self) -> None:
        """Abandon the attempt (idempotent); `done` is not called after this."""
        self._done = None
        if self._fd >= 0:
            self._poller.unwatch(self._fd)
            self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def probe(cfg: TcpProbe, timeout: float) -> Result:
    """Connect to cfg.address:cfg.port within `timeout` seconds, then close (with RST)."""
    fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
    attempt = Connect(cfg, timeout, fut.set_result)
    try:
        return await fut
    finally:
        attempt.cancel()
