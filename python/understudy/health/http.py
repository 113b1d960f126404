"""HTTP and HTTPS check: one HTTP/1.1 request (Connection: close), bounded reads.

Up when the status is expected and, if asked, the body matches a regular
expression or a digest. Written on asyncio streams and `ssl` alone.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import ssl
import time

from understudy.health.model import HttpProbe
from understudy.health.result import Result, os_reason

__all__ = ["probe"]

MAX_LINE = 8192  # one status or header line
MAX_HEADERS = 100
NO_BODY_STATUSES = frozenset({204, 304})


class _Malformed(Exception):
    """The reply breaks HTTP/1.1 framing; the message is the reason."""


@functools.lru_cache(maxsize=32)
def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    # Contexts are dear to build (system CA store), so one per setting is shared.
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file)


def _request(cfg: HttpProbe) -> bytes:
    lines = [f"{cfg.method} {cfg.path} HTTP/1.1", f"Host: {cfg.host_header}", "Connection: close",
             "User-Agent: understudy-health", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in cfg.headers]
    if cfg.method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _line(reader: asyncio.StreamReader, where: str = "mid-header") -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _Malformed("header line too long") from None
    except asyncio.IncompleteReadError:
        raise _Malformed(f"connection closed {where}") from None


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await _line(reader, "before status")
    parts = status_line.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or not re.fullmatch(rb"HTTP/1\.[01]", parts[0]) or not re.fullmatch(rb"[1-5][0-9][0-9]",
                                                                                        parts[1]):
        raise _Malformed(f"malformed status line {status_line[:40]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = (await _line(reader)).rstrip(b"\r\n")
        if not line:
            return int(parts[1]), headers
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise _Malformed(f"malformed header {line[:40]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    raise _Malformed(f"more than {MAX_HEADERS} headers")


async def _chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_line = (await _line(reader, "mid-body")).split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_line):
            raise _Malformed("malformed chunk size")
        size = int(size_line, 16)
        if size == 0:
            return bytes(body)  # trailers are not needed: we close
        take = min(size, limit + 1 - len(body))
        try:
            body += await reader.readexactly(take)
            if len(body) > limit:
                return bytes(body)
            if await reader.readexactly(2) != b"\r\n":
                raise _Malformed("malformed chunk end")
        except asyncio.IncompleteReadError:
            raise _Malformed("connection closed mid-body") from None


async def _body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int) -> bytes:
    """At most limit + 1 bytes of the body (one more than allowed tells "too large")."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(reader, limit)
    if "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise _Malformed(f"bad Content-Length {length[:20]!r}")
        try:
            return await reader.readexactly(min(int(length), limit + 1))
        except asyncio.IncompleteReadError:
            raise _Malformed("connection closed mid-body") from None
    body = bytearray()
    while len(body) <= limit and (chunk := await reader.read(limit + 1 - len(body))):
        body += chunk
    return bytes(body)


def _body_verdict(cfg: HttpProbe, body: bytes) -> str:
    if len(body) > cfg.max_body and cfg.body_digest:
        return f"body larger than max_body ({cfg.max_body} bytes)"
    body = body[: cfg.max_body]
    if cfg.body_regex is not None and not re.search(cfg.body_regex.encode(), body):
        return "body mismatch"
    if cfg.body_digest is not None:
        algo = hashlib.md5 if len(cfg.body_digest) == 32 else hashlib.sha256
        if algo(body).hexdigest() != cfg.body_digest:
            return "digest mismatch"
    return ""


async def _exchange(cfg: HttpProbe) -> str:
    """The reason the server is down, or "" when it is up."""
    tls = _tls_context(cfg.verify, cfg.ca_file) if cfg.tls else None
    server_hostname = (cfg.sni or cfg.host or cfg.address) if tls else None
    reader, writer = await asyncio.open_connection(cfg.address, cfg.port, ssl=tls, server_hostname=server_hostname,
                                                   limit=MAX_LINE)
    try:
        writer.write(_request(cfg))
        status, headers = await _head(reader)
        if status not in cfg.expect_status:
            return f"bad status {status}"
        if cfg.body_regex is None and cfg.body_digest is None:
            return ""
        no_body = cfg.method == "HEAD" or status in NO_BODY_STATUSES or status < 200
        return _body_verdict(cfg, b"" if no_body else await _body(reader, headers, cfg.max_body))
    finally:
        # Abort: no lingering TLS close_notify exchange or FIN wait for a check.
        writer.transport.abort()


async def probe(cfg: HttpProbe, timeout: float) -> Result:
    """One request to cfg.address:cfg.port; the whole exchange within `timeout` seconds."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reason = await _exchange(cfg)
    except TimeoutError:
        reason = "timeout"
    except _Malformed as exc:
        reason = str(exc)
    except ssl.SSLCertVerificationError as exc:
        reason = f"TLS: certificate verify failed ({exc.verify_message})"
    except ssl.SSLError as exc:
        reason = f"TLS: {exc.reason or exc}"
    except OSError as exc:
        reason = os_reason(exc)
    except (ValueError, UnicodeError) as exc:  # the ssl module's odd rejections of server names
        reason = f"request failed: {exc}"
    return Result(not reason, reason, time.monotonic() - start)
