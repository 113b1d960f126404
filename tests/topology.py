"""Pieces of the small networks the real-kernel tests build inside a guest:
an echo real server, a client holding long-lived connections through a VIP,
links inside one host, switches, and a look at a kernel's connection table."""

import subprocess
import sys

from understudy.uml.topology import kernel_conns, local_pair, switch  # noqa: F401 (re-exported for tests)

ECHO_SERVER = """
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(128)
print("ready", flush=True)
def serve(c):
    while (data := c.recv(1024)):
        c.sendall(data)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = """
import socket, sys
conns = []
def exchange(c):
    try:
        c.sendall(b"ping"); return c.recv(10) == b"ping"
    except OSError:
        return False
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "open":
        for _ in range(int(arg[0])):
            c = socket.create_connection((arg[1], 80), timeout=3)
            for _ in range(5):  # a kernel master syncs a connection at its 3rd packet
                assert exchange(c)
            conns.append(c)
        print(len(conns), flush=True)
    elif cmd == "exchange":
        first, last = int(arg[0]), int(arg[1])
        print(sum(exchange(c) for c in conns[first:last]), flush=True)
"""


def echo_server(ns, port=8000):
    """A TCP echo server on `port` in `ns`, ready when this returns."""
    server = ns.popen(sys.executable, "-c", ECHO_SERVER, str(port))
    assert server.stdout.readline().strip() == "ready"
    return server


class Client:
    """A client in `ns` that opens and keeps TCP connections to `vip`:80."""

    def __init__(self, ns, vip="10.0.0.100"):
        self.vip = vip
        self.proc = subprocess.Popen(ns.argv(sys.executable, "-c", CLIENT), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def open(self, n):
        """Open `n` more connections (5 exchanges each); returns how many are open."""
        return self._ask(f"open {n} {self.vip}")

    def exchange(self, first, last):
        """One exchange on connections [first, last); returns how many answered."""
        return self._ask(f"exchange {first} {last}")

    def kill(self):
        self.proc.kill()
