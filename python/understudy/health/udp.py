"""UDP check: send a datagram, judge the reply; ICMP port unreachable means down."""

from __future__ import annotations

import asyncio
import re
import socket
import time

from understudy.health.model import UdpProbe
from understudy.health.result import Result, os_reason

__all__ = ["probe"]

MAX_REPLY = 65535


def _verdict(cfg: UdpProbe, reply: bytes) -> str:
    if cfg.expect is not None and reply != cfg.expect:
        return f"reply mismatch ({len(reply)} bytes)"
    if cfg.expect_regex is not None and not re.search(cfg.expect_regex.encode(), reply):
        return "reply mismatch (regex)"
    return ""


async def probe(cfg: UdpProbe, timeout: float) -> Result:
    """Send cfg.payload to cfg.address:cfg.port and wait up to `timeout` for a reply."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    family = socket.AF_INET6 if ":" in cfg.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as exc:
        return Result(False, os_reason(exc), 0.0)
    try:
        # Connected, so the kernel reports the server's ICMP port unreachable to this socket.
        sock.connect((cfg.address, cfg.port))
        sock.send(cfg.payload)
        async with asyncio.timeout(timeout):
            reply = await loop.sock_recv(sock, MAX_REPLY)
        reason = _verdict(cfg, reply)
    except TimeoutError:
        reason = "timeout" if cfg.require_reply else ""
    except ConnectionRefusedError:
        reason = "port unreachable"
    except OSError as exc:
        reason = os_reason(exc)
    finally:
        sock.close()
    return Result(not reason, reason, time.monotonic() - start)
