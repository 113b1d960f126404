"""The sync roles as an operator runs them (`understudy sync relay|listen|stats`),
between real kernel sync daemons, each director in its own namespace."""

import json
import subprocess
import sys
import time

import pytest

from topology import Client, echo_server, kernel_conns, local_pair

pytestmark = pytest.mark.uml

CONNECTIONS = 12
UNDERSTUDY = [sys.executable, "-m", "understudy.cli"]


def count(ns):
    return len(kernel_conns(ns))


@pytest.fixture
def directors(netns):
    """Client c -> director lb1 (NAT) -> real server rs; backup director lb2 on sync0;
    in each director a local veth pair ks0/us0 between the kernel daemon and Understudy."""
    c, lb1, lb2, rs = (netns(n) for n in ("c", "lb1", "lb2", "rs"))
    netns.veth(c, lb1, "10.0.0.2/24", ["10.0.0.1/24", "10.0.0.100/32"])
    netns.veth(rs, lb1, "192.168.1.11/24", "192.168.1.1/24")
    netns.veth(lb1, lb2, "10.255.0.1/24", "10.255.0.2/24", name_a="sync0", name_b="sync0")
    rs.run("ip", "route", "add", "default", "via", "192.168.1.1")
    lb1.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    for ns in (lb1, lb2):
        ns.run("ipvsadm", "-A", "-t", "10.0.0.100:80", "-s", "rr")
        ns.run("ipvsadm", "-a", "-t", "10.0.0.100:80", "-r", "192.168.1.11:8000", "-m")
    local_pair(lb1, "ks0", "us0", "169.254.1.1/30", "169.254.1.2/30")
    local_pair(lb2, "us0", "ks0", "169.254.2.1/30", "169.254.2.2/30")
    return c, lb1, lb2, rs


def test_relay_between_two_directors_with_the_cli(directors, tmp_path):
    c, lb1, lb2, rs = directors
    lb2.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "ks0", "--syncid", "7")

    key = tmp_path / "sync.key"
    key.write_text("00112233445566778899aabbccddeeff0123456789abcdef\n")
    key.chmod(0o600)
    stats, state = tmp_path / "backup.json", tmp_path / "backup.table"
    primary = lb1.popen(*UNDERSTUDY, "sync", "relay", "primary", "--node", "1", "--key-file", str(key),
                        "--kernel-interface", "us0", "--bind", "10.255.0.1", "--peer", "10.255.0.2",
                        "--stats-file", str(tmp_path / "primary.json"))
    backup_argv = [*UNDERSTUDY, "sync", "relay", "backup", "--node", "2", "--key-file", str(key),
                   "--bind", "10.255.0.2", "--primary", "10.255.0.1", "--kernel-interface", "us0",
                   "--stats-file", str(stats), "--state-file", str(state)]
    backup = lb2.popen(*backup_argv)
    time.sleep(1.5)  # both roles up before the kernel master starts talking
    assert primary.poll() is None and backup.poll() is None, (primary.stderr.read(), backup.stderr.read())
    lb1.run("ipvsadm", "--start-daemon", "master", "--mcast-interface", "ks0", "--syncid", "7")
    echo_server(rs)
    client = Client(c)
    try:
        assert client.open(CONNECTIONS) == CONNECTIONS
        deadline = time.monotonic() + 30
        while count(lb2) < CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(lb2) == CONNECTIONS
        time.sleep(1.5)  # the roles write their counters every second
        shown = json.loads(subprocess.run([*UNDERSTUDY, "sync", "stats", "--json", "--stats-file", str(stats)],
                                          capture_output=True, text=True, check=True).stdout)
        assert shown["role"] == "relay-backup" and shown["caught_up"] is True
        assert shown["connections"] == CONNECTIONS and shown["relay"]["rejected_bad_tag"] == 0
        text = subprocess.run([*UNDERSTUDY, "sync", "stats", "--stats-file", str(stats)],
                              capture_output=True, text=True, check=True).stdout
        assert "caught_up" in text and "relay.applied" in text

        # The backup restarts: its table comes back from the state file it saved on the way out.
        backup.terminate()
        assert backup.wait(timeout=10) == 0 and state.exists()
        stats.unlink()
        backup = lb2.popen(*backup_argv)
        deadline = time.monotonic() + 10
        while not stats.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = json.loads(stats.read_text())
        assert shown["restored"]["restored"] == CONNECTIONS, shown
    finally:
        client.kill()
        for p in (primary, backup):
            p.terminate()
    # A clean stop on SIGTERM.
    assert primary.wait(timeout=10) == 0 and backup.wait(timeout=10) == 0


def test_a_key_others_can_read_is_refused(tmp_path):
    key = tmp_path / "open.key"
    key.write_text("00112233445566778899aabbccddeeff")
    key.chmod(0o644)
    result = subprocess.run([*UNDERSTUDY, "sync", "relay", "backup", "--node", "2", "--key-file", str(key),
                             "--bind", "127.0.0.1", "--primary", "127.0.0.2"], capture_output=True, text=True)
    assert result.returncode == 2 and "chmod 600" in result.stderr


@pytest.mark.parametrize("syncid", [0, 7])
def test_a_primary_started_late_seeds_its_backup_from_the_kernel(directors, tmp_path, syncid):
    """Connections made before Understudy ran, with no kernel master daemon at all:
    the primary reads them from its kernel and gives its backup a full copy. It never
    heard a kernel master's syncid, so it copies with --syncid, which the kernel
    backup daemon filters on."""
    c, lb1, lb2, rs = directors
    lb2.run("ipvsadm", "--start-daemon", "backup", "--mcast-interface", "ks0", "--syncid", str(syncid))
    echo_server(rs)
    client = Client(c)
    key = tmp_path / "sync.key"
    key.write_text("00112233445566778899aabbccddeeff")
    key.chmod(0o600)
    try:
        assert client.open(CONNECTIONS) == CONNECTIONS
        assert count(lb1) == CONNECTIONS and count(lb2) == 0
        backup = lb2.popen(*UNDERSTUDY, "sync", "relay", "backup", "--node", "2", "--key-file", str(key),
                           "--bind", "10.255.0.2", "--primary", "10.255.0.1", "--kernel-interface", "us0",
                           "--stats-file", str(tmp_path / "b.json"))
        time.sleep(1.0)
        lb1.popen(*UNDERSTUDY, "sync", "relay", "primary", "--node", "1", "--key-file", str(key),
                  "--kernel-interface", "us0", "--bind", "10.255.0.1", "--peer", "10.255.0.2",
                  "--seed-from-kernel", "--stats-file", str(tmp_path / "p.json"),
                  *(["--syncid", str(syncid)] if syncid else []))
        deadline = time.monotonic() + 20
        while count(lb2) < CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kernel_conns(lb2) == kernel_conns(lb1)
        assert backup.poll() is None
    finally:
        client.kill()
