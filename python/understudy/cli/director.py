"""The daemon and its runtime admin: `understudy run`, `check-config`, `status`,
`server`, `reload`, `events`.

Everything but `run` and `check-config` talks to a running daemon through its
root-only admin socket (`--socket`, default /run/understudy/admin.sock).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from understudy.admin import DEFAULT_SOCKET, AdminError, request, stream
from understudy.cli.common import EXIT_OK, EXIT_USAGE, Subparsers, fail
from understudy.config import ConfigError, load_config

EXIT_FAILED = 1


def _socket_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=str(DEFAULT_SOCKET), metavar="PATH",
                   help=f"the daemon's admin socket ({DEFAULT_SOCKET})")


def register(subparsers: Subparsers) -> None:
    run = subparsers.add_parser("run", help="run the director daemon (health checks, IPVS, sync, failover)",
                                description="Run every subsystem of this director from a config file.")
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="the TOML config")
    run.add_argument("--node", type=int, metavar="ID", help="which cluster node this is (else `node =` in FILE)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-format", default="text", choices=("text", "json"),
                     help="json: one object per line (time, level, logger, message) for log shippers")
    run.set_defaults(handler=_run)

    check = subparsers.add_parser("check-config", help="validate a config file and print what it means",
                                  description="Parse FILE; on error print file:line: key: why and exit 2.")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--node", type=int, metavar="ID")
    check.add_argument("--json", action="store_true", help="print the parsed config summary as JSON")
    check.set_defaults(handler=_check)

    status = subparsers.add_parser("status", help="cluster, VIPs, services, servers and sync of the running daemon")
    status.add_argument("--json", action="store_true")
    _socket_arg(status)
    status.set_defaults(handler=_status)

    server = subparsers.add_parser(
        "server", help="add, remove, drain or enable a real server at runtime",
        description="Change a real server of a virtual service without a restart. `drain` sets its weight "
        "to 0: existing connections stay, no new ones come; `enable` undoes it.")
    server.add_argument("action", choices=("add", "remove", "drain", "enable"))
    server.add_argument("service", help="service name (or as printed, e.g. 'tcp 192.0.2.10:80')")
    server.add_argument("server", metavar="ADDRESS[:PORT]")
    server.add_argument("--weight", type=int, default=1, help="weight when healthy (add)")
    server.add_argument("--forward", choices=("masq", "route", "tunnel"), help="forwarding method (add)")
    _socket_arg(server)
    server.set_defaults(handler=_server)

    reload = subparsers.add_parser("reload", help="apply the config file's changes without a restart")
    _socket_arg(reload)
    reload.set_defaults(handler=_reload)

    events = subparsers.add_parser("events", help="follow the daemon's events (JSON lines)")
    events.add_argument("--recent", action="store_true", help="start with the last events")
    _socket_arg(events)
    events.set_defaults(handler=_events)


class JsonLines(logging.Formatter):
    """One JSON object per record: structured logs for journald/Loki/ELK."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def load_for_run(args: argparse.Namespace) -> Any:
    """Logging set up, then the config of `--config`/`--node`; None (after the error) if it is bad."""
    setup_logging(args.log_level, args.log_format)
    try:
        return load_config(args.config, args.node)
    except ConfigError as e:
        fail(str(e))
        return None


def _run(args: argparse.Namespace) -> int:
    config = load_for_run(args)
    return EXIT_USAGE if config is None else run_daemon(config)


