"""The CLI's side of the admin socket (blocking: one command per process)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["AdminError", "request", "stream"]


class AdminError(RuntimeError):
    """The daemon refused the command, or cannot be reached."""


def _connect(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise AdminError(f"no daemon is listening on {path} (is `understudy run` running?)") from None
    except PermissionError:
        sock.close()
        raise AdminError(f"permission denied on {path}: the admin socket is root only") from None
    except OSError as e:
        sock.close()
        raise AdminError(f"cannot connect to {path}: {e.strerror}") from None
    return sock


def _send(sock: socket.socket, command: str, args: dict[str, Any] | None) -> None:
    sock.sendall(json.dumps({"command": command, "args": args or {}}).encode() + b"\n")


def request(path: str | os.PathLike[str], command: str, args: dict[str, Any] | None = None,
            *, timeout: float = 30.0) -> Any:
    """Run one command; returns its result or raises AdminError with the daemon's reason."""
    with _connect(path, timeout) as sock:
        _send(sock, command, args)
        with sock.makefile("rb") as f:
            line = f.readline()
    if not line:
        raise AdminError("the daemon closed the connection without answering")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error", "unknown error")))
    return reply.get("result")


def stream(path: str | os.PathLike[str] | Path, command: str, args: dict[str, Any] | None = None) -> Iterator[Any]:
    """Yield each line a streaming command sends, until the daemon closes."""
    with _connect(path, None) as sock:
        _send(sock, command, args)
        with sock.makefile("rb") as f:
            for line in f:
                yield json.loads(line)
