"""The [[service]] sections: parsed into the IPVS model and checks; mistakes
name their line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from understudy.config import ConfigError, load_config
from understudy.director.services import ServerState, desired_table

CONFIG = """\
[[service]]
name = "web"
address = "192.0.2.10"
port = 80
scheduler = "wrr"
check = { type = "http", path = "/health", interval = 1, rise = 2, fall = 3 }
sorry_server = "10.0.0.99:8080"

[[service.server]]
address = "10.0.0.1:8080"
weight = 3

[[service.server]]
address = "10.0.0.2"
port = 8081
check = { type = "tcp" }

[[service.server]]
address = "10.0.0.3:8080"
check = false

[[service]]
fwmark = 7
on_failure = "remove"

[[service.server]]
address = "10.0.1.1:443"
forward = "route"
check = { type = "icmp" }
"""


def load(tmp_path: Path, text: str = CONFIG):
    path = tmp_path / "u.toml"
    path.write_text(text)
    return load_config(path)


def test_services_parse(tmp_path):
    c = load(tmp_path)
    web, mark = c.services
    assert c.cluster is None and c.sync.mode == "off"
    assert str(web.service) == "tcp 192.0.2.10:80" and web.service.scheduler == "wrr"
    assert [s.name for s in web.servers] == ["10.0.0.1:8080", "10.0.0.2:8081", "10.0.0.3:8080"]
    first = web.servers[0]
    assert first.destination.weight == 3 and first.check is not None
    assert first.check.probe.kind == "http" and first.check.probe.port == 8080 and first.check.rise == 2
    assert web.servers[1].check.probe.kind == "tcp" and web.servers[1].check.probe.port == 8081
    assert web.servers[2].check is None
    assert web.sorry is not None and web.sorry.endpoint == "10.0.0.99:8080"
    assert str(mark.service).startswith("fwmark 7") and mark.on_failure == "remove"
    assert mark.servers[0].destination.forward == "route"


def test_desired_table_follows_health_and_admin(tmp_path):
    web, mark = load(tmp_path).services
    states = {(svc.name, s.name): ServerState(s) for svc in (web, mark) for s in svc.servers}
    table = {str(s): s for s in desired_table([web, mark], states)}
    assert [d.weight for d in table["tcp 192.0.2.10:80"].destinations] == [3, 1, 1]
    states[("web", "10.0.0.1:8080")] = ServerState(web.servers[0], up=False)
    states[("web", "10.0.0.2:8081")] = ServerState(web.servers[1], admin="drained")
    table = {str(s): s for s in desired_table([web, mark], states)}
    assert [(d.endpoint, d.weight) for d in table["tcp 192.0.2.10:80"].destinations] == [
        ("10.0.0.1:8080", 0), ("10.0.0.2:8081", 0), ("10.0.0.3:8080", 1)]  # quiesced, drained, up
    states[(mark.name, "10.0.1.1:443")] = ServerState(mark.servers[0], up=False)
    states[("web", "10.0.0.3:8080")] = ServerState(web.servers[2], up=False)
    table = {str(s): s for s in desired_table([web, mark], states)}
    assert table[str(mark.service)].destinations == ()  # removed, not quiesced
    assert "10.0.0.99:8080" in [d.endpoint for d in table["tcp 192.0.2.10:80"].destinations]  # sorry server


@pytest.mark.parametrize("old,new,key,words", [
    ('scheduler = "wrr"', 'scheduler = 5', "service[0]", "scheduler"),
    ('check = { type = "tcp" }', 'check = { type = "carrier" }', "service[0].server[1].check", "one of"),
    ('check = { type = "tcp" }', 'check = { type = "tcp", bogus = 1 }', "service[0].server[1].check", "bogus"),
    ('on_failure = "remove"', 'on_failure = "shrug"', "service[1].on_failure", "expected one of"),
    ('weight = 3', 'weight = -3', "service[0].server[0]", "weight"),
    ('address = "10.0.1.1:443"', 'address = "10.0.1.1"', "service[1].server[0].address", "needs a port"),
])
def test_service_errors_name_the_key(tmp_path, old, new, key, words):
    assert old in CONFIG
    with pytest.raises(ConfigError) as e:
        load(tmp_path, CONFIG.replace(old, new, 1))
    assert e.value.key.startswith(key), str(e.value)
    assert words in str(e.value) and e.value.line is not None


def test_same_virtual_service_twice(tmp_path):
    with pytest.raises(ConfigError, match="same virtual service"):
        load(tmp_path, CONFIG + '\n[[service]]\naddress = "192.0.2.10"\nport = 80\n')
