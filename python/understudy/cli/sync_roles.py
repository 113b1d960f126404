"""`understudy sync listen|relay|stats`: the sync roles, run standalone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from understudy.cli.common import EXIT_OK, Subparsers, fail
from understudy.sync.roles import SAVE_EVERY, KernelFeeder, KernelListener, RelayBackup, RelayPrimary, read_key

DEFAULT_STATS = Path("/run/understudy")


def register(commands: Subparsers) -> None:
    listen = commands.add_parser(
        "listen", help="keep the connections a kernel master sync daemon sends (optionally feed a kernel backup)",
        description="Listen to the kernel master sync daemon on IF (multicast 224.0.0.81:8848 by default) and "
        "keep its connections; with --feed-interface, pass them on to a kernel backup daemon there.")
    listen.add_argument("--interface", required=True, metavar="IF")
    listen.add_argument("--group", default="224.0.0.81")
    listen.add_argument("--port", type=int, default=8848)
    listen.add_argument("--syncid", type=int, default=0, help="accept only this syncid (0: any)")
    listen.add_argument("--feed-interface", metavar="IF2", help="feed a kernel backup daemon on IF2")
    _common(listen)
    listen.set_defaults(handler=_listen)

    relay = commands.add_parser(
        "relay", help="authenticated, reliable replication between directors",
        description="primary: the local kernel master's messages (on --kernel-interface) are signed, numbered "
        "and sent to each --peer. backup: frames from --primary are applied, gaps asked for, and the messages "
        "passed on to the local kernel backup daemon (on --kernel-interface).")
    relay.add_argument("role", choices=("primary", "backup"))
    relay.add_argument("--node", type=int, required=True, help="this director's node id")
    relay.add_argument("--key-file", required=True, type=Path, help="shared secret (hex or raw, mode 600)")
    relay.add_argument("--key-id", type=int, default=1)
    relay.add_argument("--bind", required=True, metavar="ADDR", help="this director's address on the sync link")
    relay.add_argument("--port", type=int, default=8849, help="UDP port of the relay (8849)")
    relay.add_argument("--peer", action="append", default=[], metavar="ADDR", help="a backup (primary; repeat)")
    relay.add_argument("--primary", metavar="ADDR", help="the primary's address (backup)")
    relay.add_argument("--kernel-interface", metavar="IF", help="where the local kernel daemon is (see docs/sync.md)")
    relay.add_argument("--seed-from-kernel", action="store_true",
                       help="primary: start with the connections the kernel already has (/proc/net/ip_vs_conn)")
    relay.add_argument("--syncid", type=_in_range(0, 255), metavar="0-255",
                       help="primary: syncid of full copies until the kernel master's messages bring theirs "
                       "(use the kernel daemons' --syncid; needed with --seed-from-kernel)")
    relay.add_argument("--device", metavar="IF", help="bind the relay socket to this interface (SO_BINDTODEVICE)")
    relay.add_argument("--group", metavar="ADDR",
                       help="multicast between directors: the primary sends to this group out of --device, "
                       "backups join it there (IPv4 or IPv6)")
    relay.add_argument("--ttl", type=_in_range(1, 255), default=1, metavar="1-255",
                       help="primary: multicast TTL / hop limit (1: the sync link only)")
    relay.add_argument("--window", type=_in_range(1, 1023), default=512, metavar="FRAMES",
                       help="primary: frames of a full copy in flight before backups acknowledge (512)")
    _common(relay)
    relay.set_defaults(handler=_relay)

    stats = commands.add_parser("stats", help="counters of a running role",
                                description="Print the counters a running `sync listen` or `sync relay` writes.")
    stats.add_argument("--stats-file", type=Path, help="default: the only file in /run/understudy")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=_stats)


def _in_range(lo: int, hi: int) -> Any:
    """An argparse type: an integer from `lo` to `hi`."""
    def parse(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{hi}")
        return value
    parse.__name__ = "integer"
    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stats-file", type=Path, help="where to keep counters (default /run/understudy/sync-ROLE.json)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until signalled)")
    parser.add_argument("--state-file", type=Path,
                        help="keep the table across restarts and crashes: loaded at start, every change journaled, "
                        "a checkpoint every --save-every seconds and at stop")
    parser.add_argument("--save-every", type=float, default=SAVE_EVERY, metavar="SECONDS",
                        help=f"seconds between checkpoints of the state file (default {SAVE_EVERY:g})")


def _stats_file(args: argparse.Namespace, role: str) -> Path:
    if args.stats_file:
        return Path(args.stats_file)
    DEFAULT_STATS.mkdir(mode=0o700, parents=True, exist_ok=True)
    return DEFAULT_STATS / f"sync-{role}.json"


async def _run(roles: list[Any], duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for role in roles:
        await role.start()
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(5.0, duration or 5.0))
            s = roles[0].stats()
            print(f"{s['role']}: {s['connections']} connections"
                  + (f", caught up: {s['caught_up']}" if "caught_up" in s else ""), flush=True)
            if duration is not None and loop.time() - roles[0].started_at >= duration:
                break
    finally:
        for role in reversed(roles):
            await role.stop()


def _listen(args: argparse.Namespace) -> int:
    listener = KernelListener(args.interface, group=args.group, port=args.port, syncid=args.syncid,
                              stats_file=_stats_file(args, "listen"), state_file=args.state_file,
                              save_every=args.save_every)
    roles: list[Any] = [listener]
    if args.feed_interface:
        roles.append(KernelFeeder(args.feed_interface, listener.table, syncid=args.syncid))
    return _main(roles, args.duration)


def _relay(args: argparse.Namespace) -> int:
    try:
        key = read_key(args.key_file)
    except (OSError, ValueError) as e:
        return fail(str(e))
    stats_file = _stats_file(args, f"relay-{args.role}")
    if args.group and not args.device:
        return fail(f"sync relay {args.role}: --group needs --device (the interface of the sync link)")
    if args.role == "primary":
        if not (args.peer or args.group) or not args.kernel_interface:
            return fail("sync relay primary: needs --kernel-interface and at least one --peer or a --group")
        role: Any = RelayPrimary(node=args.node, key=key, key_id=args.key_id, kernel_interface=args.kernel_interface,
                                 bind=args.bind, peers=args.peer, port=args.port, stats_file=stats_file,
                                 state_file=args.state_file, save_every=args.save_every,
                                 seed=args.seed_from_kernel, syncid=args.syncid,
                                 device=args.device, group=args.group, ttl=args.ttl, window=args.window)
    else:
        if not args.primary:
            return fail("sync relay backup: needs --primary")
        role = RelayBackup(node=args.node, key=key, key_id=args.key_id, bind=args.bind, primary=args.primary,
                           kernel_interface=args.kernel_interface, port=args.port, stats_file=stats_file,
                           state_file=args.state_file, save_every=args.save_every, device=args.device,
                           group=args.group)
    return _main([role], args.duration)


def _main(roles: list[Any], duration: float | None) -> int:
    try:
        asyncio.run(_run(roles, duration))
    except OSError as e:
        return fail(e.strerror or str(e))
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    path = args.stats_file
    if path is None:
        found = sorted(DEFAULT_STATS.glob("sync-*.json")) if DEFAULT_STATS.is_dir() else []
        if len(found) != 1:
            return fail(f"give --stats-file (found {len(found)} files in {DEFAULT_STATS})")
        path = found[0]
    try:
        stats = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return fail(f"{path}: {e}")
    if args.json:
        json.dump(stats, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        for key, value in sorted(_flatten(stats).items()):
            print(f"{key:<48} {value}")
    return EXIT_OK


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
