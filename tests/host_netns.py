"""Network namespaces on the host itself (no guest), for tests that need no
IPVS: the `host_netns` fixture. Names carry the test process's pid, so runs
side by side do not collide; everything is deleted after the test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from understudy.uml.netns import NetnsFactory


@pytest.fixture
def host_netns() -> Iterator[NetnsFactory]:
    """Factory of host network namespaces (`lo` up) and veth links, like the guest's `netns`."""
    factory = NetnsFactory(prefix=f"us{os.getpid()}-")
    try:
        yield factory
    finally:
        factory.cleanup()
