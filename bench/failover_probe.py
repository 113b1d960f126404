"""The failover bench's instruments, run inside a namespace by failover_bench.py.

    failover_probe.py garp IFACE VIP   gratuitous ARPs for VIP seen on IFACE
    failover_probe.py addr VIP         VIP added to / removed from this namespace

Each prints one JSON line per event with `t`, a CLOCK_MONOTONIC time in ns
(the same clock in every network namespace, so comparable with the bench's
kill time), after a first line {"ready": true}.
"""

import json
import os
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: a struct timespec on CLOCK_REALTIME
NETLINK_ROUTE = 0
RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2


def emit(**event):
    print(json.dumps(event), flush=True)


def realtime_to_monotonic(realtime_ns):
    """A CLOCK_REALTIME stamp moved onto CLOCK_MONOTONIC by the offset between
    the two clocks read now, back to back (error: the µs between the reads, or a
    clock step in the moments since the stamp)."""
    before = time.monotonic_ns()
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    after = time.monotonic_ns()
    return realtime_ns - real + (before + after) // 2


def garp(iface, vip):
    """Every ARP whose sender and target address are both VIP: a gratuitous ARP.

    The time reported is the kernel's receive stamp (SO_TIMESTAMPNS), taken when
    the frame reached this namespace's interface: a busy machine delays this
    process's wake-up, not the stamp. It is on CLOCK_REALTIME, so it is moved
    onto CLOCK_MONOTONIC right away; `seen` is when this process read it."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((iface, ETH_P_ARP))
    want = socket.inet_aton(vip)
    emit(ready=True)
    while True:
        frame, ancillary, _flags, _addr = s.recvmsg(2048, socket.CMSG_SPACE(16))
        seen = time.monotonic_ns()
        if len(frame) < 42 or frame[12:14] != b"\x08\x06":
            continue
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
            continue
        sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
        if spa != want or tpa != want:
            continue
        stamp = seen
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack_from("qq", data)
                stamp = realtime_to_monotonic(sec * 1_000_000_000 + nsec)
        emit(t=stamp, seen=seen, mac=sha.hex(":"), op=op)


def addr(vip):
    """RTM_NEWADDR / RTM_DELADDR for VIP, stamped when read (netlink carries no stamp)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    s.bind((0, RTMGRP_IPV4_IFADDR))
    want = socket.inet_aton(vip)
    emit(ready=True)
    while True:
        data = s.recv(65536)
        t = time.monotonic_ns()
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            if kind in (RTM_NEWADDR, RTM_DELADDR):
                pos, end = offset + 16 + 8, offset + length  # nlmsghdr, ifaddrmsg
                while pos + 4 <= end:
                    rta_len, rta_type = struct.unpack_from("=HH", data, pos)
                    if rta_len < 4:
                        break
                    if rta_type in (IFA_LOCAL, IFA_ADDRESS) and data[pos + 4:pos + rta_len] == want:
                        emit(t=t, ev="add" if kind == RTM_NEWADDR else "del")
                        break
                    pos += (rta_len + 3) & ~3
            offset += (length + 3) & ~3


def realtime_priority():
    """Instruments run SCHED_FIFO so a loaded machine delays them less than what they watch."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):
        pass


def main(argv):
    realtime_priority()
    if argv[:1] == ["garp"] and len(argv) == 3:
        garp(argv[1], argv[2])
    elif argv[:1] == ["addr"] and len(argv) == 2:
        addr(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (KeyboardInterrupt, BrokenPipeError):
        pass
