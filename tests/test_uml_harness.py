"""The UML harness against the real kernel: IPVS is there and per namespace, veth links
carry traffic, failures inside a guest reach the host with their output and kernel
log, unmarked tests stay on the host, and the runner reports status, streams and
timeouts. The uml tests of this module share one guest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import shutil
import threading
from pathlib import Path

import pytest

from understudy.uml import GUEST_ENV, GuestResult, NetnsFactory, UmlUnavailable, in_guest, run

TESTS_DIR = Path(__file__).resolve().parent


def booted_on_hostfs() -> bool:
    return "rootfstype=hostfs" in Path("/proc/cmdline").read_text()


# ---------------------------------------------------------------- inside the guest


@pytest.mark.uml
def test_guest_kernel_has_ipvs() -> None:
    assert in_guest() and booted_on_hostfs() and os.geteuid() == 0
    assert Path("/proc/net/ip_vs").exists()
    subprocess.run(["ipvsadm", "-A", "-t", "10.0.0.1:80", "-s", "rr"], check=True)
    try:
        listing = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, check=True).stdout
        assert "TCP  10.0.0.1:80 rr" in listing
    finally:
        subprocess.run(["ipvsadm", "-C"], check=True)


@pytest.mark.uml
def test_ipvs_table_is_per_namespace(netns: NetnsFactory) -> None:
    a, b = netns("a"), netns("b")
    a.run("ipvsadm", "-A", "-t", "10.0.0.1:80", "-s", "rr")
    # An IPv4 real server needs lo up in that namespace (EINVAL otherwise): the factory did it.
    a.run("ipvsadm", "-a", "-t", "10.0.0.1:80", "-r", "10.0.1.1:80", "-m")
    assert "10.0.1.1:80" in a.run("ipvsadm", "-Ln").stdout
    assert "10.0.0.1:80" not in b.run("ipvsadm", "-Ln").stdout
    # The same seen through /proc by a thread moved into each namespace.
    with a.entered():
        assert "0A000001:0050 rr" in Path("/proc/thread-self/net/ip_vs").read_text()
    with b.entered():
        assert "0A000001" not in Path("/proc/thread-self/net/ip_vs").read_text()


@pytest.mark.uml
def test_veth_pair_carries_tcp(netns: NetnsFactory) -> None:
    a, b = netns("a"), netns("b")
    assert netns.veth(a, b, ["10.1.0.1/24", "fd00::1/64"], ["10.1.0.2/24", "fd00::2/64"]) == ("eth0", "eth0")
    pairs = ((socket.AF_INET, "10.1.0.2", "10.1.0.1"), (socket.AF_INET6, "fd00::2", "fd00::1"))
    for family, server_addr, client_addr in pairs:
        with b.entered():
            server = socket.create_server((server_addr, 8080), family=family)
        with a.entered():
            client = socket.create_connection((server_addr, 8080), timeout=5)
        with server, client:
            conn, peer = server.accept()
            with conn:
                assert peer[0] == client_addr
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
    assert "eth0" in b.run("ip", "-br", "link").stdout


# ---------------------------------------------------------------- on the host


def test_unmarked_test_runs_on_the_host() -> None:
    assert not in_guest()
    assert not booted_on_hostfs()


GENERATED_CONFTEST = """
import sys
sys.path.insert(0, {tests_dir!r})
pytest_plugins = ["uml_plugin"]


def pytest_configure(config):
    config.addinivalue_line("markers", "uml: run in a UML guest")
"""

GENERATED_TESTS = """
import subprocess
import pytest


@pytest.mark.uml
def test_fails_inside():
    subprocess.run(["ipvsadm", "-A", "-t", "10.9.9.9:99", "-s", "rr"], check=True)
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write("generated-test: a line in the guest kernel log\\n")
    print("generated-test: guest stdout")
    services = open("/proc/net/ip_vs").read()
    assert services.count("0A090909") == 2, "deliberate failure inside the guest"


@pytest.mark.uml
def test_passes_inside():
    assert "rootfstype=hostfs" in open("/proc/cmdline").read()


@pytest.mark.uml
def test_skips_inside():
    pytest.skip("generated-test: skipped inside")


def test_on_host():
    assert "rootfstype=hostfs" not in open("/proc/cmdline").read()
