"""TCP check: up when the three-way handshake completes.

The monitor runs TCP checks in the core's prober (`_core.TcpProber`: its own
thread connects on each check's schedule and hands results over in batches);
`probe()` here is the one-off check, for `run_probe` and the CLI.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from understudy.health.model import TcpProbe
from understudy.health.result import Result, os_reason

__all__ = ["probe", "target"]

# Close with RST, as the prober does: no TIME_WAIT left behind.
_LINGER_RST = struct.pack("ii", 1, 0)


def target(address: str) -> tuple[str, int]:
    """The address without its IPv6 zone, and the zone's interface index (0 if none)."""
    addr, _, zone = address.partition("%")
    if not zone:
        return addr, 0
    try:
        return addr, int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    except OSError:
        return addr, 0  # no such interface: the connect fails and says why


async def probe(cfg: TcpProbe, timeout: float) -> Result:
    """Connect to cfg.address:cfg.port within `timeout` seconds, then close (with RST)."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in cfg.address else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        return Result(False, os_reason(exc), 0.0)
    try:
        sock.setblocking(False)
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
