"""The heartbeat engine through its Python API: engines in network namespaces
on this host (veth links, multicast and broadcast on named interfaces), a
serial line made by socat, and tcpdump as an independent reader of the wire."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from understudy.failover.heartbeat import (
    PUBLIC_UP,
    SYNC_CAUGHT_UP,
    BroadcastPath,
    Heartbeat,
    HeartbeatConfig,
    HeartbeatEvent,
    MulticastPath,
    PathDown,
    PathUp,
    PeerDead,
    PeerStateChanged,
    PeerUp,
    SerialPath,
    UnicastPath,
)
from understudy.uml import NetnsFactory

KEY = {1: bytes(range(32))}
TIMERS = dict(keepalive_ms=50, warn_ms=150, dead_ms=300, initdead_ms=1000)



@pytest.fixture
def hostns() -> Iterator[NetnsFactory]:
    """Namespaces on this host, named after this process so parallel runs do not collide."""
    factory = NetnsFactory(prefix=f"hb{os.getpid()}-")
    yield factory
    factory.cleanup()


def config(node: int, peer: int, paths: list[object], **kw: object) -> HeartbeatConfig:
    return HeartbeatConfig(cluster=5, node=node, peers=[peer], keys=KEY, paths=paths, **{**TIMERS, **kw})  # type: ignore[arg-type]


async def wait_event(hb: Heartbeat, match: type, timeout: float = 3.0, **fields: object) -> HeartbeatEvent:
    """The next event of type `match` with `fields`, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {match.__name__} {fields} within {timeout}s")
        event = await hb.next_event(left)
        if isinstance(event, match) and all(getattr(event, k) == v for k, v in fields.items()):
            return event


def two_hosts(hostns: NetnsFactory) -> tuple[object, object]:
    a, b = hostns("a"), hostns("b")
    hostns.veth(a, b, "10.77.0.1/24", "10.77.0.2/24")  # eth0: multicast path
    hostns.veth(a, b, "10.77.1.1/24", "10.77.1.2/24")  # eth1: broadcast path
    return a, b


def paths() -> list[object]:
    return [MulticastPath("mcast", "239.0.0.18", 6940, "eth0"), BroadcastPath("bcast", "eth1", 6941)]


def test_multicast_and_broadcast_paths_and_a_link_down(hostns: NetnsFactory) -> None:
    a, b = two_hosts(hostns)
    capture = b.popen("tcpdump", "-n", "-l", "-c", "20", "-i", "eth0", "-X", "udp and dst 239.0.0.18 and port 6940",
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    async def scenario() -> None:
        ha, hb = Heartbeat(config(0, 1, paths())), Heartbeat(config(1, 0, paths()))
        ha.advertise(role="primary", configured_priority=200, effective_priority=200, flags=PUBLIC_UP, primary=0)
        hb.advertise(role="backup", configured_priority=100, effective_priority=100, load=[7, 8])
        with a.entered():  # type: ignore[attr-defined]
            ha.start()
        with b.entered():  # type: ignore[attr-defined]
            hb.start()
        try:
            up = await wait_event(ha, PeerUp, node=1)
            assert isinstance(up, PeerUp) and up.first and up.path in ("mcast", "bcast")
            assert (up.state.role, up.state.configured_priority, up.state.load) == ("backup", 100, (7, 8))
            seen = {up.path}
            while seen != {"mcast", "bcast"}:
                e = await wait_event(ha, PathUp, node=1)
                assert isinstance(e, PathUp)
                seen.add(e.path)
            up_b = await wait_event(hb, PeerUp, node=0)
            assert isinstance(up_b, PeerUp) and up_b.state.role == "primary" and up_b.state.public_up
            assert up_b.state.primary == 0

            # A state change reaches the peer whole, at once.
            hb.advertise(role="backup", configured_priority=100, effective_priority=50, flags=SYNC_CAUGHT_UP)
            # (a change queued before this one, e.g. the peer first hearing us, may come first)
            for _ in range(5):
                ch = await wait_event(ha, PeerStateChanged, node=1, timeout=1.0)
                assert isinstance(ch, PeerStateChanged)
                if ch.state.effective_priority != 100:
                    break
            assert ch.state.effective_priority == 50 and ch.state.sync_caught_up and ch.state.members == {0, 1}

            # The broadcast link goes down: that path is down, the peer lives on multicast.
            a.run("ip", "link", "set", "eth1", "down")  # type: ignore[attr-defined]
            down = await wait_event(ha, PathDown, node=1)
            assert isinstance(down, PathDown) and down.path == "bcast"
            await asyncio.sleep(0.5)
            view = ha.peers()[0]
            assert view.alive and view.paths["mcast"][0] and not view.paths["bcast"][0]
            while not ha._queue.empty():  # nothing dead meanwhile
                assert not isinstance(ha._queue.get_nowait(), PeerDead)
            s = ha.stats()
            assert s["paths"]["mcast"]["received"] > 5 and s["paths"]["bcast"]["send_errors"] > 0
            assert s["lateness"]["count"] > 5 and s["lateness"]["p99_us"] <= s["lateness"]["max_us"] + 10

            a.run("ip", "link", "set", "eth1", "up")  # type: ignore[attr-defined]
            await wait_event(ha, PathUp, node=1, path="bcast")

            # B stops: dead after dead_ms on every path.
            t0 = time.monotonic()
            hb.stop()
            dead = await wait_event(ha, PeerDead, node=1)
            assert isinstance(dead, PeerDead) and dead.silent_ms is not None and dead.silent_ms >= 300
            assert time.monotonic() - t0 >= 0.25
            assert not ha.peers()[0].alive
        finally:
            ha.stop()
            hb.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))
    capture.terminate()  # if it has not seen its 20 packets yet
    out, _ = capture.communicate(timeout=10)
    # tcpdump, not our decoder, saw our frames on the wire: UDP to the group, "US" v1 kind 7.
    assert "10.77.0.1." in out and "10.77.0.2." in out and "239.0.0.18.6940" in out, out
    assert "5553 0107" in out, out


