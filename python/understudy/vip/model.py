"""What a VIP is, how it is announced, and what the manager reports."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from understudy._core import NetifError


class VipError(Exception):
    """VIPs that could not be taken or given up, each with the reason (naming
    the interface or address)."""

    def __init__(self, failures: list[tuple[Vip, NetifError]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{vip}: {err.strerror or err}" for vip, err in failures))


@dataclass(frozen=True, order=True)
class Vip:
    """One virtual address: `address/prefix_len` on `interface`, with an
    optional IPv4 label (which must start with the interface name)."""

    address: str
    prefix_len: int
    interface: str
    label: str | None = None

    @classmethod
    def parse(cls, text: str, interface: str, label: str | None = None) -> Vip:
        """`Vip.parse("10.0.0.100/24", "eth0")`; without a prefix, a host address (/32 or /128)."""
        iface = ipaddress.ip_interface(text)
        return cls(str(iface.ip), iface.network.prefixlen, interface, label)

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix_len} on {self.interface}"


@dataclass(frozen=True)
class AnnounceSettings:
    """How a taken-over VIP is announced.

    Defaults follow keepalived's (5 announcements, no periodic refresh) but
    space the burst 1 s apart rather than back-to-back, so one lost frame or a
    switch still learning the port does not lose the whole burst.
    """

    #: Announcements sent right after the addresses are added.
    repeat: int = 5
    #: Seconds between them.
    interval: float = 1.0
    #: Seconds between refresh announcements while held; 0 disables (keepalived's garp_master_refresh).
    refresh: float = 0.0
    #: Also send the ARP reply form (some old routers only learn from replies; `arping -A`).
    arp_reply: bool = False
    #: Router flag of neighbour advertisements; None reads the interface's IPv6 forwarding sysctl.
    router: bool | None = None

    def __post_init__(self) -> None:
        if self.repeat < 0 or self.interval < 0 or self.refresh < 0:
            raise ValueError("repeat, interval and refresh must not be negative")


EventKind = Literal["added", "present", "removed", "absent", "announced", "error"]


@dataclass(frozen=True)
class VipEvent:
    """Something the manager did: added (or found present), removed (or found
    absent), announced (one round over every held VIP), or an error."""

    kind: EventKind
    vip: Vip | None = None
    detail: str = ""
    frames: int = field(default=0)
