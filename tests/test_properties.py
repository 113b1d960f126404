"""Property tests: the Rust codec (understudy._core) against tests/refcodec.py."""

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refcodec

_core = pytest.importorskip("understudy._core")

SETTINGS = settings(max_examples=300, deadline=None)
VECTORS = Path(__file__).parent / "data" / "ipvs-sync"

# --- valid messages -------------------------------------------------------

NOOUTPUT, INACTIVE, NO_CPORT, NFCT = 0x0080, 0x0100, 0x0800, 0x10000
OPTIONAL = refcodec.OPT_F_PARAM
# Unknown types a receiver may ignore: 0x40 set, not a known type once masked.
UNKNOWN_OPTIONAL = st.sampled_from([t for t in range(256) if t & OPTIONAL and t & ~OPTIONAL not in (1, 2, 3)])
# Persistence-engine options: none, the usual pair, or pairs a backup skips.
PE_OPTIONS = st.sampled_from([
    [],
    [(2, b"alpha-1@client"), (3, b"sip")],
    [(2, b"call-1"), (3, b"nosuch")],
    [(2, b"call-2")],
    [(3, b"sip")],
    [(2, b"call-3"), (3, b"sip\0")],  # the kernel reads the name as a C string
])


def option(otype, data):
    return {"type": otype, "data_hex": data.hex()}


@st.composite
def protocol_and_state(draw, template):
    if template:  # no protocol/state checks: any protocol (0 = fwmark), TPL_NONE/ASSURED
        return draw(st.sampled_from([0, 6, 17, 132])), draw(st.integers(0, 1))
    protocol = draw(st.sampled_from(sorted(refcodec.NUM_STATES)))
    return protocol, draw(st.integers(0, refcodec.NUM_STATES[protocol] - 1))


@st.composite
def conns(draw, version):
    """One connection as refcodec.encode() takes it, valid for `version`."""
    inet6 = version == 1 and draw(st.booleans())
    address = st.ip_addresses(v=6 if inet6 else 4).map(str)
    template = draw(st.booleans())
    protocol, state = draw(protocol_and_state(template))
    seq = draw(st.sampled_from([0, 0x0200, 0x0400, 0x0600]))
    flags = draw(st.integers(0, 4)) | seq | (refcodec.F_TEMPLATE if template else 0)
    for bit in draw(st.sets(st.sampled_from([NOOUTPUT, INACTIVE, NO_CPORT, refcodec.F_SYNC]))):
        flags |= bit
    # The kernel sends SEQ_DATA exactly when a SEQ flag is set.
    options = [option(1, draw(st.binary(min_size=24, max_size=24)))] if seq else []
    if version == 1:
        flags |= draw(st.sampled_from([0, NFCT]))
        options += [option(t | draw(st.sampled_from([0, OPTIONAL])), d) for t, d in draw(PE_OPTIONS)]
        options += draw(st.lists(st.builds(option, UNKNOWN_OPTIONAL, st.binary(min_size=1, max_size=16)), max_size=2))
        options = draw(st.permutations(options))
    u32 = st.integers(0, 2**32 - 1)
    return {
        "af": "inet6" if inet6 else "inet", "protocol": protocol, "flags": flags, "state": state,
        "cport": draw(st.integers(0, 65535)), "vport": draw(st.integers(0, 65535)),
        "dport": draw(st.integers(0, 65535)),
        "fwmark": draw(u32) if version else None, "timeout": draw(u32) if version else None,
        "caddr": draw(address), "vaddr": draw(address), "daddr": draw(address),
        "options": options,
    }


@st.composite
def valid_messages(draw, max_conns=8):
    """(version, header, conns, datagram)."""
    version = draw(st.sampled_from([0, 1]))
    header = {"format": f"v{version}", "syncid": draw(st.integers(0, 255))}
    entries = draw(st.lists(conns(version), max_size=max_conns))
    return version, header, entries, refcodec.encode(header, entries)


# --- malformed messages ---------------------------------------------------


def structural_offsets(datagram):
    """Where entries keep type, protocol, size, flags and state; then the header."""
    entries = refcodec.decode(datagram)["conns"]
    spots = [c["offset"] + k for c in entries for k in (0, 1, 2, 3, 4, 20, 21, 22, 23)] + list(range(8))
    return [at for at in spots if at < len(datagram)]


