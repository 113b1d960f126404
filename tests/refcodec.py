"""Reference codec for the IPVS connection-sync protocol, versions 0 and 1.

Short and slow on purpose: it follows the Linux 6.1 receive path
(`ip_vs_process_message`, `ip_vs_process_message_v0`, `ip_vs_proc_sync_conn`,
`ip_vs_conn_fill_param_sync`) step by step, so that the Rust codec can be
checked against something obviously correct. Format reference:
/work/shared/reference/ipvs-sync-protocol.md.

Every multi-byte field is big-endian except the v0 sequence block, which is
the sending host's raw (little-endian) struct.
"""

import ipaddress
import struct

V0_HEADER = struct.Struct("!BBH")  # nr_conns, syncid, size
V1_HEADER = struct.Struct("!BBHBBH")  # reserved, syncid, size, nr_conns, version, spare
V0_CONN = struct.Struct("!xBHHH4s4s4sHH")  # reserved, protocol, ports, addrs, flags, state
# type, protocol, ver_size, flags, state, cport, vport, dport, fwmark, timeout;
# the three addresses (4 or 16 bytes each) follow.
V1_CONN = struct.Struct("!BBHIHHHHII")
V1_MIN_ENTRY = V1_CONN.size + 3 * 4  # an IPv4 entry: 36 bytes
SEQ_WORDS = 6  # two struct ip_vs_seq {init_seq, delta, previous_delta}
SEQ_LEN = 4 * SEQ_WORDS

# Connection flags (include/uapi/linux/ip_vs.h).
F_SYNC = 0x0020
F_HASHED = 0x0040
F_SEQ_MASK = 0x0600
F_TEMPLATE = 0x1000
F_BACKUP_MASK = 0x1F87  # FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE

# Option types; 0x40 marks an option a receiver may ignore when unknown.
OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME = 1, 2, 3
OPT_F_PARAM = 0x40
PE_NAME_MAX = 16

# Protocols IPVS has handlers for, with their number of states.
NUM_STATES = {6: 11, 17: 1, 132: 14, 50: 1, 51: 1}


class Drop(Exception):
    """The backup stops reading the message here (a message-level error)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# --- decoding -------------------------------------------------------------


def decode(datagram, pe_names=("sip",)):
    """Decode one datagram as a Linux 6.1 backup with `pe_names` loaded reads it."""
    datagram = bytes(datagram)
    msg = {"header": None, "conns": [], "error": None, "trailing": 0}
    if len(datagram) < V0_HEADER.size:
        msg["error"] = "header_truncated"
        return msg
    v1 = is_v1(datagram)
    msg["header"] = _v1_header(datagram) if v1 else _v0_header(datagram)
    if msg["header"]["size"] != len(datagram):
        msg["error"] = "size_mismatch"
        return msg
    known = {name.encode() for name in pe_names}
    try:
        end = _walk_v1(datagram, msg["conns"], known) if v1 else _walk_v0(datagram, msg["conns"])
    except Drop as drop:
        msg["error"] = drop.reason
    else:
        msg["trailing"] = len(datagram) - min(end, len(datagram))
    return msg


def is_v1(datagram):
    """The kernel's test; anything else, even with byte 0 == 0, is v0."""
    return len(datagram) >= V1_HEADER.size and datagram[0] == 0 and datagram[5] == 1 and datagram[6:8] == b"\0\0"


def _v0_header(datagram):
    nr_conns, syncid, size = V0_HEADER.unpack_from(datagram)
    return {"format": "v0", "nr_conns": nr_conns, "syncid": syncid, "size": size}


def _v1_header(datagram):
    reserved, syncid, size, nr_conns, version, spare = V1_HEADER.unpack_from(datagram)
    return {"format": "v1", "reserved": reserved, "syncid": syncid, "size": size,
            "nr_conns": nr_conns, "version": version, "spare": spare}


def _walk_v0(buf, conns):
    """Append the v0 entries to `conns`; return where the next one would start."""
    pos = V0_HEADER.size
    for _ in range(buf[0]):
        if pos + V0_CONN.size > len(buf):
            raise Drop("entry_truncated")
        protocol, cport, vport, dport, caddr, vaddr, daddr, flags, state = V0_CONN.unpack_from(buf, pos)
        options, length = [], V0_CONN.size
        if flags & F_SEQ_MASK:
            block = buf[pos + length:pos + length + SEQ_LEN]
            if len(block) < SEQ_LEN:
                raise Drop("seq_truncated")
            options, length = [{"type": OPT_SEQ_DATA, "data_hex": _swap_words(block).hex()}], length + SEQ_LEN
        conns.append({
            "offset": pos, "type": None, "af": "inet", "protocol": protocol,
            "entry_version": None, "size": None, "flags": flags, "state": state,
            "cport": cport, "vport": vport, "dport": dport, "fwmark": None, "timeout": None,
            "caddr": _text(caddr), "vaddr": _text(vaddr), "daddr": _text(daddr),
            "options": options,
            "verdict": _proto_verdict(flags, protocol, state),
            "backup_flags": (flags & ~F_HASHED) | F_SYNC,
        })
        pos += length
    return pos


