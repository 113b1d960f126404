"""Wireshark as an independent peer: what `_core.encode` puts on the wire, written
with `write_pcap`, must read back in tshark (dissector "ipvs") as the fields we
encoded, and tshark must find our IPv4 and UDP checksums good.

tshark 4.0 has known dissector bugs (reference §10) that decide what is
comparable: v1 options and inter-entry padding are not skipped, so entries
after the first one carrying options are mis-dissected; the IPv6 entry type is
labelled oddly (its value, 1, is right); v0 sequence data is read big-endian
although the wire holds the sender's little-endian host order.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from understudy import _core
from understudy._core import Conn
from understudy.sync.pcap import iter_udp, write_pcap

VECTORS = Path(__file__).parent / "data" / "ipvs-sync"

TCP, UDP, ESP, AH, SCTP = 6, 17, 50, 51, 132
MASQ, TUNNEL, DROUTE = 0x0, 0x2, 0x3
SYNC, NOOUTPUT, INACTIVE, OUT_SEQ, IN_SEQ, TEMPLATE, NFCT = 0x20, 0x80, 0x100, 0x200, 0x400, 0x1000, 0x10000


def require_tshark() -> str:
    """tshark's path; its absence fails the test (this peer check must not be skipped)."""
    path = shutil.which("tshark") or ("/usr/bin/tshark" if Path("/usr/bin/tshark").exists() else None)
    if path is None:
        pytest.fail("tshark is not installed (Debian: apt-get install tshark); the Wireshark peer test needs it")
    return path


@dataclass
class Dissected:
    """One packet as tshark's ipvs dissector shows it (`show` attribute values)."""

    header: dict[str, str]
    conns: list[dict[str, str]]
    checksums_good: bool
    malformed: bool


def dissect(tshark: str, pcap: Path) -> list[Dissected]:
    result = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "pdml", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    packets = []
    for packet in ET.fromstring(result.stdout).iter("packet"):
        ipvs = packet.find("proto[@name='ipvs']")
        assert ipvs is not None, "tshark did not dissect the datagram as IPVS sync"
        header = {f.attrib["name"]: f.attrib["show"] for f in ipvs.findall("field") if f.attrib["name"]}
        conns = [
            {f.attrib["name"]: f.attrib["show"] for f in conn.iter("field") if f.attrib["name"]}
            for conn in ipvs.findall("field[@name='']")
        ]
        statuses = [packet.find(f".//field[@name='{p}.checksum.status']") for p in ("ip", "udp")]
        packets.append(
            Dissected(
                header=header,
                conns=conns,
                checksums_good=all(s is not None and s.attrib["show"] == "1" for s in statuses),
                malformed=packet.find("proto[@name='_ws.malformed']") is not None,
            )
        )
    return packets


def entry_size(conn: Conn) -> int:
    fixed = 72 if ipaddress.ip_address(conn.caddr).version == 6 else 36
    return fixed + sum(2 + len(data) for _, data in conn.options)


def assert_v1_entry(seen: dict[str, str], conn: Conn) -> None:
    v6 = ipaddress.ip_address(conn.caddr).version == 6
    assert int(seen["ipvs.type"]) == (1 if v6 else 0)
    assert int(seen["ipvs.proto"], 16) == conn.protocol
    assert int(seen["ipvs.ver"]) == 0
    assert int(seen["ipvs.size.v1"]) == entry_size(conn)
    assert int(seen["ipvs.flags.v1"], 16) == conn.flags
    assert int(seen["ipvs.state"], 16) == conn.state
    assert (int(seen["ipvs.cport"]), int(seen["ipvs.vport"]), int(seen["ipvs.dport"])) == (
        conn.cport,
        conn.vport,
        conn.dport,
    )
    assert int(seen["ipvs.fwmark"], 16) == conn.fwmark
    assert int(seen["ipvs.timeout"]) == conn.timeout
    suffix = "6" if v6 else ""
    for field in ("caddr", "vaddr", "daddr"):
        assert ipaddress.ip_address(seen[f"ipvs.{field}{suffix}"]) == ipaddress.ip_address(getattr(conn, field))


def byte_swapped(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "big"), "little")


def assert_v0_entry(seen: dict[str, str], conn: Conn) -> None:
    assert seen["ipvs.resv"] == "00"
    assert int(seen["ipvs.proto"], 16) == conn.protocol
    assert (int(seen["ipvs.cport"]), int(seen["ipvs.vport"]), int(seen["ipvs.dport"])) == (
        conn.cport,
        conn.vport,
        conn.dport,
    )
    for field in ("caddr", "vaddr", "daddr"):
        assert seen[f"ipvs.{field}"] == getattr(conn, field)
    assert int(seen["ipvs.flags"], 16) == conn.flags
    assert int(seen["ipvs.state"], 16) == conn.state
    seq = [data for option, data in conn.options if option == 1]
    if seq:
        values = [int.from_bytes(seq[0][i : i + 4], "big") for i in range(0, 24, 4)]
        names = [f"ipvs.{d}_seq.{f}" for d in ("in", "out") for f in ("initial", "delta", "pdelta")]
        # tshark reads the little-endian block as big-endian.
        assert [int(seen[n], 16) for n in names] == [byte_swapped(v) for v in values]
    else:
        assert "ipvs.in_seq.initial" not in seen


