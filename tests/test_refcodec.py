"""The reference codec (tests/refcodec.py) against the real-kernel vectors.

Pure Python: checks the yardstick before the Rust codec is measured with it.
"""

import json
import struct
from pathlib import Path

import pytest

import refcodec

VECTORS = Path(__file__).parent / "data" / "ipvs-sync"
SHARED = ("shared-v0.json", "shared-v1.json")
ALL = SHARED + ("validation.json",)

# The vectors' verdict texts (after "skip entry: " / "drop message: ") -> reason ids.
SKIP_IDS = {
    "unknown mandatory option": "unknown_mandatory_option",
    "unsupported protocol": "unsupported_protocol",
    "invalid state": "invalid_state",
    "PE data without PE name": "pe_data_without_name",
}
DROP_IDS = {
    "unknown entry version": "entry_version",
    "unknown type": "entry_type",
    "size smaller than fixed part": "entry_too_short",
    "bad option length": "option_length",
    "bad/duplicate seq option": "seq_option",
    "bad/duplicate PE option": "pe_option",
}
# Message `problems` naming the entry at which the backup stops.
PROBLEM_IDS = {
    "less than 36 bytes left": "entry_truncated",
    "truncated (backup drops rest)": "entry_truncated",
    "seq options truncated": "seq_truncated",
}
CONN_FIELDS = ("offset", "af", "protocol", "flags", "state", "cport", "vport", "dport",
               "fwmark", "timeout", "caddr", "vaddr", "daddr", "backup_flags")
V1_FIELDS = ("type", "entry_version", "size")


def messages(*names):
    return [pytest.param(msg, id=f"{name.removesuffix('.json')}#{msg['frame']}")
            for name in names
            for msg in json.loads((VECTORS / name).read_text())["messages"]]


def expected_verdict(text, pe_names=("sip",)):
    if text == "apply":
        return "apply"
    if text.startswith("apply if PE "):
        return "apply" if text.split("'")[1] in pe_names else "skip: unknown_pe"
    reason = text.removeprefix("skip entry: ")
    return "skip: " + next(rid for prefix, rid in SKIP_IDS.items() if reason.startswith(prefix))


def expected_outcome(msg):
    """(entries a backup reads, with their verdicts; error reason or None)."""
    if msg.get("backup_verdict", "").startswith("drop: header size"):
        return [], "size_mismatch"
    read = []
    for conn in msg["conns"]:
        if conn["backup_verdict"].startswith("drop message: "):
            return read, DROP_IDS[conn["backup_verdict"].removeprefix("drop message: ")]
        read.append((conn, expected_verdict(conn["backup_verdict"])))
    problems = " ".join(msg.get("problems") or [])
    return read, next((rid for text, rid in PROBLEM_IDS.items() if text in problems), None)


def expected_options(conn):
    """v1 options as listed; the v0 block as SEQ_DATA in network order."""
    out = []
    for opt in conn["options"]:
        if opt["type"] == "v0_seq":
            words = [seq[key] for seq in opt["host_le"].values()
                     for key in ("init_seq", "delta", "previous_delta")]
            out.append((1, struct.pack("!6I", *words).hex()))
        else:
            out.append((opt["type"], opt["data_hex"]))
    return out


@pytest.mark.parametrize("msg", messages(*ALL))
def test_decode_matches_kernel(msg):
    got = refcodec.decode(bytes.fromhex(msg["payload_hex"]))
    want_conns, want_error = expected_outcome(msg)

    assert got["header"] == msg["header"]
    assert got["error"] == want_error
    assert got["trailing"] == (0 if want_error else msg.get("trailing_bytes", 0))
    assert len(got["conns"]) == len(want_conns)
    for conn, (want, verdict) in zip(got["conns"], want_conns):
        fields = CONN_FIELDS + (V1_FIELDS if msg["header"]["format"] == "v1" else ())
        assert {k: conn[k] for k in fields} == {k: want[k] for k in fields}
        assert [(o["type"], o["data_hex"]) for o in conn["options"]] == expected_options(want)
        assert conn["verdict"] == verdict


@pytest.mark.parametrize("msg", messages(*SHARED))
def test_encode_reproduces_capture(msg):
    assert refcodec.encode(msg["header"], msg["conns"]).hex() == msg["payload_hex"]


@pytest.mark.parametrize("msg", messages(*SHARED))
def test_decoded_message_re_encodes(msg):
    payload = bytes.fromhex(msg["payload_hex"])
    decoded = refcodec.decode(payload)
    assert refcodec.encode(decoded["header"], decoded["conns"]) == payload


@pytest.mark.parametrize("pe_names, verdict", [(("sip",), "skip: unknown_pe"), (("sip", "nosuch"), "apply")])
def test_pe_names_decide(pe_names, verdict):
    (msg,) = [m.values[0] for m in messages("validation.json") if m.values[0]["frame"] == 17]
    got = refcodec.decode(bytes.fromhex(msg["payload_hex"]), pe_names=pe_names)
    assert [c["verdict"] for c in got["conns"]] == [verdict, "apply"]


@pytest.mark.parametrize("payload, error", [
    (b"", "header_truncated"),
    (b"\x00\x07\x00", "header_truncated"),
    (b"\x00\x07\x00\x05", "size_mismatch"),
    (b"\x00\x07\x00\x04", None),  # v0, no entries
])
def test_short_datagrams(payload, error):
    assert refcodec.decode(payload)["error"] == error


def test_v0_seq_block_round_trips():
    (msg,) = [m.values[0] for m in messages("validation.json") if m.values[0]["frame"] == 39]
    payload = bytes.fromhex(msg["payload_hex"])
    decoded = refcodec.decode(payload)
    assert refcodec.encode(decoded["header"], decoded["conns"]) == payload


def test_unknown_mandatory_option_ends_the_option_walk():
    # IPv4 TCP entry whose options are: unknown mandatory 5, a duplicate
    # PE_NAME (an error if it were checked), then a 0-length option.
    fixed = bytes.fromhex("0006002f000000000001c35a00501f4000000000000003840a0000020a000064c0a8010b")
    options = bytes.fromhex("0501aa" "0301bb" "0301cc" "0200")
    got = refcodec.decode(bytes.fromhex("0007003701010000") + fixed + options)
    assert (got["error"], got["conns"][0]["verdict"]) == (None, "skip: unknown_mandatory_option")
    assert [(o["type"], o["data_hex"]) for o in got["conns"][0]["options"]] == [(5, "aa"), (3, "bb"), (3, "cc")]
