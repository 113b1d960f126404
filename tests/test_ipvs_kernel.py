"""IPVS through the engine, against the real kernel (inside a user-mode Linux
guest), cross-checked with ipvsadm, an independent client."""

import json
import random
import re
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from understudy.cli import main as cli
from understudy.ipvs import Ipvs, IpvsApplyError, IpvsError, Reconciler, converge, parse_state

pytestmark = pytest.mark.uml


def sh(*args, check=True):
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr or result.stdout}")
    return result.stdout


def ipvsadm_table():
    """`ipvsadm -Ln` as {service line: [real server lines]}, whitespace-normalised."""
    table, current = {}, None
    for line in sh("ipvsadm", "-Ln").splitlines()[3:]:
        words = " ".join(line.split())
        if line.startswith("  ->"):
            table[current].append(words)
        else:
            current = words
            table[current] = []
    return table


@pytest.fixture
def ipvs():
    sh("ipvsadm", "-C")
    client = Ipvs()
    yield client
    sh("ipvsadm", "-C")


WEB = {"protocol": "tcp", "address": "10.0.0.100", "port": 80, "scheduler": "rr",
       "destinations": [{"address": "192.168.1.11", "port": 8000, "weight": 1},
                        {"address": "192.168.1.12", "port": 8000, "weight": 2, "forward": "route"}]}
DNS6 = {"protocol": "udp", "address": "2001:db8::1", "port": 53, "scheduler": "sh",
        "flags": ["sh-fallback", "sh-port"],
        "destinations": [{"address": "2001:db8::10", "port": 53, "weight": 3, "forward": "route"}]}
FWM = {"fwmark": 7, "scheduler": "wlc", "flags": ["persistent"], "timeout": 300, "netmask": "255.255.255.0",
       "destinations": [{"address": "192.168.1.14", "port": 0, "weight": 2, "u_threshold": 100,
                         "l_threshold": 10, "forward": "tunnel",
                         "tunnel": {"type": "gue", "port": 6080, "flags": ["csum"]}}]}


def test_every_object_as_ipvsadm_sees_it(ipvs):
    converge(ipvs, parse_state({"services": [WEB, DNS6, FWM]}))
    table = ipvsadm_table()
    assert table["TCP 10.0.0.100:80 rr"] == [
        "-> 192.168.1.11:8000 Masq 1 0 0", "-> 192.168.1.12:8000 Route 2 0 0"] or \
        sorted(table["TCP 10.0.0.100:80 rr"]) == ["-> 192.168.1.11:8000 Masq 1 0 0", "-> 192.168.1.12:8000 Route 2 0 0"]
    assert table["UDP [2001:db8::1]:53 sh (sh-fallback,sh-port)"] == ["-> [2001:db8::10]:53 Route 3 0 0"]
    fwm = next(k for k in table if k.startswith("FWM 7"))
    assert fwm == "FWM 7 wlc persistent 300 mask 255.255.255.0"
    assert table[fwm] == ["-> 192.168.1.14:0 Tunnel 2 0 0"]
    # The tunnel details ipvsadm shows with --tun-info.
    assert re.search(r"192\.168\.1\.14:0\s+Tunnel\s+gue:6080:\+c\s+2\s", sh("ipvsadm", "-Ln", "--tun-info"))
    # And our dump reads back exactly what was asked for.
    assert sorted(map(str, ipvs.dump())) == sorted(map(str, parse_state({"services": [WEB, DNS6, FWM]})))
    for want in parse_state({"services": [WEB, DNS6, FWM]}):
        have = next(s for s in ipvs.dump() if s.key == want.key)
        assert have == want and set(have.destinations) == set(want.destinations)


def test_edits_are_edits(ipvs):
    converge(ipvs, parse_state({"services": [WEB]}))
    web = dict(WEB, scheduler="wlc", destinations=[dict(WEB["destinations"][0], weight=7), WEB["destinations"][1]])
    changes = converge(ipvs, parse_state({"services": [web]}))
    assert sorted(c.verb for c in changes) == ["edit_dest", "edit_service"]
    table = ipvsadm_table()
    assert "-> 192.168.1.11:8000 Masq 7 0 0" in table["TCP 10.0.0.100:80 wlc"]