def _walk_v1(buf, conns, known_pes):
    """Append the v1 entries to `conns`; return where the next one would start."""
    pos = V1_HEADER.size
    for _ in range(buf[4]):
        # The kernel reads the size field after checking for an IPv4-sized entry.
        if pos + V1_MIN_ENTRY > len(buf):
            raise Drop("entry_truncated")
        etype, protocol, ver_size, flags, state, cport, vport, dport, fwmark, timeout = V1_CONN.unpack_from(buf, pos)
        size = ver_size & 0x0FFF
        if pos + size > len(buf):
            raise Drop("entry_overrun")
        if ver_size >> 12:
            raise Drop("entry_version")
        if etype != 0 and not etype & 1:
            raise Drop("entry_type")
        alen = 16 if etype & 1 else 4
        fixed = V1_CONN.size + 3 * alen
        if size < fixed:
            raise Drop("entry_too_short")
        addrs = [_text(buf[at:at + alen]) for at in range(pos + V1_CONN.size, pos + fixed, alen)]
        options, values, skip = _walk_options(buf[pos + fixed:pos + size])
        verdict = skip or _proto_verdict(flags, protocol, state)
        if verdict == "apply":
            verdict = _pe_verdict(values, known_pes)
        conns.append({
            "offset": pos, "type": etype, "af": "inet6" if alen == 16 else "inet",
            "protocol": protocol, "entry_version": 0, "size": size, "flags": flags,
            "state": state, "cport": cport, "vport": vport, "dport": dport,
            "fwmark": fwmark, "timeout": timeout,
            "caddr": addrs[0], "vaddr": addrs[1], "daddr": addrs[2],
            "options": options, "verdict": verdict,
            "backup_flags": (flags & F_BACKUP_MASK) | F_SYNC,
        })
        pos += (size + 3) & ~3  # next entry starts 4-byte aligned
    return pos


def _walk_options(data):
    """Check one entry's option TLVs in the kernel's order.

    Returns (options, values of the known options by type, skip verdict).
    An unknown mandatory option makes the kernel skip the entry without
    checking its later options, so those cannot cause an error.
    """
    options, values, pos = [], {}, 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise Drop("option_truncated")
        otype, olen = data[pos], data[pos + 1]
        value = data[pos + 2:pos + 2 + olen]
        if olen == 0 or len(value) < olen:
            raise Drop("option_length")
        options.append({"type": otype, "data_hex": value.hex()})
        kind = otype & ~OPT_F_PARAM
        if kind == OPT_SEQ_DATA and (olen != SEQ_LEN or kind in values):
            raise Drop("seq_option")
        if kind == OPT_PE_DATA and kind in values:
            raise Drop("pe_option")
        if kind == OPT_PE_NAME and (olen > PE_NAME_MAX or kind in values):
            raise Drop("pe_option")
        if kind in (OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME):
            values[kind] = value
        elif not otype & OPT_F_PARAM:
            rest = _well_formed_options(data[pos + 2 + olen:])
            return options + rest, values, "skip: unknown_mandatory_option"
        pos += 2 + olen
    return options, values, None


def _well_formed_options(data):
    """The TLVs at the start of `data` up to the first malformed one.

    Lists what follows an unknown mandatory option: the kernel reads no
    further, but the options are still on the wire.
    """
    options = []
    while len(data) >= 2 and 0 < data[1] <= len(data) - 2:
        options.append({"type": data[0], "data_hex": data[2:2 + data[1]].hex()})
        data = data[2 + data[1]:]
    return options


def _proto_verdict(flags, protocol, state):
    """Templates skip these checks: a bad template state is only logged."""
    if flags & F_TEMPLATE:
        return "apply"
    if protocol not in NUM_STATES:
        return "skip: unsupported_protocol"
    if state >= NUM_STATES[protocol]:
        return "skip: invalid_state"
    return "apply"


def _pe_verdict(values, known_pes):
    """PE_NAME alone is ignored; the kernel compares it as a C string."""
    if OPT_PE_DATA not in values:
        return "apply"
    if OPT_PE_NAME not in values:
        return "skip: pe_data_without_name"
    if values[OPT_PE_NAME].split(b"\0")[0] not in known_pes:
        return "skip: unknown_pe"
    return "apply"


def _text(packed):
    return str(ipaddress.ip_address(packed))


def _swap_words(block):
    """Re-pack the six u32 of a sequence block in the other byte order."""
    return struct.pack(">6I", *struct.unpack("<6I", block))


# --- encoding -------------------------------------------------------------


def encode(header, conns):
    """Build one message of `header["format"]` holding `conns` (decode()'s shapes)."""
    syncid = header["syncid"]
    if header["format"] == "v1":
        body = b""
        for conn in conns:
            body += bytes(-len(body) % 4) + _v1_entry(conn)  # pad between entries only
        return V1_HEADER.pack(0, syncid, V1_HEADER.size + len(body), len(conns), 1, 0) + body
    body = b"".join(_v0_entry(conn) for conn in conns)
    return V0_HEADER.pack(len(conns), syncid, V0_HEADER.size + len(body)) + body


def _v1_entry(conn):
    addrs = b"".join(_packed(conn[key]) for key in ("caddr", "vaddr", "daddr"))
    opts = b"".join(bytes([opt["type"], len(data)]) + data
                    for opt in conn["options"] for data in [bytes.fromhex(opt["data_hex"])])
    size = V1_CONN.size + len(addrs) + len(opts)
    fixed = V1_CONN.pack(
        1 if conn["af"] == "inet6" else 0, conn["protocol"], size, conn["flags"],
        conn["state"], conn["cport"], conn["vport"], conn["dport"],
        conn["fwmark"] or 0, conn["timeout"] or 0)
    return fixed + addrs + opts


def _v0_entry(conn):
    entry = V0_CONN.pack(
        conn["protocol"], conn["cport"], conn["vport"], conn["dport"],
        _packed(conn["caddr"]), _packed(conn["vaddr"]), _packed(conn["daddr"]),
        conn["flags"], conn["state"])
    if conn["flags"] & F_SEQ_MASK:
        (seq,) = [opt for opt in conn["options"] if opt["type"] == OPT_SEQ_DATA]
        entry += _swap_words(bytes.fromhex(seq["data_hex"]))
    return entry


def _packed(text):
    return ipaddress.ip_address(text).packed
