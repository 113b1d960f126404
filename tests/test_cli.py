"""The `understudy` command line: `sync decode` against the kernel vectors,
`sync encode` round trips, and the errors a user can cause."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from understudy import __version__, _core
from understudy.cli import main
from understudy.sync.pcap import iter_udp

VECTORS = Path(__file__).parent / "data" / "ipvs-sync"
# The console script installed next to the interpreter running the tests (.venv/bin).
SCRIPT = Path(sys.executable).parent / "understudy"

# Fields the decoder prints under the same name and meaning as the vectors' JSON.
SHARED_CONN_FIELDS = (
    "offset", "af", "protocol", "protocol_name", "entry_version", "size", "flags", "flags_hex",
    "flag_names", "state", "state_name", "cport", "vport", "dport", "fwmark", "timeout", "caddr",
    "vaddr", "daddr", "backup_flags",
)  # fmt: skip


def vector_messages(name: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = json.loads((VECTORS / f"{name}.json").read_text())["messages"]
    return messages


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def decode_json(capsys: pytest.CaptureFixture[str], name: str, *extra: str) -> list[dict[str, Any]]:
    status, out, _ = run(capsys, "sync", "decode", "--pcap", str(VECTORS / f"{name}.pcap"), "--json", *extra)
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def assert_conn_matches_vector(ours: dict[str, Any], vector: dict[str, Any], v0: bool) -> None:
    for field in SHARED_CONN_FIELDS:
        assert ours[field] == vector[field], (field, ours, vector)
    assert ours["type"] == (None if v0 else vector["type"])
    assert ours["padded_size"] == (None if v0 else vector["padded_size"])
    assert len(ours["options"]) == len(vector["options"])
    for option, expected in zip(ours["options"], vector["options"], strict=True):
        if v0:
            assert option["type"] == expected["type"] == "v0_seq"
            assert (option["len"], option["data_hex"]) == (expected["len"], expected["data_hex"])
            assert option["in_seq"] == expected["host_le"]["in_seq"]
            assert option["out_seq"] == expected["host_le"]["out_seq"]
        else:
            assert option == expected
    # The vectors word verdicts for a backup with the sip engine loaded, as decode's default.
    verdict = vector["backup_verdict"]
    applies = verdict == "apply" or verdict == "apply if PE 'sip' is loaded on the backup"
    assert ours["verdict"] == "apply" if applies else ours["verdict"].startswith("skip: "), (ours, verdict)


def message_is_dropped(vector: dict[str, Any]) -> bool:
    """The vectors mark the kernel dropping (part of) a message in three ways."""
    return bool(
        vector.get("backup_verdict")
        or vector.get("problems")
        or any(c["backup_verdict"].startswith("drop message") for c in vector["conns"])
    )


# --- decode -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["shared-v1", "shared-v0", "validation"])
def test_decode_json_matches_the_vectors(capsys: pytest.CaptureFixture[str], name: str) -> None:
    printed = decode_json(capsys, name)
    vectors = vector_messages(name)
    assert [m["frame"] for m in printed] == [v["frame"] for v in vectors]
    for ours, vector in zip(printed, vectors, strict=True):
        assert list(ours) == ["frame", "header", "conns", "error", "error_detail", "trailing"]
        assert ours["header"] == vector["header"]
        assert (ours["error"] is not None) == message_is_dropped(vector), ours
        if ours["error"] is None:
            assert ours["trailing"] == vector.get("trailing_bytes", 0)
            assert len(ours["conns"]) == len(vector["conns"])
        v0 = vector["header"]["format"] == "v0"
        # Entries read before an error are printed; the vectors also list the failing one.
        for conn, expected in zip(ours["conns"], vector["conns"]):
            assert_conn_matches_vector(conn, expected, v0)


def test_decode_shared_v1_counts(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "sync", "decode", "--pcap", str(VECTORS / "shared-v1.pcap"), "--json")
    assert status == 0
    assert sum(len(json.loads(line)["conns"]) for line in out.splitlines()) == 68
    assert err.strip() == "4 messages, 68 entries, no errors"


def test_decode_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "sync", "decode", "--pcap", str(VECTORS / "shared-v1.pcap"))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "frame 1: v1 syncid=7 size=404 nr_conns=11"
    assert lines[1] == (
        "  #0 v1 inet TCP ESTABLISHED 10.0.0.2:40001 -> 10.0.0.100:80 -> 192.168.2.12:8000"
        " flags=0x0000[MASQ] timeout=900 fwmark=0 verdict=apply"
    )
    assert '      PE_DATA (type 2) len=14 "alpha-1@client"' in lines
    assert '      PE_NAME (type 3) len=3 "sip"' in lines
    assert any(line.startswith("  #1 v1 inet6 TCP ESTABLISHED [fd00::2]:40040 -> [fd00::100]:80") for line in lines)


def test_malformed_messages_print_their_error_and_decoding_continues(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "sync", "decode", "--pcap", str(VECTORS / "validation.pcap"))
    assert status == 0
    blocks = {block.split(":")[0]: block for block in out.split("\nframe ")}
    assert "error: entry_version: " in blocks["7"]
    assert "#0 v1 inet TCP ESTABLISHED 10.0.0.2:50070" in blocks["7"]  # read before the bad entry
    assert "#1" not in blocks["7"]
    assert "error: size_mismatch: " in blocks["2"]
    assert "error" not in blocks["9"]  # the next message after the error
    assert "v0 sequence block len=24 in_seq=1000/5/0 out_seq=0/0/0" in blocks["39"]
    assert err.startswith("42 messages, 85 entries, 11 errors (")
    assert "entry_version 1" in err and "size_mismatch 1" in err and "entry_truncated 2" in err


def test_decode_errors_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    printed = {m["frame"]: m for m in decode_json(capsys, "validation")}
    assert printed[7]["error"] == "entry_version"
    assert "offset 44" in printed[7]["error_detail"]
    assert len(printed[7]["conns"]) == 1
    assert printed[38]["error"] == "seq_truncated"
    assert printed[38]["conns"] == []


def test_decode_pe_names(capsys: pytest.CaptureFixture[str]) -> None:
    def verdicts(*pe: str) -> list[str]:
        printed = {m["frame"]: m for m in decode_json(capsys, "validation", *pe)}
        return [printed[frame]["conns"][0]["verdict"] for frame in (17, 18)]  # PE "nosuch", PE "sip"

    assert verdicts() == ["skip: unknown_pe", "apply"]
    assert verdicts("--pe", "nosuch") == ["apply", "skip: unknown_pe"]
    assert verdicts("--pe", "nosuch", "sip") == ["apply", "apply"]
    assert verdicts("--pe") == ["skip: unknown_pe", "skip: unknown_pe"]


def test_decode_port_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(decode_json(capsys, "shared-v1", "--port", "8848")) == 4
    status, out, err = run(capsys, "sync", "decode", "--pcap", str(VECTORS / "shared-v1.pcap"), "--port", "9")
    assert (status, out, err.strip()) == (0, "", "0 messages, 0 entries, no errors")


def test_decode_hex(capsys: pytest.CaptureFixture[str]) -> None:
    vector = vector_messages("shared-v1")[1]
    status, out, _ = run(capsys, "sync", "decode", "--hex", vector["payload_hex"], "--json")
    assert status == 0
    (message,) = [json.loads(line) for line in out.splitlines()]
    assert message["frame"] is None
    assert message["header"] == vector["header"]
    assert [c["cport"] for c in message["conns"]] == [c["cport"] for c in vector["conns"]]
    status, out, _ = run(capsys, "sync", "decode", "--hex", "00 07 00 04")
    assert (status, out) == (0, "datagram: v0 syncid=7 size=4 nr_conns=0\n")
    status, out, _ = run(capsys, "sync", "decode", "--hex", "00:07")
    assert status == 0
    assert out.startswith("datagram: no sync header\n  error: header_truncated: ")


def test_decode_unreadable_files_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run(capsys, "sync", "decode", "--pcap", str(tmp_path / "missing.pcap"))
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and "cannot read" in err and "missing.pcap" in err
    garbage = tmp_path / "garbage.pcap"
    garbage.write_text("this is not a capture\n")
    status, _, err = run(capsys, "sync", "decode", "--pcap", str(garbage))
    assert status == 2
    assert err.count("\n") == 1 and "not a pcap or pcapng file" in err
    status, _, err = run(capsys, "sync", "decode", "--hex", "zz")
    assert status == 2 and "--hex" in err


def test_decode_truncated_capture_reports_skipped_frames(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((VECTORS / "shared-v1.pcap").read_bytes()[:-100])
    status, out, err = run(capsys, "sync", "decode", "--pcap", str(cut), "--json")
    assert status == 0
    assert len(out.splitlines()) == 3
    assert err.strip() == "3 messages, 54 entries, no errors; 1 frame skipped (truncated_record 1)"


def test_installed_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SCRIPT), "sync", "decode", "--pcap", str(VECTORS / "shared-v1.pcap"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    vectors = vector_messages("shared-v1")
    assert [m["header"] for m in printed] == [v["header"] for v in vectors]
    for ours, vector in zip(printed, vectors, strict=True):
        for conn, expected in zip(ours["conns"], vector["conns"], strict=True):
            assert_conn_matches_vector(conn, expected, v0=False)
    assert result.stderr == "4 messages, 68 entries, no errors\n"

    version = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, check=False)
    assert (version.returncode, version.stdout) == (0, f"understudy {__version__}\n")

    missing = subprocess.run(
        [str(SCRIPT), "sync", "decode", "--pcap", str(tmp_path / "none.pcap")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version")[:2] == (0, f"understudy {__version__}\n")
    assert run(capsys)[0] == 2
    status, _, err = run(capsys, "sync")
    assert status == 2 and "decode" in err and "encode" in err
    assert run(capsys, "sync", "decode")[0] == 2  # needs --pcap or --hex
    assert run(capsys, "sync", "decode", "--pcap", "x", "--port", "70000")[0] == 2


# --- encode -----------------------------------------------------------------


def reencodable(message: dict[str, Any]) -> bool:
    """Whether re-encoding must give the same bytes: the message was read to its
    end, and has no bytes a kernel master would not write (padding after the
    last entry, trailing bytes)."""
    if message["error"] or message["trailing"] or not message["conns"]:
        return False
    last = message["conns"][-1]
    return bool(last["offset"] + (last["size"] or 24 + 24 * bool(last["options"])) == message["header"]["size"])


@pytest.mark.parametrize("name", ["shared-v1", "shared-v0", "validation"])
def test_encode_reproduces_decoded_messages(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    printed = [m for m in decode_json(capsys, name) if reencodable(m)]
    expected = {v["frame"]: v["payload_hex"] for v in vector_messages(name)}
    if name != "validation":
        assert len(printed) == len(expected)
    decoded = tmp_path / "decoded.jsonl"
    decoded.write_text("".join(json.dumps(m) + "\n" for m in printed))

    status, out, _ = run(capsys, "sync", "encode", "--in", str(decoded))
    assert status == 0
    assert out.split() == [expected[m["frame"]] for m in printed]

    pcap = tmp_path / "encoded.pcap"
    status, _, err = run(capsys, "sync", "encode", "--in", str(decoded), "--pcap", "--out", str(pcap))
    assert status == 0 and f"{len(printed)} datagrams written" in err
    assert [d.payload.hex() for d in iter_udp(pcap)] == [expected[m["frame"]] for m in printed]


def test_encode_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (message,) = [m for m in decode_json(capsys, "shared-v1") if m["frame"] == 2]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(message, indent=2)))
    status, out, _ = run(capsys, "sync", "encode", "--in", "-")
    assert (status, out) == (0, vector_messages("shared-v1")[1]["payload_hex"] + "\n")


CONN = {"protocol": 6, "caddr": "10.0.0.2", "cport": 40001, "vaddr": "10.0.0.100", "vport": 80,
        "daddr": "192.168.2.12", "dport": 8000, "state": 1, "timeout": 900}  # fmt: skip


def encode_object(capsys: pytest.CaptureFixture[str], tmp_path: Path, document: Any, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return run(capsys, "sync", "encode", "--in", str(path), *extra)


def test_encode_object_packs_like_core(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sip = {**CONN, "protocol": "UDP", "cport": 0, "vport": 5060, "dport": 5060, "flags": 0x1100, "state": 0,
           "timeout": 60, "options": [{"type": 2, "text": "alpha-1@client"}, {"type": 3, "data_hex": "736970"}]}  # fmt: skip
    conns = [CONN, sip] * 10
    document = {"version": 1, "syncid": 7, "conns": conns}
    status, out, _ = encode_object(capsys, tmp_path, document, "--max-len", "200")
    core_conns = [
        _core.Conn(6, "10.0.0.2", 40001, "10.0.0.100", 80, "192.168.2.12", 8000, state=1, timeout=900),
        _core.Conn(17, "10.0.0.2", 0, "10.0.0.100", 5060, "192.168.2.12", 5060, flags=0x1100, timeout=60,
                   options=[(2, b"alpha-1@client"), (3, b"sip")]),  # fmt: skip
    ] * 10
    expected = _core.encode(core_conns, 1, 7, 200)
    assert status == 0
    assert len(expected) > 1
    assert out.split() == [d.hex() for d in expected]

    # Command-line --version and --syncid override the document's; the defaults are 1 and 0.
    document = {"version": 1, "syncid": 7, "conns": [CONN] * 3}
    status, out, _ = encode_object(capsys, tmp_path, document, "--version", "0", "--syncid", "9")
    assert (status, out.split()) == (0, [d.hex() for d in _core.encode(core_conns[:1] * 3, 0, 9)])
    status, out, _ = encode_object(capsys, tmp_path, {"conns": [CONN]})
    assert (status, out.split()) == (0, [d.hex() for d in _core.encode(core_conns[:1], 1, 0)])


def test_encode_v0_sequence_block(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    seq = {**CONN, "flags": 0x0400, "options": [{"type": "v0_seq", "data_hex": "e8030000" + "05000000" + "00" * 16}]}
    status, out, _ = encode_object(capsys, tmp_path, {"version": 0, "syncid": 7, "conns": [seq]})
    assert status == 0
    (datagram,) = out.split()
    assert datagram.endswith("0400" + "0001" + "e8030000" + "05000000" + "00" * 16)
    message = _core.decode(bytes.fromhex(datagram))
    assert message.conns[0].options == [(1, bytes.fromhex("000003e8" + "00000005" + "00" * 16))]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"conns": [', "line 1: invalid JSON"),
        ('{"frame": 1, "header": {"format": "v1", "syncid": 7}, "conns": []}\n{"frame": 2,', "line 2: invalid JSON"),
        ({"conns": [CONN, {**CONN, "caddr": "10.0.0.300"}]}, "entry 1: caddr: '10.0.0.300' is not an IPv4 or IPv6"),
        ({"conns": [{**CONN, "cport": 70000}]}, "entry 0: cport: expected an integer in 0..65535"),
        ({"conns": [{k: v for k, v in CONN.items() if k != "daddr"}]}, "entry 0: missing field 'daddr'"),
        ({"conns": [{**CONN, "options": [{"type": 2}]}]}, "entry 0: options[0]: needs data_hex or text"),
        ({"conns": [{**CONN, "options": [{"type": 2, "data_hex": "xy"}]}]}, "entry 0: options[0]: non-hexadecimal"),
        (
            {"version": 0, "conns": [CONN, {**CONN, "caddr": "fd00::2", "vaddr": "fd00::100", "daddr": "fd00::1"}]},
            "entry 1: ",
        ),
        ({"version": 2, "conns": [CONN]}, "version: expected an integer in 0..1"),
        ({"conns": "none"}, "conns: expected a list"),
        ([CONN], "line 1: expected a JSON object"),
        ('{"frame": 1, "header": null, "conns": []}\n{}', "line 1: the message has no v0/v1 header"),
        ('{"frame": 1, "header": {"format": "v1", "syncid": 7}, "conns": []}\n[]', "line 2: expected a message object"),
        ('{"frame": 1, "header": {"format": "v1", "syncid": 7}, "conns": []}\n{"frame": 2, "header": '
         '{"format": "v1", "syncid": 7}, "conns": [{"protocol": 6}]}', "line 2, entry 0: missing field 'caddr'"),  # fmt: skip
    ],
)
def test_encode_bad_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, document: Any, message: str) -> None:
    status, out, err = encode_object(capsys, tmp_path, document)
    assert (status, out) == (2, "")
    assert err.startswith("understudy: error: ") and message in err, err
    assert err.count("\n") == 1


def test_encode_ipv6_in_v0_names_the_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    v6 = {**CONN, "caddr": "fd00::2", "vaddr": "fd00::100", "daddr": "fd00::1"}
    status, _, err = encode_object(capsys, tmp_path, {"version": 0, "conns": [CONN, CONN, v6]})
    assert status == 2
    assert "entry 2: " in err and "IPv6" in err


def test_encode_pcap_needs_out(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = encode_object(capsys, tmp_path, {"conns": [CONN]}, "--pcap")
    assert status == 2 and "--pcap needs --out" in err
    status, _, err = run(capsys, "sync", "encode", "--in", str(tmp_path / "missing.json"))
    assert status == 2 and "cannot read" in err
