"""Capture reading and writing (understudy.sync.pcap), against the kernel vectors
and against hand-built captures of every supported container and link type."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest

from understudy.sync.pcap import PcapError, PcapReader, UdpDatagram, iter_udp, write_pcap

VECTORS = Path(__file__).parent / "data" / "ipvs-sync"
CAPTURES = ("shared-v1", "shared-v0", "validation")


def expected_messages(name: str) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = json.loads((VECTORS / f"{name}.json").read_text())["messages"]
    return messages


# --- the kernel captures ----------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_vector_captures_yield_the_expected_datagrams(name: str) -> None:
    reader = PcapReader(VECTORS / f"{name}.pcap")
    datagrams = list(reader)
    expected = expected_messages(name)
    assert [d.frame for d in datagrams] == [m["frame"] for m in expected]
    for got, want in zip(datagrams, expected, strict=True):
        assert got.payload.hex() == want["payload_hex"]
        assert (got.src, got.dst, got.sport, got.dport, got.ttl) == (
            want["ip_src"],
            want["ip_dst"],
            want["udp_sport"],
            want["udp_dport"],
            want["ttl_or_hoplimit"],
        )
        assert got.time == pytest.approx(want["time"], abs=1e-6)
    assert not reader.skipped


def test_fragmented_validation_message_is_reassembled_at_its_last_fragment() -> None:
    datagrams = {d.frame: d for d in iter_udp(VECTORS / "validation.pcap")}
    assert 35 not in datagrams
    assert len(datagrams[36].payload) == 1500
    assert datagrams[36].payload[2:4] == (1500).to_bytes(2, "big")  # header size field


# --- writing ----------------------------------------------------------------


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_write_pcap_round_trip_with_valid_checksums(tmp_path: Path) -> None:
    payloads = [b"\x00\x07\x00\x08\x00\x01\x00\x00", b"odd", bytes(range(256)) * 12]  # last: 3072 bytes
    path = tmp_path / "out.pcap"
    assert write_pcap(path, payloads, ttl=3, start_time=100.5, sport=40000) == 3
    datagrams = list(iter_udp(path))
    assert [d.payload for d in datagrams] == payloads
    assert [d.frame for d in datagrams] == [1, 2, 3]
    assert datagrams[0] == UdpDatagram(1, 100.5, "10.255.0.1", "224.0.0.81", 40000, 8848, 3, payloads[0])
    assert datagrams[2].time == pytest.approx(100.502)

    raw = path.read_bytes()
    pos = 24
    for payload in payloads:
        caplen = struct.unpack_from("<I", raw, pos + 8)[0]
        frame = raw[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        assert frame[:6] == bytes.fromhex("01005e000051")  # the group's multicast MAC
        ip = frame[14:34]
        assert ones_complement_sum(ip) == 0xFFFF
        assert ip[6] & 0x40 == 0  # DF clear, like the kernel's sync sender
        udp = frame[34:]
        pseudo = ip[12:20] + struct.pack(">BBH", 0, 17, len(udp))
        assert ones_complement_sum(pseudo + udp) == 0xFFFF
        assert len(udp) == 8 + len(payload)


def test_write_pcap_ipv6(tmp_path: Path) -> None:
    path = tmp_path / "v6.pcap"
    write_pcap(path, [b"sync"], src="fe80::1", dst="ff02::8848", ttl=3)
    (datagram,) = iter_udp(path)
    assert (datagram.src, datagram.dst, datagram.ttl, datagram.payload) == ("fe80::1", "ff02::8848", 3, b"sync")
    frame = path.read_bytes()[40:]
    assert frame[:2] == b"\x33\x33"
    pseudo = frame[22:54] + struct.pack(">IxxxB", 12, 17)
    assert ones_complement_sum(pseudo + frame[54:]) == 0xFFFF


def test_write_pcap_rejects_mixed_families(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="famil"):
        write_pcap(tmp_path / "x.pcap", [b"x"], src="10.0.0.1", dst="ff02::1")


# --- hand-built captures --------------------------------------------------


def ipv4(payload: bytes, *, proto: int = 17, ident: int = 1, offset: int = 0, more: bool = False, ttl: int = 64) -> bytes:
    frag = (0x2000 if more else 0) | (offset // 8)
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0,
                         bytes([10, 0, 0, 1]), bytes([224, 0, 0, 81]))  # fmt: skip
    return header + payload


def ipv6(payload: bytes, *, next_header: int = 17, hop_limit: int = 7) -> bytes:
    src = bytes.fromhex("fe800000000000000000000000000001")
    dst = bytes.fromhex("ff020000000000000000000000008848")
    return struct.pack(">IHBB", 6 << 28, len(payload), next_header, hop_limit) + src + dst + payload


def udp(payload: bytes, sport: int = 1234, dport: int = 8848) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def ethernet(packet: bytes, *, ethertype: int = 0x0800, vlans: int = 0) -> bytes:
    tags = b"".join(struct.pack(">HH", 0x8100 if i else 0x88A8, 10 + i) for i in range(vlans))
    return b"\x01\x00\x5e\x00\x00\x51" + b"\x02" * 6 + tags + struct.pack(">H", ethertype) + packet


def classic_pcap(frames: list[bytes], linktype: int, *, order: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", 1000 + i, 5, len(frame), len(frame)) + frame
    return out


def pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def pcapng(frames: list[bytes], linktype: int, *, order: str = "<", tsresol: int | None = None) -> bytes:
    out = pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = b""
    if tsresol is not None:
        options = struct.pack(order + "HHB3x", 9, 1, tsresol) + struct.pack(order + "HH", 0, 0)
    out += pcapng_block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + options)
    units = 10 ** (tsresol or 6)
    for i, frame in enumerate(frames):
        ticks = (1000 + i) * units + 5
        if i % 2:
            out += pcapng_block(order, 3, struct.pack(order + "I", len(frame)) + frame)  # simple packet block
        else:
            head = struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
            out += pcapng_block(order, 6, head + frame)
    return out


def read(tmp_path: Path, content: bytes) -> tuple[list[UdpDatagram], PcapReader]:
    path = tmp_path / "capture"
    path.write_bytes(content)
    reader = PcapReader(path)
    return list(reader), reader


SYNC = b"\x00\x07\x00\x08\x00\x01\x00\x00"


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    datagrams, _ = read(tmp_path, classic_pcap([ethernet(ipv4(udp(SYNC)))], 1, order=order, nano=nano))
    assert [d.payload for d in datagrams] == [SYNC]
    assert datagrams[0].time == pytest.approx(1000 + 5 * (1e-9 if nano else 1e-6))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("tsresol", [None, 9])
def test_pcapng_enhanced_and_simple_packet_blocks(tmp_path: Path, order: str, tsresol: int | None) -> None:
    frame = ethernet(ipv4(udp(SYNC)))
    datagrams, reader = read(tmp_path, pcapng([frame, frame, frame], 1, order=order, tsresol=tsresol))
    assert [d.frame for d in datagrams] == [1, 2, 3]
    assert [d.payload for d in datagrams] == [SYNC] * 3
    assert datagrams[0].time == pytest.approx(1000 + 5 * 10.0 ** -(tsresol or 6))
    assert datagrams[1].time == 0.0  # simple packet blocks carry no timestamp
    assert not reader.skipped


def test_pcapng_obsolete_packet_block_and_time_offset(tmp_path: Path) -> None:
    frame = ethernet(ipv4(udp(SYNC)))
    tsoffset = struct.pack("<HHq", 14, 8, 1_000_000) + struct.pack("<HH", 0, 0)
    content = pcapng_block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    content += pcapng_block("<", 1, struct.pack("<HHI", 1, 0, 0) + tsoffset)
    content += pcapng_block("<", 2, struct.pack("<HHIIII", 0, 0, 0, 2_500_000, len(frame), len(frame)) + frame)
    datagrams, reader = read(tmp_path, content)
    assert [(d.frame, d.payload) for d in datagrams] == [(1, SYNC)]
    assert datagrams[0].time == pytest.approx(1_000_002.5)
    assert not reader.skipped


IPV4_UDP = ipv4(udp(SYNC))
LINK_FRAMES = {
    "ethernet": (1, ethernet(IPV4_UDP)),
    "802.1Q": (1, ethernet(IPV4_UDP, vlans=1)),
    "QinQ": (1, ethernet(IPV4_UDP, vlans=2)),
    "sll": (113, struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 6, 0x0800) + IPV4_UDP),
    "sll2": (276, struct.pack(">HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, b"\x02" * 6) + IPV4_UDP),
    "raw": (101, IPV4_UDP),
    "raw ipv4": (228, IPV4_UDP),
    "raw ipv6": (229, ipv6(udp(SYNC))),
    "null le": (0, struct.pack("<I", 2) + IPV4_UDP),
    "null be ipv6": (0, struct.pack(">I", 30) + ipv6(udp(SYNC))),
    "loop": (108, struct.pack(">I", 2) + IPV4_UDP),
}


@pytest.mark.parametrize("link", LINK_FRAMES)
def test_link_types(tmp_path: Path, link: str) -> None:
    linktype, frame = LINK_FRAMES[link]
    datagrams, reader = read(tmp_path, classic_pcap([frame], linktype))
    assert [d.payload for d in datagrams] == [SYNC], reader.skipped
    assert datagrams[0].dport == 8848


def test_ethernet_padding_is_not_payload(tmp_path: Path) -> None:
    datagrams, _ = read(tmp_path, classic_pcap([ethernet(ipv4(udp(b"ab"))) + b"\0" * 20], 1))
    assert datagrams[0].payload == b"ab"


def test_ipv4_fragments_out_of_order_reported_at_completing_frame(tmp_path: Path) -> None:
    segment = udp(bytes(range(256)) * 8)  # 2056 bytes
    frames = [
        ethernet(ipv4(segment[1000:], ident=5, offset=1000, ttl=1)),
        ethernet(ipv4(udp(b"other"), ident=9)),
        ethernet(ipv4(segment[:1000], ident=5, more=True, ttl=1)),
    ]
    datagrams, reader = read(tmp_path, classic_pcap(frames, 1))
    assert [(d.frame, d.payload) for d in datagrams] == [(2, b"other"), (3, segment[8:])]
    assert datagrams[1].ttl == 1
    assert not reader.skipped


def test_incomplete_fragments_are_counted(tmp_path: Path) -> None:
    frame = ethernet(ipv4(udp(SYNC * 20)[:80], ident=7, more=True))
    datagrams, reader = read(tmp_path, classic_pcap([frame], 1))
    assert datagrams == []
    assert reader.skipped == {"incomplete_fragments": 1}


def test_ipv6_extension_headers_and_fragments(tmp_path: Path) -> None:
    segment = udp(bytes(range(200)))
    hop_by_hop = bytes([44, 0]) + b"\x01\x04\0\0\0\0"  # next: fragment; PadN option

    def fragment(offset: int, more: bool, data: bytes) -> bytes:
        return struct.pack(">BBHI", 17, 0, offset | int(more), 0xABCD) + data

    frames = [
        ethernet(ipv6(hop_by_hop + fragment(0, True, segment[:96]), next_header=0), ethertype=0x86DD),
        ethernet(ipv6(fragment(96, False, segment[96:]), next_header=44), ethertype=0x86DD),
        ethernet(ipv6(bytes([17, 0]) + b"\x01\x04\0\0\0\0" + udp(SYNC), next_header=60), ethertype=0x86DD),
    ]
    datagrams, reader = read(tmp_path, classic_pcap(frames, 1))
    assert [(d.frame, d.payload) for d in datagrams] == [(2, segment[8:]), (3, SYNC)]
    assert (datagrams[0].src, datagrams[0].dst, datagrams[0].ttl) == ("fe80::1", "ff02::8848", 7)
    assert not reader.skipped


def test_non_udp_and_malformed_frames_are_counted(tmp_path: Path) -> None:
    frames = [
        ethernet(b"\0" * 28, ethertype=0x0806),  # ARP
        ethernet(ipv4(b"\0" * 20, proto=6)),  # TCP
        ethernet(ipv4(udp(SYNC))[:30]),  # shorter than its IP total length
        ethernet(b"\x45\x00"),  # shorter than an IP header
        ethernet(ipv4(struct.pack(">HHHH", 1, 2, 4000, 0) + SYNC)),  # UDP length too large
        ethernet(ipv4(udp(SYNC))),
    ]
    datagrams, reader = read(tmp_path, classic_pcap(frames, 1))
    assert [d.frame for d in datagrams] == [6]
    assert reader.skipped == {
        "not_ip": 1,
        "not_udp": 1,
        "truncated_ip_packet": 1,
        "truncated_ip_header": 1,
        "bad_udp_length": 1,
    }
    assert reader.frames == 6


# --- damaged files ----------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\xd4\xc3", b"GIF89a" + bytes(100), bytes(64)])
def test_files_that_are_not_captures_raise_pcap_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x"
    path.write_bytes(content)
    with pytest.raises(PcapError):
        PcapReader(path)


def test_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        PcapReader(tmp_path / "missing.pcap")


def test_truncated_captures_yield_a_prefix(tmp_path: Path) -> None:
    original = (VECTORS / "validation.pcap").read_bytes()
    full = [d.payload for d in iter_udp(VECTORS / "validation.pcap")]
    path = tmp_path / "cut.pcap"
    for length in range(24, len(original), 37):
        path.write_bytes(original[:length])
        reader = PcapReader(path)
        payloads = [d.payload for d in reader]
        assert payloads == full[: len(payloads)]
        assert set(reader.skipped) <= {"truncated_record", "incomplete_fragments"}


def test_truncated_pcapng_yields_a_prefix(tmp_path: Path) -> None:
    frame = ethernet(IPV4_UDP)
    content = pcapng([frame] * 4, 1)
    for length in range(4, len(content)):
        datagrams, reader = read(tmp_path, content[:length])
        assert [d.payload for d in datagrams] == [SYNC] * len(datagrams)
        assert set(reader.skipped) <= {"truncated_block"}


def test_garbage_inside_captures_never_raises(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    sources = [
        (VECTORS / "shared-v1.pcap").read_bytes(),
        pcapng([ethernet(IPV4_UDP), ethernet(ipv6(udp(SYNC)), ethertype=0x86DD)], 1, order=">"),
    ]
    for source in sources:
        for _ in range(300):
            damaged = bytearray(source)
            for _ in range(rng.randint(1, 12)):
                damaged[rng.randrange(4, len(damaged))] = rng.randrange(256)
            if rng.random() < 0.3:
                damaged += rng.randbytes(rng.randint(1, 64))
            datagrams, _ = read(tmp_path, bytes(damaged))
            assert all(isinstance(d.payload, bytes) for d in datagrams)
