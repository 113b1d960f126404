"""Seed a replicated table from the kernel's own connection table.

A primary that starts after connections already exist has heard no sync
message about them; to resync its backups completely it first reads what the
kernel holds (`/proc/net/ip_vs_conn`), turns each row into the `Conn` a kernel
master would have sent, and applies those as sync datagrams:

>>> report = seed_table(table)            # this network namespace's /proc and IPVS table
>>> report.seeded, report.skipped
(1234, {})

`/proc/net/ip_vs_conn` is used rather than `ip_vs_conn_sync`: only it shows the
persistence-engine data of templates (SIP Call-IDs), and IPVS has no netlink
dump of connections. (`parse_proc_ip_vs_conn` reads either format.) What /proc
does not show is derived:

* Forwarding method (flags & 7) and fwmark: from the IPVS table, the real
  server the connection's service has at (daddr, dport), as a kernel backup
  binds it (`ip_vs_find_dest`). A fwmark service's connections show their VIP
  and port, not the mark: the mark is that of the fwmark service holding the
  real server (a fwmark template of the same client decides between several).
* TEMPLATE: client port 0 with a template state (NONE, ASSURED), protocol IP
  (fwmark templates, whose vaddr is the mark as an address), or PE data.
* INACTIVE: set unless the state is an active one (TCP and SCTP
  ESTABLISHED); always on templates, which also carry NOOUTPUT when the real
  server is not NAT (`ip_vs_bind_dest`). These are the flag words a Linux 6.1
  master puts on the wire (0x0000, 0x0100, 0x0003, 0x1183, 0x1100).
* Timeout: /proc shows the time left, not the full timeout. By default each
  entry is sent with `timeout` = the time left (+1 s: the kernel rounds down),
  so the table's expiry is the kernel's, and a backup resynced from the table
  also expires an idle connection when the kernel would. Applying full
  timeouts at an earlier `now` would do the former but not the latter, and the
  table's clock starts at its first call and cannot go back. `lifetime="full"`
  sends the full timeout of the state instead (the service's persistence
  timeout for templates; the kernel's tcp/tcpfin/udp settings): what a kernel
  master sends, as if each connection had just seen a packet.

Rows sync cannot carry are skipped and counted: mixed address families
(IPv4 VIP, IPv6 real server) and unknown state names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from understudy._core import Conn, ConnTable, encode
from understudy.ipvs import Ipvs
from understudy.ipvs.model import AF_INET, AF_INET6, FORWARDS, PROTOCOL_NAMES, Destination, Service

__all__ = [
    "PROC_PATHS",
    "BuiltConns",
    "Malformed",
    "ProcConn",
    "ProcConns",
    "SeedReport",
    "build_conns",
    "full_timeout",
    "parse_proc_ip_vs_conn",
    "read_proc_ip_vs_conn",
    "seed_table",
]

#: Where the kernel's connection table is read: the calling thread's network
#: namespace first (`/proc/net` follows the process's main thread).
PROC_PATHS = ("/proc/thread-self/net/ip_vs_conn", "/proc/net/ip_vs_conn")

# `ip_vs_proto_name` (net/netfilter/ipvs/ip_vs_core.c, 6.1); others print as "IP_<n>".
PROTOCOL_NUMBERS = {"IP": 0, "ICMP": 1, "IPIP": 4, "TCP": 6, "UDP": 17, "GRE": 47, "ICMPv6": 58, "SCTP": 132}
IP, TCP, UDP, ESP, AH, SCTP = 0, 6, 17, 50, 51, 132

# State names as /proc prints them (`*_state_name_table`, 6.1); the index is the state number.
TCP_STATES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
              "LAST_ACK", "LISTEN", "SYNACK")
SCTP_STATES = ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE", "C-ECHOED", "ESTABLISHED",
               "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED", "CLOSED")
UDP_STATES = ("UDP",)
TEMPLATE_STATES = ("NONE", "ASSURED")  # ip_vs_ctpl_state_name_table
STATES: dict[int, tuple[str, ...]] = {TCP: TCP_STATES, UDP: UDP_STATES, SCTP: SCTP_STATES}
#: States in which a connection counts as active (the rest set INACTIVE).
ACTIVE_STATES = {TCP: 1, SCTP: 8}

# Default timeouts, seconds (reference §5.4; `tcp_timeouts`, `sctp_timeouts`, udp 300).
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
SCTP_TIMEOUTS = (2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61)
DEFAULT_TIMEOUTS = {"tcp": 900, "tcp_fin": 120, "udp": 300}
#: What a backup gives a template (or an AH/ESP connection) received without a timeout.
TEMPLATE_TIMEOUT = 180

F_FWD_MASK, F_NOOUTPUT, F_INACTIVE, F_TEMPLATE = 0x0007, 0x0080, 0x0100, 0x1000
OPT_PE_DATA, OPT_PE_NAME = 2, 3

_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_PORT = re.compile(r"[0-9A-Fa-f]{1,4}")
_DECIMAL = re.compile(r"[0-9]+")
_ORIGINS = ("LOCAL", "SYNC")
_MEMO_MAX = 1 << 16  # addresses remembered per parse: VIPs and real servers, not every client

@dataclass(frozen=True, slots=True)
class ProcConn:
    """One row of `/proc/net/ip_vs_conn` (or `ip_vs_conn_sync`), decoded.

    Addresses are in text form as `Conn` has them ("10.0.0.2", "fd00::2").
    `state` is the state number, None for a name this kernel does not print for
    the protocol. `expires`: whole seconds left (the kernel rounds down).
    """

    protocol: int
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    state_name: str
    state: int | None
    template: bool
    expires: int
    pe_name: str | None = None
    pe_data: bytes | None = None
    #: "LOCAL" or "SYNC" (`ip_vs_conn_sync` only).
    origin: str | None = None
    lineno: int = 0

    @property
    def af(self) -> int:
        """AF_INET or AF_INET6, of the client and virtual addresses."""
        return AF_INET6 if ":" in self.caddr else AF_INET

    @property
    def mixed_family(self) -> bool:
        """The real server's family differs from the virtual service's (sync cannot carry it)."""
        return (":" in self.daddr) != (self.af == AF_INET6)

    @property
    def fwmark(self) -> int:
        """For a fwmark template (protocol IP), the mark its vaddr holds; else 0."""
        if self.protocol != IP or not self.template:
            return 0
        value = int(ipaddress.ip_address(self.vaddr))
        return value >> 96 if self.af == AF_INET6 else value  # the mark fills the first 32 bits


class Malformed(NamedTuple):
    lineno: int
    line: str
    reason: str


class ProcConns(list[ProcConn]):
    """The parsed rows, plus the lines that could not be parsed (`malformed`)."""

    def __init__(self, rows: Iterable[ProcConn] = (), malformed: Iterable[Malformed] = ()) -> None:
        super().__init__(rows)
        self.malformed: list[Malformed] = list(malformed)


class _Bad(ValueError):
    pass


def _address(token: str, what: str, memo: dict[str, str]) -> str:
    """A /proc address (IPv4 as %08X, IPv6 as %pI6) in the text form `Conn` uses."""
    text = memo.get(token)
    if text is not None:
        return text
    if ":" in token:
        try:
            text = str(ipaddress.IPv6Address(token))
        except ValueError:
            raise _Bad(f"{what}: bad IPv6 address {token!r}") from None
    elif _HEX8.fullmatch(token):
        text = "%d.%d.%d.%d" % tuple(bytes.fromhex(token))
    else:
        raise _Bad(f"{what}: bad IPv4 address {token!r}")
    if len(memo) < _MEMO_MAX:
        memo[token] = text
    return text


def _port(token: str, what: str) -> int:
    if not _PORT.fullmatch(token):
        raise _Bad(f"{what}: bad port {token!r}")
    return int(token, 16)


def _protocol(token: str) -> int:
    if token in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[token]
    if token.startswith("IP_") and _DECIMAL.fullmatch(token[3:]) and int(token[3:]) < 256:
        return int(token[3:])
    raise _Bad(f"unknown protocol {token!r}")


def _is_template(protocol: int, cport: int, state_name: str, pe_name: str | None) -> bool:
    # Templates have client port 0 and their own two states; fwmark templates
    # protocol IP; PE data is kept on templates only. (A TCP connection still
    # waiting for its client port, NO_CPORT, in state NONE reads as a template.)
    return protocol == IP or pe_name is not None or (cport == 0 and state_name in TEMPLATE_STATES)


def _state(protocol: int, template: bool, name: str) -> int | None:
    if template:
        names: tuple[str, ...] = TEMPLATE_STATES
    elif protocol in STATES:
        names = STATES[protocol]
    else:
        return 0  # IP, AH, ESP: one state ("NONE", or "ERR!" without a state_name handler)
    try:
        return names.index(name)
    except ValueError:
        return None


def _parse_line(line: str, lineno: int, memo: dict[str, str]) -> ProcConn:
    fields = line.split(None, 9)
    if len(fields) < 9:
        raise _Bad(f"{len(fields)} fields, expected at least 9")
    origin: str | None = None
    pe_name: str | None = None
    pe_data: bytes | None = None
    if fields[8] in _ORIGINS:  # ip_vs_conn_sync: ... State Origin Expires
        if len(fields) != 10 or " " in fields[9].strip():
            raise _Bad("ip_vs_conn_sync row: expected 10 fields")
        origin, expires_text = fields[8], fields[9].strip()
    else:  # ip_vs_conn: ... State Expires [PEName PEData]
        expires_text = fields[8]
        if len(fields) == 10:
            rest = fields[9].rstrip("\r\n").split(" ", 1)
            pe_name = rest[0]
            pe_data = (rest[1] if len(rest) > 1 else "").encode("utf-8", "surrogateescape")
    if not _DECIMAL.fullmatch(expires_text):
        raise _Bad(f"bad Expires {expires_text!r}")
    protocol = _protocol(fields[0])
    caddr, vaddr = _address(fields[1], "FromIP", memo), _address(fields[3], "ToIP", memo)
    if (":" in caddr) != (":" in vaddr):
        raise _Bad("FromIP and ToIP of different address families")
    daddr = _address(fields[5], "DestIP", memo)
    cport, vport, dport = _port(fields[2], "FPrt"), _port(fields[4], "TPrt"), _port(fields[6], "DPrt")
    state_name = fields[7]
    template = _is_template(protocol, cport, state_name, pe_name)
    return ProcConn(
        protocol=protocol, caddr=caddr, cport=cport, vaddr=vaddr, vport=vport, daddr=daddr,
        dport=dport, state_name=state_name, state=_state(protocol, template, state_name), template=template,
        expires=int(expires_text), pe_name=pe_name, pe_data=pe_data, origin=origin, lineno=lineno,
    )


def parse_proc_ip_vs_conn(text: str | bytes) -> ProcConns:
    """Rows of `/proc/net/ip_vs_conn` (IPv4, IPv6, templates, PE name and data) or of
    `/proc/net/ip_vs_conn_sync` (with Origin). The header line is optional; lines
    that cannot be parsed are listed in `.malformed`, never raised."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")  # PE data is bytes: keep them
    rows: list[ProcConn] = []
    malformed: list[Malformed] = []
    memo: dict[str, str] = {}  # addresses repeat (VIPs, real servers, busy clients)
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.startswith("Pro "):
            continue
        try:
            rows.append(_parse_line(line, lineno, memo))
        except _Bad as e:
            malformed.append(Malformed(lineno, line, str(e)))
    return ProcConns(rows, malformed)


