"""Seeding the table from the kernel's /proc/net/ip_vs_conn: parsing real Linux 6.1
output, deriving what /proc does not show, and applying it (host tests).

The /proc excerpts are literal copies of a real kernel's files (the shared
vector set, scenario "shared", sync_version 1: director lb1 and its backup lb2).
"""

import json
from pathlib import Path

import pytest

from understudy.ipvs.model import AF_INET, AF_INET6, F_PERSISTENT, Destination, Service
from understudy.sync import ConnTable, decode_many, encode
from understudy.sync.seed import (
    Malformed,
    ProcConn,
    build_conns,
    full_timeout,
    parse_proc_ip_vs_conn,
    read_proc_ip_vs_conn,
    seed_table,
)

VECTORS = Path(__file__).parent / "data" / "ipvs-sync"

# lb1 (master) /proc/net/ip_vs_conn, verbatim.
MASTER_PROC = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000002 0000 0A000064 01BB C0A8020C 01BB ASSURED         113
TCP fd00:0000:0000:0000:0000:0000:0000:0002 9C69 fd00:0000:0000:0000:0000:0000:0000:0100 0050 fd00:0001:0000:0000:0000:0000:0000:0011 1F40 TIME_WAIT       114
UDP 0A000002 0000 0A000064 13C4 C0A8020C 13C4 ASSURED          54 sip alpha-1@client
IP  0A000002 0000 00000001 0000 C0A8020C 0000 ASSURED         293
TCP 0A000002 9C55 0A000064 01BB C0A8020C 01BB TIME_WAIT       113
TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED     890
UDP 0A000002 9C4A 0A000064 0035 C0A8020C 14E9 UDP             290
UDP 0A000002 9C72 0A000064 13C4 C0A8020C 13C4 UDP             294
TCP 0A000002 9C42 0A000064 0050 C0A8010B 1F40 TIME_WAIT       106
TCP fd00:0000:0000:0000:0000:0000:0000:0002 9C68 fd00:0000:0000:0000:0000:0000:0000:0100 0050 fd00:0001:0000:0000:0000:0000:0000:0011 1F40 ESTABLISHED     893
UDP 0A000002 0000 0A000064 13C4 C0A8010B 13C4 ASSURED          54 sip beta-22@client
UDP 0A000002 9C4B 0A000064 0035 C0A8010B 14E9 UDP             290
TCP 0A000002 9C5E 0A000064 1F90 C0A8020C 1F90 ESTABLISHED     893
UDP 0A000002 9C4C 0A000064 0035 C0A8020C 14E9 UDP             293
TCP 0A000002 9C43 0A000064 0050 C0A8020C 1F40 TIME_WAIT       106
TCP 0A000002 9C54 0A000064 01BB C0A8020C 01BB ESTABLISHED     893
TCP 0A000002 9C41 0A000064 0050 C0A8020C 1F40 ESTABLISHED     886
UDP 0A000002 9C73 0A000064 13C4 C0A8010B 13C4 UDP             294
TCP 0A000002 9C5F 0A000064 1F90 C0A8020C 1F90 ESTABLISHED     893
"""

# lb1 /proc/net/ip_vs_conn_sync, first rows (Origin, no PE columns).
MASTER_PROC_SYNC = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires
TCP 0A000002 0000 0A000064 01BB C0A8020C 01BB ASSURED     LOCAL      113
TCP fd00:0000:0000:0000:0000:0000:0000:0002 9C69 fd00:0000:0000:0000:0000:0000:0000:0100 0050 fd00:0001:0000:0000:0000:0000:0000:0011 1F40 TIME_WAIT   LOCAL      114
UDP 0A000002 0000 0A000064 13C4 C0A8020C 13C4 ASSURED     LOCAL       54
"""

