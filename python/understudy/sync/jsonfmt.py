"""Decoded sync messages as JSON-ready dicts and as readable text, and back.

The dict layout follows the expected decodings in tests/data/ipvs-sync
(field names, flag, state, protocol and option names); `conn_from_dict`
accepts what `message_to_dict` produces, so decoded captures can be edited
and re-encoded.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from understudy import _core

__all__ = ["conn_from_dict", "flag_names", "format_text", "message_to_dict", "protocol_name", "state_name"]

JsonDict = dict[str, Any]

_PROTOCOL_NAMES = {0: "IP", 6: "TCP", 17: "UDP", 50: "ESP", 51: "AH", 132: "SCTP"}

_TCP_STATES = (
    "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
)  # fmt: skip
_SCTP_STATES = (
    "NONE", "INIT1", "INIT", "COOKIE_SENT", "COOKIE_REPLIED", "COOKIE_WAIT", "COOKIE",
    "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT", "SHUTDOWN_RECEIVED",
    "SHUTDOWN_ACK_SENT", "REJECTED", "CLOSED",
)  # fmt: skip
# Protocols without a handler in the kernel (e.g. 0) have no state names.
_STATE_NAMES: dict[int, tuple[str, ...]] = {
    6: _TCP_STATES,
    17: ("UDP",),
    132: _SCTP_STATES,
    50: ("NONE",),
    51: ("NONE",),
}
_TEMPLATE_STATE_NAMES = ("TPL_NONE", "TPL_ASSURED")

_FLAG_TEMPLATE = 0x1000
_FORWARDING_METHODS = ("MASQ", "LOCALNODE", "TUNNEL", "DROUTE", "BYPASS", "FWD5", "FWD6", "FWD7")
_FLAG_BITS = (
    (0x0020, "SYNC"),
    (0x0040, "HASHED"),
    (0x0080, "NOOUTPUT"),
    (0x0100, "INACTIVE"),
    (0x0200, "OUT_SEQ"),
    (0x0400, "IN_SEQ"),
    (0x0800, "NO_CPORT"),
    (0x1000, "TEMPLATE"),
    (0x2000, "ONE_PACKET"),
    (0x10000, "NFCT"),
)
_KNOWN_FLAG_BITS = 0x0007 | sum(bit for bit, _ in _FLAG_BITS)

_OPTION_SEQ_DATA = 1
_OPTION_NAMES = {_OPTION_SEQ_DATA: "SEQ_DATA", 2: "PE_DATA", 3: "PE_NAME"}
# Option types are recognised with or without this "optional" bit (IPVS_OPT_F_PARAM).
_OPTION_PARAM_BIT = 0x40
_V0_SEQ = "v0_seq"
_SEQ_FIELDS = ("init_seq", "delta", "previous_delta")


def protocol_name(protocol: int) -> str:
    return _PROTOCOL_NAMES.get(protocol, str(protocol))


def state_name(protocol: int, flags: int, state: int) -> str:
    names = _TEMPLATE_STATE_NAMES if flags & _FLAG_TEMPLATE else _STATE_NAMES.get(protocol, ())
    return names[state] if state < len(names) else f"?{state}"


def flag_names(flags: int) -> list[str]:
    """Forwarding method first, then the set bits; unknown bits in hex."""
    names = [_FORWARDING_METHODS[flags & 0x0007]]
    names += [name for bit, name in _FLAG_BITS if flags & bit]
    unknown = flags & ~_KNOWN_FLAG_BITS
    names += [hex(1 << n) for n in range(unknown.bit_length()) if unknown >> n & 1]
    return names


def _option_name(option_type: int) -> str:
    return _OPTION_NAMES.get(option_type & ~_OPTION_PARAM_BIT, "UNKNOWN")


# --- decoding to dicts ------------------------------------------------------


def message_to_dict(msg: _core.Message, frame: int | None = None) -> JsonDict:
    """One decoded datagram as a JSON-ready dict."""
    v0 = msg.format == "v0"
    return {
        "frame": frame,
        "header": _header_dict(msg),
        "conns": [_conn_dict(conn, v0) for conn in msg.conns],
        "error": msg.error,
        "error_detail": msg.error_detail,
        "trailing": msg.trailing,
    }


def _header_dict(msg: _core.Message) -> JsonDict | None:
    if msg.format == "v1":
        return {
            "format": "v1",
            "reserved": 0,
            "syncid": msg.syncid,
            "size": msg.size,
            "nr_conns": msg.nr_conns,
            "version": 1,
            "spare": 0,
        }
    if msg.format == "v0":
        return {"format": "v0", "nr_conns": msg.nr_conns, "syncid": msg.syncid, "size": msg.size}
    return None


def _conn_dict(conn: _core.Conn, v0: bool) -> JsonDict:
    return {
        "offset": conn.offset,
        "type": None if v0 else conn.entry_type,
        "af": conn.af,
        "protocol": conn.protocol,
        "protocol_name": protocol_name(conn.protocol),
        "entry_version": None if v0 else conn.entry_version,
        "size": None if v0 else conn.size,
        "padded_size": None if v0 else conn.padded_size,
        "flags": conn.flags,
        "flags_hex": f"0x{conn.flags:04x}" if v0 else f"0x{conn.flags:08x}",
        "flag_names": flag_names(conn.flags),
        "state": conn.state,
        "state_name": state_name(conn.protocol, conn.flags, conn.state),
        "cport": conn.cport,
        "vport": conn.vport,
        "dport": conn.dport,
        "fwmark": None if v0 else conn.fwmark,
        "timeout": None if v0 else conn.timeout,
        "caddr": conn.caddr,
        "vaddr": conn.vaddr,
        "daddr": conn.daddr,
        "options": [_option_dict(t, data, v0) for t, data in conn.options],
        "verdict": conn.verdict,
        "backup_flags": conn.backup_flags,
    }


def _option_dict(option_type: int, data: bytes, v0: bool) -> JsonDict:
    if v0:
        # The Conn holds the v0 sequence block in network order; the wire has
        # the sender's host order (little-endian from x86 masters).
        values = struct.unpack(">6I", data)
        return {
            "type": _V0_SEQ,
            "len": len(data),
            "data_hex": struct.pack("<6I", *values).hex(),
            **_seq_dicts(values),
        }
    name = _option_name(option_type)
    option: JsonDict = {"type": option_type, "name": name, "len": len(data), "data_hex": data.hex()}
    if name in ("PE_DATA", "PE_NAME"):
        option["text"] = data.decode("utf-8", "backslashreplace")
    elif name == "SEQ_DATA" and len(data) == 24:
        option.update(_seq_dicts(struct.unpack(">6I", data)))
    return option


def _seq_dicts(values: Sequence[int]) -> JsonDict:
    return {
        "in_seq": dict(zip(_SEQ_FIELDS, values[:3], strict=True)),
        "out_seq": dict(zip(_SEQ_FIELDS, values[3:], strict=True)),
    }


# --- dicts back to connections ------------------------------------------


def conn_from_dict(d: Mapping[str, Any]) -> _core.Conn:
    """A connection to encode, from a dict as `message_to_dict` writes them.

    Required: protocol (number or name), caddr, cport, vaddr, vport, daddr,
    dport. Optional: flags, state, fwmark, timeout (null counts as 0) and
    options, each {"type": int, "data_hex": str} or {"type": int, "text": str},
    or a v0 sequence block {"type": "v0_seq", "data_hex": <little-endian>}.
    Raises ValueError naming the offending field.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"a connection must be a JSON object, not {type(d).__name__}")
    return _core.Conn(
        _protocol(d),
        _address(d, "caddr"),
        _integer(d, "cport", _U16),
        _address(d, "vaddr"),
        _integer(d, "vport", _U16),
        _address(d, "daddr"),
        _integer(d, "dport", _U16),
        _integer(d, "flags", _U32, default=0),
        _integer(d, "state", _U16, default=0),
        _integer(d, "fwmark", _U32, default=0),
        _integer(d, "timeout", _U32, default=0),
        [_option(i, o) for i, o in enumerate(_list(d, "options"))],
    )


