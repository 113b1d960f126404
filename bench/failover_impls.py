"""What the failover bench runs on each director: keepalived (the baseline)
and Understudy, behind one small launcher interface.

A launcher writes its config for every node of a `Layout`, and gives the
command that runs one node in the foreground; the bench runs it inside the
node's namespace in a process group of its own (so a SIGKILL of the group
takes every process of that node at once, as a crash would).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layout:
    """The addresses the bench gives a cluster of `nodes` directors."""

    nodes: int
    vip: str = "192.0.2.100"
    prefix: int = 24
    public_if: str = "eth0"  # the shared segment: VIP, clients, the observer
    heartbeat_if: str = "eth1"  # a link of the directors' own

    def public_addr(self, node: int) -> str:
        return f"192.0.2.{node + 1}"

    def heartbeat_addr(self, node: int) -> str:
        return f"198.51.100.{node + 1}"

    def mac(self, node: int) -> str:
        return f"02:00:00:00:00:{node + 1:02x}"


class Launcher:
    """One failover implementation at one heartbeat interval."""

    name = "?"
    #: Logged when a started node is up as a backup (None: only wait `settle_s`).
    backup_marker: str | None = None
    #: The thread that runs the heartbeat, by name, when it is not the whole process.
    heartbeat_thread: str | None = None

    def __init__(self, interval_ms: int, layout: Layout, workdir: Path, rt_priority: int | None = None):
        self.interval_ms = interval_ms
        self.layout = layout
        self.workdir = workdir
        self.rt_priority = rt_priority

    def unavailable(self) -> str | None:
        """Why this implementation cannot run here, or None."""
        return None

    def write_configs(self) -> None:
        raise NotImplementedError

    def before_start(self, node: int) -> None:
        """Tidy what a killed instance of `node` left behind (as a reboot would)."""

    def command(self, node: int) -> list[str]:
        raise NotImplementedError

    @property
    def dead_ms(self) -> float:
        """How long a backup waits for a silent primary (the expected failover time)."""
        raise NotImplementedError

    @property
    def settle_s(self) -> float:
        """After a node starts, how long until it surely heard the primary and stays backup."""
        return 2 * self.dead_ms / 1000 + 0.3


class Keepalived(Launcher):
    """keepalived's VRRP (VRRPv3, Debian's keepalived), every node started as BACKUP
    with `nopreempt`, so a restarted node never takes the VIP back.

    VRRPv3 has no authentication (RFC 5798 dropped it), so unlike Understudy's
    HMAC-signed heartbeats these adverts are unauthenticated."""

    name = "keepalived"
    backup_marker = "Entering BACKUP STATE"
    priority = 100

    def unavailable(self) -> str | None:
        try:
            subprocess.run(["keepalived", "--version"], capture_output=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError) as e:
            return f"keepalived --version failed: {e}"
        return None

    def config_path(self, node: int) -> Path:
        return self.workdir / f"keepalived-{node}.conf"

    def config(self, node: int) -> str:
        lay = self.layout
        rt = f"    vrrp_rt_priority {self.rt_priority}\n" if self.rt_priority else ""
        return (
            "global_defs {\n"
            f"    router_id bench{node}\n"
            "    vrrp_version 3\n"
            # The first gratuitous ARPs go out on the transition itself (5 at once,
            # no gap); no second burst 5 s later to confuse the next run.
            "    vrrp_garp_master_repeat 5\n"
            "    vrrp_garp_master_delay 0\n"
            f"{rt}"
            "}\n"
            "vrrp_instance bench {\n"
            "    state BACKUP\n"
            "    nopreempt\n"
            f"    interface {lay.public_if}\n"
            "    virtual_router_id 51\n"
            f"    priority {self.priority}\n"
            f"    advert_int {self.interval_ms / 1000:g}\n"
            "    virtual_ipaddress {\n"
            f"        {lay.vip}/{lay.prefix} dev {lay.public_if}\n"
            "    }\n"
            "}\n"
        )

    def write_configs(self) -> None:
        for node in range(self.layout.nodes):
            self.config_path(node).write_text(self.config(node))

    def pid_files(self, node: int) -> tuple[Path, Path]:
        run = self.workdir / f"keepalived-{node}"
        return Path(f"{run}.pid"), Path(f"{run}-vrrp.pid")

    def before_start(self, node: int) -> None:
        # A killed keepalived leaves its pid files, and refuses to start beside them.
        for path in self.pid_files(node):
            path.unlink(missing_ok=True)

    def command(self, node: int) -> list[str]:
        pid, vrrp_pid = self.pid_files(node)
        return [
            "keepalived", "--dont-fork", "--log-console", "--no-syslog", "--vrrp",
            "--use-file", str(self.config_path(node)),
            "--pid", str(pid), "--vrrp_pid", str(vrrp_pid),
        ]

    @property
    def dead_ms(self) -> float:
        # RFC 5798 Master_Down_Interval: 3 adverts + skew ((256 - priority) / 256 of one).
        return self.interval_ms * (3 + (256 - self.priority) / 256)


class Understudy(Launcher):
    """`understudy failover run --config FILE --node N`, one heartbeat path
    (unicast on the directors' own link), the VIP on the shared segment.

    dead_ms is 3 intervals (`dead_factor`), as VRRP's 3 adverts, so the two
    compare at the same interval; warn_ms 2 intervals (at most dead_ms); the initial dead time is
    the reader's default (2 × dead_ms), cut short once every peer was heard."""

    name = "understudy"
    backup_marker = "-> backup"  # the daemon's "role init -> backup: ..." line
    heartbeat_thread = "us-heartbeat"  # the engine's own thread (core/src/heartbeat/engine.rs)
    dead_factor = 3.0  # --dead-factor

    def __init__(self, interval_ms: int, layout: Layout, workdir: Path, rt_priority: int | None = None):
        super().__init__(interval_ms, layout, workdir, rt_priority)
        self.key = secrets.token_hex(32)
        self.exe = REPO / ".venv" / "bin" / "understudy"

    def unavailable(self) -> str | None:
        try:
            done = subprocess.run([str(self.exe), "failover", "run", "--help"], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            return f"`{self.exe} failover run --help` failed: {e}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            return f"`understudy failover run --help` exited {done.returncode}: {last}"
        return None

    def config_path(self, node: int) -> Path:
        return self.workdir / f"understudy-{node}.toml"

    def config(self, node: int) -> str:
        """One file per node: the same cluster, but each node its own admin socket
        (the namespaces share one file system)."""
        lay = self.layout
        lines = [
            f"node = {node}",
            "",
            "[cluster]",
            "id = 1",
            f'key = "{self.key}"',
            f"interval_ms = {self.interval_ms}",
            f"warn_ms = {min(2 * self.interval_ms, round(self.dead_ms))}",
            f"dead_ms = {round(self.dead_ms)}",
            "auto_failback = false",
            # Incarnation counters (one file per node) stay in the bench's directory.
            f'state_dir = "{self.workdir}"',
        ]
        if self.rt_priority:
            lines.append(f"rt_priority = {self.rt_priority}")
        lines += ["", "[[cluster.path]]", 'name = "hb"', 'type = "unicast"', f'interface = "{lay.heartbeat_if}"']
        for n in range(lay.nodes):
            lines += ["", "[[cluster.node]]", f"id = {n}", "priority = 100",
                      f'addresses = {{ hb = "{lay.heartbeat_addr(n)}" }}']
        lines += ["", "[[vip]]", f'address = "{lay.vip}/{lay.prefix}"', f'interface = "{lay.public_if}"',
                  "", "[announce]", "repeat = 5", "interval = 0.2",
                  "", "[admin]", f'socket = "{self.workdir / f"admin-{node}.sock"}"', ""]
        return "\n".join(lines)

    def write_configs(self) -> None:
        for node in range(self.layout.nodes):
            path = self.config_path(node)
            path.write_text(self.config(node))
            path.chmod(0o600)  # it holds the key

    def before_start(self, node: int) -> None:
        (self.workdir / f"admin-{node}.sock").unlink(missing_ok=True)

    def command(self, node: int) -> list[str]:
        return [str(self.exe), "failover", "run", "--config", str(self.config_path(node)), "--node", str(node)]

    @property
    def dead_ms(self) -> float:
        return float(max(self.interval_ms, round(self.dead_factor * self.interval_ms)))


IMPLEMENTATIONS: dict[str, type[Launcher]] = {"keepalived": Keepalived, "understudy": Understudy}
