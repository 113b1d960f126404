"""UDP datagrams out of packet captures, and captures out of datagrams.

Reads classic pcap (either byte order, micro- or nanosecond timestamps) and
pcapng (SHB, IDB, EPB, SPB and the obsolete PB), over Ethernet (with 802.1Q /
802.1ad tags), Linux cooked capture v1 and v2, raw IP and BSD loopback. IPv4
and IPv6 fragments are reassembled; a datagram is reported at the frame that
completes it, numbered as Wireshark numbers frames (1-based, every packet
block counts). Frames that cannot be read are skipped and counted by reason,
never raised: only a file that is not a capture at all raises `PcapError`.

`write_pcap` emits an Ethernet pcap of IPv4 or IPv6 UDP frames with valid
checksums, to feed tshark and other analysers.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = ["PcapError", "PcapReader", "UdpDatagram", "iter_udp", "write_pcap"]


class PcapError(ValueError):
    """The file is not a pcap or pcapng capture (or its file header is cut short)."""


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    frame: int
    """1-based number of the frame that completed the datagram."""
    time: float
    """Capture time of that frame, seconds since the epoch."""
    src: str
    dst: str
    sport: int
    dport: int
    ttl: int
    """IPv4 TTL or IPv6 hop limit (of the completing frame)."""
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Frame:
    number: int
    time: float
    linktype: int
    data: bytes


# Link-layer header types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
# BSD AF_INET6 differs per system (Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, macOS 30).
_NULL_AF_INET = 2
_NULL_AF_INET6 = (10, 24, 28, 30)

_IPPROTO_UDP = 17
_IPPROTO_IPV6_FRAGMENT = 44
_IPPROTO_AH = 51
# IPv6 extension headers with the generic (next header, length in 8-octet units) layout.
_IPV6_GENERIC_EXTENSIONS = frozenset({0, 43, 60, 135, 139, 140})

_PCAP_MAGIC_MICRO = 0xA1B2C3D4
_PCAP_MAGIC_NANO = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_PCAPNG_IDB = 1
_PCAPNG_PB = 2
_PCAPNG_SPB = 3
_PCAPNG_EPB = 6
_PCAPNG_OPT_IF_TSRESOL = 9
_PCAPNG_OPT_IF_TSOFFSET = 14

# Bounds a well-formed capture never reaches; larger values mean corruption.
_MAX_BLOCK_LEN = 64 * 1024 * 1024
# Reassemblies kept open at once; the oldest is dropped beyond this.
_MAX_PENDING_REASSEMBLIES = 4096


class _Malformed(Exception):
    """A frame that cannot be read; `reason` is the counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PcapReader:
    """Iterate the UDP datagrams of a capture file.

    Construction checks that the file is a capture (raises `OSError` or
    `PcapError`). Each iteration re-reads it and recounts `frames` (frames
    read) and `skipped`: the frames (or, for "incomplete_fragments",
    datagrams) that yielded nothing, by reason.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.frames = 0
        self.skipped: Counter[str] = Counter()
        with self.path.open("rb") as f:
            _capture_kind(f.read(4))

    def __iter__(self) -> Iterator[UdpDatagram]:
        self.frames = 0
        self.skipped = Counter()
        ip_layer = _IpLayer(self.skipped)
        with self.path.open("rb") as f:
            for frame in _read_frames(f, self.skipped):
                self.frames = frame.number
                try:
                    datagram = _decode_frame(frame, ip_layer)
                except _Malformed as e:
                    self.skipped[e.reason] += 1
                    continue
                if datagram is not None:
                    yield datagram
        pending = ip_layer.pending_count()
        if pending:
            self.skipped["incomplete_fragments"] += pending


def iter_udp(path: str | Path) -> Iterator[UdpDatagram]:
    """The UDP datagrams of a capture, in capture order (see `PcapReader`)."""
    return iter(PcapReader(path))


# --- capture file formats -------------------------------------------------


def _capture_kind(magic: bytes) -> str:
    if len(magic) < 4:
        raise PcapError("not a capture file: shorter than a file header")
    if struct.unpack("<I", magic)[0] == _PCAPNG_SHB:
        return "pcapng"
    for order in "<>":
        if struct.unpack(order + "I", magic)[0] in (_PCAP_MAGIC_MICRO, _PCAP_MAGIC_NANO):
            return "pcap"
    raise PcapError(f"not a pcap or pcapng file (magic {magic.hex()})")


def _read_frames(f: BinaryIO, skipped: Counter[str]) -> Iterator[_Frame]:
    if _capture_kind(f.read(4)) == "pcap":
        yield from _read_classic(f, skipped)
    else:
        yield from _read_pcapng(f, skipped)


def _read_classic(f: BinaryIO, skipped: Counter[str]) -> Iterator[_Frame]:
    f.seek(0)
    header = f.read(24)
    if len(header) < 24:
        raise PcapError("truncated pcap file header")
    order = "<" if struct.unpack("<I", header[:4])[0] in (_PCAP_MAGIC_MICRO, _PCAP_MAGIC_NANO) else ">"
    magic, _vmaj, _vmin, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "IHHiIII", header)
    fraction = 1e-9 if magic == _PCAP_MAGIC_NANO else 1e-6
    linktype = network & 0x03FFFFFF  # upper bits carry FCS information
    number = 0
    while True:
        record = f.read(16)
        if not record:
            return
        number += 1
        if len(record) < 16:
            skipped["truncated_record"] += 1
            return
        seconds, frac, caplen, _origlen = struct.unpack(order + "IIII", record)
        if caplen > _MAX_BLOCK_LEN:
            skipped["bad_record"] += 1
            return
        data = f.read(caplen)
        if len(data) < caplen:
            skipped["truncated_record"] += 1
            return
        yield _Frame(number, seconds + frac * fraction, linktype, data)


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_second: int
    offset_seconds: int


def _read_pcapng(f: BinaryIO, skipped: Counter[str]) -> Iterator[_Frame]:
    f.seek(0)
    order = "<"
    interfaces: list[_Interface] = []
    number = 0
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            skipped["truncated_block"] += 1
            return
        block_type = struct.unpack(order + "I", head[:4])[0]
        prefix = b""
        if block_type == _PCAPNG_SHB:
            # A section header fixes the byte order of everything up to the next one.
            prefix = f.read(4)
            if len(prefix) < 4:
                skipped["truncated_block"] += 1
                return
            if struct.unpack("<I", prefix)[0] == _PCAPNG_BYTE_ORDER_MAGIC:
                order = "<"
            elif struct.unpack(">I", prefix)[0] == _PCAPNG_BYTE_ORDER_MAGIC:
                order = ">"
            else:
                skipped["bad_block"] += 1
                return
            interfaces = []
        total_len = struct.unpack(order + "I", head[4:])[0]
        if total_len < 12 + len(prefix) or total_len % 4 or total_len > _MAX_BLOCK_LEN:
            skipped["bad_block"] += 1
            return
        # The rest of the body, then the trailing copy of the block length.
        remaining = total_len - 12 - len(prefix) + 4
        rest = f.read(remaining)
        if len(rest) < remaining:
            skipped["truncated_block"] += 1
            return
        body = prefix + rest[:-4]
        if block_type == _PCAPNG_IDB:
            interface = _parse_idb(body, order)
            if interface is None:
                skipped["bad_block"] += 1
            else:
                interfaces.append(interface)
        elif block_type in (_PCAPNG_EPB, _PCAPNG_SPB, _PCAPNG_PB):
            number += 1
            frame = _parse_packet_block(block_type, body, order, interfaces, number)
            if frame is None:
                skipped["bad_block"] += 1
            else:
                yield frame


def _parse_idb(body: bytes, order: str) -> _Interface | None:
    if len(body) < 8:
        return None
    linktype, _reserved, snaplen = struct.unpack(order + "HHI", body[:8])
    units_per_second = 1_000_000
    offset_seconds = 0
    for code, value in _pcapng_options(body[8:], order):
        if code == _PCAPNG_OPT_IF_TSRESOL and len(value) >= 1:
            exponent = value[0] & 0x7F
            units_per_second = (2 if value[0] & 0x80 else 10) ** exponent
        elif code == _PCAPNG_OPT_IF_TSOFFSET and len(value) >= 8:
            offset_seconds = struct.unpack(order + "q", value[:8])[0]
    return _Interface(linktype, snaplen, units_per_second, offset_seconds)


def _pcapng_options(data: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        code, length = struct.unpack(order + "HH", data[pos : pos + 4])
        if code == 0:  # opt_endofopt
            return
        value = data[pos + 4 : pos + 4 + length]
        if len(value) < length:
            return
        yield code, value
        pos += 4 + (length + 3) // 4 * 4


def _parse_packet_block(
    block_type: int, body: bytes, order: str, interfaces: list[_Interface], number: int
) -> _Frame | None:
    if block_type == _PCAPNG_SPB:
        if not interfaces or len(body) < 4:
            return None
        interface = interfaces[0]
        origlen = struct.unpack(order + "I", body[:4])[0]
        caplen = min(origlen, len(body) - 4)
        if interface.snaplen:
            caplen = min(caplen, interface.snaplen)
        # SPB has no timestamp.
        return _Frame(number, 0.0, interface.linktype, body[4 : 4 + caplen])
    if len(body) < 20:
        return None
    if block_type == _PCAPNG_EPB:
        interface_id, ts_high, ts_low, caplen, _origlen = struct.unpack(order + "IIIII", body[:20])
    else:  # the obsolete Packet Block: 16-bit interface id and drop count
        interface_id, _drops, ts_high, ts_low, caplen, _origlen = struct.unpack(order + "HHIIII", body[:20])
    if interface_id >= len(interfaces) or 20 + caplen > len(body):
        return None
    interface = interfaces[interface_id]
    ticks = (ts_high << 32) | ts_low
    time = interface.offset_seconds + ticks / interface.units_per_second
    return _Frame(number, time, interface.linktype, body[20 : 20 + caplen])


# --- link layer -----------------------------------------------------------


def _link_payload(linktype: int, data: bytes) -> bytes:
    """The IP packet a frame carries; raises `_Malformed` for anything else."""
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet_payload(data)
    if linktype == LINKTYPE_LINUX_SLL:
        return _ethertype_payload(_u16(data, 14, "truncated_link_header"), data[16:])
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            raise _Malformed("truncated_link_header")
        return _ethertype_payload(_u16(data, 0, "truncated_link_header"), data[20:])
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return data
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return _loopback_payload(linktype, data)
    raise _Malformed(f"unsupported_linktype_{linktype}")


def _ethernet_payload(data: bytes) -> bytes:
    pos = 12
    ethertype = _u16(data, pos, "truncated_link_header")
    while ethertype in _ETHERTYPE_VLAN_TAGS:
        pos += 4
        ethertype = _u16(data, pos, "truncated_link_header")
    return _ethertype_payload(ethertype, data[pos + 2 :])


def _ethertype_payload(ethertype: int, payload: bytes) -> bytes:
    if ethertype not in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
        raise _Malformed("not_ip")
    return payload


def _loopback_payload(linktype: int, data: bytes) -> bytes:
    if len(data) < 4:
        raise _Malformed("truncated_link_header")
    if linktype == LINKTYPE_LOOP:
        family = struct.unpack(">I", data[:4])[0]
    else:
        # DLT_NULL stores the family in the capturing host's byte order.
        family = struct.unpack("<I", data[:4])[0]
        if family > 0xFFFF:
            family = struct.unpack(">I", data[:4])[0]
    if family != _NULL_AF_INET and family not in _NULL_AF_INET6:
        raise _Malformed("not_ip")
    return data[4:]


def _u16(data: bytes, pos: int, reason: str) -> int:
    if len(data) < pos + 2:
        raise _Malformed(reason)
    value: int = struct.unpack_from(">H", data, pos)[0]
    return value


# --- IP and UDP -----------------------------------------------------------


@dataclass(slots=True)
class _Reassembly:
    """Fragments of one IP datagram, assembled by offset."""

    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    total: int | None = None
    first_header: int = 0
    """IPv6: the header after the fragment header, as the offset-0 fragment names it."""

    def add(self, offset: int, data: bytes, more: bool) -> bytes | None:
        """Add a fragment; the whole payload once every byte has arrived."""
        if not more:
            self.total = offset + len(data)
        self.pieces.append((offset, data))
        if self.total is None:
            return None
        covered = 0
        for start, piece in sorted(self.pieces):
            if start > covered:
                return None
            covered = max(covered, start + len(piece))
        if covered < self.total:
            return None
        whole = bytearray(self.total)
        for start, piece in self.pieces:
            fitting = piece[: max(0, self.total - start)]  # a later "last" fragment may shorten it
            whole[start : start + len(fitting)] = fitting
        return bytes(whole)


@dataclass(frozen=True, slots=True)
class _Transport:
    protocol: int
    src: str
    dst: str
    ttl: int
    payload: bytes


class _IpLayer:
    """IPv4/IPv6 parsing with fragment reassembly across frames."""

    def __init__(self, skipped: Counter[str]) -> None:
        self._skipped = skipped
        self._pending: OrderedDict[tuple[object, ...], _Reassembly] = OrderedDict()

    def pending_count(self) -> int:
        return len(self._pending)

    def packet(self, data: bytes) -> _Transport | None:
        """The transport payload of an IP packet, None while fragments are missing."""
        if not data:
            raise _Malformed("truncated_ip_header")
        version = data[0] >> 4
        if version == 4:
            return self._ipv4(data)
        if version == 6:
            return self._ipv6(data)
        raise _Malformed("bad_ip_version")

    def _ipv4(self, data: bytes) -> _Transport | None:
        if len(data) < 20:
            raise _Malformed("truncated_ip_header")
        header_len = (data[0] & 0x0F) * 4
        total_len, ident, frag_word, ttl, protocol = struct.unpack_from(">HHHBB", data, 2)
        if header_len < 20 or total_len < header_len:
            raise _Malformed("bad_ip_header")
        if len(data) < total_len:
            raise _Malformed("truncated_ip_packet")
        src = str(ipaddress.IPv4Address(data[12:16]))
        dst = str(ipaddress.IPv4Address(data[16:20]))
        payload = data[header_len:total_len]  # drops Ethernet padding
        more = bool(frag_word & 0x2000)
        offset = (frag_word & 0x1FFF) * 8
        if more or offset:
            if offset + len(payload) > 0xFFFF:
                raise _Malformed("bad_fragment")
            whole = self._reassemble((4, src, dst, ident, protocol), offset, payload, more)
            if whole is None:
                return None
            payload = whole[1]
        return _Transport(protocol, src, dst, ttl, payload)

    def _ipv6(self, data: bytes) -> _Transport | None:
        if len(data) < 40:
            raise _Malformed("truncated_ip_header")
        payload_len, next_header, hop_limit = struct.unpack_from(">HBB", data, 4)
        if payload_len == 0:
            raise _Malformed("unsupported_jumbogram")
        if len(data) < 40 + payload_len:
            raise _Malformed("truncated_ip_packet")
        src = str(ipaddress.IPv6Address(data[8:24]))
        dst = str(ipaddress.IPv6Address(data[24:40]))
        rest = data[40 : 40 + payload_len]
        protocol, rest = _skip_ipv6_extensions(next_header, rest)
        if protocol == _IPPROTO_IPV6_FRAGMENT:
            if len(rest) < 8:
                raise _Malformed("bad_fragment")
            fragment_next, _reserved, frag_word, ident = struct.unpack_from(">BBHI", rest)
            offset = frag_word & 0xFFF8
            more = bool(frag_word & 1)
            whole = self._reassemble((6, src, dst, ident), offset, rest[8:], more, fragment_next)
            if whole is None:
                return None
            protocol, rest = _skip_ipv6_extensions(*whole)
        return _Transport(protocol, src, dst, hop_limit, rest)

    def _reassemble(
        self, key: tuple[object, ...], offset: int, data: bytes, more: bool, first_header: int = 0
    ) -> tuple[int, bytes] | None:
        """Add one fragment; (first header, payload) once the datagram is whole."""
        entry = self._pending.get(key)
        if entry is None:
            entry = _Reassembly()
            self._pending[key] = entry
            if len(self._pending) > _MAX_PENDING_REASSEMBLIES:
                self._pending.popitem(last=False)
                self._skipped["incomplete_fragments"] += 1
        if offset == 0:
            entry.first_header = first_header
        whole = entry.add(offset, data, more)
        if whole is None:
            return None
        del self._pending[key]
        return entry.first_header, whole


def _skip_ipv6_extensions(next_header: int, data: bytes) -> tuple[int, bytes]:
    """Walk past extension headers up to a fragment header or the transport header."""
    while next_header in _IPV6_GENERIC_EXTENSIONS or next_header == _IPPROTO_AH:
        if len(data) < 2:
            raise _Malformed("truncated_ipv6_extension")
        if next_header == _IPPROTO_AH:
            length = (data[1] + 2) * 4
        else:
            length = (data[1] + 1) * 8
        if len(data) < length:
            raise _Malformed("truncated_ipv6_extension")
        next_header, data = data[0], data[length:]
    return next_header, data


def _decode_frame(frame: _Frame, ip_layer: _IpLayer) -> UdpDatagram | None:
    transport = ip_layer.packet(_link_payload(frame.linktype, frame.data))
    if transport is None:
        return None
    if transport.protocol != _IPPROTO_UDP:
        raise _Malformed("not_udp")
    segment = transport.payload
    if len(segment) < 8:
        raise _Malformed("truncated_udp_header")
    sport, dport, length = struct.unpack_from(">HHH", segment)
    if length < 8 or length > len(segment):
        raise _Malformed("bad_udp_length")
    return UdpDatagram(
        frame=frame.number,
        time=frame.time,
        src=transport.src,
        dst=transport.dst,
        sport=sport,
        dport=dport,
        ttl=transport.ttl,
        payload=bytes(segment[8:length]),
    )


# --- writing --------------------------------------------------------------


def write_pcap(
    path: str | Path,
    datagrams: Iterable[bytes],
    *,
    src: str = "10.255.0.1",
    dst: str = "224.0.0.81",
    sport: int = 8848,
    dport: int = 8848,
    ttl: int = 1,
    start_time: float = 0.0,
) -> int:
    """Write one Ethernet frame per datagram (1 ms apart); returns the frame count.

    src and dst are both IPv4 or both IPv6. Datagrams too large for one
    Ethernet frame are written as single oversized frames, not fragmented.
    """
    source = ipaddress.ip_address(src)
    destination = ipaddress.ip_address(dst)
    if source.version != destination.version:
        raise ValueError(f"src {src} and dst {dst} are of different address families")
    frames = 0
    with Path(path).open("wb") as f:
        # Snap length above the largest IPv4/IPv6 UDP frame, so nothing is cut.
        f.write(struct.pack("<IHHiIII", _PCAP_MAGIC_MICRO, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for index, payload in enumerate(datagrams):
            segment = _udp_segment(source, destination, sport, dport, payload)
            if isinstance(source, ipaddress.IPv4Address):
                packet = _ipv4_packet(source, destination, index + 1, ttl, segment)
                ethertype = _ETHERTYPE_IPV4
            else:
                packet = _ipv6_packet(source, destination, ttl, segment)
                ethertype = _ETHERTYPE_IPV6
            frame = _ethernet_destination(destination) + _WRITER_MAC + struct.pack(">H", ethertype) + packet
            microseconds = round((start_time + index * 0.001) * 1_000_000)
            seconds, fraction = divmod(microseconds, 1_000_000)
            f.write(struct.pack("<IIII", seconds, fraction, len(frame), len(frame)))
            f.write(frame)
            frames += 1
    return frames


_WRITER_MAC = bytes.fromhex("020000000001")  # locally administered


def _ethernet_destination(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The multicast MAC for a group address (RFC 1112 / RFC 2464), else a fixed unicast one."""
    raw = address.packed
    if address.is_multicast and address.version == 4:
        return bytes([0x01, 0x00, 0x5E, raw[1] & 0x7F, raw[2], raw[3]])
    if address.is_multicast:
        return b"\x33\x33" + raw[-4:]
    return bytes.fromhex("020000000002")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_segment(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
    sport: int,
    dport: int,
    payload: bytes,
) -> bytes:
    length = 8 + len(payload)
    if isinstance(source, ipaddress.IPv4Address):
        limit = 0xFFFF - 20
        pseudo = source.packed + destination.packed + struct.pack(">BBH", 0, _IPPROTO_UDP, length)
    else:
        limit = 0xFFFF
        pseudo = source.packed + destination.packed + struct.pack(">IxxxB", length, _IPPROTO_UDP)
    if length > limit:
        raise ValueError(f"datagram of {len(payload)} bytes does not fit in one IP packet")
    header = struct.pack(">HHHH", sport, dport, length, 0)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF  # 0 means "no checksum"
    return struct.pack(">HHHH", sport, dport, length, checksum) + payload


def _ipv4_packet(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ident: int,
    ttl: int,
    segment: bytes,
) -> bytes:
    # DF clear, as the kernel's sync sender (PMTU discovery off).
    header = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(segment), ident & 0xFFFF, 0, ttl, _IPPROTO_UDP, 0)
    header += source.packed + destination.packed
    return header[:10] + struct.pack(">H", _checksum(header)) + header[12:] + segment


def _ipv6_packet(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
    hop_limit: int,
    segment: bytes,
) -> bytes:
    header = struct.pack(">IHBB", 6 << 28, len(segment), _IPPROTO_UDP, hop_limit)
    return header + source.packed + destination.packed + segment