def read_proc_ip_vs_conn(paths: Sequence[str] = PROC_PATHS) -> bytes:
    """The kernel's table of the calling thread's network namespace, as bytes."""
    for path in paths:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"none of {', '.join(paths)} exists: is IPVS (ip_vs) loaded?")


# --- from rows to the Conns a kernel master would send -------------------------------------------


def _norm(address: str | None) -> str:
    return str(ipaddress.ip_address(address)) if address else ""


def _masked(address: str, netmask: int, af: int) -> str:
    """`address` under a service's persistence netmask (IPv4: mask; IPv6: prefix length)."""
    if af == AF_INET6:
        mask = ((1 << 128) - 1) ^ ((1 << (128 - min(netmask, 128))) - 1)
        return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(address)) & mask))
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(address)) & netmask))


class _Services:
    """The IPVS table indexed as the kernel finds a connection's service."""

    def __init__(self, services: Iterable[Service]) -> None:
        self.by_port: dict[tuple[int, str, str, int], Service] = {}
        self.by_mark: dict[tuple[int, int], Service] = {}
        self.marked: dict[int, list[Service]] = {AF_INET: [], AF_INET6: []}
        self.dests: dict[object, dict[str, list[Destination]]] = {}
        for svc in services:
            if svc.fwmark:
                self.by_mark[(svc.af, svc.fwmark)] = svc
                self.marked.setdefault(svc.af, []).append(svc)
            elif svc.protocol is not None and svc.port is not None:
                self.by_port[(svc.af, svc.protocol, _norm(svc.address), svc.port)] = svc
            by_addr: dict[str, list[Destination]] = {}
            for d in svc.destinations:
                by_addr.setdefault(_norm(d.address), []).append(d)
            self.dests[svc.key] = by_addr

    def port_service(self, af: int, protocol: int, vaddr: str, vport: int) -> Service | None:
        """`ip_vs_service_find` without a mark: exact, FTP (port 21), then port 0."""
        name = PROTOCOL_NAMES.get(protocol)
        if name is None:
            return None
        svc = self.by_port.get((af, name, vaddr, vport))
        if svc is None and protocol == TCP and (vport in (0, 20) or vport >= 1024):
            svc = self.by_port.get((af, name, vaddr, 21))  # FTP data, and FTP templates (vport 0)
        if svc is None:
            svc = self.by_port.get((af, name, vaddr, 0))
        return svc

    def dest(self, svc: Service, daddr: str, dport: int) -> Destination | None:
        """The real server at (daddr, dport); a port-0 one (fwmark, non-NAT); or the only one at daddr."""
        candidates = self.dests[svc.key].get(daddr, [])
        for d in candidates:
            if d.port == dport:
                return d
        for d in candidates:
            if d.port == 0:
                return d
        return candidates[0] if len(candidates) == 1 else None


