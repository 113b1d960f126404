"""The sync roles as objects an asyncio daemon starts, stops and queries.

* `KernelListener`: hears a kernel master sync daemon, keeps its connections.
* `KernelFeeder`: makes a kernel backup daemon create the table's connections.
* `RelayPrimary`: on the primary director, the local kernel master's traffic
  goes to the table and, signed and numbered, to each backup.
* `RelayBackup`: on a backup director, frames from the primary go to the table
  and on to the local kernel backup daemon; gaps are asked for, and
  `caught_up` says when the whole table is here.

The per-datagram work runs in the engine, a whole socket's backlog per call
with the GIL released; Python only reacts to readiness and timers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from understudy._core import BackupRelay, ConnTable, PrimaryRelay, SyncReceiver, SyncSender
from understudy.sync.seed import SeedReport, seed_table

#: Backups report progress and re-ask for gaps this often.
TICK = 0.1
#: Expired connections are dropped from tables this often.
EXPIRE_EVERY = 1.0
#: With a state file, a checkpoint starts this often (and one is taken when the role stops).
SAVE_EVERY = 10.0
#: Slots a checkpoint captures per turn of the event loop: 1-2 ms at 1 M entries.
CHECKPOINT_STEP = 16384

log = logging.getLogger(__name__)


def epoch_now() -> int:
    """An incarnation number that grows across restarts: wall-clock seconds."""
    return int(time.time()) & 0xFFFFFFFF


def read_key(path: str | os.PathLike[str]) -> bytes:
    """A replication key file: hex (whitespace ignored) or, failing that, raw bytes.

    The file holds a secret: refuse one that others may read."""
    p = Path(path)
    if p.stat().st_mode & 0o077:
        raise PermissionError(f"{p}: key file must not be readable by group or others (chmod 600)")
    raw = p.read_bytes()
    try:
        key = bytes.fromhex(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < 16:
        raise ValueError(f"{p}: a replication key needs at least 16 bytes")
    return key



class TableState:
    """A connection table kept in a state file across restarts and crashes:
    restored when opened, every change journaled by the engine as it is
    applied, a checkpoint every `save_every` s (captured in steps on the loop,
    written in a thread) and at close. A bad or missing file restores nothing
    (a backup then gets a full copy from its primary anyway)."""

    def __init__(self, table: ConnTable, path: str | os.PathLike[str], *, save_every: float = SAVE_EVERY,
                 name: str = "table") -> None:
        self.table, self.path, self.save_every, self.name = table, Path(path), save_every, name
        self.restored: dict[str, Any] = {}
        self.checkpoints = 0
        self._commit: asyncio.Future[dict[str, int]] | None = None
        self._task: asyncio.Task[None] | None = None

    def open(self) -> dict[str, Any]:
        """Restore the file into the table and journal from now on; starts the checkpoints."""
        self.restored = self.table.open_state(self.path)
        self._task = asyncio.get_running_loop().create_task(self._checkpoints())
        return self.restored

    async def close(self) -> None:
        """A last checkpoint, then stop journaling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.save()
        finally:
            self.table.journal_close()

    async def save(self) -> dict[str, int]:
        """Checkpoint without holding up the loop: captured CHECKPOINT_STEP slots
        per turn, written (fsync, rename) in a thread. Returns what was written."""
        if self._commit is not None:
            await asyncio.wait([self._commit])  # one checkpoint at a time
        checkpoint = self.table.checkpoint()
        try:
            while not checkpoint.step(self.table, CHECKPOINT_STEP):
                await asyncio.sleep(0)
        except BaseException:
            # Let it go now (a traceback would keep it): the next checkpoint
            # goes on from the journal segment this one began.
            del checkpoint
            raise
        # Shielded: a close while the file is written waits for it.
        self._commit = asyncio.ensure_future(asyncio.to_thread(checkpoint.commit))
        info = await asyncio.shield(self._commit)
        self.checkpoints += 1
        return info

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.save_every)
            try:
                await self.save()
            except OSError as e:
                # The journal still holds every change; the next checkpoint retries.
                log.warning("%s: checkpoint of %s failed: %s", self.name, self.path, e)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checkpoints": self.checkpoints, "journal": self.table.journal_stats() or {}}
        if self.restored:
            out["restored"] = {k: v for k, v in self.restored.items() if isinstance(v, int)}
        return out


