"""TCP and HTTP(S) checks against real servers: the stdlib's http.server (TLS with
a certificate made by openssl), and raw TCP servers for malformed replies."""

import hashlib
import socket

import pytest
from health_servers import BODY, canned_tcp, free_port, http_server, run, self_signed

from understudy.health import HttpProbe, TcpProbe, run_probe
from understudy.health import http as http_check
from understudy.health import tcp


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


def probe(cfg, timeout=2.0):
    return run(lambda: run_probe(cfg, timeout))


def test_tcp_up_refused_and_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = probe(TcpProbe("127.0.0.1", listener.getsockname()[1]))
    assert up.ok and up.reason == "" and up.latency < 2
    refused = probe(TcpProbe("127.0.0.1", free_port()))
    assert (refused.ok, refused.reason) == (False, "refused")
    refused6 = probe(TcpProbe("::1", free_port(host="::1")))
    assert (refused6.ok, refused6.reason) == (False, "refused")
    # A listener whose accept queue is full drops SYNs: the handshake never completes.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for f in fillers:
            f.setblocking(False)
            f.connect_ex(full.getsockname())
        lost = probe(TcpProbe("127.0.0.1", full.getsockname()[1]), timeout=0.3)
        for f in fillers:
            f.close()
    assert (lost.ok, lost.reason) == (False, "timeout") and 0.25 < lost.latency < 1.5


def test_tcp_probe_cancelled_midway_leaves_nothing_behind():
    import asyncio

    async def go():
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for f in fillers:
            f.setblocking(False)
            f.connect_ex(full.getsockname())
        task = asyncio.ensure_future(tcp.probe(TcpProbe("127.0.0.1", full.getsockname()[1]), 5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for f in [full, *fillers]:
            f.close()
        return True

    assert run(go)


def test_http_status_body_regex_and_digest():
    with http_server() as srv:
        port = srv.server_address[1]
        assert probe(HttpProbe("127.0.0.1", port, path="/ok", body_regex=r"healthy")).ok
        assert probe(HttpProbe("127.0.0.1", port, path="/chunked", body_regex=r"all systems healthy</html>")).ok
        assert probe(HttpProbe("127.0.0.1", port, body_digest=hashlib.md5(BODY).hexdigest())).ok
        assert probe(HttpProbe("127.0.0.1", port, path="/chunked", body_digest=hashlib.sha256(BODY).hexdigest())).ok
        assert probe(HttpProbe("127.0.0.1", port, method="HEAD")).ok
        assert probe(HttpProbe("127.0.0.1", port, method="POST")).ok
        assert probe(HttpProbe("127.0.0.1", port, body_regex="sick")).reason == "body mismatch"
        assert probe(HttpProbe("127.0.0.1", port, body_digest="0" * 64)).reason == "digest mismatch"
        big = probe(HttpProbe("127.0.0.1", port, path="/big", body_digest="0" * 64, max_body=1000))
        assert big.reason == "body larger than max_body (1000 bytes)"
        assert probe(HttpProbe("127.0.0.1", port, path="/big", body_regex="^x{1000}$", max_body=1000)).ok
        # The Host header: the address by default, the configured name otherwise.
        assert probe(HttpProbe("127.0.0.1", port, path="/host", body_regex=rf"host=127\.0\.0\.1:{port}$")).ok
        assert probe(HttpProbe("127.0.0.1", port, path="/host", host="www.rs.test",
                               body_regex=r"host=www\.rs\.test$")).ok
        assert all(h["Connection"] == "close" for _, _, h in srv.requests)
        srv.status = 503
        result = probe(HttpProbe("127.0.0.1", port))
        assert (result.ok, result.reason) == (False, "bad status 503")
        assert probe(HttpProbe("127.0.0.1", port, expect_status=(200, 503))).ok
        srv.status = 200
        slow = probe(HttpProbe("127.0.0.1", port, path="/slow"), timeout=0.3)
        assert (slow.ok, slow.reason) == (False, "timeout") and 0.25 < slow.latency < 1.5
    refused = probe(HttpProbe("127.0.0.1", port))
    assert refused.reason == "refused"


def test_https_verification_sni_and_host(cert):
    cert_file, _ = cert
    with http_server(tls=cert) as srv:
        port = srv.server_address[1]
        # Self-signed: refused when verifying against the system's CAs, accepted with it as CA or unverified.
        untrusted = probe(HttpProbe("127.0.0.1", port, tls=True))
        assert not untrusted.ok and untrusted.reason.startswith("TLS: certificate verify failed")
        assert probe(HttpProbe("127.0.0.1", port, tls=True, verify=False, body_regex="healthy")).ok
        assert probe(HttpProbe("127.0.0.1", port, tls=True, ca_file=str(cert_file))).ok  # IP in its SAN
        # SNI is what the server sees; the certificate is checked against it.
        srv.sni_seen.clear()
        assert probe(HttpProbe("127.0.0.1", port, tls=True, ca_file=str(cert_file), sni="rs.test",
                               host="www.rs.test", path="/host", body_regex=r"host=www\.rs\.test$")).ok
        assert srv.sni_seen == ["rs.test"]
        wrong = probe(HttpProbe("127.0.0.1", port, tls=True, ca_file=str(cert_file), sni="other.test"))
        assert not wrong.ok and "certificate verify failed" in wrong.reason
        # Plain HTTP to a TLS port is a failure with a reason, not an exception.
        plain = probe(HttpProbe("127.0.0.1", port))
        assert not plain.ok and plain.reason


@pytest.mark.parametrize("reply, reason", [
    (b"", "connection closed before status"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed status line"),
    (b"HTTP/1.1 2OO OK\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", "connection closed mid-header"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n", "header line too long"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "connection closed mid-body"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX", "malformed chunk end"),
    (b"HTTP/1.1 200 OK\r\n\r\nno framing, body until close: healthy? no", "body mismatch"),
])
def test_malformed_http_replies_fail_with_a_reason(reply, reason):
    async def go():
        async with canned_tcp(reply) as port:
            return await http_check.probe(HttpProbe("127.0.0.1", port, body_regex="healthy$"), 2.0)

    result = run(go)
    assert not result.ok and result.reason.startswith(reason), result


def test_a_server_that_never_finishes_times_out():
    async def go():
        async with canned_tcp(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=False) as port:
            return await http_check.probe(HttpProbe("127.0.0.1", port, body_regex="x"), 0.3)

    result = run(go)
    assert (result.ok, result.reason) == (False, "timeout")
