"""Config files: a good one parses into the typed model; each mistake names
the file, the line and the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from understudy.config import ConfigError, load_cluster
from understudy.config.source import locate

GOOD = """\
node = 2

[cluster]
id = 7
key = "00112233445566778899aabbccddeeff"
interval_ms = 100
dead_ms = 500
auto_failback = true
failback_delay = 3

[[cluster.path]]
name = "lan"
type = "unicast"
interface = "eth1"

[[cluster.path]]
type = "multicast"
interface = "eth2"
group = "239.0.0.7"

[[cluster.path]]
type = "serial"
device = "/dev/ttyS1"

[[cluster.node]]
id = 1
priority = 200
addresses = { lan = "10.1.0.1" }

[[cluster.node]]
id = 2
name = "lb2"
addresses = { lan = "10.1.0.2" }

[[vip]]
address = "192.0.2.10/24"
interface = "eth0"

[tracking]
interfaces = ["eth0"]
gateways = { addresses = ["192.0.2.1"], fall = 2 }

[[tracking.script]]
command = "/usr/bin/true --x"
weight = -50

[notify]
primary = ["/etc/understudy/to-primary", "now"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "understudy.toml"
    path.write_text(text)
    return path


def test_good_config_parses(tmp_path):
    c = load_cluster(write(tmp_path, GOOD))
    assert c.node == 2 and c.me.name == "lb2" and c.me.priority == 100
    assert [p.kind for p in c.paths] == ["unicast", "multicast", "serial"]
    assert c.paths[1].group == ipaddress.ip_address("239.0.0.7") and c.paths[1].port == 694
    assert c.peers[0].addresses["lan"] == ipaddress.ip_address("10.1.0.1")
    assert c.warn_ms == 300 and c.dead_ms == 500 and c.initdead_ms == 1000
    assert c.vips[0].address == ipaddress.ip_interface("192.0.2.10/24")
    assert c.tracking.gateways.fall == 2 and c.tracking.scripts[0].command == ("/usr/bin/true", "--x")
    assert c.notify.primary == ("/etc/understudy/to-primary", "now")
    assert len(c.key) == 16 and c.auto_failback and c.failback_delay == 3.0
    assert load_cluster(write(tmp_path, GOOD), node=1).me.priority == 200


@pytest.mark.parametrize(
    "old,new,line,key,words",
    [
        ("interval_ms = 100", "interval_ms = 0", 6, "cluster.interval_ms", "out of range"),
        ("auto_failback = true", "auto_failbak = true", 8, "cluster.auto_failbak", "did you mean 'auto_failback'"),
        ('group = "239.0.0.7"', 'group = "10.0.0.7"', 19, "cluster.path[1].group", "not a multicast"),
        ('type = "serial"', 'type = "carrier-pigeon"', 22, "cluster.path[2].type", "expected one of"),
        ("priority = 200", 'priority = "high"', 27, "cluster.node[0].priority", "expected an integer"),
        ('addresses = { lan = "10.1.0.1" }', 'addresses = { wan = "10.1.0.1" }', 28,
         "cluster.node[0].addresses.wan", "no unicast path named 'wan'"),
        ('address = "192.0.2.10/24"', 'address = "192.0.2.300"', 36, "vip[0].address", "not an address"),
        ("weight = -50", "weight = 5", 45, "tracking.script[0].weight", "out of range"),
        ("node = 2", "node = 9", 1, "node", "not among"),
        ('key = "00112233445566778899aabbccddeeff"', 'key = "0011"', 5, "cluster.key", "at least 16"),
        ("dead_ms = 500", "dead_ms = 500\nwarn_ms = 900", 8, "cluster.warn_ms", "must not exceed"),
        ("fall = 2 }", "fall = 2, timeout = 5 }", 41, "tracking.gateways.timeout", "longer than the interval"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, old, new, line, key, words):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_cluster(path)
    assert (e.value.file, e.value.line, e.value.key) == (str(path), line, key), str(e.value)
    assert words in str(e.value)
    assert str(e.value).startswith(f"{path}:{line}: {key}: ")


def test_syntax_error_has_its_line(tmp_path):
    path = write(tmp_path, GOOD.replace("id = 7", "id = = 7"))
    with pytest.raises(ConfigError) as e:
        load_cluster(path)
    assert e.value.line == 4 and "TOML syntax" in str(e.value)


def test_missing_file_and_missing_sections(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="missing required key 'cluster'"):
        load_cluster(write(tmp_path, "node = 1\n"))
    with pytest.raises(ConfigError, match="which node is this"):
        load_cluster(write(tmp_path, GOOD.replace("node = 2", "")))


def test_key_file_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "cluster.key").write_text("ab" * 32 + "\n")
    c = load_cluster(write(tmp_path, GOOD.replace('key = "00112233445566778899aabbccddeeff"', 'key_file = "cluster.key"')))
    assert c.key == bytes.fromhex("ab" * 32)


def test_incarnation_grows_across_quick_restarts(tmp_path):
    from understudy.failover.membership import next_incarnation

    c = load_cluster(write(tmp_path, GOOD.replace("id = 7", f'id = 7\nstate_dir = "{tmp_path}/state"')))
    first = next_incarnation(c, now=1000.0)
    assert first == 1000 and next_incarnation(c, now=1000.0) == 1001  # same second: still larger
    assert next_incarnation(c, now=5000.0) == 5000


def test_locate_handles_multiline_values_and_arrays_of_tables():
    text = 'a = """\nx = 1\n"""\nb = [\n  1,\n]\n[[t]]\nk = 1\n[[t]]\nk = 2\n[t.sub]\nz = 3\n'
    lines = locate(text)
    assert lines[("a",)] == 1 and lines[("b",)] == 4 and ("x",) not in lines
    assert lines[("t", 0, "k")] == 8 and lines[("t", 1, "k")] == 10 and lines[("t", 1, "sub", "z")] == 12
