"""External script checks: exit status, dynamic weight, timeouts that kill the whole group."""

import os
import time

from health_servers import run

from understudy.health import ScriptProbe, run_probe


def probe(argv, timeout=5.0, dynamic=False):
    return run(lambda: run_probe(ScriptProbe(tuple(argv), dynamic_weight=dynamic), timeout))


def sh(script, **kw):
    return probe(["sh", "-c", script], **kw)


def test_exit_status_decides():
    assert sh("exit 0").ok
    down = sh("echo 'db replica lagging 40 s' >&2; exit 1")
    assert (down.ok, down.reason) == (False, "exit status 1: db replica lagging 40 s")
    assert sh("exit 3").reason == "exit status 3"
    assert sh("kill -9 $$").reason == "killed by signal 9"
    missing = probe(["/nonexistent/check"])
    assert not missing.ok and missing.reason.startswith("cannot run /nonexistent/check")


def test_dynamic_weight_from_the_exit_status():
    assert (sh("exit 0", dynamic=True).ok, sh("exit 0", dynamic=True).weight) == (True, None)
    assert (sh("exit 1", dynamic=True).ok, sh("exit 1", dynamic=True).weight) == (False, None)
    seven = sh("exit 7", dynamic=True)
    assert (seven.ok, seven.weight) == (True, 5)
    assert sh("exit 2", dynamic=True).weight == 0
    assert sh("exit 255", dynamic=True).weight == 253
    assert not sh("exit 7").ok  # without dynamic weight, any non-zero status is down


def test_timeout_kills_the_process_group(tmp_path):
    pids = tmp_path / "pids"
    start = time.monotonic()
    result = sh(f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; sleep 60", timeout=0.5)
    assert (result.ok, result.reason) == (False, "timeout (killed)")
    assert time.monotonic() - start < 5
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"process {pid} of the timed-out script is still alive")


def test_a_chatty_script_does_not_block_and_a_lingering_child_does_not_hold_the_check(tmp_path):
    start = time.monotonic()
    assert sh("head -c 5000000 /dev/zero | tr '\\0' x; exit 0").ok
    pid_file = tmp_path / "child"
    lingering = sh(f"sleep 30 & echo $! > {pid_file}; exit 0")  # the child keeps the output pipe open
    os.kill(int(pid_file.read_text()), 9)
    assert lingering.ok and lingering.latency < 1
    assert time.monotonic() - start < 10