def comparable_v1_entries(conns: Sequence[Conn]) -> int:
    """Entries tshark dissects right: up to and including the first with options."""
    for index, conn in enumerate(conns):
        if conn.options:
            return index + 1
    return len(conns)


def assert_dissected_as(packet: Dissected, datagram: bytes, conns: Sequence[Conn], version: int) -> None:
    """Compare one dissected datagram with the connections it holds."""
    assert int(packet.header["ipvs.syncid"]) == datagram[1]
    assert int(packet.header["ipvs.size"]) == len(datagram)
    assert int(packet.header["ipvs.conncount"]) == len(conns)
    if version == 1:
        assert int(packet.header["ipvs.version"]) == 1
        comparable = comparable_v1_entries(conns)
        assert len(packet.conns) >= comparable
        for seen, conn in zip(packet.conns, conns[:comparable], strict=False):
            assert_v1_entry(seen, conn)
        if not any(conn.options for conn in conns):
            assert not packet.malformed
    else:
        assert len(packet.conns) == len(conns)
        for seen, conn in zip(packet.conns, conns, strict=True):
            assert_v0_entry(seen, conn)
        assert not packet.malformed


def check_encoded_batches(
    tshark: str, tmp_path: Path, batches: Sequence[tuple[Sequence[Conn], int, int, int]]
) -> int:
    """Encode (conns, version, syncid, max_len) batches into one capture and
    compare every datagram with tshark's dissection; returns the datagram count."""
    datagrams: list[bytes] = []
    expected: list[tuple[Sequence[Conn], int]] = []
    for conns, version, syncid, max_len in batches:
        encoded = _core.encode(conns, version, syncid, max_len)
        position = 0
        for datagram in encoded:
            count = datagram[4] if version == 1 else datagram[0]  # nr_conns, from the header
            expected.append((conns[position : position + count], version))
            position += count
            datagrams.append(datagram)
        assert position == len(conns)
    pcap = tmp_path / "encoded.pcap"
    write_pcap(pcap, datagrams)
    packets = dissect(tshark, pcap)
    assert len(packets) == len(datagrams)
    for packet, datagram, (conns, version) in zip(packets, datagrams, expected, strict=True):
        assert packet.checksums_good
        assert_dissected_as(packet, datagram, conns, version)
    return len(datagrams)


def seq_block(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in values)


V4 = ("10.0.0.2", "10.0.0.100", "192.168.2.12")
V6 = ("fd00::2", "fd00::100", "fd00:2::12")

HANDPICKED = [
    Conn(TCP, V4[0], 40001, V4[1], 80, V4[2], 8000, state=1, timeout=900),
    Conn(TCP, V4[0], 40002, V4[1], 80, V4[2], 8000, flags=INACTIVE, state=7, timeout=60),
    Conn(UDP, V4[0], 40010, V4[1], 53, V4[2], 5353, flags=INACTIVE, timeout=300),
    Conn(SCTP, V4[0], 40030, V4[1], 3868, V4[2], 3868, state=8, timeout=900),
    Conn(TCP, V4[0], 40020, V4[1], 443, V4[2], 443, flags=DROUTE, state=1, timeout=900),
    Conn(TCP, V4[0], 40021, V4[1], 443, V4[2], 443, flags=TUNNEL | NOOUTPUT, state=4, timeout=120),
    Conn(TCP, "10.0.0.0", 0, V4[1], 443, V4[2], 443, flags=TEMPLATE | INACTIVE | NOOUTPUT | DROUTE, state=1,
         timeout=120),  # fmt: skip
    Conn(0, V4[0], 0, "0.0.0.1", 0, V4[2], 0, flags=TEMPLATE | INACTIVE, fwmark=1, timeout=300),
    Conn(TCP, V4[0], 40040, V4[1], 80, V4[2], 8000, flags=SYNC | NFCT, state=5, fwmark=0xDEADBEEF,
         timeout=0xFFFFFFFF),  # fmt: skip
    Conn(ESP, V4[0], 0, V4[1], 0, V4[2], 0, flags=INACTIVE, timeout=1),
    Conn(AH, V4[0], 0, V4[1], 0, V4[2], 0, flags=INACTIVE | TUNNEL),
    Conn(TCP, V6[0], 40050, V6[1], 80, V6[2], 8000, state=1, timeout=900),
    Conn(UDP, "fd00::", 0, V6[1], 53, V6[2], 53, flags=TEMPLATE | INACTIVE, timeout=200),
    Conn(TCP, "::ffff:10.0.0.2", 65535, "ff02::1", 65535, "2001:db8::ffff:1", 1, flags=DROUTE | INACTIVE, state=10),
]
SIP_TEMPLATE = Conn(UDP, V4[0], 0, V4[1], 5060, V4[2], 5060, flags=TEMPLATE | INACTIVE, timeout=60,
                    options=[(2, b"alpha-1@client"), (3, b"sip")])  # fmt: skip
