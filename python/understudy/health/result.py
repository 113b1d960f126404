"""What one probe found."""

from __future__ import annotations

import errno
from dataclasses import dataclass

__all__ = ["Result", "os_reason"]


@dataclass(frozen=True, slots=True)
class Result:
    """One probe's verdict: `ok`, why not (`reason`), how long it took (`latency`, seconds).

    `weight` is set only by a script check with dynamic weight.
    """

    ok: bool
    reason: str
    latency: float
    weight: int | None = None


_REASONS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timeout",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "out of file descriptors",
    errno.ENOBUFS: "no buffer space (link down?)",
}


def os_reason(err: int | OSError) -> str:
    """A short reason for a socket error: "refused", "host unreachable", …"""
    code = err if isinstance(err, int) else (err.errno or 0)
    if code in _REASONS:
        return _REASONS[code]
    if isinstance(err, OSError) and not err.errno:
        return str(err) or type(err).__name__
    return errno.errorcode.get(code, str(code)).lower()
