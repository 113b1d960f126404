"""A sync role killed with SIGKILL between checkpoints loses nothing it had applied.

Real processes (the `understudy sync` CLI) in real network namespaces on this
host; a stand-in kernel master sends v1 sync messages by multicast, as the
kernel's master daemon does. After `kill -9`, the state files on disk are
restored by a table of our own and compared entry by entry; the role restarted
on them reports the same table.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from understudy.sync import ConnTable
from understudy.uml import NetnsFactory

UNDERSTUDY = [sys.executable, "-m", "understudy.cli"]

MASTER = """
import sys, time
from understudy.sync import Conn, SyncSender, encode
sender = SyncSender(interface="eth0")
for line in sys.stdin:
    first, count, state = map(int, line.split())
    conns = [Conn(6, f"10.1.{i >> 8 & 255}.{i & 255}", 1024 + i, "10.0.0.100", 80, "192.168.1.11", 8000,
                  state=state, timeout=900) for i in range(first, first + count)]
    datagrams = encode(conns)
    for at in range(0, len(datagrams), 8):  # paced, as a kernel master's daemon sends
        sender.send(datagrams[at:at + 8])
        time.sleep(0.005)
    print(len(datagrams), flush=True)
"""

FIRST, UPDATED, ADDED = 5000, 2000, 1000


@pytest.fixture
def hosts():
    """master --eth0/eth0-- dir1 --eth1/eth0-- dir2: a kernel master's link and the replication link."""
    if os.geteuid() != 0:
        pytest.fail("needs root for network namespaces")
    netns = NetnsFactory(prefix=f"uspc{uuid.uuid4().hex[:6]}-")
    try:
        master, dir1, dir2 = netns("master"), netns("dir1"), netns("dir2")
        netns.veth(master, dir1, "10.9.0.1/24", "10.9.0.2/24")
        netns.veth(dir1, dir2, "10.9.1.1/24", "10.9.1.2/24")
        yield master, dir1, dir2
    finally:
        netns.cleanup()


class Master:
    """Plays the kernel master daemon: sends connections 1024+i.. in a given state."""

    def __init__(self, ns):
        self.proc = subprocess.Popen(ns.argv(sys.executable, "-c", MASTER), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def send(self, first, count, state):
        self.proc.stdin.write(f"{first} {count} {state}\n")
        self.proc.stdin.flush()
        assert int(self.proc.stdout.readline()) > 0

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=5)


def wait_stats(path, want, timeout=20.0):
    """The role's stats file once `want(stats)` holds (it is written every second)."""
    deadline = time.monotonic() + timeout
    stats = None
    while time.monotonic() < deadline:
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):
            stats = None
        if stats is not None and want(stats):
            return stats
        time.sleep(0.05)
    raise AssertionError(f"{path}: condition not met in {timeout} s; last stats: {stats}")


def restored(state, tmp_path):
    """The table a restart would have: the state files copied as they are, opened by a table of ours."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in state.parent.glob(state.name + "*"):
        shutil.copy(f, copy / f.name)
    table = ConnTable()
    report = table.open_state(copy / state.name)
    return {(c.cport, c.state) for c in table}, report


@pytest.mark.parametrize("save_every", [1000.0, 0.3], ids=["no-checkpoint", "checkpoints"])
@pytest.mark.parametrize("role", ["listen", "relay-primary", "relay-backup"])
def test_kill_9_between_checkpoints_loses_nothing(hosts, tmp_path, role, save_every):
    master_ns, dir1, dir2 = hosts
    key = tmp_path / "key"
    key.write_text("00112233445566778899aabbccddeeff\n")
    key.chmod(0o600)
    state, stats = tmp_path / "state" / "table", tmp_path / "stats.json"
    state.parent.mkdir()
    persist = ["--state-file", str(state), "--save-every", str(save_every), "--stats-file", str(stats)]
    relay = [*UNDERSTUDY, "sync", "relay", "--key-file", str(key)]
    primary_argv = [*relay, "primary", "--node", "1", "--kernel-interface", "eth0", "--bind", "10.9.1.1",
                    "--peer", "10.9.1.2"]
    backup_argv = [*relay, "backup", "--node", "2", "--bind", "10.9.1.2", "--primary", "10.9.1.1"]
    if role == "listen":
        argv, ns = [*UNDERSTUDY, "sync", "listen", "--interface", "eth0", *persist], dir1
    elif role == "relay-primary":
        argv, ns = [*primary_argv, *persist], dir1
    else:
        argv, ns = [*backup_argv, *persist], dir2

    master = Master(master_ns)
    procs = []
    try:
        if role == "relay-backup":
            primary_stats = tmp_path / "primary.json"
            procs.append(dir1.popen(*primary_argv, "--stats-file", str(primary_stats)))
            time.sleep(1.0)
            master.send(0, FIRST, 1)
            wait_stats(primary_stats, lambda s: s["connections"] == FIRST)
            # Started late, the backup gets these as a full copy.
            procs.append(ns.popen(*argv))
            wait_stats(stats, lambda s: s["connections"] == FIRST and s["caught_up"])
        else:
            procs.append(ns.popen(*argv))
            time.sleep(1.0)  # listening before the master talks
            master.send(0, FIRST, 1)
            wait_stats(stats, lambda s: s["connections"] == FIRST)
        if save_every < 1:
            wait_stats(stats, lambda s: s["checkpoints"] >= 1)
        # Updates of old connections and new ones, then the crash.
        master.send(0, UPDATED, 2)
        master.send(FIRST, ADDED, 3)
        shown = wait_stats(stats, lambda s: s["connections"] == FIRST + ADDED)
        victim = procs[-1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=5)
        assert shown["journal"]["dropped"] == 0, shown
        if save_every > 100:
            assert shown["checkpoints"] == 0 and shown["journal"]["records"] > 0, shown  # all in the journal

        want = ({(1024 + i, 2) for i in range(UPDATED)} | {(1024 + i, 1) for i in range(UPDATED, FIRST)}
                | {(1024 + i, 3) for i in range(FIRST, FIRST + ADDED)})
        got, report = restored(state, tmp_path)
        assert report["snapshot_fault"] is None and report["journal_fault"] is None, report
        assert len(got) == len(want) and got == want, (len(got), len(want - got), report)

        # The role itself, restarted on the same files, has it all back.
        stats.unlink()
        procs[-1] = ns.popen(*argv)
        shown = wait_stats(stats, lambda s: "restored" in s)
        assert shown["restored"]["restored"] == FIRST + ADDED, shown
        procs[-1].terminate()
        assert procs[-1].wait(timeout=10) == 0
    finally:
        master.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