# lb2 (backup) rows: a connection synced in CLOSE, at its end; a synced conn's Origin.
BACKUP_PROC = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000002 9C44 0A000064 0050 C0A8010B 1F40 CLOSE             0
UDP 0A000002 0000 0A000064 13C4 C0A8010B 13C4 ASSURED          56 sip beta-22@client
"""
BACKUP_PROC_SYNC_ROW = "TCP 0A000002 9C44 0A000064 0050 C0A8010B 1F40 CLOSE       SYNC         0\n"


def dest(address, port, forward="masq"):
    return Destination(address, port, forward)


def service(protocol, address, port, dests, *, af=AF_INET, timeout=0, pe_name=None):
    return Service(af=af, protocol=protocol, address=address, port=port, fwmark=0,
                   flags=F_PERSISTENT if timeout else 0, timeout=timeout, pe_name=pe_name, destinations=tuple(dests))


# lb1's `ipvsadm -Ln` of the same capture.
MASTER_SERVICES = [
    service("tcp", "10.0.0.100", 80, [dest("192.168.1.11", 8000), dest("192.168.2.12", 8000)]),
    service("tcp", "10.0.0.100", 443, [dest("192.168.1.11", 443, "route"), dest("192.168.2.12", 443, "route")],
            timeout=120),
    service("udp", "10.0.0.100", 53, [dest("192.168.1.11", 5353), dest("192.168.2.12", 5353)]),
    service("udp", "10.0.0.100", 5060, [dest("192.168.1.11", 5060), dest("192.168.2.12", 5060)], timeout=60,
            pe_name="sip"),
    service("tcp", "fd00::100", 80, [dest("fd00:1::11", 8000)], af=AF_INET6),
    Service(af=AF_INET, protocol=None, address=None, port=None, fwmark=1, scheduler="wlc", flags=F_PERSISTENT,
            timeout=300, destinations=(dest("192.168.2.12", 8080),)),
]


def by_port(rows):
    return {(r.protocol, r.cport, r.vport, r.daddr, r.pe_data): r for r in rows}


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_real_kernel_rows():
    rows = parse_proc_ip_vs_conn(MASTER_PROC)
    assert len(rows) == 19 and rows.malformed == []
    assert sum(r.template for r in rows) == 4 and all(r.origin is None for r in rows)
    assert rows[5] == ProcConn(protocol=6, caddr="10.0.0.2", cport=40005, vaddr="10.0.0.100", vport=80,
                               daddr="192.168.2.12", dport=8000, state_name="ESTABLISHED", state=1, template=False,
                               expires=890, lineno=7)
    udp = rows[6]
    assert (udp.protocol, udp.cport, udp.vport, udp.dport, udp.state_name, udp.state, udp.template) == (
        17, 40010, 53, 5353, "UDP", 0, False)


def test_parse_ipv6_rows():
    v6 = [r for r in parse_proc_ip_vs_conn(MASTER_PROC) if r.af == AF_INET6]
    assert [(r.caddr, r.cport, r.vaddr, r.vport, r.daddr, r.dport, r.state_name, r.state, r.expires) for r in v6] == [
        ("fd00::2", 40041, "fd00::100", 80, "fd00:1::11", 8000, "TIME_WAIT", 5, 114),
        ("fd00::2", 40040, "fd00::100", 80, "fd00:1::11", 8000, "ESTABLISHED", 1, 893),
    ]
    assert not any(r.mixed_family for r in v6)


def test_parse_templates_and_pe_data():
    rows = parse_proc_ip_vs_conn(MASTER_PROC)
    templates = [r for r in rows if r.template]
    assert [(r.protocol, r.vaddr, r.vport, r.daddr, r.dport, r.state_name, r.state, r.fwmark, r.pe_name, r.pe_data,
             r.expires) for r in templates] == [
        (6, "10.0.0.100", 443, "192.168.2.12", 443, "ASSURED", 1, 0, None, None, 113),       # persistent DR
        (17, "10.0.0.100", 5060, "192.168.2.12", 5060, "ASSURED", 1, 0, "sip", b"alpha-1@client", 54),
        (0, "0.0.0.1", 0, "192.168.2.12", 0, "ASSURED", 1, 1, None, None, 293),              # fwmark 1
        (17, "10.0.0.100", 5060, "192.168.1.11", 5060, "ASSURED", 1, 0, "sip", b"beta-22@client", 54),
    ]
    assert all(r.cport == 0 and r.caddr == "10.0.0.2" for r in templates)


def test_parse_ip_vs_conn_sync_format():
    rows = parse_proc_ip_vs_conn(MASTER_PROC_SYNC + BACKUP_PROC_SYNC_ROW)
    assert rows.malformed == []
    assert [(r.protocol, r.cport, r.state_name, r.template, r.origin, r.expires, r.pe_name) for r in rows] == [
        (6, 0, "ASSURED", True, "LOCAL", 113, None),
        (6, 40041, "TIME_WAIT", False, "LOCAL", 114, None),
        (17, 0, "ASSURED", True, "LOCAL", 54, None),  # the SIP template: this file has no PE data
        (6, 40004, "CLOSE", False, "SYNC", 0, None),
    ]


def test_parse_backup_rows_and_bytes_input():
    rows = parse_proc_ip_vs_conn(BACKUP_PROC.encode())
    assert [(r.cport, r.state_name, r.state, r.expires, r.pe_data) for r in rows] == [
        (40004, "CLOSE", 6, 0, None), (0, "ASSURED", 1, 56, b"beta-22@client")]
    # PE data is bytes in the kernel; non-UTF-8 ones survive, and so do inner spaces.
    raw = b"UDP 0A000002 0000 0A000064 13C4 C0A8010B 13C4 ASSURED          56 sip a\xff b@c\n"
    (row,) = parse_proc_ip_vs_conn(raw)
    assert (row.pe_name, row.pe_data, row.template) == ("sip", b"a\xff b@c", True)


def test_other_protocols_and_states():
    rows = parse_proc_ip_vs_conn(
        "SCTP 0A000002 9C40 0A000064 0B59 C0A8010B 0B59 ESTABLISHED     900\n"
        "SCTP 0A000002 9C41 0A000064 0B59 C0A8010B 0B59 C-ECHOED         61\n"
        "IP_50 0A000002 0000 0A000064 0000 C0A8010B 0000 ERR!           180\n"
        "TCP 0A000002 0000 0A000064 0050 C0A8010B 1F40 NONE             10\n"   # an unassured template
        "TCP 0A000002 9C42 0A000064 0050 C0A8010B 1F40 BOGUS            10\n"   # state unknown: kept, state None
        "IP  fd00:0000:0000:0000:0000:0000:0000:0002 0000 0000:0007:0000:0000:0000:0000:0000:0000 0000 "
        "fd00:0001:0000:0000:0000:0000:0000:0011 0000 NONE           300\n"
    )
    assert rows.malformed == []
    assert [(r.protocol, r.state, r.template, r.fwmark) for r in rows] == [
        (132, 8, False, 0), (132, 7, False, 0), (50, 0, False, 0), (6, 0, True, 0), (6, None, False, 0),
        (0, 0, True, 7)]  # an IPv6 fwmark template: the mark fills the first 32 bits


MALFORMED = [
    ("TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40", "7 fields"),
    ("XYZ 0A000002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED 890", "unknown protocol"),
    ("TCP 0A0000ZZ 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED 890", "FromIP"),
    ("TCP 0x0A0002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED 890", "FromIP"),
    ("TCP 0A000002 9C45 0A000064 10050 C0A8020C 1F40 ESTABLISHED 890", "TPrt"),
    ("TCP 0A000002 9C45 0A000064 0050 C0A8020C +1F4 ESTABLISHED 890", "DPrt"),
    ("TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED -1", "Expires"),
    ("TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED soon", "Expires"),
    ("TCP fd00::2 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED 890", "different address families"),
    ("TCP fd00:::2 9C45 fd00::100 0050 C0A8020C 1F40 ESTABLISHED 890", "IPv6"),
    ("TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED LOCAL 890 x", "ip_vs_conn_sync"),
    ("TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40 ESTABLISHED SYNC", "ip_vs_conn_sync"),
]


def test_malformed_lines_are_counted_not_raised():
    lines = MASTER_PROC.splitlines()
    text = "\n".join(lines[:3] + [bad for bad, _ in MALFORMED] + lines[3:] + ["", "   "])
    rows = parse_proc_ip_vs_conn(text)
    assert len(rows) == 19
    assert [m.line for m in rows.malformed] == [bad for bad, _ in MALFORMED]
    for m, (_, reason) in zip(rows.malformed, MALFORMED):
        assert isinstance(m, Malformed) and reason in m.reason, m
    assert [m.lineno for m in rows.malformed] == list(range(4, 4 + len(MALFORMED)))


def test_header_is_optional_and_read_path_missing():
    assert len(parse_proc_ip_vs_conn(MASTER_PROC.split("\n", 1)[1])) == 19
    assert parse_proc_ip_vs_conn("") == []
    with pytest.raises(FileNotFoundError, match="ip_vs"):
        read_proc_ip_vs_conn(["/nonexistent/ip_vs_conn"])


# --- building what a kernel master sends -----------------------------------------------------------


def wire_final_entries():
    """The last entry the real master sent for each connection (shared-v1 capture)."""
    last = {}
    for msg in json.loads((VECTORS / "shared-v1.json").read_text())["messages"]:
        for c in msg["conns"]:
            pe = next((bytes.fromhex(o["data_hex"]) for o in c["options"] if o["type"] == 2), None)
            last[(c["protocol"], c["cport"], c["vport"], c["daddr"], pe)] = c
    return last


def test_built_conns_are_what_the_kernel_master_sent():
    """Flags (forwarding method, TEMPLATE, INACTIVE, NOOUTPUT), fwmark, PE options and,
    with lifetime="full", the timeout: equal to the master's own last sync message
    for every connection still in the state it was last synced in."""
    rows = parse_proc_ip_vs_conn(MASTER_PROC)
    built = build_conns(rows, MASTER_SERVICES, lifetime="full")
    assert (len(built.conns), built.templates, built.skipped, built.unbound, built.ambiguous) == (19, 4, {}, 0, 0)
    wire = wire_final_entries()
    compared = 0
    for row, conn in zip(rows, built.conns):
        sent = wire.get((row.protocol, row.cport, row.vport, row.daddr, row.pe_data))
        if sent is None or sent["state"] != row.state:
            continue  # never synced (UDP 40011: below the sync threshold)
        compared += 1
        options = [(o["type"], bytes.fromhex(o["data_hex"])) for o in sent["options"]]
        assert (conn.flags, conn.fwmark, conn.state, conn.timeout, conn.options) == (
            sent["flags"], sent["fwmark"], sent["state"], sent["timeout"], options), (row, sent)
        assert (conn.caddr, conn.vaddr, conn.daddr, conn.dport) == (sent["caddr"], sent["vaddr"], sent["daddr"],
                                                                    sent["dport"])
    assert compared == 18
    flags = {(c.cport, c.vport, c.daddr): c.flags for c in built.conns}
    assert flags[(0, 443, "192.168.2.12")] == 0x1183    # DR template: NOOUTPUT, INACTIVE, TEMPLATE
    assert flags[(40020, 443, "192.168.2.12")] == 0x0003  # DR, established
    assert flags[(40011, 53, "192.168.1.11")] == 0x0100  # UDP: always inactive


def test_fwmark_connections_get_their_mark():
    rows = parse_proc_ip_vs_conn(MASTER_PROC)
    conns = {c.cport: c for c in build_conns(rows, MASTER_SERVICES).conns if c.vport == 8080}
    assert {p: (c.fwmark, c.flags) for p, c in conns.items()} == {40030: (1, 0), 40031: (1, 0)}
    # Two fwmark services holding the same real server: the client's fwmark template decides.
    other = Service(af=AF_INET, protocol=None, address=None, port=None, fwmark=9, destinations=(
        dest("192.168.2.12", 8080, "route"),))
    built = build_conns(rows, [other, *MASTER_SERVICES])
    assert {c.fwmark for c in built.conns if c.vport == 8080} == {1} and built.ambiguous == 0
    # Without a template, the first is taken and the choice counted.
    built = build_conns([r for r in rows if r.protocol != 0], [other, *MASTER_SERVICES])
    assert {c.fwmark for c in built.conns if c.vport == 8080} == {9} and built.ambiguous == 2


def test_unbound_and_skipped_rows():
    rows = parse_proc_ip_vs_conn(
        MASTER_PROC + "TCP 0A000002 9C46 0A000064 0050 fd00:0001:0000:0000:0000:0000:0000:0011 1F40 ESTABLISHED 900\n"
        "TCP 0A000002 9C47 0A000064 0050 C0A8010B 1F40 BOGUS 900\n")
    built = build_conns(rows, [])
    assert built.skipped == {"mixed_family": 1, "unknown_state": 1}
    assert built.unbound == 19 and len(built.conns) == 19
    assert {c.flags & 7 for c in built.conns} == {0}  # no real server known: NAT
    assert {c.flags for c in built.conns if c.template} == {0x1100}


def test_full_timeouts_follow_the_kernel_settings():
    rows = {r.state_name: r for r in parse_proc_ip_vs_conn(MASTER_PROC) if not r.template}
    settings = {"tcp": 600, "tcp_fin": 100, "udp": 200}
    assert full_timeout(rows["ESTABLISHED"]) == 900 and full_timeout(rows["ESTABLISHED"], None, settings) == 600
    assert full_timeout(rows["TIME_WAIT"], None, settings) == 120
    assert full_timeout(rows["UDP"], None, settings) == 200
    (fin,) = parse_proc_ip_vs_conn("TCP 0A000002 9C45 0A000064 0050 C0A8020C 1F40 FIN_WAIT 100\n")
    assert full_timeout(fin, None, settings) == 100
    (tpl,) = [r for r in parse_proc_ip_vs_conn(MASTER_PROC) if r.protocol == 0]
    assert full_timeout(tpl, MASTER_SERVICES[-1]) == 300 and full_timeout(tpl) == 180


# --- seeding a table -------------------------------------------------------------------------------


def test_seed_table_keeps_the_kernels_expiry():
    table = ConnTable()
    report = seed_table(table, proc_text=MASTER_PROC, ipvs=MASTER_SERVICES, now=1000.0)
    assert (report.rows, report.malformed, report.conns, report.templates, report.seeded) == (19, 0, 19, 4, 19)
    assert (report.skipped, report.unbound, report.ambiguous, report.lifetime) == ({}, 0, 0, "remaining")
    assert report.datagrams == 1 and len(table) == 19
    rows = by_port(parse_proc_ip_vs_conn(MASTER_PROC))
    for c in table:
        pe = dict(c.options).get(2)
        row = rows[(c.protocol, c.cport, c.vport, c.daddr, pe)]
        # Expires is rounded down: the table expires at most 1 s after the kernel.
        assert c.expires == 1000 + row.expires + 1 and c.timeout == row.expires + 1
        assert (c.state, c.dport, c.template) == (row.state, row.dport, row.template)
    # Stored as a backup stores them: SYNC set, forwarding method kept.
    tpl = table.get(6, "10.0.0.2", 0, "10.0.0.100", 443, template=True)
    assert tpl is not None and tpl.flags == 0x1183 | 0x20
    v6 = table.get(6, "fd00::2", 40040, "fd00::100", 80)
    assert v6 is not None and (v6.daddr, v6.dport, v6.flags, v6.expires) == ("fd00:1::11", 8000, 0x20, 1894)
    assert table.expire(now=1000 + 55) == 2  # the SIP templates (54 s left) go first, as in the kernel
    assert len(table) == 17


def test_seeded_table_resyncs_with_the_time_left():
    table = ConnTable()
    seed_table(table, proc_text=MASTER_PROC, ipvs=MASTER_SERVICES, now=50.0)
    entries = [c for m in decode_many(table.encode(syncid=7)) for c in m.conns]
    assert len(entries) == 19 and {c.verdict for c in entries} == {"apply"}
    rows = by_port(parse_proc_ip_vs_conn(MASTER_PROC))
    for c in entries:
        row = rows[(c.protocol, c.cport, c.vport, c.daddr, dict(c.options).get(2))]
        assert c.timeout == row.expires + 1
    # Another table fed with that resync holds the same connections.
    backup = ConnTable(syncid=7)
    assert backup.apply(table.encode(syncid=7), now=50.0) == 19
    key = lambda c: (c.protocol, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport, c.state, c.flags, c.fwmark,
                     c.expires, tuple(c.options))  # noqa: E731
    assert sorted(map(key, backup)) == sorted(map(key, table))


def test_seed_full_lifetime_and_batches():
    table = ConnTable()
    report = seed_table(table, proc_text=MASTER_PROC, ipvs=MASTER_SERVICES, now=10.0, lifetime="full",
                        timeouts={"tcp": 600}, batch=4, max_len=200)
    assert report.seeded == 19 and report.datagrams >= 5
    est = table.get(6, "10.0.0.2", 40005, "10.0.0.100", 80)
    assert est is not None and (est.timeout, est.expires) == (600, 610)
    sip = [c for c in table if c.template and c.protocol == 17]
    assert {c.timeout for c in sip} == {60}
    with pytest.raises(ValueError, match="lifetime"):
        seed_table(ConnTable(), proc_text=MASTER_PROC, ipvs=[], lifetime="forever")  # type: ignore[arg-type]


def test_seed_into_a_table_that_filters_syncid():
    table = ConnTable(syncid=7)
    with pytest.raises(ValueError, match="syncid"):
        seed_table(table, proc_text=MASTER_PROC, ipvs=MASTER_SERVICES, now=1.0)
    assert len(table) == 0
    assert seed_table(table, proc_text=MASTER_PROC, ipvs=MASTER_SERVICES, now=1.0, syncid=7).seeded == 19


def test_seed_reports_what_it_could_not_use():
    text = MASTER_PROC + "garbage line\nTCP 0A000002 9C47 0A000064 0050 C0A8010B 1F40 BOGUS 900\n"
    table = ConnTable(pe_names=[])  # no SIP engine here: the table skips the SIP templates
    report = seed_table(table, proc_text=text, ipvs=MASTER_SERVICES, now=1.0)
    assert (report.rows, report.malformed, report.skipped) == (20, 1, {"unknown_state": 1})
    assert (report.conns, report.seeded) == (19, 17)
    assert report.malformed_lines[0].line == "garbage line"
    assert table.stats()["skipped_unknown_pe"] == 2


def test_seeded_conns_encode_as_the_kernel_would():
    """The built entries are valid v1 entries a 6.1 backup applies as they are."""
    built = build_conns(parse_proc_ip_vs_conn(MASTER_PROC), MASTER_SERVICES)
    entries = [c for m in decode_many(encode(built.conns, 1, 7)) for c in m.conns]
    assert [c.verdict for c in entries] == ["apply"] * 19
    assert {c.backup_flags for c in entries} == {0x20, 0x120, 0x23, 0x123, 0x1120, 0x11A3}