@dataclass
class BuiltConns:
    """`build_conns`' result: the entries, and what could not be built as the kernel would."""

    conns: list[Conn] = field(default_factory=list)
    templates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unbound: int = 0
    ambiguous: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def full_timeout(row: ProcConn, service: Service | None = None,
                 timeouts: Mapping[str, int] | None = None) -> int:
    """The timeout the kernel restarts `row`'s timer with in its state: the service's
    persistence timeout for a template, else the protocol's (with the kernel's
    tcp / tcp_fin / udp settings, `ipvsadm --set`, where given)."""
    t = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
    state = row.state or 0
    if row.template:
        return service.timeout if service is not None and service.timeout else TEMPLATE_TIMEOUT
    if row.protocol == TCP and state < len(TCP_TIMEOUTS):
        return t["tcp"] if state == 1 else t["tcp_fin"] if state == 4 else TCP_TIMEOUTS[state]
    if row.protocol == UDP:
        return t["udp"]
    if row.protocol == SCTP and state < len(SCTP_TIMEOUTS):
        return SCTP_TIMEOUTS[state]
    return TEMPLATE_TIMEOUT


def build_conns(rows: Iterable[ProcConn], services: Iterable[Service], *,
                lifetime: Literal["remaining", "full"] = "remaining",
                timeouts: Mapping[str, int] | None = None) -> BuiltConns:
    """The `Conn` a kernel master would send for each row (see the module's notes)."""
    if lifetime not in ("remaining", "full"):
        raise ValueError(f"lifetime must be 'remaining' or 'full', not {lifetime!r}")
    index = _Services(services)
    rows = list(rows)
    # Which real server each client's fwmark template chose: (mark, masked caddr, daddr).
    hints = {(r.fwmark, r.caddr, r.daddr) for r in rows if r.template and r.protocol == IP}
    out = BuiltConns()
    for row in rows:
        if row.mixed_family:
            out.skip("mixed_family")
            continue
        if row.state is None:
            out.skip("unknown_state")
            continue
        svc: Service | None
        dest: Destination | None = None
        fwmark = 0
        if row.template and row.protocol == IP:
            fwmark = row.fwmark
            svc = index.by_mark.get((row.af, fwmark))
        else:
            svc = index.port_service(row.af, row.protocol, row.vaddr, row.vport)
        if svc is not None:
            dest = index.dest(svc, row.daddr, row.dport)
        if dest is None and not row.template:
            # A fwmark service's connection: the marked service holding the real server.
            fits = [(s, d) for s in index.marked.get(row.af, []) if (d := index.dest(s, row.daddr, row.dport))]
            hinted = [(s, d) for s, d in fits if (s.fwmark, _masked(row.caddr, s.netmask, s.af), row.daddr) in hints]
            if fits:
                svc, dest = (hinted or fits)[0]
                fwmark = svc.fwmark
                out.ambiguous += not hinted and len(fits) > 1
        if dest is None:
            out.unbound += 1
        fwd = FORWARDS.get(dest.forward, 0) if dest is not None else 0
        if row.template:
            flags = F_TEMPLATE | F_INACTIVE | fwd | (F_NOOUTPUT if fwd != 0 else 0)
            out.templates += 1
        else:
            active = ACTIVE_STATES.get(row.protocol) == row.state
            flags = fwd | (0 if active else F_INACTIVE)
        if lifetime == "remaining":
            timeout = row.expires + 1  # whole seconds, rounded down by the kernel; never 0 ("default")
        else:
            timeout = full_timeout(row, svc, timeouts)
        options: list[tuple[int, bytes]] = []
        if row.pe_name is not None:
            options = [(OPT_PE_DATA, row.pe_data or b""), (OPT_PE_NAME, row.pe_name.encode())]
        out.conns.append(Conn(row.protocol, row.caddr, row.cport, row.vaddr, row.vport, row.daddr, row.dport,
                              flags=flags, state=row.state, fwmark=fwmark, timeout=timeout, options=options))
    return out