def test_errors_name_the_operation_and_object(ipvs):
    (web,) = parse_state({"services": [WEB]})
    bare = replace(web, destinations=())
    converge(ipvs, [bare])
    from understudy.ipvs.reconcile import Change

    def fails(change, errno_name, text):
        with pytest.raises(IpvsApplyError) as e:
            ipvs.execute([change])
        assert e.value.errno == getattr(__import__("errno"), errno_name)
        assert str(e.value.strerror) == text, e.value.strerror

    fails(Change("add_service", bare), "EEXIST", "add service tcp 10.0.0.100:80: exists")
    ghost = replace(bare, port=81)
    fails(Change("edit_service", ghost), "ESRCH", "edit service tcp 10.0.0.100:81: no such service")
    fails(Change("del_dest", bare, web.destinations[0]), "ENOENT",
          "delete destination 192.168.1.11:8000 of tcp 10.0.0.100:80: no such destination")
    fails(Change("add_service", replace(ghost, scheduler="nosuch")), "ENOENT",
          "add service tcp 10.0.0.100:81: unknown scheduler or persistence engine")
    v6 = replace(web.destinations[0], address="2001:db8::5")
    with pytest.raises(IpvsApplyError) as e:
        ipvs.execute([Change("add_dest", bare, v6)])
    assert e.value.errno == 22 and "mixed address families" in str(e.value.strerror)
    # A batch reports every failure, and the good operations in it still happen.
    with pytest.raises(IpvsApplyError) as e:
        ipvs.execute([Change("add_service", bare), Change("add_dest", bare, web.destinations[0]),
                      Change("add_service", bare)])
    assert len(e.value.errors) == 2
    assert ipvsadm_table()["TCP 10.0.0.100:80 rr"] == ["-> 192.168.1.11:8000 Masq 1 0 0"]


def test_bad_forwarding_method_is_refused_before_the_kernel(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"services": [dict(WEB, destinations=[{"address": "1.2.3.4", "port": 1,
                                                                      "forward": "nat"}])]}))
    assert cli(["ipvs", "apply", str(path)]) == 2
    assert "forward must be one of masq" in capsys.readouterr().err


