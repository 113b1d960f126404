"""`understudy sync ...`: decode and encode IPVS connection-sync messages."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from understudy import _core
from understudy.cli import sync_roles
from understudy.cli.common import EXIT_OK, Subparsers, add_group, fail
from understudy.sync.jsonfmt import conn_from_dict, format_text, message_to_dict
from understudy.sync.pcap import PcapError, PcapReader, write_pcap

_FORMAT_VERSIONS = {"v0": 0, "v1": 1}


def register(subparsers: Subparsers) -> None:
    commands = add_group(subparsers, "sync", "IPVS connection-sync messages")

    decode = commands.add_parser(
        "decode",
        help="decode sync messages from a capture or a hex datagram",
        description="Decode every UDP datagram of a capture (or one hex datagram) as a sync "
        "message, as a Linux 6.1 backup reads it. A summary goes to stderr.",
    )
    source = decode.add_mutually_exclusive_group(required=True)
    source.add_argument("--pcap", metavar="FILE", type=Path, help="pcap or pcapng capture")
    source.add_argument("--hex", metavar="HEX", help="one datagram in hex (spaces and colons allowed)")
    decode.add_argument("--json", action="store_true", help="one JSON object per message and line")
    decode.add_argument(
        "--port", type=_port, metavar="N", help="only datagrams to UDP port N (default: every UDP datagram)"
    )
    decode.add_argument(
        "--pe",
        nargs="*",
        action="extend",
        metavar="NAME",
        help="persistence engines loaded on the backup, for the verdicts (default: sip; "
        "--pe alone: none)",
    )
    decode.set_defaults(handler=_decode)

    encode = commands.add_parser(
        "encode",
        help="encode connections (JSON) into sync datagrams",
        description="Read either one object {\"version\": 1, \"syncid\": 7, \"conns\": [...]} "
        "(packed into datagrams as a kernel master does, see --max-len) or JSON lines as "
        "`sync decode --json` prints them (one datagram per line). Writes hex lines, or a "
        "pcap with --pcap.",
    )
    encode.add_argument("--in", dest="input", metavar="FILE", default="-", help="JSON input (default: stdin)")
    encode.add_argument("--out", metavar="FILE", type=Path, help="output file (default: stdout)")
    encode.add_argument("--pcap", action="store_true", help="write an Ethernet pcap (needs --out)")
    encode.add_argument(
        "--max-len", type=_max_len, default=1472, metavar="N", help="datagram size limit for the object form (1472)"
    )
    encode.add_argument(
        "--version", dest="sync_version", type=int, choices=(0, 1), help="sync version, overriding the input's"
    )
    encode.add_argument("--syncid", type=_syncid, metavar="N", help="sync id 0..255, overriding the input's")
    encode.set_defaults(handler=_encode)
    sync_roles.register(commands)


def _port(text: str) -> int:
    return _bounded_int(text, 0, 0xFFFF)


def _syncid(text: str) -> int:
    return _bounded_int(text, 0, 0xFF)


def _max_len(text: str) -> int:
    return _bounded_int(text, 1, 0xFFFF)


def _bounded_int(text: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"expected an integer in {minimum}..{maximum}, got {text!r}")
    return value


# --- decode ---------------------------------------------------------------


def _decode(args: argparse.Namespace) -> int:
    pe_names: tuple[str, ...] | None = tuple(args.pe) if args.pe is not None else None
    reader: PcapReader | None = None
    if args.hex is not None:
        try:
            datagrams: Iterable[tuple[int | None, bytes]] = [(None, bytes.fromhex(args.hex.replace(":", "")))]
        except ValueError as e:
            return fail(f"--hex: {e}")
    else:
        try:
            reader = PcapReader(args.pcap)
        except (OSError, PcapError) as e:
            return fail(f"cannot read {args.pcap}: {_reason(e)}")
        datagrams = ((d.frame, d.payload) for d in reader if args.port is None or d.dport == args.port)

    messages = entries = 0
    errors: Counter[str] = Counter()
    try:
        for frame, payload in datagrams:
            msg = _core.decode(payload, pe_names)
            as_dict = message_to_dict(msg, frame)
            print(json.dumps(as_dict) if args.json else format_text(as_dict))
            messages += 1
            entries += len(msg.conns)
            if msg.error:
                errors[msg.error] += 1
    except BrokenPipeError:
        raise  # stdout closed: main() handles it, it is no read error
    except (OSError, PcapError) as e:
        return fail(f"cannot read {args.pcap}: {_reason(e)}")
    print(_summary(messages, entries, errors, reader.skipped if reader else Counter()), file=sys.stderr)
    return EXIT_OK


def _reason(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _summary(messages: int, entries: int, errors: Counter[str], skipped: Counter[str]) -> str:
    text = f"{_plural(messages, 'message')}, {_plural(entries, 'entry', 'entries')}, {_counted(errors, 'error')}"
    if skipped:
        text += f"; {_counted(skipped, 'frame', ' skipped')}"
    return text


def _counted(counts: Counter[str], noun: str, verb: str = "") -> str:
    """E.g. "no errors", "3 errors (entry_type 1, size_mismatch 2)"."""
    total = sum(counts.values())
    if not total:
        return f"no {noun}s{verb}"
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
    return f"{_plural(total, noun)}{verb} ({reasons})"


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


# --- encode ---------------------------------------------------------------


class _InputError(ValueError):
    """Input that cannot be encoded; the message names where it is."""


def _encode(args: argparse.Namespace) -> int:
    if args.pcap and args.out is None:
        return fail("--pcap needs --out FILE")
    try:
        text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
    except (OSError, UnicodeDecodeError) as e:
        return fail(f"cannot read {args.input}: {_reason(e)}")
    try:
        datagrams = _datagrams_from_json(text, args.sync_version, args.syncid, args.max_len)
    except _InputError as e:
        return fail(str(e))
    try:
        if args.pcap:
            write_pcap(args.out, datagrams)
        elif args.out is not None:
            args.out.write_text("".join(d.hex() + "\n" for d in datagrams))
        else:
            sys.stdout.write("".join(d.hex() + "\n" for d in datagrams))
    except OSError as e:
        return fail(f"cannot write {args.out}: {_reason(e)}")
    if args.out is not None:
        print(f"{len(datagrams)} datagrams written to {args.out}", file=sys.stderr)
    return EXIT_OK


def _datagrams_from_json(text: str, version: int | None, syncid: int | None, max_len: int) -> list[bytes]:
    """Datagrams for one spec object, or for JSON lines of decoded messages."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise _InputError(f"line {e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        return [_message_datagram(n, m, version, syncid) for n, m in _json_lines(text)]
    if not isinstance(document, dict):
        raise _InputError("line 1: expected a JSON object")
    if "header" in document:  # a single decoded message
        return [_message_datagram(1, document, version, syncid)]
    conns = _conns(document, "")
    version = _field(document, "version", version, 1, "", maximum=1)
    syncid = _field(document, "syncid", syncid, 0, "", maximum=0xFF)
    try:
        return _core.encode(conns, version, syncid, max_len)
    except ValueError as e:
        raise _InputError(_locate_encode_error(conns, version, syncid, "", e)) from None


def _json_lines(text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise _InputError(f"line {number}: invalid JSON: {e.msg} (column {e.colno})") from None


def _message_datagram(number: int, message: Any, version: int | None, syncid: int | None) -> bytes:
    """One datagram re-encoding a message as `sync decode --json` prints it."""
    where = f"line {number}, "
    if not isinstance(message, dict) or "conns" not in message:
        raise _InputError(f"line {number}: expected a message object with header and conns")
    header = message.get("header")
    if not isinstance(header, dict) or header.get("format") not in _FORMAT_VERSIONS:
        raise _InputError(f"line {number}: the message has no v0/v1 header, nothing to re-encode")
    conns = _conns(message, where)
    version = version if version is not None else _FORMAT_VERSIONS[header["format"]]
    syncid = _field(header, "syncid", syncid, 0, where, maximum=0xFF)
    try:
        return _core.encode_message(conns, version, syncid)
    except ValueError as e:
        raise _InputError(_locate_encode_error(conns, version, syncid, where, e)) from None


def _conns(document: Mapping[str, Any], where: str) -> list[_core.Conn]:
    entries = document.get("conns")
    if not isinstance(entries, list):
        raise _InputError(f"{where}conns: expected a list")
    conns = []
    for index, entry in enumerate(entries):
        try:
            conns.append(conn_from_dict(entry))
        except ValueError as e:
            raise _InputError(f"{where}entry {index}: {e}") from None
    return conns


def _field(
    document: Mapping[str, Any], key: str, override: int | None, default: int, where: str, *, maximum: int
) -> int:
    if override is not None:
        return override
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _InputError(f"{where}{key}: expected an integer in 0..{maximum}, got {value!r}")
    return value


def _locate_encode_error(
    conns: Sequence[_core.Conn], version: int, syncid: int, where: str, error: ValueError
) -> str:
    """Name the first entry the encoder refuses on its own, else report the message."""
    for index, conn in enumerate(conns):
        try:
            _core.encode_message([conn], version, syncid)
        except ValueError as e:
            return f"{where}entry {index}: {e}"
    return f"{where}{error}"