SEQ_CONN = Conn(TCP, V4[0], 40060, V4[1], 21, V4[2], 21, flags=IN_SEQ | OUT_SEQ, state=1, timeout=900,
                options=[(1, seq_block(1000, 5, 0, 0x80000001, 0xFFFFFFFF, 3))])  # fmt: skip


def test_tshark_reads_handpicked_v1_entries(tmp_path: Path) -> None:
    tshark = require_tshark()
    batches = [
        (HANDPICKED, 1, 7, 1472),
        # Options: the first entry carrying them is still comparable, later ones are not.
        (HANDPICKED[:3] + [SIP_TEMPLATE] + HANDPICKED[3:6], 1, 7, 1472),
        ([SEQ_CONN, HANDPICKED[0]], 1, 255, 1472),
        ([HANDPICKED[11], SIP_TEMPLATE, SIP_TEMPLATE], 1, 0, 1472),
    ]
    assert check_encoded_batches(tshark, tmp_path, batches) == 4


def test_tshark_reads_handpicked_v0_entries(tmp_path: Path) -> None:
    tshark = require_tshark()
    v4_without_nfct = [
        Conn(c.protocol, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport, c.flags & 0xFFFF, c.state)
        for c in HANDPICKED
        if ipaddress.ip_address(c.caddr).version == 4
    ]
    seq_v0 = Conn(TCP, V4[0], 40060, V4[1], 21, V4[2], 21, IN_SEQ, 1, options=SEQ_CONN.options)
    batches = [(v4_without_nfct, 0, 7, 1472), ([seq_v0, *v4_without_nfct[:3], seq_v0], 0, 200, 1472)]
    assert check_encoded_batches(tshark, tmp_path, batches) == 2


STATE_COUNTS = {TCP: 11, UDP: 1, SCTP: 14}


def random_address(rng: random.Random, v6: bool) -> str:
    return str(ipaddress.IPv6Address(rng.getrandbits(128)) if v6 else ipaddress.IPv4Address(rng.getrandbits(32)))


def random_conn(rng: random.Random, version: int) -> Conn:
    v6 = version == 1 and rng.random() < 0.3
    template = rng.random() < 0.2
    protocol = rng.choice([TCP, UDP, SCTP] + ([0] if template else []))
    flags = rng.choice([MASQ, TUNNEL, DROUTE]) | rng.choice([0, INACTIVE, NOOUTPUT, SYNC, INACTIVE | NOOUTPUT])
    if template:
        flags |= TEMPLATE
    if version == 1 and rng.random() < 0.1:
        flags |= NFCT
    return Conn(
        protocol,
        random_address(rng, v6),
        0 if template else rng.randrange(1024, 65536),
        random_address(rng, v6),
        rng.randrange(65536),
        random_address(rng, v6),
        rng.randrange(65536),
        flags,
        rng.randrange(2) if template else rng.randrange(STATE_COUNTS[protocol]),
        rng.getrandbits(32) if version == 1 and rng.random() < 0.3 else 0,
        rng.getrandbits(32) if version == 1 else 0,
    )


@pytest.mark.parametrize("version", [0, 1])
def test_tshark_reads_random_batches_split_at_max_len(tmp_path: Path, version: int) -> None:
    tshark = require_tshark()
    rng = random.Random(8848 + version)
    batches = [
        ([random_conn(rng, version) for _ in range(150)], version, rng.randrange(256), max_len)
        for max_len in (1472, 600, 240)
    ]
    assert check_encoded_batches(tshark, tmp_path, batches) > len(batches)  # max_len splits them


@pytest.mark.parametrize("name", ["shared-v1", "shared-v0"])
def test_tshark_agrees_with_our_decoding_of_kernel_captures(name: str) -> None:
    tshark = require_tshark()
    pcap = VECTORS / f"{name}.pcap"
    packets = dissect(tshark, pcap)
    datagrams = list(iter_udp(pcap))
    assert len(packets) == len(datagrams)
    for packet, datagram in zip(packets, datagrams, strict=True):
        message = _core.decode(datagram.payload)
        assert message.error is None
        version = 0 if message.format == "v0" else 1
        # (Checksums are not compared: the capturing veth offloaded them, see the vectors README.)
        assert_dissected_as(packet, datagram.payload, message.conns, version)
