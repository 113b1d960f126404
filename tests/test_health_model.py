"""The check config model: typed values, clear errors, equal checks are one key."""

import pytest

from understudy.health import (Check, CheckConfigError, DnsProbe, HttpProbe, IcmpProbe, ScriptProbe, TcpProbe,
                               UdpProbe, check_from_mapping)


def test_tables_map_to_typed_checks():
    check = check_from_mapping({"type": "http", "path": "/health", "expect_status": [200, 204], "tls": True,
                                "sni": "www.rs.test", "verify": False, "interval": 2, "timeout": 1.5, "rise": 3,
                                "fall": 2, "retries": 1, "headers": {"X-Check": "1"}},
                               address="10.0.0.5", port=443)
    assert check == Check(HttpProbe("10.0.0.5", 443, tls=True, path="/health", expect_status=(200, 204),
                                    sni="www.rs.test", verify=False, headers=(("X-Check", "1"),)),
                          interval=2, timeout=1.5, rise=3, fall=2, retries=1)
    udp = check_from_mapping({"type": "udp", "payload_hex": "00ff", "expect": "pong"}, address="::1", port=9)
    assert udp.probe == UdpProbe("::1", 9, payload=b"\x00\xff", expect=b"pong")
    dns = check_from_mapping({"type": "dns", "name": "www.rs.test", "qtype": "AAAA", "expect": ["fd00::1"]},
                             address="10.0.0.5", port=80)
    assert dns.probe == DnsProbe("10.0.0.5", "www.rs.test", port=53, qtype="AAAA", expect=("fd00::1",))
    script = check_from_mapping({"type": "script", "argv": ["/bin/check", "x"], "dynamic_weight": True})
    assert script.probe == ScriptProbe(("/bin/check", "x"), dynamic_weight=True)
    assert check_from_mapping({"type": "icmp"}, address="10.0.0.5").probe == IcmpProbe("10.0.0.5")


def test_equal_checks_are_one_key_and_the_name_does_not_count():
    a = Check(TcpProbe("10.0.0.1", 80), interval=1, label="web")
    b = Check(TcpProbe("10.0.0.1", 80), interval=1, label="other vs")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert Check(TcpProbe("10.0.0.1", 80), interval=2) != a


@pytest.mark.parametrize("table, message", [
    ({"type": "smtp"}, "type = 'smtp'"),
    ({"type": "tcp", "address": "web1", "port": 80}, "address = 'web1'"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 0}, "port = 0"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "interval": 0}, "interval = 0"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "interval": 1, "timeout": 2}, "timeout = 2"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "rise": 0}, "rise = 0"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "fall": 1.5}, "fall = 1.5"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "retries": -1}, "retries = -1"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "interval": "5s"}, "interval = '5s'"),
    ({"type": "tcp", "address": "10.0.0.1", "port": 80, "path": "/"}, "unknown key(s) for a tcp check: path"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "expect_status": [700]}, "expect_status"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "path": "health"}, "path = 'health'"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "body_regex": "(["}, "bad regular expression"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "body_digest": "xyz"}, "body_digest"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "sni": "a.test"}, "only with tls = true"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "method": "DELETE"}, "method = 'DELETE'"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "headers": {"X": "a\r\nB: c"}}, "headers"),
    ({"type": "udp", "address": "10.0.0.1", "port": 53, "payload_hex": "zz"}, "payload_hex = 'zz'"),
    ({"type": "udp", "address": "10.0.0.1", "port": 53, "payload": "a", "payload_hex": "00"}, "not both"),
    ({"type": "dns", "address": "10.0.0.1", "name": "a..b"}, "name = 'a..b'"),
    ({"type": "dns", "address": "10.0.0.1", "name": "a.b", "qtype": "AXFR"}, "qtype = 'AXFR'"),
    ({"type": "script", "argv": []}, "argv"),
    ({"type": "icmp", "address": "10.0.0.1", "payload_size": 4}, "payload_size = 4"),
    ({"type": "http", "address": "10.0.0.1", "port": 443, "tls": "yes"}, "tls = 'yes': true or false"),
    ({"type": "tcp", "address": "10.0.0.1", "port": "80"}, "port = '80': an integer"),
    ({"type": "http", "address": "10.0.0.1", "port": 80, "expect_status": ["200"]}, "a list of integers"),
    ({"type": "script", "argv": ["/bin/check", 3]}, "a list of strings"),
    ({"type": "dns", "address": "10.0.0.1", "name": "a.b", "expect": "10.0.0.1"}, "a list of strings"),
])
def test_bad_tables_are_refused_with_the_key_named(table, message):
    with pytest.raises(CheckConfigError) as err:
        check_from_mapping(table)
    assert message in str(err.value)


def test_host_header_defaults_to_the_address():
    assert HttpProbe("10.0.0.1", 80).host_header == "10.0.0.1"
    assert HttpProbe("fd00::1", 8443, tls=True).host_header == "[fd00::1]:8443"
    assert HttpProbe("10.0.0.1", 80, host="www.rs.test").host_header == "www.rs.test"
