"""A three-address tier (primary, backup, trap) with metrics on, for the operations tests.

Each role listens on its own loopback address (127.0.0.1, .2, .3), like the one-host deploy
guide; the backup forwards to the primary in the same process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxguard.ops.client import Snapshot, Source, read
from tests.helpers.servers import free_port, wait_for
from tests.helpers.smtpload import send_one


@dataclass(frozen=True)
class OpsPorts:
    primary: int
    backup: int
    trap: int
    metrics: int

    @classmethod
    def pick(cls) -> OpsPorts:
        return cls(
            free_port("127.0.0.1"), free_port("127.0.0.2"), free_port("127.0.0.3"), free_port()
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics}"


def ops_config(
    tmp: Path,
    ports: OpsPorts,
    *,
    recipients: tuple[str, ...] = ("alice@example.test", "bob@example.test"),
    server: str = "",
    extra: str = "",
    trap_listen: str | None = None,
) -> str:
    rcpts = ", ".join(f'"{r}"' for r in recipients)
    return f"""
[[domain]]
name = "example.test"
recipients = [{rcpts}]

[server]
{server}

[delivery]
target = "maildir:{tmp}/maildir"

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"

[relay]
trusted_peers = ["127.0.0.2/32"]

[metrics]
listen = "127.0.0.1:{ports.metrics}"
control_socket = "{tmp}/control.sock"

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "127.0.0.1:{ports.primary}"

[[mx]]
host = "backup.example.test"
preference = 20
role = "backup"
listen = "127.0.0.2:{ports.backup}"
forward_to = "mail.example.test"
spool = "{tmp}/spool"
source_address = "127.0.0.2"

[[mx]]
host = "trap.example.test"
preference = 90
role = "trap"
listen = "{trap_listen or f"127.0.0.3:{ports.trap}"}"
{extra}
"""


#: the numbers of the scripted load, per kind
LOAD = {"accepted": 6, "unknown": 3, "backup": 4, "trap": 5}
RATELIMIT = "\n[ratelimit]\nconnections_per_minute = 1000\n"  # so the state store is used


def scripted_load(ports: OpsPorts) -> None:
    """Bounded: a known number of each outcome, the refused ones from their own networks."""
    for i in range(LOAD["accepted"]):
        assert send_one("127.0.0.1", ports.primary, "alice@example.test", f"a{i}")[0] == 250
    for i in range(LOAD["unknown"]):
        code, _ = send_one("127.0.0.1", ports.primary, "nobody@example.test", f"u{i}", "127.1.2.3")
        assert code == 550
    for i in range(LOAD["backup"]):
        assert send_one("127.0.0.2", ports.backup, "bob@example.test", f"b{i}")[0] == 250
    for i in range(LOAD["trap"]):
        code, _ = send_one("127.0.0.3", ports.trap, "bob@example.test", f"t{i}", "127.9.9.9")
        assert code == 451


def events(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def settled(source: Source, tmp: Path) -> Snapshot:
    """A snapshot once the backup has forwarded everything and the event log caught up."""

    def done() -> bool:
        snap = read(source)
        forwarded = snap.total("mxguard_queue_deliveries_total", outcome="delivered")
        logged = snap.total("mxguard_decisions_total")
        return forwarded == LOAD["backup"] and logged == len(events(tmp))

    assert wait_for(done, 20, 0.2)
    time.sleep(0.5)  # nothing more is coming
    return read(source)