class _Role:
    """Shared lifecycle: idempotent start/stop, periodic work, stats to a file."""

    name = "role"

    def __init__(self, table: ConnTable | None = None, stats_file: str | os.PathLike[str] | None = None,
                 state_file: str | os.PathLike[str] | None = None, save_every: float = SAVE_EVERY) -> None:
        self.table = table if table is not None else ConnTable()
        self.stats_file = Path(stats_file) if stats_file else None
        # With a state file the table survives a restart, even a crash (TableState).
        self.state_file = Path(state_file) if state_file else None
        self.state = TableState(self.table, state_file, save_every=save_every, name=self.name) if state_file else None
        self._tasks: list[asyncio.Task[None]] = []
        self._fds: list[int] = []
        self.started_at: float | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None

    async def start(self) -> None:
        if self.running:
            return
        if self.state is not None:
            self.state.open()
        loop = asyncio.get_running_loop()
        for fd in self._open():
            loop.add_reader(fd, self._readable)
            self._fds.append(fd)
        self._tasks.append(asyncio.create_task(self._every(EXPIRE_EVERY, self._periodic)))
        self.started_at = time.monotonic()

    async def stop(self) -> None:
        if not self.running:
            return
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            loop.remove_reader(fd)
        self._fds.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.state is not None:
            await self.state.close()
        self.started_at = None

    @property
    def restored(self) -> dict[str, Any]:
        return self.state.restored if self.state is not None else {}

    @property
    def checkpoints(self) -> int:
        return self.state.checkpoints if self.state is not None else 0

    async def save(self) -> dict[str, int] | None:
        """Checkpoint the table to the state file, if there is one (TableState.save)."""
        return await self.state.save() if self.state is not None else None

    async def _every(self, period: float, work: Any) -> None:
        while True:
            await asyncio.sleep(period)
            work()

    def _periodic(self) -> None:
        self.table.expire()
        if self.stats_file:
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats(), sort_keys=True))
            tmp.replace(self.stats_file)

    def stats(self) -> dict[str, Any]:
        out = {"role": self.name, "connections": len(self.table), "table": self.table.stats()}
        if self.state is not None:
            out.update(self.state.stats())
        return out

    def _open(self) -> list[int]:
        raise NotImplementedError

    def _readable(self) -> None:
        raise NotImplementedError


class KernelListener(_Role):
    """Keeps the connections a kernel master sync daemon sends (multicast on `interface`)."""

    name = "listen"

    def __init__(self, interface: str, *, group: str = "224.0.0.81", port: int = 8848, syncid: int = 0,
                 **kw: Any) -> None:
        table = kw.pop("table", None)
        super().__init__(table if table is not None else ConnTable(syncid=syncid), **kw)
        self.interface, self.group, self.port = interface, group, port
        self.receiver: SyncReceiver | None = None

    def _open(self) -> list[int]:
        self.receiver = SyncReceiver(group=self.group, port=self.port, interface=self.interface)
        return [self.receiver.fileno()]

    def _readable(self) -> None:
        assert self.receiver is not None
        self.receiver.drain(self.table)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.receiver is not None:
            totals, peers = self.receiver.stats()
            out.update(received=totals, peers=peers)
        return out


