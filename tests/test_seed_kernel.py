"""Seeding in a real kernel: a primary that starts after connections exist reads
them from its director's /proc, and a resync from the seeded table recreates
them on a kernel backup.

    client c --> director lb1 (IPVS NAT: :80 plain, :81 persistent; no sync daemon) --> real server rs
                      | sync0: Understudy (in lb1) sends the seeded table (multicast 224.0.0.81:8848)
                 lb2: kernel backup daemon, same services
"""

import json
import re
import subprocess
import sys
import time

import pytest

from understudy.ipvs import Ipvs
from understudy.sync import ConnTable, SyncSender
from understudy.sync.seed import seed_table

pytestmark = pytest.mark.uml

OPEN, CLOSED, PERSISTENT = 7, 3, 2  # connections to :80 left open, closed (TIME_WAIT); to :81

ECHO_SERVER = """
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8000)); srv.listen(128)
print("ready", flush=True)
def serve(c):
    while (data := c.recv(1024)) and data != b"bye":
        c.sendall(data)
    c.close()  # the server closes first: the director sees FIN_WAIT, then TIME_WAIT
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = f"""
import json, socket, sys
def connect(port):
    c = socket.create_connection(("10.0.0.100", port), timeout=5)
    for _ in range(3):
        c.sendall(b"ping"); assert c.recv(10) == b"ping"
    return c
conns = [connect(80) for _ in range({OPEN + CLOSED})]
persistent = [connect(81) for _ in range({PERSISTENT})]
for c in conns[{OPEN}:]:
    c.sendall(b"bye"); assert c.recv(10) == b""; c.close()
port = lambda c: c.getsockname()[1]
print(json.dumps({{"open": [port(c) for c in conns[:{OPEN}]], "persistent": [port(c) for c in persistent]}}),
      flush=True)
