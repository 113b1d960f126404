"""Type stubs for the compiled engine (Rust, `rust/` and `core/`)."""

from collections.abc import Iterator, Sequence
from os import PathLike
from typing import Any, final

__all__ = [
    "__version__",
    "BackupRelay",
    "Conn",
    "IpvsClient",
    "IpvsError",
    "Announcer",
    "LinkMonitor",
    "Netif",
    "NetifError",
    "decode_announcement",
    "Checkpoint",
    "ConnTable",
    "HeartbeatEngine",
    "TcpProber",
    "Message",
    "PrimaryRelay",
    "SyncError",
    "SyncReceiver",
    "SyncSender",
    "decode",
    "decode_many",
    "encode",
    "encode_message",
    "error_reasons",
    "skip_reasons",
]
__version__: str

class SyncError(ValueError):
    """A message or connection that cannot be encoded."""

class IpvsError(OSError):
    """The kernel refused an IPVS operation (errno, message naming the operation
    and object, e.g. "add service tcp 10.0.0.1:80: exists"), or IPVS is unavailable."""

class NetifError(OSError):
    """An interface or address operation failed: (errno, message naming the
    interface or operation), e.g. (19, 'no such interface: "eth9"')."""

@final
class Netif:
    """rtnetlink connection of this network namespace.

    Links are dicts: index, name, flags, up, running, operstate ("UP", "DOWN",
    "LOWERLAYERDOWN", "UNKNOWN", ...), usable (up, running and operstate UP or
    UNKNOWN), mac ("02:00:..", "" for none), mtu. Addresses are dicts: index,
    address, prefix_len, flags (IFA_F_*), scope, label.
    """

    def __new__(cls) -> Netif: ...
    def links(self) -> list[dict[str, Any]]: ...
    def link(self, name: str) -> dict[str, Any]:
        """One link by name; NetifError(ENODEV) naming it if there is none."""
    def addresses(self, interface: str | None = None) -> list[dict[str, Any]]:
        """Every address (IPv4 then IPv6), or those of one interface."""
    def add_address(self, interface: str, address: str, prefix_len: int, label: str | None = None) -> bool:
        """Ensure present: True if added, False if it already was (EEXIST). IPv6 without DAD."""
    def del_address(self, interface: str, address: str, prefix_len: int) -> bool:
        """Ensure absent: True if deleted, False if it was not there."""

@final
class LinkMonitor:
    """Link and address changes (RTNLGRP_LINK, IPv4 and IPv6 address groups),
    read without blocking; only messages sent by the kernel are accepted."""

    def __new__(cls) -> LinkMonitor: ...
    def fileno(self) -> int:
        """The socket, for an event loop to watch."""
    def read(self) -> list[dict[str, Any]]:
        """Queued events: link dicts or address dicts with "type" ("link" or
        "address") and "removed"; {"type": "overrun", "removed": False} when
        events were lost and the state must be read again."""
    def stats(self) -> dict[str, int]:
        """datagrams, events, overruns, not_from_kernel, ignored, malformed_<reason>."""

