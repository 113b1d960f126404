"""ICMP echo check, IPv4 and IPv6.

One socket per address family serves every probe on the event loop: requests
carry the socket's identifier and a sequence number, and replies are matched
back by (sequence, source address, token), so thousands of probes share it.
A datagram ICMP socket (net.ipv4.ping_group_range) is used when allowed,
else a raw socket (needs CAP_NET_RAW).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import time
import weakref

from understudy.health.model import IcmpProbe
from understudy.health.result import Result, os_reason

__all__ = ["Pinger", "close_pingers", "pinger", "probe"]

ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
DEST_UNREACH: dict[int, int] = {socket.AF_INET: 3, socket.AF_INET6: 1}
_UNREACH_V4 = {0: "network unreachable", 1: "host unreachable", 3: "port unreachable", 9: "network prohibited",
               10: "host prohibited", 13: "administratively prohibited"}
_UNREACH_V6 = {0: "no route", 1: "administratively prohibited", 3: "address unreachable", 4: "port unreachable"}
_READ_BURST = 512  # datagrams drained per wake-up, so one busy socket cannot starve the loop
_TOKEN_LEN = 8
RCVBUF = 8 << 20
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; the socket module does not name it


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _expire(fut: asyncio.Future[str]) -> None:
    if not fut.done():
        fut.set_result("timeout")


def _normal(address: str) -> str:
    return ipaddress.ip_address(address.split("%", 1)[0]).compressed


class Pinger:
    """One ICMP socket of one family on the running loop, shared by all its echo probes."""

    __slots__ = ("family", "kind", "ident", "_sock", "_loop", "_seq", "_token", "_waiting", "drops")

    def __init__(self, family: int, kind: str = "auto") -> None:
        if kind not in ("auto", "dgram", "raw"):
            raise ValueError(f"kind must be auto, dgram or raw, not {kind!r}")
        self.family = family
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        sock = None
        if kind in ("auto", "dgram"):
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
                self.kind = "dgram"
            except OSError:
                if kind == "dgram":
                    raise
        if sock is None:
            sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
            self.kind = "raw"
        self._sock = sock
        # Replies to a burst of probes arrive together: room for thousands (CAP_NET_ADMIN may exceed rmem_max).
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if self.kind == "dgram":
            # The kernel sets the echo identifier to the socket's "port", and delivers only replies to it.
            sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
            self.ident = sock.getsockname()[1]
        else:
            self.ident = int.from_bytes(os.urandom(2), "big")
        self._token = os.urandom(_TOKEN_LEN)
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._waiting: dict[int, tuple[asyncio.Future[str], str]] = {}
        self.drops: dict[str, int] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        """Stop reading; probes still waiting see "pinger closed"."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        for fut, _ in self._waiting.values():
            if not fut.done():
                fut.set_result("pinger closed")
        self._waiting.clear()

    def _drop(self, why: str) -> None:
        self.drops[why] = self.drops.get(why, 0) + 1

    def _next_seq(self) -> int | None:
        for _ in range(65536):
            self._seq = (self._seq + 1) & 0xFFFF
            if self._seq not in self._waiting:
                return self._seq
        return None

    async def ping(self, address: str, timeout: float, payload_size: int = 56) -> Result:
        """One echo request to `address`; up when its reply arrives within `timeout`."""
        loop = self._loop
        start = time.monotonic()
        seq = self._next_seq()
        if seq is None:
            return Result(False, "too many echo requests in flight", 0.0)
        payload = (self._token + bytes(payload_size))[:payload_size] if payload_size >= _TOKEN_LEN else self._token
        header = struct.pack("!BBHHH", ECHO_REQUEST[self.family], 0, 0, self.ident, seq)
        packet = header + payload
        if self.family == socket.AF_INET:  # the kernel sums ICMPv6 itself (RFC 3542 §3.1)
            packet = header[:2] + struct.pack("!H", _checksum(packet)) + header[4:] + payload
        fut: asyncio.Future[str] = loop.create_future()
        self._waiting[seq] = (fut, _normal(address))
        timer = loop.call_later(timeout, _expire, fut)
        try:
            self._sock.sendto(packet, (address, 0))
            reason = await fut
        except OSError as exc:
            reason = os_reason(exc)
        finally:
            timer.cancel()
            if self._waiting.get(seq, (None,))[0] is fut:
                del self._waiting[seq]
        return Result(not reason, reason, time.monotonic() - start)

    def _readable(self) -> None:
        for _ in range(_READ_BURST):
            try:
                data, source = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop("socket error")  # a pending ICMP error on a datagram socket; the probe times out
                return
            self._received(data, source[0])

    def _received(self, data: bytes, source: str) -> None:
        if self.kind == "raw" and self.family == socket.AF_INET:
            if len(data) < 20:
                return self._drop("short")
            data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets see the IP header
        if len(data) < 8:
            return self._drop("short")
        kind, code, _, ident, seq = struct.unpack_from("!BBHHH", data)
        if kind == ECHO_REPLY[self.family]:
            if ident != self.ident:
                return self._drop("other identifier")  # another pinger's reply on a raw socket
            waiting = self._waiting.get(seq)
            if waiting is None or waiting[1] != _normal(source) or data[8:8 + _TOKEN_LEN] != self._token:
                return self._drop("unmatched reply")
            if not waiting[0].done():
                waiting[0].set_result("")
        elif kind == DEST_UNREACH[self.family]:
            self._unreachable(code, data[8:])
        else:
            self._drop("other type")

    def _unreachable(self, code: int, quoted: bytes) -> None:
        # The error quotes our request: its IP header, then at least 8 bytes of ICMP.
        if self.family == socket.AF_INET:
            if len(quoted) < 20:
                return self._drop("short")
            ihl = (quoted[0] & 0x0F) * 4
            inner, target = quoted[ihl:ihl + 8], socket.inet_ntop(socket.AF_INET, quoted[16:20])
            reason = _UNREACH_V4.get(code, f"unreachable (code {code})")
        else:
            inner = quoted[40:48] if len(quoted) >= 48 and quoted[6] == socket.IPPROTO_ICMPV6 else b""
            target = socket.inet_ntop(socket.AF_INET6, quoted[24:40]) if len(quoted) >= 40 else ""
            reason = _UNREACH_V6.get(code, f"unreachable (code {code})")
        if len(inner) < 8:
            return self._drop("short")
        kind, _, _, ident, seq = struct.unpack_from("!BBHHH", inner)
        waiting = self._waiting.get(seq)
        if kind != ECHO_REQUEST[self.family] or ident != self.ident or waiting is None or waiting[1] != _normal(target):
            return self._drop("unmatched error")
        if not waiting[0].done():
            waiting[0].set_result(reason)


_pingers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Pinger]] = weakref.WeakKeyDictionary()


def pinger(family: int) -> Pinger:
    """The running loop's shared pinger for `family`, opened on first use."""
    loop = asyncio.get_running_loop()
    per_loop = _pingers.setdefault(loop, {})
    if family not in per_loop:
        per_loop[family] = Pinger(family)
    return per_loop[family]


def close_pingers() -> None:
    """Close the running loop's shared pingers (the monitor does at stop)."""
    for p in _pingers.pop(asyncio.get_running_loop(), {}).values():
        p.close()


async def probe(cfg: IcmpProbe, timeout: float) -> Result:
    """Ping cfg.address once, within `timeout` seconds."""
    family = socket.AF_INET6 if ":" in cfg.address else socket.AF_INET
    try:
        shared = pinger(family)
    except OSError as exc:
        return Result(False, f"no ICMP socket: {os_reason(exc)}", 0.0)
    return await shared.ping(cfg.address, timeout, cfg.payload_size)
