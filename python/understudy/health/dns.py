"""DNS check: one query over UDP, the reply parsed here (RFC 1035 §4), bounded.

Up when the reply's rcode is the expected one and every expected value is
among the answers (or, with none listed and NOERROR expected, when at least
one answer of the asked type came back).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from understudy.health.model import DNS_RCODES, DNS_TYPES, DnsProbe
from understudy.health.result import Result, os_reason

__all__ = ["DnsFormatError", "DnsReply", "encode_query", "parse_reply", "probe"]

CLASS_IN = 1
MAX_NAME = 255  # RFC 1035 §2.3.4
MAX_JUMPS = 64  # compression pointers followed per name; a loop stops here
RCODE_NAMES = {v: k for k, v in DNS_RCODES.items()}
TYPE_NAMES = {v: k for k, v in DNS_TYPES.items()}


class DnsFormatError(ValueError):
    """A reply that breaks the wire format; the message is the reason."""


@dataclass(frozen=True)
class DnsReply:
    """What a check needs from a reply: header facts and the answers as text."""

    ident: int
    rcode: int
    truncated: bool
    answers: tuple[tuple[int, str], ...]  # (type, value as text)


def encode_name(name: str) -> bytes:
    """`name` as labels (RFC 1035 §3.1), root-terminated."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def encode_query(ident: int, name: str, qtype: int, recursion: bool = True) -> bytes:
    """A standard query for (name, qtype, IN) with identifier `ident`."""
    flags = 0x0100 if recursion else 0  # RD
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at `pos` and the offset after it (after the first pointer, if any)."""
    labels: list[str] = []
    length, jumps, end = 0, 0, -1
    while True:
        if pos >= len(data):
            raise DnsFormatError("name runs past the end")
        size = data[pos]
        if size & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise DnsFormatError("name runs past the end")
            jumps += 1
            if jumps > MAX_JUMPS:
                raise DnsFormatError("compression loop")
            if end < 0:
                end = pos + 2
            pos = ((size & 0x3F) << 8) | data[pos + 1]
            continue
        if size & 0xC0:
            raise DnsFormatError(f"bad label type 0x{size & 0xC0:02x}")
        if size == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        length += size + 1
        if length > MAX_NAME:
            raise DnsFormatError("name longer than 255 bytes")
        if pos + 1 + size > len(data):
            raise DnsFormatError("name runs past the end")
        labels.append(data[pos + 1:pos + 1 + size].decode("ascii", "replace"))
        pos += 1 + size


def _rdata(data: bytes, rtype: int, start: int, size: int) -> str:
    rdata = data[start:start + size]
    if rtype == DNS_TYPES["A"] and size == 4:
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == DNS_TYPES["AAAA"] and size == 16:
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype in (DNS_TYPES["CNAME"], DNS_TYPES["NS"], DNS_TYPES["PTR"], DNS_TYPES["SOA"]):
        return _name(data, start)[0]  # SOA: its MNAME
    if rtype == DNS_TYPES["MX"] and size >= 3:
        return f"{struct.unpack_from('!H', data, start)[0]} {_name(data, start + 2)[0]}"
    if rtype == DNS_TYPES["SRV"] and size >= 7:
        prio, weight, port = struct.unpack_from("!HHH", data, start)
        return f"{prio} {weight} {port} {_name(data, start + 6)[0]}"
    if rtype == DNS_TYPES["TXT"]:
        parts, pos = [], 0
        while pos < size:
            n = rdata[pos]
            if pos + 1 + n > size:
                raise DnsFormatError("TXT string runs past its record")
            parts.append(rdata[pos + 1:pos + 1 + n].decode("utf-8", "replace"))
            pos += 1 + n
        return "".join(parts)
    if rtype in (DNS_TYPES["A"], DNS_TYPES["AAAA"], DNS_TYPES["MX"], DNS_TYPES["SRV"]):
        raise DnsFormatError(f"{TYPE_NAMES[rtype]} record of {size} bytes")
    return rdata.hex()


def parse_reply(data: bytes, name: str, qtype: int) -> DnsReply:
    """Parse a reply to the query (name, qtype); raises DnsFormatError with a reason."""
    if len(data) < 12:
        raise DnsFormatError("shorter than a DNS header")
    ident, flags, qdcount, ancount = struct.unpack_from("!HHHH", data)
    if not flags & 0x8000:
        raise DnsFormatError("not a response (QR clear)")
    if (flags >> 11) & 0xF:
        raise DnsFormatError(f"opcode {(flags >> 11) & 0xF}, not a standard query")
    pos = 12
    if qdcount != 1:
        raise DnsFormatError(f"{qdcount} questions, not 1")
    qname, pos = _name(data, pos)
    if pos + 4 > len(data):
        raise DnsFormatError("question runs past the end")
    if qname.lower() != name.rstrip(".").lower() or struct.unpack_from("!HH", data, pos) != (qtype, CLASS_IN):
        raise DnsFormatError("question does not match the query")
    pos += 4
    answers = []
    for _ in range(ancount):
        _, pos = _name(data, pos)
        if pos + 10 > len(data):
            raise DnsFormatError("answer runs past the end")
        rtype, rclass, _, size = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if pos + size > len(data):
            raise DnsFormatError("answer data runs past the end")
        if rclass == CLASS_IN:
            answers.append((rtype, _rdata(data, rtype, pos, size)))
        pos += size
    return DnsReply(ident, flags & 0xF, bool(flags & 0x0200), tuple(answers))


def _canonical(value: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value.rstrip(".").lower()


def verdict(cfg: DnsProbe, reply: DnsReply) -> str:
    """Why `reply` does not satisfy the check, or "" when it does."""
    want = DNS_RCODES[cfg.expect_rcode]
    if reply.rcode != want:
        return f"rcode {RCODE_NAMES.get(reply.rcode, reply.rcode)}, expected {cfg.expect_rcode}"
    if reply.truncated and not reply.answers:
        return "truncated reply (TC) without answers"
    got = {_canonical(value) for _, value in reply.answers}
    missing = [v for v in cfg.expect if _canonical(v) not in got]
    if missing:
        return f"answer mismatch (missing {', '.join(missing)})"
    if not cfg.expect and want == 0 and not any(t == DNS_TYPES[cfg.qtype] for t, _ in reply.answers):
        return f"no {cfg.qtype} answer"
    return ""


async def probe(cfg: DnsProbe, timeout: float) -> Result:
    """Query cfg.name / cfg.qtype at cfg.address:cfg.port, within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    family = socket.AF_INET6 if ":" in cfg.address else socket.AF_INET
    ident = int.from_bytes(os.urandom(2), "big")
    qtype = DNS_TYPES[cfg.qtype]
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as exc:
        return Result(False, os_reason(exc), 0.0)
    stray = 0
    try:
        sock.connect((cfg.address, cfg.port))
        sock.send(encode_query(ident, cfg.name, qtype, cfg.recursion))
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(sock, 65535)
                # A reply to another query (late, or forged) is not ours: keep waiting.
                if len(data) >= 2 and struct.unpack_from("!H", data)[0] == ident:
                    break
                stray += 1
        reason = verdict(cfg, parse_reply(data, cfg.name, qtype))
    except TimeoutError:
        reason = "timeout" + (f" ({stray} stray replies)" if stray else "")
    except DnsFormatError as exc:
        reason = f"malformed reply: {exc}"
    except ConnectionRefusedError:
        reason = "port unreachable"
    except OSError as exc:
        reason = os_reason(exc)
    finally:
        sock.close()
    return Result(not reason, reason, time.monotonic() - start)
