"""The demo's real servers and client, run as `python -m understudy.demo.apps ...`.

* `server NAME PORT`: HTTP/1.1 with keep-alive; `/` answers NAME, `/health` ok.
* `client VIP LONG`: LONG keep-alive connections, each asking every 0.25 s and
  never reconnecting (a connection that fails is dead: that is what the demo
  counts), plus a new short connection every 50 ms. Prints one JSON line of
  totals every 0.25 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

LONG_EVERY = 0.25
SHORT_EVERY = 0.05
#: A request on a long-lived connection may stall through a failover; it only
#: counts as failed if the connection breaks or stays silent this long.
LONG_TIMEOUT = 8.0
#: A client gives a new connection this long (a lost SYN is resent after 1 s).
SHORT_TIMEOUT = 3.0


async def serve(name: str, port: int) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
                body = b"ok\n" if path == b"/health" else f"{name}\n".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    server = await asyncio.start_server(client, "0.0.0.0", port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> str:
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    return (await reader.readexactly(length)).decode().strip()


async def run_client(vip: str, long_count: int) -> None:
    stats: dict[str, Any] = {"short_ok": 0, "short_fail": 0, "long_ok": 0, "long_open": 0, "long_dead": 0,
                             "servers": {}, "dead": {}, "last_short_fail": None}
    start = time.monotonic()

    async def long_lived(i: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, 80), 5)
            server = await asyncio.wait_for(_request(reader, writer, vip), 5)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            stats["dead"][i] = f"open: {e or type(e).__name__}"
            stats["long_dead"] += 1
            return
        stats["servers"][i] = server
        stats["long_open"] += 1
        try:
            while True:
                await asyncio.sleep(LONG_EVERY)
                got = await asyncio.wait_for(_request(reader, writer, vip), LONG_TIMEOUT)
                if got != server:
                    raise ConnectionError(f"answered by {got}, opened on {server}")
                stats["long_ok"] += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            stats["dead"][i] = f"{time.monotonic() - start:.2f}s {type(e).__name__} {e}".strip()
            stats["long_dead"] += 1
            stats["long_open"] -= 1
            writer.close()

    async def short() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, 80), SHORT_TIMEOUT)
            try:
                await asyncio.wait_for(_request(reader, writer, vip), SHORT_TIMEOUT)
            finally:
                writer.close()
            stats["short_ok"] += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            stats["short_fail"] += 1
            stats["last_short_fail"] = round(time.monotonic() - start, 3)

    tasks = [asyncio.create_task(long_lived(i)) for i in range(long_count)]
    tick = 0
    while True:
        tasks.append(asyncio.create_task(short()))
        tasks = [t for t in tasks if not t.done()]
        tick += 1
        if tick % int(LONG_EVERY / SHORT_EVERY) == 0:
            print(json.dumps({"t": round(time.monotonic() - start, 3), **stats}), flush=True)
        await asyncio.sleep(SHORT_EVERY)


def main(argv: list[str]) -> int:
    if argv[:1] == ["server"]:
        asyncio.run(serve(argv[1], int(argv[2])))
    elif argv[:1] == ["client"]:
        asyncio.run(run_client(argv[1], int(argv[2])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
