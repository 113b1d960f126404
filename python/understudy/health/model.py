"""Health checks as operators configure them: typed, validated, hashable.

A `Check` is one probe (`TcpProbe`, `HttpProbe`, …) plus its timing. Checks are
frozen values, so equal checks are one key: the monitor runs one probe for every
virtual service naming the same server with the same parameters.
`check_from_mapping` maps one TOML table (docs/health.md) to a `Check`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Union

__all__ = [
    "Check",
    "CheckConfigError",
    "DnsProbe",
    "HttpProbe",
    "IcmpProbe",
    "Probe",
    "ScriptProbe",
    "TcpProbe",
    "UdpProbe",
    "check_from_mapping",
]

DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
DNS_RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
HTTP_METHODS = ("GET", "HEAD", "POST", "OPTIONS")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2


class CheckConfigError(ValueError):
    """A check that cannot run as configured; the message names the key."""


def _fail(key: str, value: object, why: str) -> CheckConfigError:
    return CheckConfigError(f"{key} = {value!r}: {why}")


def _address(key: str, value: str) -> None:
    if not isinstance(value, str):
        raise _fail(key, value, "an address is a string")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _fail(key, value, "not an IPv4 or IPv6 address") from None


def _port(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(key, value, "a port is an integer 1-65535")


def _regex(key: str, value: str | None) -> None:
    if value is not None:
        try:
            re.compile(value.encode())
        except re.error as exc:
            raise _fail(key, value, f"bad regular expression ({exc})") from None


@dataclass(frozen=True)
class TcpProbe:
    """Up when a TCP connection to address:port completes."""

    kind: ClassVar[str] = "tcp"
    address: str
    port: int

    def __post_init__(self) -> None:
        _address("address", self.address)
        _port("port", self.port)


@dataclass(frozen=True)
class HttpProbe:
    """Up when an HTTP(S) request gets an expected status (and body, if asked)."""

    kind: ClassVar[str] = "http"
    address: str
    port: int
    tls: bool = False
    method: str = "GET"
    path: str = "/"
    expect_status: tuple[int, ...] = (200,)
    body_regex: str | None = None
    # Hex digest of the whole body: 32 digits is MD5 (as ldirectord/keepalived), 64 is SHA-256.
    body_digest: str | None = None
    host: str | None = None
    sni: str | None = None
    verify: bool = True
    ca_file: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    max_body: int = 65536

    def __post_init__(self) -> None:
        _address("address", self.address)
        _port("port", self.port)
        if self.method not in HTTP_METHODS:
            raise _fail("method", self.method, f"one of {', '.join(HTTP_METHODS)}")
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n\t"):
            raise _fail("path", self.path, "an absolute path without spaces or line breaks")
        if not self.expect_status or any(not 100 <= s <= 599 for s in self.expect_status):
            raise _fail("expect_status", self.expect_status, "one or more statuses 100-599")
        _regex("body_regex", self.body_regex)
        if self.body_digest is not None and not re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", self.body_digest):
            raise _fail("body_digest", self.body_digest, "32 (MD5) or 64 (SHA-256) lowercase hex digits")
        if (self.body_regex or self.body_digest) and self.method == "HEAD":
            raise _fail("method", self.method, "HEAD has no body to match")
        for key, value in (("host", self.host), ("sni", self.sni)):
            if value is not None and not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,255}", value):
                raise _fail(key, value, "a host name or address")
        if self.sni is not None and not self.tls:
            raise _fail("sni", self.sni, "only with tls = true")
        for name, value in self.headers:
            if not _TOKEN.match(name) or any(c in value for c in "\r\n"):
                raise _fail("headers", name, "a header name token and a one-line value")
        if not 0 <= self.max_body <= 16 * 1024 * 1024:
            raise _fail("max_body", self.max_body, "0 to 16 MiB")

    @property
    def host_header(self) -> str:
        """The Host header sent: `host`, else the address (bracketed for IPv6) and port."""
        if self.host:
            return self.host
        addr = f"[{self.address}]" if ":" in self.address else self.address
        default = 443 if self.tls else 80
        return addr if self.port == default else f"{addr}:{self.port}"


@dataclass(frozen=True)
class IcmpProbe:
    """Up when an ICMP (v4 or v6) echo request to the address is answered."""

    kind: ClassVar[str] = "icmp"
    address: str
    payload_size: int = 56

    def __post_init__(self) -> None:
        _address("address", self.address)
        if not 8 <= self.payload_size <= 1400:
            raise _fail("payload_size", self.payload_size, "8-1400 bytes")


@dataclass(frozen=True)
class UdpProbe:
    """Sends a datagram; up on an expected reply (or on silence if no reply is required).

    An ICMP port unreachable always means down.
    """

    kind: ClassVar[str] = "udp"
    address: str
    port: int
    payload: bytes = b""
    expect: bytes | None = None
    expect_regex: str | None = None
    require_reply: bool = True

    def __post_init__(self) -> None:
        _address("address", self.address)
        _port("port", self.port)
        _regex("expect_regex", self.expect_regex)
        if (self.expect is not None or self.expect_regex is not None) and not self.require_reply:
            raise _fail("require_reply", False, "expect/expect_regex need a reply")
        if len(self.payload) > 65507:
            raise _fail("payload", f"{len(self.payload)} bytes", "at most 65507 bytes")


@dataclass(frozen=True)
class DnsProbe:
    """Up when a DNS server answers the query with the expected rcode and records."""

    kind: ClassVar[str] = "dns"
    address: str
    name: str
    port: int = 53
    qtype: str = "A"
    # Every value listed must appear among the answers (addresses, names, "pref name" for MX).
    expect: tuple[str, ...] = ()
    expect_rcode: str = "NOERROR"
    recursion: bool = True

    def __post_init__(self) -> None:
        _address("address", self.address)
        _port("port", self.port)
        if self.qtype not in DNS_TYPES:
            raise _fail("qtype", self.qtype, f"one of {', '.join(DNS_TYPES)}")
        if self.expect_rcode not in DNS_RCODES:
            raise _fail("expect_rcode", self.expect_rcode, f"one of {', '.join(DNS_RCODES)}")
        labels = self.name.rstrip(".").split(".")
        if (len(self.name) > 253 or not self.name.rstrip(".")
                or any(not 1 <= len(lb) <= 63 for lb in labels) or not self.name.isascii()):
            raise _fail("name", self.name, "a domain name (labels 1-63 ASCII characters, 253 in all)")


@dataclass(frozen=True)
class ScriptProbe:
    """Runs a program: exit 0 is up, anything else down.

    With `dynamic_weight` (keepalived's MISC_DYNAMIC meaning): 0 is up, 1 is
    down, 2-255 is up with weight = status - 2.
    """

    kind: ClassVar[str] = "script"
    argv: tuple[str, ...]
    dynamic_weight: bool = False

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise _fail("argv", self.argv, "a program and its arguments")


Probe = Union[TcpProbe, HttpProbe, IcmpProbe, UdpProbe, DnsProbe, ScriptProbe]
PROBE_TYPES: dict[str, type[Probe]] = {p.kind: p for p in (TcpProbe, HttpProbe, IcmpProbe, UdpProbe, DnsProbe,
                                                            ScriptProbe)}


@dataclass(frozen=True)
class Check:
    """One probe and when to run it; equal checks share one probe loop."""

    probe: Probe
    interval: float = 5.0
    # Per attempt; the default is 3 s or the interval if shorter.
    timeout: float = None  # type: ignore[assignment]
    rise: int = 2
    fall: int = 3
    # Quick attempts after a failed one, before the run counts as a failure.
    retries: int = 0
    retry_delay: float = 0.2
    # A name for logs (say, the virtual service's); not part of the check's identity.
    label: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout is None and isinstance(self.interval, (int, float)):
            object.__setattr__(self, "timeout", min(3.0, self.interval))
        for key in ("interval", "timeout", "retry_delay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(key, value, "a number of seconds")
        if not 0.01 <= self.interval <= 86400:
            raise _fail("interval", self.interval, "0.01 to 86400 seconds")
        if not 0.001 <= self.timeout <= self.interval:
            raise _fail("timeout", self.timeout, f"0.001 s up to the interval ({self.interval} s)")
        if not 0 <= self.retry_delay <= 60:
            raise _fail("retry_delay", self.retry_delay, "0 to 60 seconds")
        for key, low, high in (("rise", 1, 1000), ("fall", 1, 1000), ("retries", 0, 10)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _fail(key, value, f"an integer {low}-{high}")

    @property
    def title(self) -> str:
        """A short human name for logs: the label, else kind and target."""
        if self.label:
            return self.label
        p = self.probe
        if isinstance(p, ScriptProbe):
            return f"script {' '.join(p.argv)}"
        port = getattr(p, "port", None)
        addr = f"[{p.address}]" if ":" in p.address else p.address
        return f"{p.kind} {addr}:{port}" if port is not None else f"{p.kind} {p.address}"


_TIMING = {"interval", "timeout", "rise", "fall", "retries", "retry_delay", "label"}


def _payload(table: dict[str, Any], key: str) -> bytes | None:
    """`key` as text (UTF-8) or `key_hex` as hex digits; not both."""
    text, hexed = table.pop(key, None), table.pop(key + "_hex", None)
    if text is not None and hexed is not None:
        raise _fail(key, text, f"give {key} or {key}_hex, not both")
    if text is not None:
        if not isinstance(text, str):
            raise _fail(key, text, "a string")
        return text.encode()
    if hexed is not None:
        try:
            return bytes.fromhex(hexed)
        except (TypeError, ValueError):
            raise _fail(key + "_hex", hexed, "hex digits") from None
    return None


_BOOL_KEYS = {"tls", "verify", "require_reply", "recursion", "dynamic_weight"}
_STR_KEYS = {"address", "method", "path", "body_regex", "body_digest", "host", "sni", "ca_file", "name", "qtype",
             "expect_rcode", "expect_regex", "label"}
_INT_KEYS = {"port", "max_body", "payload_size", "rise", "fall", "retries"}


def _check_types(table: Mapping[str, Any]) -> None:
    """TOML gives typed values; refuse a wrong type here, before it can mean something else."""
    for key, value in table.items():
        if key in _BOOL_KEYS and not isinstance(value, bool):
            raise _fail(key, value, "true or false")
        if key in _STR_KEYS and not isinstance(value, str):
            raise _fail(key, value, "a string")
        if key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            raise _fail(key, value, "an integer")
    for key, kind, what in (("argv", str, "strings"), ("expect_status", int, "integers")):
        value = table.get(key)
        items = value if isinstance(value, list) else [] if value is None else [value]
        if any(not isinstance(v, kind) or isinstance(v, bool) for v in items):
            raise _fail(key, value, f"a list of {what}")
    if table.get("type") == "dns" and "expect" in table:
        expect = table["expect"]
        if not isinstance(expect, list) or not all(isinstance(v, str) for v in expect):
            raise _fail("expect", expect, "a list of strings")


def check_from_mapping(table: Mapping[str, Any], *, address: str | None = None, port: int | None = None) -> Check:
    """Build a `Check` from one config table (`type = "http"`, …; see docs/health.md).

    `address` and `port` default the probe's target to the real server's, so a
    check table need not repeat them. Unknown keys and bad values raise
    `CheckConfigError`.
    """
    _check_types(table)
    rest = dict(table)
    kind = rest.pop("type", None)
    if kind not in PROBE_TYPES:
        raise _fail("type", kind, f"one of {', '.join(PROBE_TYPES)}")
    cls = PROBE_TYPES[kind]
    timing = {k: rest.pop(k) for k in list(rest) if k in _TIMING}
    names = {f.name for f in fields(cls)}
    if "address" in names and address is not None:
        rest.setdefault("address", address)
    if "port" in names and port is not None and cls is not DnsProbe:
        rest.setdefault("port", port)
    if cls is UdpProbe:
        payload, expect = _payload(rest, "payload"), _payload(rest, "expect")
        rest["payload"] = payload or b""
        rest["expect"] = expect
    if "expect_status" in rest:
        status = rest["expect_status"]
        rest["expect_status"] = tuple(status) if isinstance(status, list) else (status,)
    for key in ("expect", "argv"):
        if isinstance(rest.get(key), list):
            rest[key] = tuple(rest[key])
    if isinstance(rest.get("headers"), Mapping):
        rest["headers"] = tuple(sorted((str(k), str(v)) for k, v in rest["headers"].items()))
    unknown = sorted(set(rest) - names)
    if unknown:
        raise CheckConfigError(f"unknown key(s) for a {kind} check: {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(names | _TIMING))})")
    try:
        probe = cls(**rest)
        return Check(probe, **timing)
    except TypeError as exc:
        raise CheckConfigError(f"{kind} check: {exc}") from None