def test_unicast_on_a_named_interface_counts_forgeries(hostns: NetnsFactory) -> None:
    a, b = hostns("a"), hostns("b")
    hostns.veth(a, b, "10.78.0.1/24", "10.78.0.2/24")
    ua = UnicastPath("u", "10.78.0.1", 6950, [("10.78.0.2", 6950)], device="eth0")
    ub = UnicastPath("u", "10.78.0.2", 6950, [("10.78.0.1", 6950)], device="eth0")
    ha, hb = Heartbeat(config(0, 1, [ua])), Heartbeat(config(1, 0, [ub]))
    with a.entered():  # type: ignore[attr-defined]
        ha.start()
    with b.entered():  # type: ignore[attr-defined]
        hb.start()
        forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + 3
        while not any(isinstance(e, PeerUp) for e in ha.poll()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # A frame with the right shape, sender and kind, but no key: forged.
        forged = b"US\x01\x07\x00\x01\x00\x00" + (1).to_bytes(4, "big") + (2**31).to_bytes(4, "big") + (1).to_bytes(8, "big")
        for i in range(100):
            forger.sendto(forged + bytes(20) + i.to_bytes(16, "big"), ("10.78.0.1", 6950))
        time.sleep(0.2)
        dropped = ha.stats()["paths"]["u"]["dropped"]
        assert dropped["bad_tag"] == 100
        assert not any(isinstance(e, PeerDead) for e in ha.poll())
        assert ha.peers()[0].incarnation != 2**31
    finally:
        forger.close()
        ha.stop()
        hb.stop()


def test_serial_only_path_over_a_socat_null_modem(tmp_path: Path) -> None:
    if shutil.which("socat") is None:
        pytest.fail("socat missing: run scripts/setup")
    x, y = tmp_path / "ttyA", tmp_path / "ttyB"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={x}", f"pty,raw,echo=0,link={y}"],
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (x.exists() and y.exists()):
            assert time.monotonic() < deadline, "socat made no ptys"
            time.sleep(0.02)

        async def scenario() -> None:
            ha = Heartbeat(config(0, 1, [SerialPath("tty", str(x))]))
            hb = Heartbeat(config(1, 0, [SerialPath("tty", str(y), baud=115200)]))
            ha.start()
            hb.start()
            try:
                up = await wait_event(ha, PeerUp, node=1)
                assert isinstance(up, PeerUp) and up.path == "tty"
                await wait_event(hb, PeerUp, node=0)
                await asyncio.sleep(0.3)
                assert ha.stats()["paths"]["tty"]["received"] >= 4
                socat.kill()  # the cable is pulled
                await wait_event(ha, PeerDead, node=1)
            finally:
                ha.stop()
                hb.stop()

        asyncio.run(asyncio.wait_for(scenario(), 15))
    finally:
        socat.kill()
        socat.wait(timeout=10)


def test_bad_configuration_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="node id 40"):
        Heartbeat(config(40, 1, [SerialPath("tty", "/dev/null")])).start()
    with pytest.raises(ValueError, match="timers"):
        Heartbeat(config(0, 1, [SerialPath("tty", "/dev/null")], dead_ms=10)).start()
    with pytest.raises(OSError, match="heartbeat path tty"):
        Heartbeat(config(0, 1, [SerialPath("tty", "/nonexistent/tty")])).start()
    with pytest.raises(ValueError, match="role"):
        Heartbeat(config(0, 1, [])).advertise(role="leader", configured_priority=1, effective_priority=1)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_keys_rotate_without_a_flag_day() -> None:
    pa, pb = free_udp_port(), free_udp_port()
    ha = Heartbeat(config(0, 1, [UnicastPath("lo", "127.0.0.1", pa, [("127.0.0.1", pb)])]))
    hb = Heartbeat(config(1, 0, [UnicastPath("lo", "127.0.0.1", pb, [("127.0.0.1", pa)])]))
    ha.start()
    hb.start()
    try:
        deadline = time.monotonic() + 3
        while not any(isinstance(e, PeerUp) for e in ha.poll()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        new = bytes(range(100, 132))
        steps = [({1: KEY[1], 2: new}, 1), ({1: KEY[1], 2: new}, 2), ({2: new}, 2)]
        for keys, current in steps:  # each step on every node, one node after the other
            for h in (ha, hb):
                h.set_keys(keys, current)
                time.sleep(0.1)
        time.sleep(0.4)
        events = ha.poll() + hb.poll()
        assert not [e for e in events if isinstance(e, PeerDead)], events
        for h in (ha, hb):
            dropped = h.stats()["paths"]["lo"]["dropped"]
            assert dropped["unknown_key"] == 0 and dropped["bad_tag"] == 0, dropped
            assert h.peers()[0].alive and h.peers()[0].last_heard_ms is not None
            assert h.peers()[0].last_heard_ms < 200
        # A node left on the old key alone is no longer heard.
        ha.set_keys({1: KEY[1]}, 1)
        time.sleep(0.6)
        assert not hb.peers()[0].alive
        assert hb.stats()["paths"]["lo"]["dropped"]["unknown_key"] > 0
    finally:
        ha.stop()
        hb.stop()


def test_events_reach_a_callback_from_the_event_loop() -> None:
    pa, pb = free_udp_port(), free_udp_port()
    got: list[HeartbeatEvent] = []

    async def scenario() -> None:
        ha = Heartbeat(config(0, 1, [UnicastPath("lo", "127.0.0.1", pa, [("127.0.0.1", pb)])]), on_event=got.append)
        hb = Heartbeat(config(1, 0, [UnicastPath("lo", "127.0.0.1", pb, [("127.0.0.1", pa)])]))
        ha.start()
        hb.start()
        ha.start()  # idempotent
        try:
            deadline = time.monotonic() + 3
            while not any(isinstance(e, PeerUp) for e in got):
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.01)
            assert ha.running and ha._queue.empty()  # the callback took them
            hb.stop()
            hb.stop()  # idempotent
            while not any(isinstance(e, PeerDead) for e in got):
                assert time.monotonic() < deadline + 2, got
                await asyncio.sleep(0.01)
        finally:
            ha.stop()
            hb.stop()
        assert not ha.running

    asyncio.run(asyncio.wait_for(scenario(), 10))
    kinds = [type(e).__name__ for e in got]
    assert kinds.index("PeerUp") < kinds.index("PeerWarn") < kinds.index("PeerDead"), kinds
