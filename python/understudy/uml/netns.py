"""Network namespaces as separate "hosts" inside one guest.

IPVS state (services, real servers, sync daemons) is per network namespace, so one
guest holds several directors and clients. These helpers shell out to `ip` (iproute2);
they change the machine they run on, so use them inside a guest (or a disposable VM).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Netns", "NetnsFactory"]

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/run/netns")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class Netns:
    """One named network namespace (`ip netns add NAME`), with `lo` up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.interfaces: list[str] = []
        self._procs: list[subprocess.Popen[str]] = []

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @property
    def path(self) -> Path:
        """The namespace's handle: open it and setns(2) to enter."""
        return _NETNS_DIR / self.name

    def argv(self, *command: str) -> list[str]:
        """`command` prefixed to run in this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(
        self,
        *command: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` in this namespace; output is captured as text.

        With `check`, a non-zero status raises AssertionError showing the output, so
        a failing step reads well in a test report.
        """
        result = subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(
                f"[{self.name}] {' '.join(command)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def popen(
        self, *command: str, stdout: int | None = subprocess.PIPE, stderr: int | None = subprocess.PIPE
    ) -> subprocess.Popen[str]:
        """Start `command` in this namespace in the background; killed at cleanup."""
        proc = subprocess.Popen(self.argv(*command), stdout=stdout, stderr=stderr, text=True)
        self._procs.append(proc)
        return proc

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into this namespace for the block.

        Sockets opened in the block (netlink to IPVS, TCP, UDP multicast) stay in this
        namespace after it. Only this thread moves; /proc/thread-self/net shows it.
        """
        target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(target)
            raise
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def stop_processes(self) -> None:
        """Kill what `popen` started, then anything else still running in the namespace."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        self._procs.clear()
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30)
        for word in pids.stdout.split():
            try:
                os.kill(int(word), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass


class NetnsFactory:
    """Creates namespaces and veth links, and removes them all in `cleanup()`.

    >>> a, b = netns("a"), netns("b")
    >>> netns.veth(a, b, "10.0.0.1/24", "10.0.0.2/24")
    ('eth0', 'eth0')
    >>> a.run("ipvsadm", "-A", "-t", "10.0.0.1:80", "-s", "rr")
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.namespaces: list[Netns] = []

    def __call__(self, name: str | None = None) -> Netns:
        """A new namespace called `prefix + name` (default: ns0, ns1, …) with `lo` up."""
        ns = Netns(self.prefix + (name if name is not None else f"ns{len(self.namespaces)}"))
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        _ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def veth(
        self,
        a: Netns,
        b: Netns,
        addr_a: str | Sequence[str] = (),
        addr_b: str | Sequence[str] = (),
        *,
        name_a: str | None = None,
        name_b: str | None = None,
    ) -> tuple[str, str]:
        """Link `a` and `b` with a veth pair, set the addresses (CIDR), bring both ends up.

        Each end is named eth<N> by default, N counting that namespace's links. IPv6
        addresses skip duplicate address detection, so they are usable at once.
        Returns the two interface names.
        """
        name_a = name_a or f"eth{len(a.interfaces)}"
        name_b = name_b or f"eth{len(b.interfaces)}"
        _ip("link", "add", name_a, "netns", a.name, "type", "veth", "peer", "name", name_b, "netns", b.name)
        a.interfaces.append(name_a)
        b.interfaces.append(name_b)
        for ns, dev, addrs in ((a, name_a, addr_a), (b, name_b, addr_b)):
            for addr in [addrs] if isinstance(addrs, str) else list(addrs):
                extra = ["nodad"] if ipaddress.ip_interface(addr).version == 6 else []
                _ip("-n", ns.name, "addr", "add", addr, "dev", dev, *extra)
            _ip("-n", ns.name, "link", "set", dev, "up")
        return name_a, name_b

    def cleanup(self) -> None:
        """Stop the namespaces' processes and delete them (their veths go with them)."""
        errors: list[str] = []
        for ns in reversed(self.namespaces):
            try:
                ns.stop_processes()
                _ip("netns", "del", ns.name)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{ns.name}: {exc}")
        self.namespaces.clear()
        if errors:
            raise RuntimeError("netns cleanup failed: " + "; ".join(errors))