sys.stdin.read()
"""

STATES = {"ESTABLISHED": 1, "FIN_WAIT": 4, "TIME_WAIT": 5, "CLOSE_WAIT": 7, "LAST_ACK": 8, "ASSURED": 1}


def ipv4(hex8):
    return ".".join(str(int(hex8[i:i + 2], 16)) for i in range(0, 8, 2))


def kernel_rows(text):
    """{(protocol, caddr, cport, vaddr, vport): (daddr, dport, state name, expires)}, parsed on its own
    (not with the code under test); IPv4 TCP rows only, as this topology makes."""
    rows = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        assert f[0] == "TCP", line
        rows[(6, ipv4(f[1]), int(f[2], 16), ipv4(f[3]), int(f[4], 16))] = (ipv4(f[5]), int(f[6], 16), f[7], int(f[8]))
    return rows


def proc(ns):
    return ns.run("cat", "/proc/net/ip_vs_conn").stdout


def counters(ns):
    """(service, real server) -> (active, inactive, persistent) connections, as the kernel counts them."""
    with ns.entered():
        services = Ipvs().dump(stats=False)
    return {(str(s), d.endpoint): (d.active_conns, d.inactive_conns, d.persist_conns)
            for s in services for d in s.destinations}


@pytest.fixture
def directors(netns):
    c, lb1, lb2, rs = (netns(n) for n in ("c", "lb1", "lb2", "rs"))
    netns.veth(c, lb1, "10.0.0.2/24", ["10.0.0.1/24", "10.0.0.100/32"])
    netns.veth(rs, lb1, "192.168.1.11/24", "192.168.1.1/24")
    netns.veth(lb1, lb2, "10.255.0.1/24", "10.255.0.2/24", name_a="sync0", name_b="sync0")
    rs.run("ip", "route", "add", "default", "via", "192.168.1.1")
    c.run("ip", "route", "add", "default", "via", "10.0.0.1")
    lb1.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    for ns in (lb1, lb2):  # the same virtual services on both kernels
        ns.run("ipvsadm", "-A", "-t", "10.0.0.100:80", "-s", "rr")
        ns.run("ipvsadm", "-a", "-t", "10.0.0.100:80", "-r", "192.168.1.11:8000", "-m")
        ns.run("ipvsadm", "-A", "-t", "10.0.0.100:81", "-s", "rr", "-p", "120")
        ns.run("ipvsadm", "-a", "-t", "10.0.0.100:81", "-r", "192.168.1.11:8000", "-m")
    lb1.run("ipvsadm", "--set", "600", "100", "200")  # tcp, tcpfin, udp: not the defaults
    lb2.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "sync0", "--syncid", "7")
    server = rs.popen(sys.executable, "-c", ECHO_SERVER)
    assert server.stdout.readline().strip() == "ready"
    return c, lb1, lb2


def wait_for(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not (ok := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return ok


def test_seed_from_the_kernel_then_resync_a_kernel_backup(directors):
    c, lb1, lb2 = directors
    client = subprocess.Popen(c.argv(sys.executable, "-c", CLIENT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        ports = json.loads(client.stdout.readline())
        check_seed_and_resync(lb1, lb2, ports)
    finally:
        client.kill()
        client.communicate()


def check_seed_and_resync(lb1, lb2, ports):
    # The connections exist before any Understudy runs; the closed ones settle in TIME_WAIT.
    expected = OPEN + CLOSED + PERSISTENT + 1  # + the persistence template of the :81 client
    assert wait_for(lambda: sorted(r[2] for r in kernel_rows(proc(lb1)).values())
                    == ["ASSURED"] + ["ESTABLISHED"] * (OPEN + PERSISTENT) + ["TIME_WAIT"] * CLOSED), proc(lb1)

    # Raise the ESTABLISHED timeout now: running timers keep their 600 s, so the time left
    # (what the table must keep) and the state's full timeout (900 s) differ by 300 s.
    lb1.run("ipvsadm", "--set", "900", "0", "0")

    # 1. Seed from lb1's /proc and IPVS table, then resync lb2 from the table at once.
    text = proc(lb1)
    table = ConnTable(syncid=7)
    with lb1.entered():
        report = seed_table(table, proc_text=text, ipvs=Ipvs(), syncid=7)
        sender = SyncSender(interface="sync0", group="224.0.0.81")
        assert sender.send_table(table, syncid=7) >= 1
    assert (report.rows, report.malformed, report.conns, report.templates, report.seeded) == (
        expected, 0, expected, 1, expected), report
    assert (report.skipped, report.unbound, report.ambiguous) == ({}, 0, 0), report

    # 2. The table holds every connection as the kernel has it.
    rows = kernel_rows(text)
    assert len(table) == len(rows) == expected
    assert {k[2] for k, r in rows.items() if r[2] == "ESTABLISHED" and k[4] == 80} == set(ports["open"])
    assert {k[2] for k, r in rows.items() if k[4] == 81 and k[2]} == set(ports["persistent"])
    for (protocol, caddr, cport, vaddr, vport), (daddr, dport, state, _) in rows.items():
        conn = table.get(protocol, caddr, cport, vaddr, vport, template=cport == 0)
        assert conn is not None, (cport, vport)
        assert (conn.daddr, conn.dport, conn.state, conn.template) == (daddr, dport, STATES[state], cport == 0)
        assert conn.flags & 7 == 0, hex(conn.flags)  # NAT, from the service's real server
        inactive = cport == 0 or state != "ESTABLISHED"
        assert bool(conn.flags & 0x100) == inactive and bool(conn.flags & 0x1000) == (cport == 0), hex(conn.flags)
    # ... and expires when the kernel will (its Expires, read again now).
    now, later = table.now(), kernel_rows(proc(lb1))
    for key, (_, _, _, expires) in later.items():
        conn = table.get(*key, template=key[2] == 0)
        assert abs((conn.expires - now) - expires) <= 2, (key, conn.expires - now, expires)
    assert {r[3] for r in later.values() if r[2] == "ESTABLISHED"} <= set(range(590, 601))  # --set tcp 600

    # 3. The kernel backup fed with the seeded table holds the same connections, expiring alike.
    def same_on_backup():
        return {k: r[:3] for k, r in kernel_rows(proc(lb2)).items()} == {k: r[:3] for k, r in rows.items()}

    assert wait_for(same_on_backup), proc(lb2)
    primary, backup = kernel_rows(proc(lb1)), kernel_rows(proc(lb2))
    for key, (_, _, _, expires) in primary.items():
        assert abs(backup[key][3] - expires) <= 2, (key, backup[key][3], expires)
    listed = lb2.run("ipvsadm", "-Lnc").stdout
    assert len(re.findall(r"TCP\s+\d+:\d+\s+ESTABLISHED\s+10\.0\.0\.2:\d+\s+10\.0\.0\.100:8[01]\s+192\.168\.1\.11:8000",
                          listed)) == OPEN + PERSISTENT, listed
    assert len(re.findall(r"TCP\s+\d+:\d+\s+TIME_WAIT\s+10\.0\.0\.2:\d+\s+10\.0\.0\.100:80\s+", listed)) == CLOSED
    assert len(re.findall(r"TCP\s+\d+:\d+\s+ASSURED\s+10\.0\.0\.2:0\s+10\.0\.0\.100:81\s+192\.168\.1\.11:8000",
                          listed)) == 1, listed
    # Bound to the backup's real servers with the same active/inactive/persistent counts.
    assert counters(lb2) == counters(lb1) == {
        ("tcp 10.0.0.100:80", "192.168.1.11:8000"): (OPEN, CLOSED, 0),
        ("tcp 10.0.0.100:81", "192.168.1.11:8000"): (PERSISTENT, 0, 1),
    }


def test_seed_reads_this_threads_namespace_with_full_timeouts(directors):
    """No text, no IPVS table given: both come from the namespace the thread is in,
    and lifetime="full" takes the kernel's timeout settings and the persistence timeout."""
    c, lb1, lb2 = directors
    client = subprocess.Popen(c.argv(sys.executable, "-c", CLIENT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        json.loads(client.stdout.readline())
        assert wait_for(lambda: sum(r[2] == "TIME_WAIT" for r in kernel_rows(proc(lb1)).values()) == CLOSED)
        table = ConnTable()
        with lb1.entered():
            report = seed_table(table, lifetime="full")
        assert (report.rows, report.seeded, report.unbound) == (OPEN + CLOSED + PERSISTENT + 1,) * 2 + (0,)
        timeouts = {(c.vport, "template" if c.template else c.state, c.timeout) for c in table}
        assert timeouts == {(80, 1, 600), (80, 5, 120), (81, 1, 600), (81, "template", 120)}
        # The other namespace (lb2) has no connections: nothing leaked across.
        empty = ConnTable()
        with lb2.entered():
            assert seed_table(empty).rows == 0 and len(empty) == 0
    finally:
        client.kill()
        client.communicate()
