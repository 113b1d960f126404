"""Understudy and the kernel's own sync daemons, in a real kernel: listening
to a kernel master, feeding a kernel backup, and relaying one to the other.

    client c --> director lb1 (IPVS, kernel master daemon on sync0) --> real server rs
                      | sync0 (multicast 224.0.0.81:8848)
                 lb2: Understudy listens, keeps the table, and feeds
                      | feed0 (multicast)
                 lb3: kernel backup daemon
"""

import re
import select
import time

import pytest

from topology import Client, echo_server, kernel_conns
from understudy.sync import ConnTable, SyncReceiver, SyncSender

pytestmark = pytest.mark.uml

CONNECTIONS = 20


def our_conns(table):
    return {(c.cport, c.daddr, c.dport, "ESTABLISHED" if c.state == 1 else str(c.state))
            for c in table if c.protocol == 6 and not c.template}


@pytest.fixture
def directors(netns):
    c, lb1, lb2, lb3, rs = (netns(n) for n in ("c", "lb1", "lb2", "lb3", "rs"))
    netns.veth(c, lb1, "10.0.0.2/24", ["10.0.0.1/24", "10.0.0.100/32"])
    netns.veth(rs, lb1, "192.168.1.11/24", "192.168.1.1/24")
    netns.veth(lb1, lb2, "10.255.0.1/24", "10.255.0.2/24", name_a="sync0", name_b="sync0")
    netns.veth(lb2, lb3, "10.255.1.2/24", "10.255.1.3/24", name_a="feed0", name_b="feed0")
    rs.run("ip", "route", "add", "default", "via", "192.168.1.1")
    c.run("ip", "route", "add", "default", "via", "10.0.0.1")
    lb1.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    for ns in (lb1, lb3):  # the same virtual service on both kernels
        ns.run("ipvsadm", "-A", "-t", "10.0.0.100:80", "-s", "rr")
        ns.run("ipvsadm", "-a", "-t", "10.0.0.100:80", "-r", "192.168.1.11:8000", "-m")
    lb3.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "feed0", "--syncid", "7")
    echo_server(rs)
    return c, lb1, lb2, lb3


def drain_until(receiver, table, done, seconds=15.0):
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        select.select([receiver.fileno()], [], [], 0.5)
        receiver.drain(table)
    return done()


def test_listen_to_a_kernel_master_then_feed_a_kernel_backup(directors):
    c, lb1, lb2, lb3 = directors
    with lb2.entered():
        receiver = SyncReceiver(group="224.0.0.81", interface="sync0")
        sender = SyncSender(interface="feed0", group="224.0.0.81")
    table = ConnTable(syncid=7)
    lb1.run("ipvsadm", "--start-daemon", "master", "--mcast-interface", "sync0", "--syncid", "7")
    client = Client(c)
    try:
        assert client.open(CONNECTIONS) == CONNECTIONS
        check_relay(lb1, lb3, receiver, sender, table)
    finally:
        client.kill()


def check_relay(lb1, lb3, receiver, sender, table):
    # 1. Listen: every connection the kernel master has, we hold, bound alike.
    master = kernel_conns(lb1)
    assert len(master) == CONNECTIONS and {r[3] for r in master} == {"ESTABLISHED"}
    assert drain_until(receiver, table, lambda: master <= our_conns(table)), (master - our_conns(table))
    totals, peers = receiver.stats()
    assert totals["datagrams"] >= 1 and totals["truncated"] == 0 and set(peers) == {"10.255.0.1"}
    assert table.stats()["applied"] >= CONNECTIONS

    # 2. Feed: our table, as sync messages, makes the kernel backup create them.
    assert sender.send_table(table, syncid=7) >= 1
    deadline = time.monotonic() + 10
    while kernel_conns(lb3) != master and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernel_conns(lb3) == master
    listed = lb3.run("ipvsadm", "-Lnc").stdout
    assert len(re.findall(r"TCP\s+\d+:\d+\s+ESTABLISHED\s+10\.0\.0\.2:\d+\s+10\.0\.0\.100:80\s+192\.168\.1\.11:8000",
                          listed)) == CONNECTIONS