@final
class Announcer:
    """Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6)
    sent on one interface from its MAC, through an AF_PACKET socket."""

    def __new__(cls, interface: str) -> Announcer: ...
    @property
    def interface(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def mac(self) -> str: ...
    @property
    def sent(self) -> int:
        """Frames sent."""
    def frame(self, address: str, reply: bool = False, router: bool = False) -> bytes:
        """The Ethernet frame `announce` would send."""
    def announce(self, address: str, reply: bool = False, router: bool = False) -> None:
        """Send one announcement: ARP request (or reply) form for IPv4, NA with the
        Router flag if `router` for IPv6."""

def decode_announcement(frame: bytes) -> dict[str, Any]:
    """Decode a gratuitous ARP or neighbour advertisement frame (ValueError if neither)."""

@final
class IpvsClient:
    """Generic-netlink connection to the IPVS family of this network namespace.

    Objects are dicts of the kernel's numeric fields: services have af, protocol,
    address, port, fwmark, scheduler, flags, timeout, netmask, pe_name, stats;
    destinations have address, port, forward, weight, u_threshold, l_threshold,
    tun_type, tun_port, tun_flags, active_conns, inactive_conns, persist_conns, stats.
    """

    def __new__(cls) -> IpvsClient: ...
    def dump(self, stats: bool = True) -> list[dict[str, Any]]:
        """Every service, each with a "destinations" list (statistics None unless `stats`)."""
    def service(self, key: dict[str, Any]) -> dict[str, Any] | None: ...
    def dests(self, key: dict[str, Any]) -> list[dict[str, Any]]: ...
    def daemons(self) -> list[dict[str, Any]]: ...
    def timeouts(self) -> tuple[int, int, int]:
        """(tcp, tcp_fin, udp) seconds."""
    def info(self) -> tuple[int, int]:
        """(version, connection table size)."""
    def execute(self, ops: list[tuple[Any, ...]]) -> list[tuple[int, str] | None]:
        """Apply operations in order, many per sendmsg: ("add_service", svc),
        ("edit_service", svc), ("del_service", svc), ("add_dest", svc, dest),
        ("edit_dest", svc, dest), ("del_dest", svc, dest), ("start_daemon", daemon),
        ("stop_daemon", "master"|"backup"), ("set_timeouts", {tcp, tcp_fin, udp}),
        ("zero", svc|None), ("flush",). Returns None or (errno, message) per op."""

@final
class Conn:
    """One IPVS connection entry (decoded, built for encoding, or held by a table)."""

    protocol: int
    flags: int
    state: int
    cport: int
    vport: int
    dport: int
    fwmark: int
    timeout: int
    caddr: str
    vaddr: str
    daddr: str
    options: list[tuple[int, bytes]]
    def __new__(
        cls,
        protocol: int,
        caddr: str,
        cport: int,
        vaddr: str,
        vport: int,
        daddr: str,
        dport: int,
        flags: int = 0,
        state: int = 0,
        fwmark: int = 0,
        timeout: int = 0,
        options: Sequence[tuple[int, bytes]] = (),
    ) -> Conn: ...
    @property
    def af(self) -> str:
        """"inet" or "inet6"."""
    @property
    def template(self) -> bool: ...
    @property
    def offset(self) -> int | None:
        """Offset in the decoded message (None when not decoded)."""
    @property
    def entry_type(self) -> int | None:
        """v1 entry type byte (None for v0 and non-decoded)."""
    @property
    def entry_version(self) -> int | None: ...
    @property
    def size(self) -> int | None:
        """v1 entry size (fixed part + options, no padding)."""
    @property
    def padded_size(self) -> int | None: ...
    @property
    def verdict(self) -> str | None:
        """"apply", or "skip: <reason>" as a Linux 6.1 backup would decide."""
    @property
    def backup_flags(self) -> int | None:
        """Flags a kernel backup stores for this entry (decoded entries)."""
    @property
    def expires(self) -> int | None:
        """Table entries: absolute expiry, seconds on the table's clock."""
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Message:
    """A decoded sync datagram."""

    @property
    def format(self) -> str | None:
        """"v0", "v1", or None when shorter than a header."""
    @property
    def syncid(self) -> int | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def nr_conns(self) -> int | None: ...
    @property
    def length(self) -> int:
        """Bytes in the datagram."""
    @property
    def conns(self) -> list[Conn]:
        """Entries read before any error, each with its verdict."""
    @property
    def error(self) -> str | None:
        """Reason id for dropping the rest of the message, e.g. "entry_version"."""
    @property
    def error_detail(self) -> str | None:
        """Human-readable error, naming the entry and offset."""
    @property
    def trailing(self) -> int:
        """Bytes after the last entry read."""

def decode(datagram: bytes, pe_names: Sequence[str] | None = None) -> Message:
    """Decode one datagram as a Linux 6.1 backup reads it; never raises on bad input.

    `pe_names`: persistence engines loaded on the backup (None: "sip", as stock 6.1).
    """

def decode_many(datagrams: Sequence[bytes], pe_names: Sequence[str] | None = None) -> list[Message]:
    """Decode a batch (GIL released)."""

def encode(conns: Sequence[Conn], version: int = 1, syncid: int = 0, max_len: int = 1472) -> list[bytes]:
    """Pack connections into datagrams of at most max_len bytes, as a kernel master does."""

def encode_message(conns: Sequence[Conn], version: int = 1, syncid: int = 0) -> bytes:
    """Emit exactly one message holding all `conns` (no size limit)."""

def error_reasons() -> list[str]:
    """Every message-level error reason id."""

def skip_reasons() -> list[str]:
    """Every per-entry skip reason id."""

@final
class ConnTable:
    """What a backup knows of the kernel's connections, fed with sync datagrams."""

    def __new__(cls, syncid: int = 0, max_len: int = 65535, pe_names: Sequence[str] | None = None) -> ConnTable: ...
    def apply(self, datagrams: Sequence[bytes], now: float | None = None, wall: float | None = None) -> int:
        """Apply a batch of datagrams (GIL released); returns entries applied. With
        a journal open, those that changed the table are recorded, stamped with
        `wall` (seconds since the epoch, default now), and handed to its writer."""
    def expire(self, now: float | None = None, wall: float | None = None) -> int:
        """Remove entries whose timeout has lapsed; returns how many. With a
        journal open, a sweep that removed any is recorded (at `wall`)."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Conn]: ...
    def snapshot(self) -> list[Conn]: ...
    def get(
        self, protocol: int, caddr: str, cport: int, vaddr: str, vport: int, template: bool = False
    ) -> Conn | None: ...
    def encode(self, version: int = 1, syncid: int = 0, max_len: int = 1472) -> list[bytes]:
        """The whole table as sync datagrams (for resync)."""
    def stats(self) -> dict[str, int]: ...
    def clear(self) -> None: ...
    def now(self) -> float:
        """The table's default clock (time.monotonic)."""
    def memory_bytes(self) -> int:
        """Bytes held by the table's storage, index and timers."""
    def save(
        self, path: str | PathLike[str], now: float | None = None, wall: float | None = None
    ) -> dict[str, int]:
        """Write the table to `path` atomically (temporary file, fsync, rename; GIL
        released); a journal opened with `journal_open` restarts (one of
        `open_state` follows checkpoints: this is then a copy). `wall` is seconds
        since the epoch (default: now). Returns generation, entries, bytes, wall."""
    def load(
        self,
        path: str | PathLike[str],
        journal: str | PathLike[str] | None = None,
        now: float | None = None,
        wall: float | None = None,
    ) -> dict[str, Any]:
        """Replace the content with the snapshot at `path` and the `journal` that
        follows it, each entry's life shortened by the wall time spent down; an
        open journal is closed. Missing or damaged files are reported, never
        raised: restored, generation, snapshot_found, snapshot_fault (None or a
        reason: io, bad_magic, version, bad_crc, truncated, malformed),
        snapshot_entries, snapshot_lost, skipped, journal_found, journal_fault
        (also stale), replayed, journal_lost_bytes, expired."""
    def journal_open(self, path: str | PathLike[str], wall: float | None = None) -> int:
        """Record every change to the table (whatever applies it: `apply`, a
        receiver's drain, a relay's pump; and expiry) in the journal at `path`,
        which follows the snapshot last saved or loaded; returns the records kept."""
    def journal_flush(self, sync: bool = False) -> None:
        """Raise the journal's write error (OSError), if it had one; with `sync`,
        wait until what was applied is on the disk."""
    def journal_close(self) -> None:
        """Write what is buffered and close the journal."""
    def journal_stats(self) -> dict[str, int] | None:
        """generation, records, bytes, dropped (writer too far behind); None if closed."""
    def open_state(
        self, path: str | PathLike[str], now: float | None = None, wall: float | None = None
    ) -> dict[str, Any]:
        """Restore from the state files of `path` (the snapshot, `path`.journal and,
        after a checkpoint cut short, `path`.journal.next), write the result as a
        fresh snapshot and journal every later change (whatever applies it: `apply`,
        a receiver's drain, a relay's pump) to `path`.journal. Returns the load
        report, as `load`; raises OSError if the files cannot be written."""
    def checkpoint(self, now: float | None = None, wall: float | None = None) -> Checkpoint:
        """Begin a checkpoint to the files of `open_state` (RuntimeError without
        them, or while another is under way): the journal goes on in the next
        segment now; capture with `Checkpoint.step`, write with `Checkpoint.commit`."""

@final
class Checkpoint:
    """A snapshot taken while the table goes on changing: captured a step at a
    time between batches (each a few ms), then written off the loop. One
    dropped before its commit is made good by the next checkpoint."""

    def step(self, table: ConnTable, entries: int = 16384) -> bool:
        """Capture up to `entries` more slots of the table that began it; True
        once the whole table is in."""
    def commit(self) -> dict[str, int]:
        """Write the snapshot (fsync, rename) and make the journal follow it
        (GIL released: run it in a thread); generation, entries, bytes, wall.
        RuntimeError if not fully captured or already committed; OSError."""

@final
class SyncReceiver:
    """Receives sync datagrams: multicast as a kernel backup listens (group and
    interface), or unicast on `bind` (with group=None)."""

    def __new__(
        cls, *, group: str | None = "224.0.0.81", port: int = 8848, interface: str | None = None,
        bind: str | None = None
    ) -> SyncReceiver: ...
    def fileno(self) -> int:
        """The socket, for an event loop to watch."""
    def drain(self, table: ConnTable, now: float | None = None) -> tuple[int, int]:
        """Read every queued datagram into `table` (GIL released); (datagrams, entries applied)."""
    def stats(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """(totals, per sending address): datagrams, bytes, truncated."""

@final
class SyncSender:
    """Sends sync datagrams: multicast as a kernel master does, or to one `peer`."""

    def __new__(
        cls, *, interface: str, group: str | None = "224.0.0.81", port: int = 8848, ttl: int = 1,
        peer: str | None = None
    ) -> SyncSender: ...
    def send(self, datagrams: Sequence[bytes]) -> int:
        """Send datagrams, many per sendmmsg (GIL released); how many went out."""
    def send_table(self, table: ConnTable, version: int = 1, syncid: int = 0, max_len: int = 1472) -> int:
        """The whole table as sync messages; datagrams sent."""

@final
class PrimaryRelay:
    """The primary's end of authenticated, reliable replication: the local kernel
    master's sync messages (multicast on `kernel_interface`) into the table and,
    framed and signed, to each of `peers` and to multicast `group` out of `device`
    (UDP `port`); their NACKs and resync requests answered. Full copies carry
    `syncid` until the kernel master's messages bring theirs, and are paced: at
    most `window` frames ahead of what the backups acknowledged."""

    def __new__(
        cls, *, node: int, epoch: int, key: bytes, kernel_interface: str, bind: str, peers: Sequence[str],
        key_id: int = 1, port: int = 8849, kernel_port: int = 8848, syncid: int | None = None,
        device: str | None = None, group: str | None = None, ttl: int = 1, window: int = 512
    ) -> PrimaryRelay: ...
    def filenos(self) -> tuple[int, int]:
        """(kernel master's messages, backups' frames): the sockets to watch."""
    def pump(self, table: ConnTable, now: float | None = None) -> int:
        """Handle everything queued and send the next slice of a copy (GIL released);
        datagrams handled. Call when readable and every ~100 ms."""
    def resync(self, table: ConnTable) -> int:
        """Start a full copy to every backup (`pump` sends the rest); frames sent."""
    def stats(self) -> dict[str, int]: ...

@final
class BackupRelay:
    """A backup's end: frames from `primary` into the table, gaps asked for, and the
    sync messages passed on to the local kernel backup daemon (multicast on
    `kernel_interface`, if given). Bound to `bind` (and `device`); with `group`,
    to the wildcard address on `device`, joined to the group there."""

    def __new__(
        cls, *, node: int, epoch: int, key: bytes, bind: str, primary: str, key_id: int = 1, port: int = 8849,
        kernel_interface: str | None = None, kernel_port: int = 8848, device: str | None = None,
        group: str | None = None
    ) -> BackupRelay: ...
    def fileno(self) -> int: ...
    def pump(self, table: ConnTable, now: float | None = None) -> int:
        """Handle every queued frame (GIL released); frames handled."""
    def tick(self, now: float | None = None) -> int:
        """Status, re-NACKs and resync retries; call every ~100 ms."""
    def caught_up(self) -> bool:
        """Holds the primary's whole table (a copy completed, nothing missing since)."""
    def stats(self) -> dict[str, int]: ...

@final
class HeartbeatEngine:
    """The heartbeat engine: add paths, set the advert, `start()`; its own thread
    sends every `keepalive_ms` and reports events through the queue behind
    `fileno()` (an eventfd). Node ids are 0-31. Wrapped by
    `understudy.failover.heartbeat.Heartbeat`."""

    def __new__(
        cls, *, cluster: int, node: int, incarnation: int, keys: Sequence[tuple[int, bytes]], peers: Sequence[int],
        current_key: int | None = None, keepalive_ms: int = 1000, warn_ms: int = 5000, dead_ms: int = 10000,
        initdead_ms: int = 30000, rt_priority: int | None = None
    ) -> HeartbeatEngine: ...
    def add_unicast_path(
        self, name: str, bind: str, port: int, peers: Sequence[tuple[str, int]], device: str | None = None
    ) -> None:
        """UDP to each of `peers` ((address, port) pairs) from `bind`:`port`."""
    def add_multicast_path(self, name: str, group: str, port: int, interface: str, ttl: int = 1) -> None:
        """UDP multicast to `group`:`port` on `interface`."""
    def add_broadcast_path(self, name: str, interface: str, port: int) -> None:
        """UDP broadcast to 255.255.255.255:`port` out of `interface`."""
    def add_serial_path(self, name: str, device: str | PathLike[str], baud: int = 115200) -> None:
        """A serial line (tty `device`, raw mode, COBS framing)."""
    def set_keys(self, keys: Sequence[tuple[int, bytes]], current_key: int | None = None) -> None:
        """Replace the keys (rotation), at once if running."""
    def start(self) -> None:
        """Open the paths (in the calling thread's network namespace) and start the engine thread."""
    def stop(self) -> None:
        """Stop the thread and close the paths; idempotent."""
    def running(self) -> bool:
        """Whether the engine thread runs."""
    def fileno(self) -> int:
        """The eventfd, readable while events are queued."""
    def path_names(self) -> list[str]:
        """The paths' names, in the order added."""
    def drain(self) -> list[dict[str, Any]]:
        """Every queued event, oldest first, as dicts with a "type" key."""
    def set_advert(
        self, *, role: str, configured_priority: int, effective_priority: int, flags: int = 0,
        primary: int | None = None, load: Sequence[int] = ..., send_now: bool = True
    ) -> None:
        """What this node advertises; sent at once with `send_now` (if running)."""
    def peers(self) -> list[dict[str, Any]]:
        """Every configured peer now: alive, incarnation, state, paths alive, ms since last heard."""
    def stats(self) -> dict[str, Any]:
        """Counters per path (drops by reason), timer lateness, real-time grant, CPU."""
    def reset_lateness(self) -> None:
        """Forget the timer lateness measured so far."""

@final
class TcpProber:
    """TCP connect checks on their own thread (epoll + timerfd), which owns their
    schedule; outcomes queue behind `fileno()` (an eventfd), handed over in
    batches. Used by `understudy.health.Monitor` for every TCP check."""

    def __new__(cls) -> TcpProber: ...
    def add(self, checks: Sequence[tuple[int, str, int, int, float, float, float, int, float]]) -> None:
        """Schedule checks (an id already scheduled is replaced): (id, address, port,
        scope_id, first_due, interval, timeout, retries, retry_delay); times in seconds,
        `first_due` on `time.monotonic()`'s clock."""
    def remove(self, ids: Sequence[int]) -> None:
        """Unschedule checks; an attempt in flight reports nothing."""
    def fileno(self) -> int:
        """The eventfd, readable while outcomes are queued."""
    def drain(self) -> list[tuple[int, int, float, float, int, int]]:
        """Every queued outcome, oldest first: (id, errno (0 = connected), latency,
        late, retries, skipped); times in seconds."""
    def stats(self) -> dict[str, Any]:
        """Counters: checks, connects, dropped, cpu_seconds (of the prober thread)."""
    def stop(self) -> None:
        """Stop the thread, closing connects in flight; idempotent."""
    def running(self) -> bool:
        """Whether the thread runs."""
