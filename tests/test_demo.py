"""The README's first command, as a test: the demo cluster in a real kernel
(two directors running `understudy run`, three real servers, a client) goes
through a real server's death, the primary director's death and its return,
and every connection on a live real server survives."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.uml


def test_demo_cluster_scenario_passes():
    out = subprocess.run([sys.executable, "-m", "understudy.demo.guest"], capture_output=True, text=True,
                         timeout=400)
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "==== PASS" in out.stdout
    assert "connections surviving failover    16/16" in out.stdout
