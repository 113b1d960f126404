"""Run commands on a real Linux kernel with IPVS: User-Mode-Linux guests.

The machines' own kernel may lack IPVS; Debian's `user-mode-linux` kernel runs as an
ordinary process with the host filesystem as its root, so the project's virtualenv
runs inside it unchanged. `run()` boots one guest per call (about 3 s), loads the
IPVS modules, brings `lo` up and runs one command as root; `netns` helpers make
several "hosts" inside one guest. The pytest harness (tests/uml_plugin.py) and
`python -m understudy.uml` are built on these. See docs/testing-in-uml.md.
"""

from understudy.uml._runner import (
    DEFAULT_MODULES,
    GUEST_ENV,
    GuestResult,
    KernelInfo,
    UmlError,
    UmlUnavailable,
    find_kernel,
    run,
)
from understudy.uml.netns import Netns, NetnsFactory

__all__ = [
    "DEFAULT_MODULES",
    "GUEST_ENV",
    "GuestResult",
    "KernelInfo",
    "Netns",
    "NetnsFactory",
    "UmlError",
    "UmlUnavailable",
    "find_kernel",
    "in_guest",
    "run",
]


def in_guest() -> bool:
    """True when this process runs inside a guest started by `run()`."""
    import os

    return os.environ.get(GUEST_ENV) == "1"