class KernelFeeder(_Role):
    """Sends the table to a kernel backup daemon (multicast on `interface`), now and
    every `refresh` seconds, so the kernel's copies never time out while ours live."""

    name = "feed"

    def __init__(self, interface: str, table: ConnTable, *, group: str = "224.0.0.81", port: int = 8848,
                 syncid: int = 0, refresh: float = 30.0, **kw: Any) -> None:
        super().__init__(table, **kw)
        self.interface, self.group, self.port, self.syncid, self.refresh = interface, group, port, syncid, refresh
        self.sender: SyncSender | None = None
        self.sent = 0

    def _open(self) -> list[int]:
        self.sender = SyncSender(interface=self.interface, group=self.group, port=self.port)
        self.feed()
        self._tasks.append(asyncio.create_task(self._every(self.refresh, self.feed)))
        return []

    def feed(self) -> int:
        assert self.sender is not None
        n = self.sender.send_table(self.table, syncid=self.syncid)
        self.sent += n
        return n

    def _readable(self) -> None:  # never registered
        pass

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "datagrams_sent": self.sent}


class RelayPrimary(_Role):
    """Primary director: local kernel master -> table -> authenticated frames to `peers`
    (and/or multicast `group` out of `device`, hop limit `ttl`). Full copies are paced
    (`window` frames in flight) and carry `syncid` until the kernel master's own is heard."""

    name = "relay-primary"

    def __init__(self, *, node: int, key: bytes, kernel_interface: str, bind: str, peers: list[str],
                 key_id: int = 1, port: int = 8849, seed: bool = False, syncid: int | None = None,
                 device: str | None = None, group: str | None = None, ttl: int = 1, window: int = 512,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.seed = seed
        self.seeded: SeedReport | None = None
        self.args: Mapping[str, Any] = dict(node=node, epoch=epoch_now(), key=key, key_id=key_id,
                                            kernel_interface=kernel_interface, bind=bind, peers=peers, port=port,
                                            syncid=syncid, device=device, group=group, ttl=ttl, window=window)
        self.relay: PrimaryRelay | None = None

    def _open(self) -> list[int]:
        # Listen first, then read the kernel: a connection made in between is
        # in both, which does no harm; the reverse order could miss it.
        self.relay = PrimaryRelay(**self.args)
        if self.seed:
            self.seeded = seed_table(self.table)
        if len(self.table):
            self.relay.resync(self.table)  # a primary that starts with a table opens with it
        # A paced copy also moves on by time (acknowledgements may be lost).
        self._tasks.append(asyncio.create_task(self._every(TICK, self._readable)))
        return list(self.relay.filenos())

    def _readable(self) -> None:
        assert self.relay is not None
        self.relay.pump(self.table)

    def stats(self) -> dict[str, Any]:
        out = {**super().stats(), "relay": self.relay.stats() if self.relay else {}}
        if self.seeded is not None:
            out["seeded"] = self.seeded.seeded
        return out


class RelayBackup(_Role):
    """Backup director: frames from `primary` -> table -> local kernel backup daemon."""

    name = "relay-backup"

    def __init__(self, *, node: int, key: bytes, bind: str, primary: str, kernel_interface: str | None = None,
                 key_id: int = 1, port: int = 8849, device: str | None = None, group: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.args: Mapping[str, Any] = dict(node=node, epoch=epoch_now(), key=key, key_id=key_id, bind=bind,
                                            primary=primary, port=port, kernel_interface=kernel_interface,
                                            device=device, group=group)
        self.relay: BackupRelay | None = None

    def _open(self) -> list[int]:
        self.relay = BackupRelay(**self.args)
        self._tasks.append(asyncio.create_task(self._every(TICK, self.relay.tick)))
        return [self.relay.fileno()]

    def _readable(self) -> None:
        assert self.relay is not None
        self.relay.pump(self.table)

    @property
    def caught_up(self) -> bool:
        """The whole primary table is here: safe to take over."""
        return self.relay is not None and self.relay.caught_up()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "caught_up": self.caught_up, "relay": self.relay.stats() if self.relay else {}}
