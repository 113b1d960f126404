"""Sync datagrams through real sockets into a table (loopback, no kernel IPVS needed)."""

import select

from understudy.sync import Conn, ConnTable, SyncReceiver, SyncSender, encode


def test_unicast_sender_to_receiver_into_a_table():
    receiver = SyncReceiver(group=None, bind="127.0.0.1", port=18848)
    sender = SyncSender(interface="lo", group=None, peer="127.0.0.1", port=18848)
    conns = [Conn(6, "10.0.0.2", 1000 + i, "10.0.0.100", 80, "192.168.1.11", 8000, state=1, timeout=900)
             for i in range(500)]
    datagrams = encode(conns, syncid=7)
    assert sender.send(datagrams) == len(datagrams)
    source = ConnTable(syncid=7)
    source.apply(datagrams, now=1)
    assert sender.send_table(source, syncid=7) == len(datagrams)

    table = ConnTable(syncid=7)
    received = applied = 0
    while received < 2 * len(datagrams) and select.select([receiver.fileno()], [], [], 2)[0]:
        n, a = receiver.drain(table, now=1)
        received, applied = received + n, applied + a
    assert (received, applied, len(table)) == (2 * len(datagrams), 1000, 500)
    totals, peers = receiver.stats()
    assert totals["datagrams"] == received and list(peers) == ["127.0.0.1"]
    assert {c.cport for c in table} == {c.cport for c in conns}
