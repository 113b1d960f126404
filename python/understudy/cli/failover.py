"""`understudy failover ...`: heartbeat and failover on their own (no services),
and the manual switch."""

from __future__ import annotations

import argparse
import dataclasses

from understudy.admin import DEFAULT_SOCKET, request
from understudy.cli.common import EXIT_OK, EXIT_USAGE, Subparsers, add_group, fail
from understudy.cli.director import admin_command, load_for_run, run_daemon
from understudy.config.director import SyncConfig



def register(subparsers: Subparsers) -> None:
    commands = add_group(subparsers, "failover", "heartbeat, election and virtual IPs")
    run = commands.add_parser(
        "run", help="run failover only: heartbeats, election, VIPs (services and sync ignored)",
        description="Run this node's heartbeat and failover from the [cluster], [[vip]], [tracking] and "
        "[notify] sections of FILE; services and sync in FILE are ignored (use `understudy run` for all).")
    run.add_argument("--config", "-c", required=True, metavar="FILE")
    run.add_argument("--node", type=int, metavar="ID", help="which node this is (else `node =` in FILE)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-format", default="text", choices=("text", "json"))
    run.set_defaults(handler=_run)

    switch = commands.add_parser(
        "switch", help="make NODE the primary now (from any node)",
        description="Ask NODE to take over the virtual IPs; the current primary hands over first, so the "
        "VIPs are never on two nodes. NODE stays primary until it fails or another switch.")
    switch.add_argument("--to", type=int, required=True, metavar="NODE")
    switch.add_argument("--socket", default=str(DEFAULT_SOCKET), metavar="PATH")
    switch.set_defaults(handler=_switch)

    standby = commands.add_parser(
        "standby", help="keep this node backup (on), or let it compete again (off)",
        description="Manual standby: this node hands over if it is primary and never takes the VIPs "
        "while standby is on (for maintenance).")
    standby.add_argument("state", choices=("on", "off"))
    standby.add_argument("--socket", default=str(DEFAULT_SOCKET), metavar="PATH")
    standby.set_defaults(handler=_standby)


def _run(args: argparse.Namespace) -> int:
    config = load_for_run(args)
    if config is None:
        return EXIT_USAGE
    if config.cluster is None:
        return fail(f"{args.config}: no [cluster] section: nothing to fail over")
    return run_daemon(dataclasses.replace(config, services=(), sync=SyncConfig()))


@admin_command
def _switch(args: argparse.Namespace) -> int:
    result = request(args.socket, "switch", {"to": args.to})
    print(f"switching to node {result['switching_to']}")
    return EXIT_OK


@admin_command
def _standby(args: argparse.Namespace) -> int:
    result = request(args.socket, "standby", {"on": args.state == "on"})
    print(f"standby {'on' if result['standby'] else 'off'}")
    return EXIT_OK
