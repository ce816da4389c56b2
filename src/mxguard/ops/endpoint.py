"""A very small HTTP/1.0 server on the event loop: `/metrics` and `/status.json`.

prometheus-client's own server answers from a thread; ours runs on the loop so that the
collectors can read the live session set and the gate without locks. The same handler serves
a TCP address (`[metrics].listen`, for Prometheus) and a UNIX socket
(`[metrics].control_socket`, for `mxguard top` on the host, guarded by file permissions).
Requests are GET only, one per connection, with a capped head and a read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mxguard.ops.metrics import Metrics

log = logging.getLogger("mxguard.metrics")

MAX_HEAD = 8192
READ_TIMEOUT = 5.0

Response = tuple[int, str, bytes]


def route(metrics: Metrics, path: str) -> Response:
    path = path.split("?", 1)[0]
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
    if path == "/status.json":
        body = json.dumps(metrics.status(), separators=(",", ":")).encode()
        return 200, "application/json", body
    if path == "/":
        return 200, "text/plain; charset=utf-8", b"mxguard: /metrics /status.json\n"
    return 404, "text/plain; charset=utf-8", b"not found\n"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def handler(
    answer: Callable[[str], Response],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            code, ctype, body = 400, "text/plain", b"bad request\n"
        elif parts[0] not in ("GET", "HEAD"):
            code, ctype, body = 405, "text/plain", b"GET only\n"
        else:
            try:
                code, ctype, body = answer(parts[1])
            except Exception:
                log.exception("metrics endpoint failed")
                code, ctype, body = 500, "text/plain", b"internal error\n"
        head_out = (
            f"HTTP/1.0 {code} {_REASONS.get(code, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            writer.write(head_out if parts and parts[0] == "HEAD" else head_out + body)
            await writer.drain()
        writer.close()

    return handle


def tcp_socket(host: str, port: int) -> socket.socket:
    """Bound now (so a busy port is a start-up error naming the key), served later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, reuse_port=False, backlog=64)


def unix_socket(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left by a process that is gone
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o660)  # the mxguard user and its group (admins who run `top`)
    sock.listen(16)
    return sock


class Endpoints:
    """The bound sockets and, once the loop runs them, their servers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.socks: list[socket.socket] = []
        self.unix_path: Path | None = None
        self.servers: list[asyncio.Server] = []

    async def run(self) -> None:
        handle = handler(lambda path: route(self.metrics, path))
        for sock in self.socks:
            if sock.family == socket.AF_UNIX:
                server = await asyncio.start_unix_server(handle, sock=sock, limit=MAX_HEAD)
            else:
                server = await asyncio.start_server(handle, sock=sock, limit=MAX_HEAD)
            self.servers.append(server)
        await asyncio.Event().wait()  # serve until cancelled with the other tasks

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                self.unix_path.unlink()
