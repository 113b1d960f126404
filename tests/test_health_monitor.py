"""The monitor against real servers: rise/fall with a server switched off and on,
retries, one probe shared by equal checks, spread, lateness, runtime changes,
dynamic weights, idempotent start/stop."""

import asyncio
import os
import socket
import time

from health_servers import free_port, run

from understudy.health import Check, Monitor, ScriptProbe, TcpProbe, tcp
from understudy.health.monitor import spread_offset


class Switchable:
    """A TCP server on a fixed port that can be switched off (refusing) and on; counts connections."""

    def __init__(self, host="127.0.0.1"):
        self.host, self.port, self.accepted = host, 0, 0
        self.server = None

    async def on(self):
        self.server = await asyncio.start_server(self._conn, self.host, self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def off(self):
        self.server.close()
        await self.server.wait_closed()

    async def _conn(self, reader, writer):
        self.accepted += 1
        writer.close()


async def wait_for(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_rise_and_fall_with_a_server_switched_off_and_on():
    async def go():
        srv = Switchable()
        await srv.on()
        check = Check(TcpProbe("127.0.0.1", srv.port), interval=0.05, timeout=0.04, rise=2, fall=3)
        monitor = Monitor()
        seen = []  # (change, the check's status when it was reported)
        monitor.watch(check, lambda c: seen.append((c, monitor.status(check))))
        await monitor.start()
        await wait_for(lambda: len(seen) == 1)
        await asyncio.sleep(0.3)  # steady: no more changes while the server is up
        assert len(seen) == 1
        await srv.off()
        off_runs = monitor.status(check).runs
        await wait_for(lambda: len(seen) == 2)
        await srv.on()
        on_runs = monitor.status(check).runs
        await wait_for(lambda: len(seen) == 3)
        await monitor.stop()
        return seen, off_runs, on_runs

    seen, off_runs, on_runs = run(go)
    (first, s1), (down, s2), (up, s3) = seen
    assert (first.up, first.reason, s1.runs) == (True, "", 1)  # the first result decides
    assert (down.up, down.reason) == (False, "refused")
    assert s2.consecutive_failed == 3 and s2.runs - off_runs in (3, 4)  # 3 failures (one run may straddle)
    assert up.up and up.reason == "" and s3.consecutive_ok == 2 and s3.runs - on_runs in (2, 3)


def test_quick_retries_before_a_failure_counts():
    async def go():
        srv = Switchable()
        await srv.on()
        await srv.off()
        check = Check(TcpProbe("127.0.0.1", srv.port), interval=0.5, timeout=0.1, fall=1, retries=2, retry_delay=0.05)
        monitor = Monitor(spread=False)
        changes = []
        monitor.watch(check, changes.append)
        await monitor.start()
        await wait_for(lambda: changes)
        status = monitor.status(check)
        # Three attempts (two retries) made one run and one failure; a server back by the retry keeps it up.
        assert (status.runs, status.failed_runs, status.retries) == (1, 1, 2)
        assert changes[0].up is False
        await monitor.stop()
        revived = []

        async def revive_later():
            await asyncio.sleep(0.07)  # after the first attempt, before the first retry
            await srv.on()

        check2 = Check(TcpProbe("127.0.0.1", srv.port), interval=0.5, timeout=0.05, fall=1, retries=3,
                       retry_delay=0.05)
        monitor2 = Monitor(spread=False)
        monitor2.watch(check2, revived.append)
        reviver = asyncio.create_task(revive_later())
        await monitor2.start()
        await wait_for(lambda: revived)
        await reviver
        status2 = monitor2.status(check2)
        await monitor2.stop()
        await srv.off()
        return revived, status2

    revived, status2 = run(go)
    assert revived[0].up is True and status2.retries >= 1 and status2.failed_runs == 0


def test_equal_checks_share_one_probe_and_leave_together():
    async def go():
        srv = Switchable()
        await srv.on()
        monitor = Monitor()
        a, b = [], []
        wa = monitor.watch(Check(TcpProbe("127.0.0.1", srv.port), interval=0.05, label="vs-a"), a.append)
        await monitor.start()
        await wait_for(lambda: a)
        wb = monitor.watch(Check(TcpProbe("127.0.0.1", srv.port), interval=0.05, label="vs-b"), b.append)
        await wait_for(lambda: b)  # a late watcher hears the known state at once
        assert len(monitor.checks) == 1 and monitor.status(wa.check).watchers == 2
        runs0, accepted0 = monitor.status(wa.check).runs, srv.accepted
        await asyncio.sleep(0.5)
        runs, accepted = monitor.status(wa.check).runs - runs0, srv.accepted - accepted0
        wa.cancel()
        wa.cancel()  # idempotent
        await asyncio.sleep(0.2)
        assert monitor.status(wb.check).runs > runs0 + runs  # still probing for b
        wb.cancel()
        assert monitor.checks == [] and monitor.status(wb.check) is None
        await asyncio.sleep(0.1)
        idle = srv.accepted
        await asyncio.sleep(0.3)
        await monitor.stop()
        await srv.off()
        return a, b, runs, accepted, srv.accepted - idle

    a, b, runs, accepted, after_removal = run(go)
    assert [c.up for c in a] == [True] and [c.up for c in b] == [True]
    assert 4 <= runs <= 14 and abs(accepted - runs) <= 1  # one connection per run, not one per watcher
    assert after_removal == 0  # no probing once nobody watches


def test_first_runs_are_spread_across_the_interval_deterministically():
    n = 200
    checks = [Check(TcpProbe(f"127.2.0.{i}", 9), interval=1.0, timeout=0.5) for i in range(1, n + 1)]

    async def first_runs(spread):
        monitor = Monitor(spread=spread)
        times = []
        for c in checks:
            monitor.watch(c, lambda ch: times.append(time.monotonic()))
        await monitor.start()
        start = time.monotonic()
        await wait_for(lambda: len(times) == n, 5)
        await monitor.stop()
        return [t - start for t in times]

    spread = run(lambda: first_runs(True))
    together = run(lambda: first_runs(False))
    assert max(together) - min(together) < 0.15
    assert max(spread) - min(spread) > 0.8
    busiest = max(sum(1 for t in spread if k / 10 <= t < (k + 1) / 10) for k in range(10))
    assert busiest < n / 4  # no tenth of the interval holds a quarter of the checks
    # The phase is a hash of the check: the same in every monitor and every process.
    assert [spread_offset(c) for c in checks] == [spread_offset(Check(c.probe, 1.0, 0.5)) for c in checks]
    assert all(0 <= spread_offset(c) < 1.0 for c in checks)


def test_checks_added_and_removed_at_runtime_do_not_disturb_others():
    async def go():
        srv = Switchable()
        await srv.on()
        monitor = Monitor()
        steady = Check(TcpProbe("127.0.0.1", srv.port), interval=0.05)
        changes = []
        monitor.watch(steady, changes.append)
        await monitor.start()
        await monitor.start()  # idempotent
        await wait_for(lambda: changes)
        watches = [monitor.watch(Check(TcpProbe(f"127.3.0.{i}", srv.port), interval=0.05), lambda c: None)
                   for i in range(1, 51)]
        await asyncio.sleep(0.3)
        for w in watches:
            w.cancel()
        await asyncio.sleep(0.3)
        status = monitor.status(steady)
        late = monitor.lateness()
        await monitor.stop()
        await monitor.stop()  # idempotent
        assert not monitor.running
        # Restartable: the same monitor runs its watches again.
        await monitor.start()
        runs_before = monitor.status(steady).runs
        await asyncio.sleep(0.2)
        runs_after = monitor.status(steady).runs
        await monitor.stop()
        await srv.off()
        return changes, status, late, runs_before, runs_after

    changes, status, late, runs_before, runs_after = run(go)
    assert len(changes) == 1 and status.up and status.failed_runs == 0 and status.skipped == 0
    assert 7 <= status.runs <= 18  # ~0.65 s at 20 runs/s, unperturbed
    assert late.count > status.runs and 0 <= late.p50 <= late.p99 <= late.max < 0.5
    assert runs_after > runs_before


def test_dynamic_weight_changes_reach_the_watcher(tmp_path):
    weight_file = tmp_path / "status"
    weight_file.write_text("7")

    async def go():
        check = Check(ScriptProbe(("sh", "-c", f"exit $(cat {weight_file})"), dynamic_weight=True), interval=0.1,
                      timeout=0.09, rise=1, fall=1)
        monitor = Monitor()
        changes = []
        monitor.watch(check, changes.append)

        def broken(change):
            raise RuntimeError("a subscriber's bug")

        monitor.watch(check, broken)  # must not keep the others from hearing
        await monitor.start()
        for status in ("12", "1", "0"):
            count = len(changes)
            await wait_for(lambda: len(changes) > count)
            weight_file.write_text(status)
        await wait_for(lambda: len(changes) == 4)
        await monitor.stop()
        return changes

    changes = run(go)
    assert [(c.up, c.weight) for c in changes] == [(True, 5), (True, 10), (False, 10), (True, None)]
    assert changes[2].reason == "exit status 1"


def test_a_server_that_never_answers_times_out_on_schedule():
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = [socket.socket() for _ in range(3)]  # fill the accept queue: further SYNs are dropped
    for f in fillers:
        f.setblocking(False)
        f.connect_ex(full.getsockname())

    async def go():
        check = Check(TcpProbe("127.0.0.1", full.getsockname()[1]), interval=0.2, timeout=0.1, fall=2)
        monitor = Monitor(spread=False)
        changes = []
        monitor.watch(check, changes.append)
        await monitor.start()
        await asyncio.sleep(0.7)
        status = monitor.status(check)
        await monitor.stop()
        return changes, status

    try:
        changes, status = run(go)
    finally:
        for s in [full, *fillers]:
            s.close()
    assert [(c.up, c.reason) for c in changes] == [(False, "timeout")]
    assert 0.09 <= changes[0].result.latency < 0.2  # expired by the prober's timer
    assert 3 <= status.runs <= 4 and status.failed_runs == status.runs and status.skipped == 0


def test_many_tcp_checks_run_in_the_core_prober_and_report_in_batches():
    # 1,000 servers (127.0.x.y, one listener on all of them), each checked every 0.2 s:
    # the prober schedules and connects; the monitor sees batches of results.
    async def go():
        srv = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0, backlog=4096)
        port = srv.sockets[0].getsockname()[1]
        checks = [Check(TcpProbe(f"127.0.{i // 250}.{i % 250 + 1}", port), interval=0.2, timeout=0.2)
                  for i in range(999)] + [Check(TcpProbe("127.0.0.1", free_port()), interval=0.2)]
        monitor = Monitor()
        changes = []
        batches = []
        for c in checks:
            monitor.watch(c, changes.append)
        await monitor.start()
        prober = monitor._prober
        while prober is None:  # made on the first batch submitted, one loop turn after start
            await asyncio.sleep(0.01)
            prober = monitor._prober
        prober_drain = prober.drain

        class Counting:  # count results per drain: the monitor must not see them one by one
            def __getattr__(self, name):
                return getattr(prober, name)

            def drain(self):
                got = prober_drain()
                batches.append(len(got))
                return got

        monitor._prober = Counting()
        await asyncio.sleep(1.1)
        status = {c: monitor.status(c) for c in checks}
        threads_before = len(os.listdir("/proc/self/task"))
        await monitor.stop()
        srv.close()
        threads_after = len(os.listdir("/proc/self/task"))
        return checks, changes, status, batches, threads_before, threads_after, monitor.lateness()

    checks, changes, status, batches, before, after, late = run(go)
    assert len({c.probe.address for c in checks[:-1]}) == 999
    assert sorted((c.check.probe.port != checks[-1].probe.port, c.up) for c in changes) == \
        [(False, False)] + [(True, True)] * 999
    assert changes[[c.check for c in changes].index(checks[-1])].reason == "refused"
    bad = [(c, s) for c, s in status.items()
           if not 4 <= s.runs <= 7 or s.failed_runs != (s.runs if c is checks[-1] else 0)]
    assert not bad, bad[:3]
    assert sum(batches) >= 4000 and len(batches) < sum(batches) / 10  # tens of results per wake
    assert late.count >= 4000
    assert after == before - 1  # the prober's thread (not a Python one) ended with stop()


def test_tcp_check_over_ipv6_and_a_zoned_address():
    async def go():
        srv = Switchable("::1")
        await srv.on()
        check = Check(TcpProbe("::1", srv.port), interval=0.05, timeout=0.05)
        monitor = Monitor()
        changes = []
        monitor.watch(check, changes.append)
        await monitor.start()
        await wait_for(lambda: changes)
        await monitor.stop()
        await srv.off()
        return changes

    changes = run(go)
    assert [(c.up, c.reason) for c in changes] == [(True, "")]
    assert tcp.target("fe80::1%lo") == ("fe80::1", socket.if_nametoindex("lo"))
    assert tcp.target("fe80::1%7") == ("fe80::1", 7) and tcp.target("::1") == ("::1", 0)
