"""Health checks for real servers: one checker per module, a monitor that schedules them.

`Monitor` runs `Check`s (model.py) and calls watchers back with `StateChange`s;
each checker module (tcp, http, icmp, udp, dns, script) has
`async def probe(cfg, timeout) -> Result`.
"""

from understudy.health.model import (Check, CheckConfigError, DnsProbe, HttpProbe, IcmpProbe, Probe, ScriptProbe,
                                     TcpProbe, UdpProbe, check_from_mapping)
from understudy.health.monitor import CheckStatus, Lateness, Monitor, StateChange, Watch, run_probe
from understudy.health.result import Result

__all__ = [
    "Check",
    "CheckConfigError",
    "CheckStatus",
    "DnsProbe",
    "HttpProbe",
    "IcmpProbe",
    "Lateness",
    "Monitor",
    "Probe",
    "Result",
    "ScriptProbe",
    "StateChange",
    "TcpProbe",
    "UdpProbe",
    "Watch",
    "check_from_mapping",
    "run_probe",
]
