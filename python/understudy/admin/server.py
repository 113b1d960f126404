"""The daemon's side of the admin socket."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SOCKET", "AdminServer", "Handler"]

log = logging.getLogger("understudy.admin")

DEFAULT_SOCKET = Path("/run/understudy/admin.sock")
#: A request line longer than this is refused (a client cannot make us buffer without bound).
MAX_REQUEST = 64 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class AdminServer:
    """Serve commands to clients with the daemon's own user id (root) only."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_SOCKET) -> None:
        self.path = Path(path)
        self.handlers: dict[str, Handler] = {}
        self.streams: dict[str, Callable[[dict[str, Any]], AsyncIterator[Any]]] = {}
        self._server: asyncio.AbstractServer | None = None
        self.refused = 0

    def command(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def stream(self, name: str, producer: Callable[[dict[str, Any]], AsyncIterator[Any]]) -> None:
        self.streams[name] = producer

    async def start(self) -> None:
        if self._server is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # left by a daemon that died
            else:
                raise OSError(errno.EADDRINUSE, f"another daemon answers on {self.path}")
            finally:
                probe.close()
        # Created 0600 under a 0700 directory: the kernel refuses connect() to others
        # before we ever see them; SO_PEERCRED below is the second lock.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid not in (0, os.geteuid()):
                self.refused += 1
                await self._reply(writer, {"ok": False, "error": "permission denied: root only"})
                return
            while line := await reader.readline():
                if not await self._serve(line, writer):
                    break
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, line: bytes, writer: asyncio.StreamWriter) -> bool:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                raise ValueError("expected {\"command\": NAME, \"args\": {...}}")
            name, args = request["command"], request.get("args") or {}
            if not isinstance(args, dict):
                raise ValueError("args must be an object")
        except ValueError as e:
            await self._reply(writer, {"ok": False, "error": f"bad request: {e}"})
            return True
        if name in self.streams:
            async for item in self.streams[name](args):
                await self._reply(writer, item)
            return False
        handler = self.handlers.get(name)
        if handler is None:
            known = ", ".join(sorted([*self.handlers, *self.streams]))
            await self._reply(writer, {"ok": False, "error": f"unknown command {name!r} (known: {known})"})
            return True
        try:
            result = await handler(args)
        except (ValueError, KeyError, LookupError, RuntimeError, OSError) as e:
            await self._reply(writer, {"ok": False, "error": str(e) or type(e).__name__})
        except Exception as e:  # a bug in one command must not take the daemon down
            log.exception("admin command %s failed", name)
            await self._reply(writer, {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"})
        else:
            await self._reply(writer, {"ok": True, "result": result})
        return True

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, obj: Any) -> None:
        writer.write(json.dumps(obj, default=str).encode() + b"\n")
        await writer.drain()