# --- seeding --------------------------------------------------------------------------------------


@dataclass
class SeedReport:
    """What `seed_table` did."""

    #: Connection rows read, and lines that could not be parsed.
    rows: int
    malformed: int
    #: Entries built and sent to the table, and how many of them are templates.
    conns: int
    templates: int
    #: Entries the table applied (it may refuse some, e.g. an unknown PE: see its stats).
    seeded: int
    datagrams: int
    #: Rows not sent, by reason ("mixed_family", "unknown_state").
    skipped: dict[str, int]
    #: Sent without a matching real server in the IPVS table (forwarding method taken as NAT).
    unbound: int
    #: Connections that several fwmark services could hold (the first was taken).
    ambiguous: int
    #: The table-clock time the entries were applied at.
    now: float
    lifetime: str
    #: The unparsable lines themselves (line number, text, reason).
    malformed_lines: list[Malformed] = field(default_factory=list, repr=False)


def seed_table(table: ConnTable, *, proc_text: str | bytes | None = None,
               ipvs: Ipvs | Iterable[Service] | None = None, now: float | None = None, syncid: int = 0,
               lifetime: Literal["remaining", "full"] = "remaining", timeouts: Mapping[str, int] | None = None,
               batch: int = 4096, max_len: int = 1472) -> SeedReport:
    """Fill `table` with the kernel's connections.

    `proc_text`: the text of `/proc/net/ip_vs_conn` (default: read it, in the
    calling thread's network namespace). `ipvs`: the IPVS table, as an `Ipvs`
    (its timeouts are used too) or its services (default: `Ipvs()` here).
    `now`: when `proc_text` was read, on the table's clock (default: the table's
    clock, after reading). `syncid`: the one the table accepts, if it filters.
    Entries are encoded and applied `batch` at a time (v1 datagrams of `max_len`).
    """
    if proc_text is None:
        proc_text = read_proc_ip_vs_conn()
    if now is None:
        now = table.now()
    if ipvs is None:
        ipvs = Ipvs()
    if isinstance(ipvs, Ipvs):
        services = ipvs.dump(stats=False)
        if timeouts is None:
            timeouts = ipvs.timeouts()
    else:
        services = list(ipvs)
    rows = parse_proc_ip_vs_conn(proc_text)
    built = build_conns(rows, services, lifetime=lifetime, timeouts=timeouts)

    batch = max(1, batch)
    before = table.stats()
    seeded = datagrams = 0
    for start in range(0, len(built.conns), batch):
        chunk = encode(built.conns[start:start + batch], 1, syncid, max_len)
        datagrams += len(chunk)
        seeded += table.apply(chunk, now)
    after = table.stats()
    if after["syncid_mismatch"] > before["syncid_mismatch"]:
        raise ValueError(f"the table refused syncid {syncid}: pass seed_table(..., syncid=<the table's syncid>)")
    dropped = {k: after[k] - before[k] for k in after if k.startswith("dropped_") and after[k] > before[k]}
    if dropped:
        raise ValueError(f"the table dropped seeding datagrams ({dropped}): is max_len={max_len} above its own?")
    return SeedReport(
        rows=len(rows), malformed=len(rows.malformed), conns=len(built.conns), templates=built.templates,
        seeded=seeded, datagrams=datagrams, skipped=built.skipped, unbound=built.unbound,
        ambiguous=built.ambiguous, now=now, lifetime=lifetime, malformed_lines=rows.malformed,
    )
