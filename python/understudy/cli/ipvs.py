"""`understudy ipvs ...`: what the kernel's IPVS table holds, and making it
hold what a file says, with the smallest change."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from understudy.cli.common import EXIT_OK, Subparsers, add_group, fail
from understudy.ipvs import Ipvs, IpvsError, ModelError, Reconciler, Service, converge, parse_state

EXIT_FAILED = 1


def register(subparsers: Subparsers) -> None:
    commands = add_group(subparsers, "ipvs", "the kernel's IPVS table (this network namespace)")

    show = commands.add_parser("show", help="list services and real servers, like ipvsadm -Ln",
                               description="List what the kernel holds, with statistics.")
    show.add_argument("--json", action="store_true", help="the JSON that `ipvs apply` takes")
    show.set_defaults(handler=_show)

    apply = commands.add_parser(
        "apply", help="make the kernel hold the services of a JSON file (minimal changes)",
        description="Compute the minimal difference between FILE (the JSON of `ipvs show --json`; "
        "statistics ignored) and the kernel, and apply it. Real servers being removed are "
        "drained first (weight 0) and deleted once their connections are gone or the drain "
        "time has passed. Services not in FILE are left alone unless --prune.")
    apply.add_argument("file", metavar="FILE", help="desired state (JSON), or - for stdin")
    apply.add_argument("--dry-run", action="store_true", help="print the planned changes, change nothing")
    apply.add_argument("--prune", action="store_true", help="also remove services FILE does not list")
    apply.add_argument("--drain-timeout", type=float, default=300.0, metavar="S",
                       help="seconds to wait for a removed real server's connections (300)")
    apply.add_argument("--no-wait", action="store_true",
                       help="return after the first pass; run again later to finish draining")
    apply.set_defaults(handler=_apply)

    daemon = commands.add_parser("daemon", help="the kernel's sync daemons (show, start, stop)",
                                 description="Show, start or stop the kernel's IPVS sync daemons.")
    daemon.add_argument("action", choices=("show", "start", "stop"))
    daemon.add_argument("state", nargs="?", choices=("master", "backup"))
    daemon.add_argument("--interface", metavar="IF", help="multicast interface (start)")
    daemon.add_argument("--syncid", type=int, default=0, metavar="N", help="sync id 0..255 (start)")
    daemon.add_argument("--maxlen", type=int, default=0, metavar="N", help="message size (start)")
    daemon.add_argument("--group", metavar="ADDR", help="multicast group (start; default 224.0.0.81)")
    daemon.add_argument("--port", type=int, default=0, metavar="N", help="UDP port (start; default 8848)")
    daemon.add_argument("--ttl", type=int, default=0, metavar="N", help="multicast TTL (start; default 1)")
    daemon.add_argument("--json", action="store_true", help="show as JSON")
    daemon.set_defaults(handler=_daemon)


def _text(e: IpvsError) -> str:
    """The message alone: OSError's str() would add "[Errno N]"."""
    return e.strerror or str(e)


def _open() -> Ipvs:
    return Ipvs()


def _show(args: argparse.Namespace) -> int:
    try:
        services = _open().dump()
    except IpvsError as e:
        return fail(_text(e))
    if args.json:
        json.dump({"services": [s.to_json() for s in services]}, sys.stdout, indent=2)
        print()
    else:
        print(format_table(services), end="")
    return EXIT_OK


def format_table(services: list[Service]) -> str:
    """ipvsadm -Ln --stats, roughly: one line per service, one per real server."""
    lines = ["Prot LocalAddress:Port Scheduler Flags",
             "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn   Conns   InPkts  OutPkts"]
    for svc in services:
        what = f"FWM  {svc.fwmark}" + (" IPv6" if svc.af == 10 else "") if svc.fwmark else \
            f"{(svc.protocol or '').upper():<4} {_endpoint(svc.address, svc.port)}"
        extra = ""
        flags = svc.to_json()["flags"]
        if flags:
            extra += f" ({','.join(flags)})"
        if svc.timeout and "persistent" in flags:
            extra += f" persistent {svc.timeout}"
            extra += f" mask {svc.to_json()['netmask']}"
        if svc.pe_name:
            extra += f" pe {svc.pe_name}"
        lines.append(f"{what} {svc.scheduler}{extra}")
        for d in svc.destinations:
            stats = d.stats or {}
            lines.append(f"  -> {d.endpoint:<28} {d.forward.capitalize():<7} {d.weight:>6} {d.active_conns:>10} "
                         f"{d.inactive_conns:>9} {stats.get('conns', 0):>7} {stats.get('inpkts', 0):>8} "
                         f"{stats.get('outpkts', 0):>8}")
    return "\n".join(lines) + "\n"


def _endpoint(address: str | None, port: int | None) -> str:
    return f"[{address}]:{port}" if address and ":" in address else f"{address}:{port}"


def _load(path: str) -> list[Service]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    doc: Any = json.loads(text)
    return parse_state(doc)


def _apply(args: argparse.Namespace) -> int:
    try:
        desired = _load(args.file)
    except OSError as e:
        return fail(f"{args.file}: {e.strerror or e}")
    except json.JSONDecodeError as e:
        return fail(f"{args.file}: line {e.lineno} column {e.colno}: {e.msg}")
    except ModelError as e:
        return fail(f"{args.file}: {e}")
    try:
        ipvs = _open()
        reconciler = Reconciler(drain_timeout=args.drain_timeout, prune=args.prune)
        if args.dry_run:
            changes = reconciler.plan(desired, ipvs.dump(stats=False))
            for change in changes:
                print(change)
            if not changes:
                print("nothing to change")
            return EXIT_OK
        applied = converge(ipvs, desired, reconciler=reconciler, wait=not args.no_wait,
                           on_change=lambda c: print(c, flush=True))
    except IpvsError as e:
        print(f"understudy: error: {_text(e)}", file=sys.stderr)
        return EXIT_FAILED
    if not applied:
        print("nothing to change")
    elif reconciler.pending:
        print(f"{len(reconciler.draining)} real server(s) still draining; run again to finish")
    return EXIT_OK


def _daemon(args: argparse.Namespace) -> int:
    try:
        ipvs = _open()
        if args.action == "show":
            daemons = ipvs.daemons()
            if args.json:
                print(json.dumps(daemons, indent=2))
            for d in [] if args.json else daemons:
                print(f"{d['state']} sync daemon (mcast={d['ifname']}, syncid={d['syncid']}, maxlen={d['maxlen']}, "
                      f"group={d['group']}, port={d['port']}, ttl={d['ttl']})")
            return EXIT_OK
        if args.state is None:
            return fail(f"ipvs daemon {args.action}: say master or backup")
        if args.action == "start":
            if not args.interface:
                return fail("ipvs daemon start: --interface is required")
            ipvs.start_daemon(args.state, args.interface, args.syncid, maxlen=args.maxlen, group=args.group,
                              port=args.port, ttl=args.ttl)
        else:
            ipvs.stop_daemon(args.state)
    except IpvsError as e:
        print(f"understudy: error: {_text(e)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