@st.composite
def mutated_messages(draw):
    """A valid message with structural bytes changed, then bytes flipped,
    inserted or deleted anywhere; its size field fixed or not."""
    data = bytearray(draw(valid_messages())[3])
    for at in draw(st.lists(st.sampled_from(structural_offsets(data)), min_size=1, max_size=2)):
        data[at] ^= draw(st.integers(1, 255))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        elif at < len(data) and action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif at < len(data):
            del data[at]
    if draw(st.booleans()) and 4 <= len(data) < 65536:
        data[2:4] = len(data).to_bytes(2, "big")
    return bytes(data)


OPTION_TYPES = st.sampled_from([1, 2, 3, 0x41, 0x42, 0x43, 5, 0x45, 0x80, 0xC1])
OPTION_DATA = st.one_of(
    st.binary(max_size=30),
    st.binary(min_size=24, max_size=24),
    st.sampled_from([b"sip", b"nosuch", b"sip\0x", b"s" * 16, b"s" * 17]),
)


@st.composite
def raw_options(draw):
    """Option bytes that may be wrong: bad lengths, duplicates, a lone last byte."""
    out = b""
    for otype, data in draw(st.lists(st.tuples(OPTION_TYPES, OPTION_DATA), max_size=4)):
        length = draw(st.one_of(st.just(len(data)), st.integers(0, 255)))
        out += bytes([otype, length]) + data
    return out + draw(st.binary(max_size=1))


@st.composite
def raw_option_messages(draw):
    """v1 messages whose entries carry arbitrary option bytes."""
    body = b""
    entries = draw(st.lists(conns(1), min_size=1, max_size=3))
    for conn in entries:
        fixed = refcodec.encode({"format": "v1", "syncid": 0}, [{**conn, "options": []}])[8:]
        entry = bytearray(fixed + draw(raw_options()))
        entry[2:4] = len(entry).to_bytes(2, "big")
        body += bytes(-len(body) % 4) + entry
    nr_conns = len(entries) + draw(st.integers(0, 1))  # sometimes one entry too many
    return bytes([0, 7]) + (8 + len(body)).to_bytes(2, "big") + bytes([nr_conns, 1, 0, 0]) + body


# --- comparison -----------------------------------------------------------

ATTRS = ("offset", "entry_type", "entry_version", "size", "af", "protocol", "flags", "state",
         "cport", "vport", "dport", "fwmark", "timeout", "verdict", "backup_flags")
ADDRS = ("caddr", "vaddr", "daddr")


def ref_view(msg):
    """refcodec.decode() output in the Rust binding's terms."""
    header = msg["header"] and {k: msg["header"][k] for k in ("format", "syncid", "size", "nr_conns")}
    conns = [{
        **{a: c["type" if a == "entry_type" else a] for a in ATTRS},
        "fwmark": c["fwmark"] or 0,  # the Rust Conn gives 0 where v0 has no field
        "timeout": c["timeout"] or 0,
        **{a: ipaddress.ip_address(c[a]) for a in ADDRS},
        "options": [(o["type"], bytes.fromhex(o["data_hex"])) for o in c["options"]],
    } for c in msg["conns"]]
    return {"header": header, "error": msg["error"], "trailing": msg["trailing"], "conns": conns}


def rust_view(msg):
    header = msg.format and {"format": msg.format, "syncid": msg.syncid, "size": msg.size, "nr_conns": msg.nr_conns}
    conns = [{
        **{a: getattr(c, a) for a in ATTRS},
        # Compared as addresses: text forms differ (e.g. IPv4-mapped IPv6).
        **{a: ipaddress.ip_address(getattr(c, a)) for a in ADDRS},
        "options": [tuple(o) for o in c.options],
    } for c in msg.conns]
    return {"header": header, "error": msg.error, "trailing": msg.trailing, "conns": conns}


def assert_same_decoding(datagram):
    assert rust_view(_core.decode(datagram)) == ref_view(refcodec.decode(datagram))


def content(conn):
    """What a sender puts in an entry, from a refcodec conn dict."""
    return (conn["protocol"], conn["flags"], conn["state"], conn["cport"], conn["vport"], conn["dport"],
            conn["fwmark"] or 0, conn["timeout"] or 0, *(ipaddress.ip_address(conn[a]) for a in ADDRS),
            [(o["type"], o["data_hex"]) for o in conn["options"]])