def test_cli_show_apply_round_trip_changes_nothing(ipvs, tmp_path, capsys):
    path = tmp_path / "want.json"
    path.write_text(json.dumps({"services": [WEB, DNS6, FWM]}))
    assert cli(["ipvs", "apply", "--dry-run", str(path)]) == 0
    planned = capsys.readouterr().out
    assert "add service tcp 10.0.0.100:80" in planned and ipvsadm_table() == {}
    assert cli(["ipvs", "apply", str(path)]) == 0
    capsys.readouterr()
    before = ipvsadm_table()
    assert cli(["ipvs", "show", "--json"]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown)["services"][0]["stats"] is not None
    path.write_text(shown)
    assert cli(["ipvs", "apply", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "nothing to change"
    assert ipvsadm_table() == before
    assert cli(["ipvs", "show"]) == 0
    assert "10.0.0.100:80 rr" in capsys.readouterr().out


def test_unmanaged_services_are_left_alone_unless_pruned(ipvs):
    sh("ipvsadm", "-A", "-t", "10.9.9.9:22", "-s", "rr")
    converge(ipvs, parse_state({"services": [WEB]}))
    assert "TCP 10.9.9.9:22 rr" in ipvsadm_table()
    converge(ipvs, parse_state({"services": [WEB]}), reconciler=Reconciler(prune=True))
    assert list(ipvsadm_table()) == ["TCP 10.0.0.100:80 rr"]


def random_state(rng):
    services = []
    for i in range(rng.randint(1, 6)):
        port = rng.choice([80, 443])
        # Direct routing keeps the service port (ipvsadm insists on it).
        dests = [{"address": f"192.168.{i}.{j}", "port": port if forward == "route" else rng.choice([80, 8080]),
                  "weight": rng.randint(0, 5), "forward": forward}
                 for j in rng.sample(range(1, 30), rng.randint(0, 4))
                 for forward in [rng.choice(["masq", "route"])]]
        services.append({"protocol": rng.choice(["tcp", "udp"]), "address": f"10.1.0.{i + 1}",
                         "port": port, "scheduler": rng.choice(["rr", "wrr", "wlc", "sh"]),
                         "destinations": dests})
    return parse_state({"services": services})


def drift(rng, table):
    """Random changes behind our back, as another tool or an operator might make."""
    for svc in table:
        vip = f"{svc.address}:{svc.port}"
        flag = "-t" if svc.protocol == "tcp" else "-u"
        action = rng.choice(["weight", "delete-dest", "add-dest", "scheduler", "nothing"])
        if action == "weight" and svc.destinations:
            d = rng.choice(svc.destinations)
            sh("ipvsadm", "-e", flag, vip, "-r", d.endpoint, "-w", str(rng.randint(0, 9)),
               "-g" if d.forward == "route" else "-m")
        elif action == "delete-dest" and svc.destinations:
            sh("ipvsadm", "-d", flag, vip, "-r", rng.choice(svc.destinations).endpoint)
        elif action == "add-dest":
            sh("ipvsadm", "-a", flag, vip, "-r", f"172.16.0.{rng.randint(1, 200)}:80", "-w", "1", check=False)
        elif action == "scheduler":
            sh("ipvsadm", "-E", flag, vip, "-s", rng.choice(["rr", "lc"]))


def test_random_edits_converge_to_the_desired_state(ipvs):
    rng = random.Random(2026)
    reconciler = Reconciler(drain_timeout=0, prune=True)
    for _ in range(15):
        desired = random_state(rng)
        converge(ipvs, desired, reconciler=reconciler)
        drift(rng, ipvs.dump())
        converge(ipvs, desired, reconciler=reconciler)
        have = {s.key: s for s in ipvs.dump()}
        assert set(have) == {s.key for s in desired}
        for want in desired:
            assert have[want.key] == want
            assert set(have[want.key].destinations) == set(want.destinations)
        assert reconciler.plan(desired, ipvs.dump()) == []  # idempotent


def test_daemons_and_timeouts(ipvs):
    try:
        ipvs.start_daemon("master", "lo", 7)
        ipvs.start_daemon("backup", "lo", 7, maxlen=1400, group="239.1.2.3", port=9000, ttl=2)
        shown = sh("ipvsadm", "-L", "--daemon")
        assert "master sync daemon (mcast=lo, syncid=7" in shown
        assert re.search(r"backup sync daemon \(mcast=lo, syncid=7, maxlen=1400, group=239\.1\.2\.3, port=9000", shown)
        states = {d["state"]: d for d in ipvs.daemons()}
        assert states["backup"]["group"] == "239.1.2.3" and states["master"]["port"] == 8848
        with pytest.raises(IpvsError) as e:
            ipvs.start_daemon("master", "lo", 7)
        assert e.value.strerror == "start master sync daemon on lo: exists"
    finally:
        for state in ("master", "backup"):
            try:
                ipvs.stop_daemon(state)
            except IpvsError:
                pass
    assert sh("ipvsadm", "-L", "--daemon").strip() == ""
    with pytest.raises(IpvsError) as e:
        ipvs.stop_daemon("master")
    assert e.value.strerror == "stop master sync daemon: not running"
    ipvs.set_timeouts(tcp=1000, udp=200)
    assert ipvs.timeouts() == {"tcp": 1000, "tcp_fin": 120, "udp": 200}
    assert "Timeout (tcp tcpfin udp): 1000 120 200" in sh("ipvsadm", "-L", "--timeout")
    ipvs.set_timeouts(tcp=900, udp=300)
    assert ipvs.info() == {"version": "1.2.1", "conn_tab_size": 4096}
    converge(ipvs, parse_state({"services": [WEB]}))
    ipvs.flush()
    assert ipvsadm_table() == {} and ipvs.dump() == []


ECHO_SERVER = """
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8000)); srv.listen(64)
print("ready", flush=True)
def serve(c):
    while (data := c.recv(1024)):
        c.sendall(sys.argv[1].encode() + b":" + data)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = """
import socket, sys
conns = []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "open":
        c = socket.create_connection(("10.0.0.100", 80), timeout=5); conns.append(c); print("opened", flush=True)
    elif cmd[0] == "send":
        c = conns[int(cmd[1])]; c.sendall(b"ping"); print(c.recv(100).decode(), flush=True)
    elif cmd[0] == "close":
        conns[int(cmd[1])].close(); print("closed", flush=True)
"""


@pytest.fixture
def topology():
    """Client ns `c` -> this namespace (the director, VIP 10.0.0.100) -> real servers rs1, rs2 (NAT)."""
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    procs = []
    made = []
    try:
        for name, net, peer in (("c", "10.0.0", "10.0.0.2"), ("rs1", "192.168.1", "192.168.1.11"),
                                ("rs2", "192.168.1", "192.168.1.12")):
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "addr", "add", f"{peer}/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
            sh("ip", "link", "set", f"v{name}", "up")
            sh("ip", "-n", name, "route", "add", "default", "via", f"{net}.1")
        sh("ip", "addr", "add", "10.0.0.1/24", "dev", "vc")
        sh("ip", "addr", "add", "10.0.0.100/32", "dev", "vc")
        # Both real servers sit behind one /24: a bridge joins their veths.
        sh("ip", "link", "add", "br-rs", "type", "bridge")
        for v in ("vrs1", "vrs2"):
            sh("ip", "link", "set", v, "master", "br-rs")
        sh("ip", "addr", "add", "192.168.1.1/24", "dev", "br-rs")
        sh("ip", "link", "set", "br-rs", "up")
        for name in ("rs1", "rs2"):
            p = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", ECHO_SERVER, name],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"
        client = subprocess.Popen(["ip", "netns", "exec", "c", sys.executable, "-c", CLIENT],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(client)

        def talk(line):
            client.stdin.write(line + "\n")
            client.stdin.flush()
            return client.stdout.readline().strip()

        yield talk
    finally:
        for p in procs:
            p.kill()
        for name in made:
            sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", "br-rs", check=False)


def test_drained_destination_keeps_its_connections(ipvs, topology):
    talk = topology
    both = {"protocol": "tcp", "address": "10.0.0.100", "port": 80, "scheduler": "rr",
            "destinations": [{"address": "192.168.1.11", "port": 8000}]}
    converge(ipvs, parse_state({"services": [both]}))
    assert talk("open") == "opened"
    assert talk("send 0") == "rs1:ping"
    # rs1 leaves the desired state, rs2 joins: rs1 drains.
    moved = dict(both, destinations=[{"address": "192.168.1.12", "port": 8000}])
    reconciler = Reconciler(drain_timeout=600)
    changes = converge(ipvs, parse_state({"services": [moved]}), reconciler=reconciler, wait=False)
    assert sorted(c.verb for c in changes) == ["add_dest", "edit_dest"] and reconciler.pending
    table = ipvsadm_table()["TCP 10.0.0.100:80 rr"]
    assert "-> 192.168.1.11:8000 Masq 0 1 0" in table
    # The old connection still works through the draining server; new ones go to rs2.
    for _ in range(3):
        assert talk("send 0") == "rs1:ping"
    assert talk("open") == "opened"
    assert talk("send 1") == "rs2:ping"
    assert talk("send 0") == "rs1:ping"
    # 64-bit counters agree with ipvsadm's, and zeroing resets them. (The
    # kernel folds per-CPU counters into what it reports every 2 s.)
    deadline = time.monotonic() + 10
    while True:
        ours = {d.address: d.stats for s in ipvs.dump() for d in s.destinations}
        if ours["192.168.1.11"]["conns"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    exact = sh("ipvsadm", "-Ln", "--stats", "--exact")
    for address in ("192.168.1.11", "192.168.1.12"):
        conns, inpkts, outpkts = re.search(rf"{address}:8000\s+(\d+)\s+(\d+)\s+(\d+)", exact).groups()
        assert (ours[address]["conns"], ours[address]["inpkts"], ours[address]["outpkts"]) == \
            (int(conns), int(inpkts), int(outpkts))
    assert ours["192.168.1.11"]["conns"] == 1 and ours["192.168.1.11"]["inpkts"] >= 5
    ipvs.zero()
    assert all(d.stats["conns"] == 0 for s in ipvs.dump() for d in s.destinations)
    # Once its connection is gone, the drained server is deleted.
    assert talk("close 0") == "closed"
    deadline = time.monotonic() + 30
    while reconciler.pending and time.monotonic() < deadline:
        converge(ipvs, parse_state({"services": [moved]}), reconciler=reconciler, wait=False)
        time.sleep(0.5)
    table = ipvsadm_table()["TCP 10.0.0.100:80 rr"]
    assert table == ["-> 192.168.1.12:8000 Masq 1 1 0"] or [l.split()[1] for l in table] == ["192.168.1.12:8000"]
    assert talk("send 1") == "rs2:ping"


def test_daemon_with_an_ipv6_group(netns):
    d, peer = netns("d6"), netns("p6")
    netns.veth(d, peer, "fd00:1::1/64", "fd00:1::2/64")
    # The link-local address must finish duplicate address detection first.
    deadline = time.monotonic() + 10
    while "tentative" in d.run("ip", "-6", "addr", "show", "dev", "eth0").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    with d.entered():
        ipvs = Ipvs()
        ipvs.start_daemon("backup", "eth0", 9, group="ff02::8848", port=8850)
        (daemon,) = ipvs.daemons()
        assert (daemon["group"], daemon["port"], daemon["syncid"]) == ("ff02::8848", 8850, 9)
        assert "group=ff02::8848, port=8850" in d.run("ipvsadm", "-L", "--daemon").stdout
        ipvs.stop_daemon("backup")
        assert ipvs.daemons() == []
