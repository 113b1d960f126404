"""Virtual IP takeover: addresses put on and taken off interfaces, announced
to the link (gratuitous ARP, unsolicited neighbour advertisements), and the
tracking of the interfaces they live on."""

from understudy.vip.manager import VipManager
from understudy.vip.model import AnnounceSettings, Vip, VipError, VipEvent
from understudy.vip.tracker import InterfaceTracker, LinkState

__all__ = ["AnnounceSettings", "InterfaceTracker", "LinkState", "Vip", "VipError", "VipEvent", "VipManager"]
