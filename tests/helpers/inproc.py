"""Run a real mxguard server inside the test's event loop, on free loopback ports.

The listeners are the production ones (real sockets); only the process is shared with the
test, which lets tests read the server's state and swap its clock.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxguard import serve
from mxguard.config import Config, load_config_text


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


BASE = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "bob@example.test", "postmaster@example.test"]

[delivery]
target = "maildir:{tmp}/maildir"

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "127.0.0.1:0"
"""


@dataclass
class Running:
    server: serve.Server
    config: Config
    tmp: Path

    def port(self, host: str = "mail.example.test") -> int:
        for listener in self.server.listeners:
            if listener.mx.host == host:
                return listener.bound()[0][1]
        raise KeyError(host)

    @property
    def events_path(self) -> Path:
        return Path(self.config.log.events)

    def events(self) -> list[dict[str, Any]]:
        """The event log as written so far (flushed first: the server buffers it)."""
        self.server.events.flush()
        return [json.loads(x) for x in self.events_path.read_text().splitlines()]

    def maildir_files(self, rcpt: str = "alice@example.test") -> list[Path]:
        local, domain = rcpt.split("@")
        return sorted((self.tmp / "maildir" / domain / local / "new").glob("*"))


@contextlib.asynccontextmanager
async def running(tmp: Path, extra: str = "", base: str = BASE) -> AsyncIterator[Running]:
    text = base.format(tmp=tmp) + "\n" + extra.format(tmp=tmp)
    cfg = load_config_text(text, str(tmp / "mxguard.toml"))
    server = serve.build_server(cfg)
    await serve.start(server)
    try:
        yield Running(server, cfg, tmp)
    finally:
        await serve.stop(server)