"""


def run_generated(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(GENERATED_CONFTEST.format(tests_dir=str(TESTS_DIR)))
    (tmp_path / "test_generated.py").write_text(GENERATED_TESTS)
    full_env = {k: v for k, v in os.environ.items() if k not in (GUEST_ENV, "PYTEST_ADDOPTS")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--rootdir", str(tmp_path), *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_failure_inside_guest_is_reported_on_host(tmp_path: Path) -> None:
    result = run_generated(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 2 passed, 1 skipped" in out
    failure = out[out.index("test_fails_inside ___") : out.index("short test summary")]
    assert "deliberate failure inside the guest" in failure  # the assertion, from inside
    assert "failed inside the guest: AssertionError: deliberate failure" in failure
    assert "Captured stdout (guest) call" in failure and "generated-test: guest stdout" in failure
    assert "--- guest kernel log" in failure  # the kernel log excerpt, up to the test's end
    assert "generated-test: a line in the guest kernel log" in failure
    assert "IPVS: ipvs loaded" in out or "understudy-test: start" in failure
    assert "test_generated.py:23: generated-test: skipped inside" in out  # skip at its own location
    assert "uml guests" in out and "boot" in out


def test_unbootable_guest_fails_every_uml_test(tmp_path: Path) -> None:
    result = run_generated(tmp_path, "-k", "passes or skips or on_host", UNDERSTUDY_UML_KERNEL="/nonexistent/linux.uml")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 failed, 1 passed" in out
    assert out.count("no UML kernel at /nonexistent/linux.uml") >= 2


def test_runner_status_streams_timeout_and_cleanup(tmp_path: Path) -> None:
    results: dict[str, GuestResult | BaseException] = {}

    def boot(name: str, command: list[str], timeout: float, keep: bool) -> None:
        try:
            results[name] = run(
                command,
                cwd=tmp_path,
                env={"PATH": os.environ["PATH"], "MARK": "a b"},
                timeout=timeout,
                tmpdir=tmp_path,
                modules=("ip_vs",),
                keep=keep,
            )
        except BaseException as exc:  # reported below, on the test's thread
            results[name] = exc

    script = 'pwd; echo "$MARK"; echo err >&2; echo runner-test: kmsg > /dev/kmsg; exit 3'
    # Two guests at once: one exits 3, one hangs and is killed after 2 s of command time.
    threads = [
        threading.Thread(target=boot, args=("exit", ["sh", "-c", script], 120.0, True)),
        threading.Thread(target=boot, args=("hang", ["sh", "-c", "echo started; exec sleep 600"], 2.0, False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done, hung = results["exit"], results["hang"]
    assert isinstance(done, GuestResult), done
    assert isinstance(hung, GuestResult), hung
    assert done.returncode == 3 and not done.timed_out
    assert done.stdout == f"{tmp_path}\na b\n" and done.stderr == "err\n"
    assert "runner-test: kmsg" in done.dmesg and "IPVS" in done.dmesg
    assert 0.5 < done.boot_seconds < 60
    print(f"boot {done.boot_seconds:.2f} s, command {done.command_seconds:.2f} s, total {done.total_seconds:.2f} s")
    assert hung.timed_out and hung.returncode is None and hung.stdout == "started\n"
    assert 1.9 < hung.command_seconds < 10
    # keep=True keeps the run directory; otherwise nothing is left behind: run
    # directories, ~/.uml entries, guest processes.
    assert done.workdir is not None and done.workdir.parent == tmp_path
    assert {"init.sh", "status", "dmesg"} <= {p.name for p in done.workdir.iterdir()}
    shutil.rmtree(done.workdir)
    assert list(tmp_path.iterdir()) == []
    for r in (done, hung):
        assert not (Path.home() / ".uml" / r.umid).exists()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert f"umid={r.umid}".encode() not in cmdline.read_bytes()
            except OSError:
                pass


def test_runner_names_what_is_missing() -> None:
    with pytest.raises(UmlUnavailable, match="no UML kernel at /nonexistent/linux.uml"):
        run(["true"], kernel="/nonexistent/linux.uml")
    with pytest.raises(UmlUnavailable, match="modules not in .*: no_such_module"):
        run(["true"], modules=("ip_vs", "no_such_module"))
