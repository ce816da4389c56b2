"""`mxguard queue`: look at and act on a backup's spool, whether its daemon runs or not.

The commands talk to the spool's SQLite index directly (WAL mode lets a reader and a writer
share it), never to the daemon: `flush` and `retry` make messages due now and the running
forwarder picks them up on its next poll (about a second); `delete` removes the envelope first
and then the body, so a forwarder racing with it finds the message gone and moves on.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mxguard.cliutil import config_option, fail, table_console
from mxguard.config import ConfigError, load_config
from mxguard.policy.facts import Role
from mxguard.queue.spool import QueuedMessage, SpoolIndex

out = table_console()
PRIORITY_NAMES = {0: "allowed", 1: "passed", 2: "none"}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    """Two units are enough to read a queue: 3d4h, 2h5m, 5m3s, 12s."""
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def spool_dir(config_path: str | None, spool: str | None, mx_host: str | None) -> Path:
    """The spool to work on: --spool, or the backup [[mx]] of the config (--mx if several)."""
    if spool:
        path = Path(spool)
    else:
        try:
            cfg = load_config(config_path)
        except ConfigError as exc:
            fail(str(exc))
            raise AssertionError from None  # fail() exits
        backups = cfg.mx_by_role(Role.BACKUP)
        if mx_host:
            backups = [m for m in backups if m.host.lower() == mx_host.lower()]
            if not backups:
                fail(f"{cfg.source}: no backup [[mx]] named {mx_host}")
        if not backups:
            fail(f"{cfg.source}: no backup [[mx]]; give --spool DIR")
        if len(backups) > 1:
            names = ", ".join(m.host for m in backups)
            fail(f"{cfg.source}: several backups ({names}); choose one with --mx HOST")
        mx = backups[0]
        path = Path(mx.spool or f"./mxguard-data/spool-{mx.host}")
    if not (path / "index.sqlite").exists():
        fail(f"{path}: no spool here (no index.sqlite)")
    return path


def _open(ctx: click.Context) -> SpoolIndex:
    obj = ctx.obj
    return SpoolIndex(spool_dir(obj["config"], obj["spool"], obj["mx"]))


def _resolve(index: SpoolIndex, msg_id: str) -> QueuedMessage:
    found = index.find(msg_id)
    exact = [m for m in found if m.id == msg_id]
    if exact:
        return exact[0]
    if not found:
        fail(f"{msg_id}: no such message in the queue", 1)
    if len(found) > 1:
        fail(f"{msg_id}: matches {len(found)} messages; give more of the id", 1)
    return found[0]


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group()
@config_option
@click.option("--spool", type=click.Path(file_okay=False), help="Spool directory (else: config).")
@click.option("--mx", "mx_host", help="The backup [[mx]] host, when the config has several.")
@click.pass_context
def queue(
    ctx: click.Context, config_path: str | None, spool: str | None, mx_host: str | None
) -> None:
    """Inspect and manage the backup's spool (live or stopped).

    \b
    mxguard queue list              what waits, best history first
    mxguard queue show ID           one message's envelope and attempts
    mxguard queue flush             retry everything now
    """
    ctx.obj = {"config": config_path, "spool": spool, "mx": mx_host}


@queue.command("list")
@click.option("--state", type=click.Choice(["queued", "held"]), default=None)
@click.option("--limit", type=int, default=None, help="At most this many messages.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def list_(ctx: click.Context, state: str | None, limit: int | None, as_json: bool) -> None:
    """List the spooled messages, oldest first."""
    index = _open(ctx)
    messages = index.all(state, limit)
    if as_json:
        _dump([m.as_json() for m in messages])
        return
    now = time.time()
    table = Table(title=f"{len(messages)} message(s)", title_justify="left")
    for col in ("id", "age", "state", "prio", "tries", "next", "size", "sender", "recipients"):
        table.add_column(
            col, overflow="fold", justify="right" if col in ("size", "tries") else "left"
        )
    for m in messages:
        rcpts = ", ".join(
            f"{r.rcpt}" + ("" if r.state == "pending" else f" ({r.state})") for r in m.recipients
        )
        table.add_row(
            m.id,
            _age(now - m.created),
            m.state,
            PRIORITY_NAMES.get(m.priority, str(m.priority)),
            str(m.attempts),
            "-"
            if m.state != "queued"
            else ("now" if m.next_attempt <= now else _age(m.next_attempt - now)),
            str(m.size),
            f"<{m.sender}>",
            rcpts,
        )
    out.print(table)


@queue.command()
@click.argument("msg_id")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def show(ctx: click.Context, msg_id: str, as_json: bool) -> None:
    """Show one message's envelope, state and per-recipient answers."""
    index = _open(ctx)
    m = _resolve(index, msg_id)
    if as_json:
        _dump(m.as_json())
        return
    table = Table(show_header=False, title=f"message {m.id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in (
        ("state", m.state),
        ("sender", f"<{m.sender}>"),
        ("size", str(m.size)),
        ("client", f"{m.client} ({m.helo})"),
        ("message-id", m.msgid or "-"),
        ("received", _when(m.created)),
        ("attempts", str(m.attempts)),
        ("next attempt", _when(m.next_attempt) if m.state == "queued" else "-"),
        ("priority", PRIORITY_NAMES.get(m.priority, str(m.priority))),
        ("last error", m.last_error or "-"),
        ("flags", ", ".join(f for f, on in (("spam", m.spam), ("dsn", m.dsn)) if on) or "-"),
    ):
        table.add_row(name, value)
    for r in m.recipients:
        table.add_row("recipient", f"<{r.rcpt}> {r.state}" + (f": {r.reply}" if r.reply else ""))
    out.print(table)


@queue.command()
@click.argument("msg_ids", nargs=-1, required=True)
@click.pass_context
def retry(ctx: click.Context, msg_ids: tuple[str, ...]) -> None:
    """Make messages due now; held recipients get another chance."""
    index = _open(ctx)
    ids = [_resolve(index, i).id for i in msg_ids]
    n = index.reschedule(ids, time.time())
    click.echo(f"{n} message(s) due now")


@queue.command()
@click.argument("msg_ids", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, msg_ids: tuple[str, ...]) -> None:
    """Delete messages from the spool (they are not delivered, nobody is told)."""
    index = _open(ctx)
    root = Path(index.root)
    n = 0
    for i in msg_ids:
        m = _resolve(index, i)
        if index.remove(m.id, "deleted"):
            n += 1
        (root / "msg" / m.id).unlink(missing_ok=True)
    click.echo(f"{n} message(s) deleted")


@queue.command()
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Make every queued message due now (held ones stay held; use retry for those)."""
    index = _open(ctx)
    n = index.reschedule(None, time.time())
    click.echo(f"{n} message(s) due now")


@queue.command()
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts and sizes: queued, held, by priority; delivered and deleted so far."""
    index = _open(ctx)
    s = index.stats()
    s["spool"] = str(index.root)
    if as_json:
        _dump(s)
        return
    table = Table(show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right", overflow="fold")
    table.add_row("spool", str(index.root))
    for key in ("queued", "held", "bytes", "delivered", "held_ever", "deleted"):
        table.add_row(key.replace("_", " "), str(s.get(key, 0)))
    for prio, n in sorted(s["by_priority"].items()):
        table.add_row(f"queued, history {PRIORITY_NAMES.get(int(prio), prio)}", str(n))
    table.add_row("oldest queued", _when(s["oldest"]))
    table.add_row("next attempt", _when(s["next_attempt"]))
    out.print(table)


if __name__ == "__main__":  # pragma: no cover
    queue(sys.argv[1:])
