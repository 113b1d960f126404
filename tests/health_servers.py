"""Real servers for the health-check tests: HTTP(S) (the stdlib's http.server in a
thread), a raw TCP server that sends canned bytes, a UDP echo, dnsmasq, and a
self-signed certificate made by the openssl CLI."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

BODY = b"<html>all systems healthy</html>\n"


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run a test coroutine on uvloop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro_fn()

    return uvloop.run(bounded())


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path, name: str = "rs.test") -> tuple[Path, Path]:
    """A certificate for `name` and 127.0.0.1 and its key, made by the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HttpServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        # Checks hang up once they have what they need; that is not the server's error.
        with contextlib.suppress(OSError):
            super().handle()

    def _send(self, status: int, body: bytes, chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if chunked:
            for i in range(0, len(body), 7):
                part = body[i:i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 -- the stdlib's naming
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        if self.server.status != 200:
            return self._send(self.server.status, b"unavailable\n")
        if self.path == "/slow":
            time.sleep(2)
        if self.path == "/host":
            return self._send(200, f"host={self.headers.get('Host')}".encode())
        if self.path == "/big":
            return self._send(200, b"x" * 200_000)
        self._send(200, BODY, chunked=self.path == "/chunked")

    do_HEAD = do_GET
    do_POST = do_GET


class HttpServer(http.server.ThreadingHTTPServer):
    """http.server on 127.0.0.1 in a thread; `status` makes every page answer it."""

    daemon_threads = True
    requests: list[tuple[str, str, dict[str, str]]]
    status: int
    sni_seen: list[str | None]


@contextlib.contextmanager
def http_server(tls: tuple[Path, Path] | None = None) -> Iterator[HttpServer]:
    server = HttpServer(("127.0.0.1", 0), _Handler)
    server.requests, server.status, server.sni_seen = [], 200, []
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        ctx.sni_callback = lambda sock, name, c: server.sni_seen.append(name)  # type: ignore[assignment]
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.asynccontextmanager
async def canned_tcp(reply: bytes, *, close: bool = True):  # type: ignore[no-untyped-def]
    """A TCP server in this loop answering every connection with `reply` (after the request)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            if not close:
                await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.contextmanager
def udp_echo(host: str = "127.0.0.1", transform: Callable[[bytes], bytes] = lambda b: b) -> Iterator[int]:
    """A UDP echo server in a thread (replies transform(datagram)); yields its port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(transform(data), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@contextlib.contextmanager
def dnsmasq(*records: str, port: int | None = None, host: str = "127.0.0.1") -> Iterator[int]:
    """dnsmasq answering on host:port from `records` (dnsmasq options such as
    "--host-record=www.rs.test,10.1.2.3"), nothing else; yields the port."""
    port = port or free_port(socket.SOCK_DGRAM, host)
    proc = subprocess.Popen(
        ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--user=root",
         f"--listen-address={host}", "--bind-interfaces", f"--port={port}", "--pid-file", "--log-facility=-",
         *records],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_dns(host, port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def _wait_dns(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    from understudy.health.dns import encode_query

    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {proc.stdout.read() if proc.stdout else b''!r}")
            try:
                s.sendto(encode_query(1, "ready.invalid", 1), (host, port))
                s.recvfrom(512)
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError("dnsmasq did not answer")
