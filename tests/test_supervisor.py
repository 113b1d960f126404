"""The daemon's supervisor restarts a crashed subsystem and leaves the others
alone; the heartbeat keeps going while the event loop is blocked."""

from __future__ import annotations

import asyncio
import time

from understudy.director.supervisor import Supervisor
from understudy.events import EventBus
from understudy.failover.heartbeat import Heartbeat, HeartbeatConfig, PeerDead, PeerUp, UnicastPath


class Flaky:
    """A subsystem whose loop dies the first `crashes` times it runs."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts = self.stops = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.starts += 1
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        await asyncio.sleep(0.05)
        if self.crashes > 0:
            self.crashes -= 1
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        self.stops += 1
        if self.task is not None:
            self.task.cancel()


def test_a_crashed_subsystem_is_restarted_alone():
    async def scenario():
        events = EventBus()
        sup = Supervisor(events, max_backoff=0.2)
        flaky, steady = Flaky(crashes=2), Flaky(crashes=0)
        sup.add("flaky", flaky, lambda: flaky.task)
        sup.add("steady", steady, lambda: steady.task)
        await sup.start()
        await asyncio.sleep(2.5)
        kinds = [e["kind"] for e in events.recent()]
        await sup.stop()
        return flaky, steady, kinds, sup.status()

    flaky, steady, kinds, status = asyncio.run(scenario())
    assert flaky.starts == 3 and kinds.count("crash") == 2 and kinds.count("restarted") == 2
    assert steady.starts == 1 and steady.stops == 1
    assert {"name": "flaky", "restarts": 2} in status


def test_heartbeats_go_on_while_the_event_loop_is_blocked():
    key = {1: b"k" * 32}

    def engine(node: int, port: int, peer_port: int) -> Heartbeat:
        return Heartbeat(HeartbeatConfig(
            cluster=5, node=node, peers=[1 - node], keys=key, keepalive_ms=20, warn_ms=60, dead_ms=150,
            initdead_ms=500, paths=[UnicastPath("lo", "127.0.0.1", port, [("127.0.0.1", peer_port)])]))

    async def scenario():
        a, b = engine(0, 47101, 47102), engine(1, 47102, 47101)
        for hb in (a, b):
            hb.advertise(role="backup", configured_priority=100, effective_priority=100)
            hb.start()
        while not isinstance(await b.next_event(5), PeerUp):
            pass
        time.sleep(1.0)  # the loop is stuck (a slow reload, a busy subsystem) for 6 dead times
        await asyncio.sleep(0.1)
        events = b.poll()
        for hb in (a, b):
            hb.stop()
        return events

    events = asyncio.run(scenario())
    assert not [e for e in events if isinstance(e, PeerDead)], events
