"""DNS checks against dnsmasq, UDP checks against a UDP echo, and malformed
DNS replies: every one gives a failure with a reason, never an exception."""

import contextlib
import socket
import struct
import threading

import pytest
from health_servers import dnsmasq, free_port, run, udp_echo

from understudy.health import DnsProbe, UdpProbe, run_probe
from understudy.health.dns import DnsFormatError, encode_query, parse_reply

RECORDS = ("--host-record=www.rs.test,10.1.2.3,fd00::5", "--address=/gone.test/", "--cname=alias.rs.test,www.rs.test",
           "--mx-host=rs.test,mail.rs.test,10", "--txt-record=t.rs.test,v=ok")


def probe(cfg, timeout=2.0):
    return run(lambda: run_probe(cfg, timeout))


@pytest.fixture(scope="module")
def dns_port():
    with dnsmasq(*RECORDS) as port:
        yield port


@pytest.mark.parametrize("qtype, expect", [
    ("A", ("10.1.2.3",)), ("AAAA", ("fd00:0::5",)), ("A", ()), ("MX", ("10 mail.rs.test",)),
])
def test_dnsmasq_answers_as_expected(dns_port, qtype, expect):
    name = "rs.test" if qtype == "MX" else "www.rs.test"
    result = probe(DnsProbe("127.0.0.1", name, port=dns_port, qtype=qtype, expect=expect))
    assert result.ok and result.reason == "", result


def test_cname_txt_and_rcodes(dns_port):
    assert probe(DnsProbe("127.0.0.1", "alias.rs.test", port=dns_port, expect=("www.rs.test.", "10.1.2.3"))).ok
    assert probe(DnsProbe("127.0.0.1", "t.rs.test", port=dns_port, qtype="TXT", expect=("v=ok",))).ok
    missing = probe(DnsProbe("127.0.0.1", "www.rs.test", port=dns_port, expect=("10.9.9.9",)))
    assert (missing.ok, missing.reason) == (False, "answer mismatch (missing 10.9.9.9)")
    gone = probe(DnsProbe("127.0.0.1", "x.gone.test", port=dns_port))
    assert (gone.ok, gone.reason) == (False, "rcode NXDOMAIN, expected NOERROR")
    assert probe(DnsProbe("127.0.0.1", "x.gone.test", port=dns_port, expect_rcode="NXDOMAIN")).ok
    no_a = probe(DnsProbe("127.0.0.1", "rs.test", port=dns_port, qtype="AAAA"))
    assert not no_a.ok and no_a.reason in ("no AAAA answer", "rcode REFUSED, expected NOERROR")


def test_dns_over_ipv6_and_a_dead_server():
    with dnsmasq(*RECORDS, host="::1") as port:
        assert probe(DnsProbe("::1", "www.rs.test", port=port, expect=("10.1.2.3",))).ok
    dead = probe(DnsProbe("::1", "www.rs.test", port=port))
    assert (dead.ok, dead.reason) == (False, "port unreachable")