def run_daemon(config: Any) -> int:
    """Run the daemon on uvloop until SIGTERM/SIGINT; a subsystem that cannot start is a clean error."""
    import uvloop

    from understudy.director.daemon import serve

    try:
        uvloop.run(serve(config))
    except OSError as e:
        print(f"understudy: error: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as e:  # a setting only a subsystem could check
        print(f"understudy: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, args.node)
    except ConfigError as e:
        return fail(str(e))
    summary: dict[str, Any] = {
        "services": [{"name": s.name, "virtual": str(s.service), "servers": len(s.servers)} for s in config.services],
        "sync": config.sync.mode,
    }
    if config.cluster is not None:
        c = config.cluster
        summary["cluster"] = {"id": c.id, "node": c.node, "nodes": [n.id for n in c.nodes],
                              "paths": [f"{p.name} ({p.kind})" for p in c.paths],
                              "vips": [str(v.address) for v in c.vips]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.file}: ok")
        if "cluster" in summary:
            cl = summary["cluster"]
            print(f"  cluster {cl['id']}: node {cl['node']} of {cl['nodes']}; paths {', '.join(cl['paths'])}; "
                  f"vips {', '.join(cl['vips']) or 'none'}")
        for s in summary["services"]:
            print(f"  service {s['name']} ({s['virtual']}): {s['servers']} real servers")
        print(f"  sync: {summary['sync']}")
    return EXIT_OK


def admin_command(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that talks to the daemon: its refusal is a one-line error, exit 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except AdminError as e:
            print(f"understudy: error: {e}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _ask(args: argparse.Namespace, command: str, payload: dict[str, Any] | None = None) -> Any:
    return request(args.socket, command, payload)


@admin_command
def _status(args: argparse.Namespace) -> int:
    s = _ask(args, "status")
    if args.json:
        print(json.dumps(s, indent=2))
        return EXIT_OK
    print(format_status(s))
    return EXIT_OK


def format_status(s: dict[str, Any]) -> str:
    lines = []
    f = s.get("failover")
    if f:
        lines.append(f"node {f['node']} of cluster {f['cluster']}: {f['role'].upper()} ({f['reason']}), "
                     f"priority {f['effective']}/{f['priority']}, for {f['since']:.1f} s")
        for p in f["peers"]:
            lines.append(f"  peer {p['node']}: {p['role']} priority {p['effective']}")
        hb = f.get("heartbeat", {})
        paths = hb.get("peers_heard_per_path", {})
        if paths:
            npeers = len(f["peers"]) if f["peers"] else 0
            rt = "SCHED_FIFO" if hb.get("rt_granted") else "normal priority"
            lines.append("  heartbeat: " + ", ".join(f"{name} hears {n} peer(s)" for name, n in paths.items())
                         + f"; {npeers} alive; thread at {rt}")
        vips = f.get("vips", {})
        held = vips.get("held") if isinstance(vips, dict) else None
        if held is not None:
            lines.append(f"  vips held: {', '.join(held) or 'none'}")
    sync = s.get("sync")
    if sync:
        lines.append(f"sync: {sync.get('role', '?')}, {sync.get('connections', 0)} connections, "
                     f"caught up: {sync.get('caught_up')}")
    for svc in s.get("services", []):
        lines.append(f"service {svc['service']} ({svc['virtual']}, {svc['scheduler']})"
                     + ("" if svc["quorum"]["ok"] else "  QUORUM LOST"))
        for srv in svc["servers"]:
            state = "up" if srv["up"] else "DOWN"
            admin = "" if srv["admin"] == "enabled" else f" [{srv['admin']}]"
            lines.append(f"  {srv['server']:<24} {state:<5} weight {srv['weight']:<4}{admin}  {srv['reason']}")
    late = s.get("health", {}).get("lateness")
    if late:
        lines.append(f"health: {s['health']['checks']} checks, lateness p99 {late['p99'] * 1000:.1f} ms")
    return "\n".join(lines)


@admin_command
def _server(args: argparse.Namespace) -> int:
    payload = {"action": args.action, "service": args.service, "server": args.server, "weight": args.weight,
               "forward": args.forward}
    for change in _ask(args, "server", payload):
        print(change)
    return EXIT_OK


@admin_command
def _reload(args: argparse.Namespace) -> int:
    result = _ask(args, "reload")
    for change in result["changes"]:
        print(change)
    if result["restart_needed"]:
        print(f"restart needed to apply: {', '.join(result['restart_needed'])}")
    return EXIT_OK


@admin_command
def _events(args: argparse.Namespace) -> int:
    for event in stream(args.socket, "events", {"recent": args.recent}):
        print(json.dumps(event), flush=True)
    return EXIT_OK
