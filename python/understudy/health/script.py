"""External script check: the exit status decides (and may set the weight).

The script runs in its own session, so a timeout kills it and everything it
started (its process group).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from understudy.health.model import ScriptProbe
from understudy.health.result import Result

__all__ = ["probe"]

MAX_OUTPUT = 200  # bytes of the script's output kept for the reason


async def _drain(stream: asyncio.StreamReader, keep: bytearray) -> None:
    # Read all (so the script never blocks on a full pipe) but keep only the start.
    while chunk := await stream.read(4096):
        keep += chunk[: MAX_OUTPUT - len(keep)]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _verdict(cfg: ScriptProbe, status: int) -> tuple[bool, str, int | None]:
    if status < 0:
        return False, f"killed by signal {-status}", None
    if cfg.dynamic_weight and status >= 2:
        return True, "", status - 2
    return status == 0, "" if status == 0 else f"exit status {status}", None


async def probe(cfg: ScriptProbe, timeout: float) -> Result:
    """Run cfg.argv; down on a non-zero status or when it outlives `timeout` seconds."""
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *cfg.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
    except OSError as exc:
        return Result(False, f"cannot run {cfg.argv[0]}: {exc.strerror or exc}", time.monotonic() - start)
    output = bytearray()
    assert proc.stdout is not None
    reader = asyncio.ensure_future(_drain(proc.stdout, output))
    try:
        async with asyncio.timeout(timeout):
            status = await proc.wait()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return Result(False, "timeout (killed)", time.monotonic() - start)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        await asyncio.shield(proc.wait())
        raise
    finally:
        # A child the script left behind may hold the pipe open: stop reading at its exit.
        if not reader.done():
            await asyncio.wait([reader], timeout=0.05)
            reader.cancel()
    ok, reason, weight = _verdict(cfg, status)
    if reason and output.strip():
        reason += ": " + output.decode("utf-8", "replace").strip().splitlines()[-1][:MAX_OUTPUT]
    return Result(ok, reason, time.monotonic() - start, weight)