@contextlib.contextmanager
def canned_dns(make_reply):
    """A UDP server answering each query with make_reply(query) (a list of datagrams)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            for datagram in make_reply(query):
                sock.sendto(datagram, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def _reply(query, answers=b"", ancount=1, flags=0x8180, question=None):
    ident = query[:2]
    question = query[12:] if question is None else question
    return ident + struct.pack("!HHHHH", flags, 1, ancount, 0, 0) + question + answers


A_RR = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 1, 2, 3])


@pytest.mark.parametrize("make, reason", [
    (lambda q: [q[:2] + b"\x81"], "malformed reply: shorter than a DNS header"),
    (lambda q: [_reply(q, A_RR, flags=0x0100)], "malformed reply: not a response"),
    (lambda q: [_reply(q, A_RR, question=encode_query(0, "evil.test", 1)[12:])],
     "malformed reply: question does not match"),
    (lambda q: [_reply(q, struct.pack("!H", 0xC000 | len(q)) + A_RR[2:])],  # a name pointing at itself
     "malformed reply: compression loop"),
    (lambda q: [_reply(q, A_RR[:8])], "malformed reply: answer runs past the end"),
    (lambda q: [_reply(q, A_RR[:-1])], "malformed reply: answer data runs past the end"),
    (lambda q: [_reply(q, b"\x80" + A_RR[2:])], "malformed reply: bad label type"),
    (lambda q: [_reply(q, b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 5) + bytes(5))],
     "malformed reply: A record of 5 bytes"),
    (lambda q: [_reply(q, A_RR, ancount=300)], "malformed reply: name runs past the end"),
    (lambda q: [_reply(q, b"", ancount=0, flags=0x8382)], "rcode SERVFAIL, expected NOERROR"),
    (lambda q: [_reply(q, b"", ancount=0, flags=0x8380)], "truncated reply (TC) without answers"),
    (lambda q: [b"\x00\x00" + _reply(q, A_RR)[2:]] if q[:2] != b"\x00\x00" else [], "timeout (1 stray replies)"),
])
def test_malformed_dns_replies_fail_with_a_reason(make, reason):
    with canned_dns(make) as port:
        result = probe(DnsProbe("127.0.0.1", "www.rs.test", port=port), timeout=0.5)
    assert not result.ok and result.reason.startswith(reason), result


def test_a_stray_reply_then_the_real_one_is_up():
    with canned_dns(lambda q: [bytes([q[0] ^ 1]) + _reply(q, A_RR)[1:], _reply(q, A_RR)]) as port:
        assert probe(DnsProbe("127.0.0.1", "www.rs.test", port=port, expect=("10.1.2.3",))).ok


def test_every_cut_and_every_flipped_byte_of_a_real_reply_parses_or_is_refused(dns_port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(encode_query(7, "alias.rs.test", 1), ("127.0.0.1", dns_port))
        reply, _ = s.recvfrom(65535)
    assert {v for _, v in parse_reply(reply, "alias.rs.test", 1).answers} == {"www.rs.test", "10.1.2.3"}
    refused = 0
    variants = [reply[:n] for n in range(len(reply))]
    variants += [reply[:i] + bytes([reply[i] ^ bit]) + reply[i + 1:] for i in range(len(reply))
                 for bit in (0x01, 0x40, 0x80, 0xFF)]
    for data in variants:
        try:
            parse_reply(data, "alias.rs.test", 1)
        except DnsFormatError:
            refused += 1
    assert refused >= len(reply)  # every cut at least (flips of TTLs and addresses still parse)


def test_udp_reply_exact_regex_silence_and_port_unreachable():
    with udp_echo() as port:
        assert probe(UdpProbe("127.0.0.1", port, payload=b"ping", expect=b"ping")).ok
        assert probe(UdpProbe("127.0.0.1", port, payload=b"status ok 42", expect_regex=r"ok \d+$")).ok
        bad = probe(UdpProbe("127.0.0.1", port, payload=b"ping", expect=b"pong"))
        assert (bad.ok, bad.reason) == (False, "reply mismatch (4 bytes)")
    with udp_echo(transform=lambda b: b"") as port:  # replies with an empty datagram
        assert probe(UdpProbe("127.0.0.1", port, payload=b"x")).ok
        assert not probe(UdpProbe("127.0.0.1", port, payload=b"x", expect_regex="x")).ok
    with udp_echo(host="::1") as port:
        assert probe(UdpProbe("::1", port, payload=b"six", expect=b"six")).ok
    closed = free_port(socket.SOCK_DGRAM)
    unreachable = probe(UdpProbe("127.0.0.1", closed, payload=b"ping"))
    assert (unreachable.ok, unreachable.reason) == (False, "port unreachable")
    # No reply required: silence is up, an ICMP port unreachable is still down.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        silent = probe(UdpProbe("127.0.0.1", sink.getsockname()[1], payload=b"x", require_reply=False), 0.3)
        assert silent.ok
        assert probe(UdpProbe("127.0.0.1", sink.getsockname()[1], payload=b"x"), 0.3).reason == "timeout"
    assert not probe(UdpProbe("127.0.0.1", closed, payload=b"x", require_reply=False), 0.3).ok
