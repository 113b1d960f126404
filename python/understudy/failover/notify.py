"""State-change scripts: run the operator's command when this node's role changes.

Scripts run one at a time, in the order of the changes, off the failover loop
(a slow script delays the next script, never the election or the VIPs). Each
gets the new state as its last argument and the details in the environment;
one that outlives its timeout is killed with its whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from understudy.config.cluster import NotifyConfig
from understudy.failover.policy import Role

__all__ = ["Notifier", "STATE_NAMES"]

log = logging.getLogger("understudy.notify")

#: The state word scripts receive (keepalived's notify scripts use the same words).
STATE_NAMES = {
    Role.INIT: "init",
    Role.BACKUP: "backup",
    Role.PRIMARY: "primary",
    Role.FAULT: "fault",
    Role.STOPPING: "stop",
}


class Notifier:
    """Queue of role changes, each run through the configured commands."""

    def __init__(self, config: NotifyConfig, *, node: int, cluster: int) -> None:
        self.config = config
        self.node, self.cluster = node, cluster
        self._queue: asyncio.Queue[tuple[Role, Role, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.ran = 0
        self.failed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="notify")

    async def stop(self, *, drain: bool = True) -> None:
        """Stop after running what is queued (the `stop` script included)."""
        if self._task is None:
            return
        if drain:
            await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def changed(self, old: Role, new: Role, reason: str) -> None:
        """Record a role change; its scripts run in order, soon."""
        self._queue.put_nowait((old, new, reason))

    def _commands(self, role: Role) -> list[tuple[str, ...]]:
        specific = {
            Role.PRIMARY: self.config.primary,
            Role.BACKUP: self.config.backup,
            Role.FAULT: self.config.fault,
            Role.STOPPING: self.config.stop,
        }.get(role)
        return [c for c in (specific, self.config.any) if c]

    async def _run(self) -> None:
        while True:
            old, new, reason = await self._queue.get()
            try:
                for argv in self._commands(new):
                    await self._exec(argv, old, new, reason)
            finally:
                self._queue.task_done()

    async def _exec(self, argv: tuple[str, ...], old: Role, new: Role, reason: str) -> None:
        env = dict(
            os.environ,
            UNDERSTUDY_STATE=STATE_NAMES[new],
            UNDERSTUDY_PREVIOUS=STATE_NAMES[old],
            UNDERSTUDY_REASON=reason,
            UNDERSTUDY_NODE=str(self.node),
            UNDERSTUDY_CLUSTER=str(self.cluster),
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, STATE_NAMES[new], env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
        except OSError as e:
            self.failed += 1
            log.error("notify %s: cannot run %s: %s", STATE_NAMES[new], argv[0], e.strerror)
            return
        try:
            code = await asyncio.wait_for(proc.wait(), self.config.timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            self.failed += 1
            log.error("notify %s: %s killed after %.1f s", STATE_NAMES[new], argv[0], self.config.timeout)
            return
        self.ran += 1
        if code != 0:
            self.failed += 1
            log.warning("notify %s: %s exited with %d", STATE_NAMES[new], argv[0], code)
