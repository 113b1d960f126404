"""The failover bench's own checks: its configs are accepted by the programs
that read them, and a short measurement of each implementation runs end to
end in real namespaces and leaves none behind."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from failover_impls import Keepalived, Layout, Understudy  # noqa: E402

from understudy.config import load_config  # noqa: E402


@pytest.mark.parametrize("interval", [1000, 10])
def test_keepalived_accepts_the_generated_config(tmp_path: Path, interval: int) -> None:
    launcher = Keepalived(interval, Layout(3), tmp_path)
    launcher.write_configs()
    for node in range(3):
        text = launcher.config_path(node).read_text()
        assert "vrrp_version 3" in text and "nopreempt" in text and f"advert_int {interval / 1000:g}" in text
        done = subprocess.run(["keepalived", "--config-test", "--use-file", str(launcher.config_path(node))],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def test_understudy_config_loads_for_every_node(tmp_path: Path) -> None:
    launcher = Understudy(2, Layout(3), tmp_path)
    launcher.write_configs()
    sockets = set()
    for node in range(3):
        config = load_config(launcher.config_path(node), node)
        assert config.cluster is not None
        assert (config.cluster.node, config.cluster.interval_ms, config.cluster.dead_ms) == (node, 2, 6)
        assert str(config.cluster.vips[0].address) == "192.0.2.100/24" and not config.cluster.auto_failback
        assert [n.addresses["hb"].packed[-1] for n in config.cluster.nodes] == [1, 2, 3]
        sockets.add(config.admin.socket)
        assert launcher.config_path(node).stat().st_mode & 0o077 == 0  # the key is in it
    assert len(sockets) == 3


def bench(tmp_path: Path, impl: str) -> tuple[dict, str]:
    """Two kills at a 10 ms interval, and no namespace left: the result and the printed table."""
    out = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, str(BENCH / "failover_bench.py"), "--impl", impl,
                             "--interval", "10", "--runs", "2", "--cpu-window", "1", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()  # a no-op once it has exited
    assert proc.returncode == 0, stderr
    [result] = json.loads(out.read_text())
    assert result["error"] is None and result["skipped"] is None, stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"fbench{proc.pid}-" not in left
    return result, stdout


def test_bench_times_a_keepalived_failover_and_cleans_up(tmp_path: Path) -> None:
    result, stdout = bench(tmp_path, "keepalived")
    # VRRP's Master_Down_Interval at 10 ms adverts is 36 ms: a backup cannot take over sooner than
    # 2.6 adverts after the kill, and a busy machine may delay it, but not by a second.
    assert len(result["garp_ms"]) == 2 and all(20 < t < 1000 for t in result["garp_ms"]), result
    # (No claim on false failovers: keepalived at 10 ms has them on a loaded machine; they are a figure.)
    assert len(result["addr_ms"]) == 2 and result["cpu_primary"] is not None
    assert "| keepalived | 10 ms | 2 |" in stdout


def test_bench_times_an_understudy_failover(tmp_path: Path) -> None:
    result, stdout = bench(tmp_path, "understudy")
    # dead_ms is 30 ms at a 10 ms interval: no takeover before 20 ms (2 intervals after the kill).
    assert len(result["garp_ms"]) == 2 and all(20 < t < 1000 for t in result["garp_ms"]), result
    assert result["thread_cpu"] is not None and result["thread_cpu"][0] <= result["cpu_primary"]
    assert "| understudy | 10 ms | 2 |" in stdout