def core_conn(conn):
    return _core.Conn(
        conn["protocol"], conn["caddr"], conn["cport"], conn["vaddr"], conn["vport"],
        conn["daddr"], conn["dport"], flags=conn["flags"], state=conn["state"],
        fwmark=conn["fwmark"] or 0, timeout=conn["timeout"] or 0,
        options=[(o["type"], bytes.fromhex(o["data_hex"])) for o in conn["options"]])


# --- properties -----------------------------------------------------------


VECTOR_PAYLOADS = [
    pytest.param(bytes.fromhex(msg["payload_hex"]), id=f"{name}#{msg['frame']}")
    for name in ("shared-v0", "shared-v1", "validation")
    for msg in json.loads((VECTORS / f"{name}.json").read_text())["messages"]
]
# Corners found by the properties below, kept as plain regressions.
CORNERS = [
    # v1 entry size 0 with entry version 1: the kernel checks the version
    # before the size against the fixed part (entry_version).
    pytest.param("0007002c0101000000061000000000000001c35a00501f4000000000000003840a0000020a000064c0a8010b",
                 id="version-before-too-short"),
    # Same with entry type 2 and size 2 (entry_type).
    pytest.param("0007002c0101000002060002000000000001c35a00501f4000000000000003840a0000020a000064c0a8010b",
                 id="type-before-too-short"),
    # PE_NAME "sip\0": the kernel NUL-terminates and strcmp()s it, finding "sip".
    pytest.param("0007003a0101000000110032000010000000000013c413c4000000000000003c0a0000020a000064"
                 "c0a8010b020663616c6c2d31030473697000", id="pe-name-c-string"),
]


@pytest.mark.parametrize("datagram", VECTOR_PAYLOADS)
def test_vectors_decode_alike(datagram):
    assert_same_decoding(datagram)


@pytest.mark.parametrize("hex_datagram", CORNERS)
def test_corners_decode_alike(hex_datagram):
    assert_same_decoding(bytes.fromhex(hex_datagram))


@SETTINGS
@given(valid_messages())
def test_valid_messages_decode_alike(case):
    datagram = case[3]
    ref = refcodec.decode(datagram)
    assert (ref["error"], ref["trailing"]) == (None, 0)
    assert_same_decoding(datagram)


@SETTINGS
@given(valid_messages())
def test_rust_re_encodes_valid_messages(case):
    version, header, _, datagram = case
    msg = _core.decode(datagram)
    assert _core.encode_message(msg.conns, version=version, syncid=header["syncid"]) == datagram


@SETTINGS
@given(st.binary(max_size=2000), st.booleans())
def test_arbitrary_bytes(data, fix_size):
    if fix_size and 4 <= len(data):
        data = data[:2] + len(data).to_bytes(2, "big") + data[4:]
    assert_same_decoding(data)


@SETTINGS
@given(mutated_messages())
def test_mutated_messages(datagram):
    assert_same_decoding(datagram)


@SETTINGS
@given(raw_option_messages())
def test_raw_option_messages(datagram):
    assert_same_decoding(datagram)


@SETTINGS
@given(st.sampled_from([0, 1]).flatmap(lambda v: st.tuples(st.just(v), st.lists(conns(v), max_size=60))),
       st.integers(0, 255), st.integers(1, 1500))
def test_encode_packs_in_order(case, syncid, max_len):
    version, entries = case
    datagrams = _core.encode([core_conn(c) for c in entries], version=version, syncid=syncid, max_len=max_len)
    decoded = [refcodec.decode(d) for d in datagrams]
    for datagram, msg in zip(datagrams, decoded):
        assert (msg["error"], msg["trailing"], msg["header"]["format"]) == (None, 0, f"v{version}")
        assert msg["header"]["syncid"] == syncid
        assert len(datagram) <= max_len or len(msg["conns"]) == 1  # an oversize entry goes alone
    for full, after in zip(decoded, decoded[1:]):  # a message is closed only when the next entry does not fit
        used = full["header"]["size"] + (-full["header"]["size"] % 4 if version else 0)
        first = after["conns"][0]
        assert used + (first["size"] or 24 + 24 * bool(first["options"])) > max_len
    assert [content(c) for msg in decoded for c in msg["conns"]] == [content(c) for c in entries]
