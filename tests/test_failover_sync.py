"""Connections survive a director failover (the sync acceptance test), in a
real kernel, with loss injected on the sync link.

    client c -- front switch -- lb1 (VIP, primary) / lb2 (backup)
    NAT: lb1, lb2 -- back switch -- real server rs (its gateway moves with the VIP)
    DR:  the real server on the front switch, VIP on its lo, replying directly
    lb1: kernel master --(local veth)--> Understudy primary relay
    lb1 relay ==(sync0, authenticated, netem loss)==> lb2 relay --(local veth)--> lb2 kernel backup

A dies (relay stopped, links cut); the test moves the VIP and gateway to B
(the failover engine is another issue); the same connections keep working.
"""

import re
import select
import threading
import time

import pytest

from topology import Client, echo_server, kernel_conns, local_pair, switch
from understudy.sync import BackupRelay, ConnTable, PrimaryRelay

pytestmark = pytest.mark.uml

KEY = b"the cluster's replication secret"
SYNCED, LATE = 30, 5


class Pump(threading.Thread):
    """Drives both relays, as the daemon's event loop will."""

    def __init__(self, primary, backup, master_table, backup_table):
        super().__init__(daemon=True)
        self.primary, self.backup = primary, backup
        self.tables = (master_table, backup_table)
        self.primary_alive = True
        self.stop = threading.Event()
        self.error = None

    def run(self):
        fds = [*self.primary.filenos(), self.backup.fileno()]
        last_tick = 0.0
        try:
            while not self.stop.is_set():
                select.select(fds, [], [], 0.02)
                if self.primary_alive:
                    self.primary.pump(self.tables[0])
                self.backup.pump(self.tables[1])
                if time.monotonic() - last_tick > 0.1:
                    self.backup.tick()
                    last_tick = time.monotonic()
        except Exception as e:  # reported by the test
            self.error = e


@pytest.mark.parametrize("method, loss", [("masq", 0), ("masq", 10), ("masq", 30), ("route", 30)])
def test_connections_survive_failover(netns, method, loss):
    c, sw, lb1, lb2, rs = (netns(n) for n in ("c", "sw", "lb1", "lb2", "rs"))
    netns.veth(c, sw, "10.0.0.2/24", name_b="c")
    netns.veth(lb1, sw, "10.0.0.11/24", name_a="front", name_b="lb1f")
    netns.veth(lb2, sw, "10.0.0.12/24", name_a="front", name_b="lb2f")
    netns.veth(lb1, lb2, "10.255.0.1/24", "10.255.0.2/24", name_a="sync0", name_b="sync0")
    lb1.run("ip", "addr", "add", "10.0.0.100/32", "dev", "front")
    if method == "masq":
        # NAT: the real server sits behind the directors; its gateway moves with the VIP.
        netns.veth(rs, sw, "192.168.1.11/24", name_b="rs")
        netns.veth(lb1, sw, "192.168.1.21/24", name_a="back", name_b="lb1b")
        netns.veth(lb2, sw, "192.168.1.22/24", name_a="back", name_b="lb2b")
        switch(sw, "br-front", ["c", "lb1f", "lb2f"])
        switch(sw, "br-back", ["rs", "lb1b", "lb2b"])
        rs.run("ip", "route", "add", "default", "via", "192.168.1.1")
        lb1.run("ip", "addr", "add", "192.168.1.1/24", "dev", "back")
        real, flag = "192.168.1.11:8000", "-m"
    else:
        # Direct routing: the real server shares the client's link, holds the VIP
        # on lo without answering ARP for it, and replies to the client itself.
        netns.veth(rs, sw, "10.0.0.21/24", name_b="rs")
        switch(sw, "br-front", ["c", "lb1f", "lb2f", "rs"])
        rs.run("ip", "addr", "add", "10.0.0.100/32", "dev", "lo")
        rs.run("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
        real, flag = "10.0.0.21:80", "-g"
    for ns in (lb1, lb2):
        ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns.run("ipvsadm", "-A", "-t", "10.0.0.100:80", "-s", "rr")
        ns.run("ipvsadm", "-a", "-t", "10.0.0.100:80", "-r", real, flag)
    local_pair(lb1, "ks0", "us0", "169.254.1.1/30", "169.254.1.2/30")
    local_pair(lb2, "us0", "ks0", "169.254.2.1/30", "169.254.2.2/30")
    if loss:
        for ns in (lb1, lb2):
            ns.run("tc", "qdisc", "add", "dev", "sync0", "root", "netem", "loss", f"{loss}%")
    lb2.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "ks0", "--syncid", "7")

    with lb1.entered():
        primary = PrimaryRelay(node=1, epoch=1, key=KEY, kernel_interface="us0", bind="10.255.0.1",
                               peers=["10.255.0.2"])
    with lb2.entered():
        backup = BackupRelay(node=2, epoch=1, key=KEY, bind="10.255.0.2", primary="10.255.0.1",
                             kernel_interface="us0")
    pump = Pump(primary, backup, ConnTable(syncid=7), ConnTable(syncid=7))
    pump.start()
    # Small messages (3 entries each), so the lossy link carries many frames.
    lb1.run("ipvsadm", "--start-daemon", "master", "--mcast-interface", "ks0", "--syncid", "7",
            "--sync-maxlen", "116")
    echo_server(rs, port=8000 if method == "masq" else 80)
    client = Client(c)
    try:
        assert client.open(SYNCED) == SYNCED
        # Replication catches up through the loss: the backup kernel holds every connection.
        deadline = time.monotonic() + 60
        while (len(kernel_conns(lb2)) < SYNCED or not backup.caught_up()) and time.monotonic() < deadline:
            assert pump.error is None, pump.error
            time.sleep(0.2)
        stats = backup.stats()
        assert backup.caught_up() and len(kernel_conns(lb2)) == SYNCED, (
            f"lb1 kernel {len(kernel_conns(lb1))}, primary table {len(pump.tables[0])}, backup table "
            f"{len(pump.tables[1])}, lb2 kernel {len(kernel_conns(lb2))}", stats, primary.stats())
        if loss:  # the link really lost frames, and replication made up for them
            dropped = sum(int(w) for ns in (lb1, lb2) for w in
                          re.findall(r"dropped (\d+)", ns.run("tc", "-s", "qdisc", "show", "dev",
                                                                               "sync0").stdout))
            assert dropped > 0, "netem dropped nothing"

        # A few connections opened after A's relay stopped are never synced: the control group.
        pump.primary_alive = False
        assert client.open(LATE) == SYNCED + LATE

        # A dies: links cut. B takes the VIP (and, for NAT, the real server's gateway).
        for dev in ("front", "back", "sync0") if method == "masq" else ("front", "sync0"):
            lb1.run("ip", "link", "set", dev, "down")
        lb2.run("ip", "addr", "add", "10.0.0.100/32", "dev", "front")
        if method == "masq":
            lb2.run("ip", "addr", "add", "192.168.1.1/24", "dev", "back")
        for ns in (c, rs):  # what the new owner's gratuitous ARP achieves
            ns.run("ip", "neigh", "flush", "all")

        survived = client.exchange(0, SYNCED)
        late = client.exchange(SYNCED, SYNCED + LATE)
        print(f"{method}, loss {loss}%: {survived}/{SYNCED} synced connections survived; "
              f"{late}/{LATE} unsynced ones did; backup {stats}")
        assert survived == SYNCED
        assert late == 0  # without sync they die: what makes the survivors' case
    finally:
        pump.stop.set()
        client.kill()
