"""TCP check: up when the three-way handshake completes."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from understudy.health.model import TcpProbe
from understudy.health.result import Result, os_reason

__all__ = ["probe"]

# Close with RST, as HAProxy's TCP checks do: thousands of checks a second would
# otherwise leave as many TIME_WAIT sockets on the director.
_LINGER_RST = struct.pack("ii", 1, 0)


async def probe(cfg: TcpProbe, timeout: float) -> Result:
    """Connect to cfg.address:cfg.port within `timeout` seconds, then close."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    family = socket.AF_INET6 if ":" in cfg.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as exc:
        return Result(False, os_reason(exc), 0.0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (cfg.address, cfg.port))
    except TimeoutError:
        return Result(False, "timeout", time.monotonic() - start)
    except OSError as exc:
        return Result(False, os_reason(exc), time.monotonic() - start)
    finally:
        sock.close()
    return Result(True, "", time.monotonic() - start)