_U8 = 0xFF
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF


def _protocol(d: Mapping[str, Any]) -> int:
    value = d.get("protocol")
    if isinstance(value, str):
        by_name = {name: number for number, name in _PROTOCOL_NAMES.items()}
        if value.upper() not in by_name:
            raise ValueError(f"protocol: unknown name {value!r}")
        return by_name[value.upper()]
    return _integer(d, "protocol", _U8)


def _integer(d: Mapping[str, Any], key: str, maximum: int, default: int | None = None) -> int:
    value = d.get(key)
    if value is None and default is not None:
        return default
    if value is None:
        raise ValueError(f"missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{key}: expected an integer in 0..{maximum}, got {value!r}")
    return value


def _text(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        raise ValueError(f"missing field {key!r}")
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def _address(d: Mapping[str, Any], key: str) -> str:
    text = _text(d, key)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not an IPv4 or IPv6 address") from None
    return text


def _list(d: Mapping[str, Any], key: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list, got {value!r}")
    return value


def _option(index: int, option: Any) -> tuple[int, bytes]:
    where = f"options[{index}]"
    if not isinstance(option, Mapping):
        raise ValueError(f"{where}: expected an object, got {option!r}")
    try:
        if "data_hex" in option:
            data = bytes.fromhex(_text(option, "data_hex"))
        elif "text" in option:
            data = _text(option, "text").encode()
        else:
            raise ValueError("needs data_hex or text")
        if option.get("type") == _V0_SEQ:
            if len(data) != 24:
                raise ValueError(f"a v0 sequence block is 24 bytes, got {len(data)}")
            return _OPTION_SEQ_DATA, struct.pack(">6I", *struct.unpack("<6I", data))
        return _integer(option, "type", _U8), data
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


# --- text ---------------------------------------------------------------


def format_text(msg: Mapping[str, Any]) -> str:
    """A compact protocol-analyser view of a `message_to_dict` result."""
    lines = [_header_line(msg)]
    header = msg.get("header")
    version = header["format"] if header else "?"
    for index, conn in enumerate(msg.get("conns", [])):
        lines.append(f"  #{index} {version} {_conn_line(conn)}")
        lines += [f"      {_option_line(option)}" for option in conn.get("options", [])]
    if msg.get("error"):
        detail = msg.get("error_detail")
        lines.append(f"  error: {msg['error']}" + (f": {detail}" if detail else ""))
    if msg.get("trailing"):
        lines.append(f"  trailing: {msg['trailing']} bytes after the last entry")
    return "\n".join(lines)


def _header_line(msg: Mapping[str, Any]) -> str:
    where = f"frame {msg['frame']}" if msg.get("frame") is not None else "datagram"
    header = msg.get("header")
    if header is None:
        return f"{where}: no sync header"
    return (
        f"{where}: {header['format']} syncid={header['syncid']} size={header['size']}"
        f" nr_conns={header['nr_conns']}"
    )


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _conn_line(conn: Mapping[str, Any]) -> str:
    parts = [
        conn["af"],
        conn["protocol_name"],
        conn["state_name"],
        f"{_endpoint(conn['caddr'], conn['cport'])} -> {_endpoint(conn['vaddr'], conn['vport'])}"
        f" -> {_endpoint(conn['daddr'], conn['dport'])}",
        f"flags=0x{conn['flags']:04x}[{'|'.join(conn['flag_names'])}]",
    ]
    if conn.get("timeout") is not None:
        parts.append(f"timeout={conn['timeout']}")
    if conn.get("fwmark") is not None:
        parts.append(f"fwmark={conn['fwmark']}")
    if conn.get("verdict") is not None:
        parts.append(f"verdict={conn['verdict']}")
    return " ".join(parts)


def _option_line(option: Mapping[str, Any]) -> str:
    if option["type"] == _V0_SEQ:
        line = f"v0 sequence block len={option['len']}"
    else:
        line = f"{option['name']} (type {option['type']}) len={option['len']}"
    if "text" in option:
        return f'{line} "{option["text"]}"'
    if "in_seq" in option:
        return f"{line} in_seq={_seq_text(option['in_seq'])} out_seq={_seq_text(option['out_seq'])}"
    return f"{line} data={option['data_hex']}"


def _seq_text(seq: Mapping[str, int]) -> str:
    return "/".join(str(seq[field]) for field in _SEQ_FIELDS)
