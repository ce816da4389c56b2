"""The backup's durable spool: message files plus an SQLite index of envelopes.

A message is safe before the client hears ``250``: the body is written to ``tmp/``, fsynced,
renamed into ``msg/``, the directory is fsynced, and only then is the envelope committed to
the index (``synchronous=FULL``). A crash before the commit leaves a file with no record;
the client got no ``250`` and will send again, so recovery moves such files aside to
``orphans/`` (never deletes them: a lost index must not mean lost mail). A crash after the
commit loses nothing; at worst the forwarder sends a message twice (RFC 5321 6.1 prefers a
duplicate to a loss).

The index is in WAL mode so that `mxguard queue` can read and edit it while the daemon runs;
the daemon's forwarder re-reads it on every poll, which is how `queue flush` and `queue retry`
reach a live process.

Layout::

    SPOOL/index.sqlite   envelopes, states, attempts, priorities
    SPOOL/tmp/ID         being written
    SPOOL/msg/ID         committed bodies (with our Received: header on top)
    SPOOL/orphans/ID     bodies found without a record at start-up
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mxguard.durable import fsync_dir, write_synced

log = logging.getLogger("mxguard.queue")

T = TypeVar("T")

QUEUED, HELD = "queued", "held"
PENDING, SENT = "pending", "sent"  # per-recipient states; HELD is shared

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,          -- JSON: [{"rcpt", "state", "reply"}]
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,               -- queued | held
    priority INTEGER NOT NULL,         -- 0 allowlisted, 1 passed greylisting, 2 no history
    client TEXT NOT NULL DEFAULT '',
    helo TEXT NOT NULL DEFAULT '',
    msgid TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    unreachable INTEGER NOT NULL DEFAULT 0,  -- the last attempt could not reach the next hop
    spam INTEGER NOT NULL DEFAULT 0,
    dsn INTEGER NOT NULL DEFAULT 0     -- a delivery status notification we generated
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(state, priority, next_attempt);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COLUMNS = (
    "id, sender, recipients, size, created, next_attempt, attempts, state, priority, "
    "client, helo, msgid, last_error, unreachable, spam, dsn"
)


@dataclass
class Recipient:
    rcpt: str
    state: str = PENDING
    reply: str = ""


@dataclass
class QueuedMessage:
    id: str
    sender: str
    recipients: list[Recipient]
    size: int
    created: float
    next_attempt: float
    attempts: int = 0
    state: str = QUEUED
    priority: int = 2
    client: str = ""
    helo: str = ""
    msgid: str = ""
    last_error: str = ""
    unreachable: bool = False
    spam: bool = False
    dsn: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> list[str]:
        return [r.rcpt for r in self.recipients if r.state == PENDING]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender": self.sender,
            "recipients": [r.__dict__ for r in self.recipients],
            "size": self.size,
            "created": self.created,
            "next_attempt": self.next_attempt,
            "attempts": self.attempts,
            "state": self.state,
            "priority": self.priority,
            "client": self.client,
            "helo": self.helo,
            "msgid": self.msgid,
            "last_error": self.last_error,
            "unreachable": self.unreachable,
            "spam": self.spam,
            "dsn": self.dsn,
        }


def _row(r: tuple[Any, ...]) -> QueuedMessage:
    return QueuedMessage(
        id=r[0],
        sender=r[1],
        recipients=[Recipient(**x) for x in json.loads(r[2])],
        size=r[3],
        created=r[4],
        next_attempt=r[5],
        attempts=r[6],
        state=r[7],
        priority=r[8],
        client=r[9],
        helo=r[10],
        msgid=r[11],
        last_error=r[12],
        unreachable=bool(r[13]),
        spam=bool(r[14]),
        dsn=bool(r[15]),
    )


def _rcpts_json(recipients: Iterable[Recipient]) -> str:
    return json.dumps([r.__dict__ for r in recipients], ensure_ascii=False)


class SpoolIndex:
    """The index alone, synchronous: shared by the daemon (on its own thread) and the CLI."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.db_path = self.root / "index.sqlite"
        self.db = sqlite3.connect(str(self.db_path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: the commit that precedes "250" must be on disk, not only in the OS cache.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def insert(self, m: QueuedMessage) -> None:
        self._tx(
            lambda db: db.execute(
                f"INSERT INTO messages ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.id,
                    m.sender,
                    _rcpts_json(m.recipients),
                    m.size,
                    m.created,
                    m.next_attempt,
                    m.attempts,
                    m.state,
                    m.priority,
                    m.client,
                    m.helo,
                    m.msgid,
                    m.last_error,
                    int(m.unreachable),
                    int(m.spam),
                    int(m.dsn),
                ),
            )
        )

    def get(self, msg_id: str) -> QueuedMessage | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (msg_id,)).fetchone()
        return _row(row) if row else None

    def find(self, prefix: str) -> list[QueuedMessage]:
        """Messages whose id starts with `prefix` (the CLI accepts a unique prefix)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE id >= ? AND id < ? ORDER BY id",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        return [_row(r) for r in rows]

    def all(self, state: str | None = None, limit: int | None = None) -> list[QueuedMessage]:
        sql = f"SELECT {_COLUMNS} FROM messages"
        args: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY created, id"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row(r) for r in self.db.execute(sql, args).fetchall()]

    def due(self, now: float, limit: int, exclude: Iterable[str] = ()) -> list[QueuedMessage]:
        """Queued messages whose time has come, best history first, then oldest first."""
        skip = set(exclude)
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE state = ? AND next_attempt <= ? "
            "ORDER BY priority, next_attempt LIMIT ?",
            (QUEUED, now, limit + len(skip)),
        ).fetchall()
        return [m for m in (_row(r) for r in rows) if m.id not in skip][:limit]

    def next_due(self) -> float | None:
        row = self.db.execute(
            "SELECT MIN(next_attempt) FROM messages WHERE state = ?", (QUEUED,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def update(self, m: QueuedMessage) -> bool:
        """Write back a message after an attempt; False if it was deleted meanwhile (CLI)."""
        n = self._tx(
            lambda db: (
                db.execute(
                    "UPDATE messages SET recipients = ?, next_attempt = ?, attempts = ?, state = ?, "
                    "last_error = ?, unreachable = ? WHERE id = ?",
                    (
                        _rcpts_json(m.recipients),
                        m.next_attempt,
                        m.attempts,
                        m.state,
                        m.last_error,
                        int(m.unreachable),
                        m.id,
                    ),
                ).rowcount
            )
        )
        return bool(n)

    def remove(self, msg_id: str, counter: str | None = None) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            n = db.execute("DELETE FROM messages WHERE id = ?", (msg_id,)).rowcount
            if n and counter:
                self._bump(db, counter)
            return bool(n)

        return self._tx(op)

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, amount: int = 1) -> None:
        db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )

    def bump(self, name: str, amount: int = 1) -> None:
        self._tx(lambda db: self._bump(db, name, amount))

    def counters(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.db.execute("SELECT name, value FROM counters")}

    def reschedule(self, ids: Iterable[str] | None, now: float) -> int:
        """Make messages due now (`flush` when ids is None, `retry` for some); held ones too."""

        def op(db: sqlite3.Connection) -> int:
            if ids is None:
                return int(
                    db.execute(
                        "UPDATE messages SET next_attempt = ? WHERE state = ?", (now, QUEUED)
                    ).rowcount
                )
            n = 0
            for msg_id in ids:
                row = db.execute(
                    "SELECT recipients FROM messages WHERE id = ?", (msg_id,)
                ).fetchone()
                if row is None:
                    continue
                # A retry asked by a person gives held recipients another chance too.
                rcpts = [Recipient(**x) for x in json.loads(row[0])]
                for r in rcpts:
                    if r.state == HELD:
                        r.state = PENDING
                n += db.execute(
                    "UPDATE messages SET next_attempt = ?, state = ?, recipients = ?, "
                    "created = CASE WHEN state = ? THEN ? ELSE created END WHERE id = ?",
                    (now, QUEUED, _rcpts_json(rcpts), HELD, now, msg_id),
                ).rowcount
            return n

        return self._tx(op)

    def wake_unreachable(self, now: float) -> int:
        """The next hop answered again: what waited only because it was down is due now."""
        return int(
            self._tx(
                lambda db: (
                    db.execute(
                        "UPDATE messages SET next_attempt = ? "
                        "WHERE state = ? AND unreachable = 1 AND next_attempt > ?",
                        (now, QUEUED, now),
                    ).rowcount
                )
            )
        )

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queued": 0, "held": 0, "bytes": 0, "by_priority": {}}
        for state, n, size in self.db.execute(
            "SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM messages GROUP BY state"
        ):
            out[state] = int(n)
            out["bytes"] += int(size)
        for prio, n in self.db.execute(
            "SELECT priority, COUNT(*) FROM messages WHERE state = ? GROUP BY priority", (QUEUED,)
        ):
            out["by_priority"][str(prio)] = int(n)
        row = self.db.execute(
            "SELECT MIN(created), MIN(next_attempt) FROM messages WHERE state = ?", (QUEUED,)
        ).fetchone()
        out["oldest"] = row[0]
        out["next_attempt"] = row[1]
        out.update(self.counters())
        return out

    def total_bytes(self) -> int:
        row = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()
        return int(row[0])

    def ids(self) -> set[str]:
        return {str(r[0]) for r in self.db.execute("SELECT id FROM messages")}


class SpoolFull(Exception):
    """Not enough room: the client should hear 452 4.3.1 and retry later."""


class Spool:
    """The daemon's side: durable store, reads for the forwarder, space accounting.

    Index work runs on one dedicated thread (one connection, serialised transactions, the
    event loop never waits on an fsync); body files are written on the default pool.
    """

    def __init__(
        self,
        root: str | Path,
        max_bytes: int,
        min_free: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.max_bytes, self.min_free = max_bytes, min_free
        self.clock = clock
        self.tmp, self.msg, self.orphans = (self.root / d for d in ("tmp", "msg", "orphans"))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mxguard-spool")
        self.index: SpoolIndex | None = None
        self.bytes = 0
        self.peak_bytes = 0
        self._free = 0
        self._free_at = 0.0
        #: set when something new is due, so the forwarder need not wait for its next poll
        self.kick = asyncio.Event()

    # ------------------------------------------------------------ start-up and recovery

    def open(self) -> list[str]:
        """Create the layout, recover from a crash; return what recovery did, for the log."""
        for d in (self.root, self.tmp, self.msg):
            d.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)  # never committed, never acknowledged
        self.index = SpoolIndex(self.root)
        known = self.index.ids()
        on_disk = {p.name for p in self.msg.iterdir()}
        for name in sorted(on_disk - known):
            self.orphans.mkdir(exist_ok=True)
            os.replace(self.msg / name, self.orphans / name)
            notes.append(
                f"{name}: body without an envelope (crash before commit), moved to orphans/"
            )
        for name in sorted(known - on_disk):
            m = self.index.get(name)
            if m is not None and m.state != HELD:
                m.state, m.last_error = HELD, "spool file missing"
                self.index.update(m)
                notes.append(f"{name}: envelope without a body, held")
        self.bytes = self.index.total_bytes()
        self.peak_bytes = self.bytes
        return notes

    async def _run(self, fn: Callable[[SpoolIndex], T]) -> T:
        assert self.index is not None, "spool not opened"
        index = self.index
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, index)

    async def close(self) -> None:
        if self.index is not None:
            index, self.index = self.index, None
            await asyncio.get_running_loop().run_in_executor(self._executor, index.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------ space

    def free_bytes(self) -> int:
        """Free disk space, sampled at most once a second (a flood must not statvfs per RCPT)."""
        now = time.monotonic()
        if now - self._free_at >= 1.0:
            st = os.statvfs(self.root)
            self._free, self._free_at = st.f_bavail * st.f_frsize, now
        return self._free

    def full_reason(self, incoming: int = 0) -> str | None:
        """Why new mail of `incoming` bytes cannot be taken now, or None if it can."""
        if self.max_bytes and self.bytes + incoming > self.max_bytes:
            return f"spool holds {self.bytes} bytes (max_spool_bytes {self.max_bytes})"
        if self.min_free and self.free_bytes() - incoming < self.min_free:
            return f"free disk below min_free_bytes ({self.min_free})"
        return None

    # ------------------------------------------------------------ storing

    def _write_body(self, msg_id: str, data: bytes) -> Path:
        tmp, final = self.tmp / msg_id, self.msg / msg_id
        write_synced(tmp, data)
        os.rename(tmp, final)
        fsync_dir(self.msg)
        return final

    async def store(self, m: QueuedMessage, data: bytes) -> None:
        """Make the message durable; only when this returns may the client hear 250.

        Raises SpoolFull when there is no room, OSError/sqlite3.Error when the disk fails;
        in both cases nothing is left behind that recovery would have to guess about.
        """
        reason = self.full_reason(len(data))
        if reason:
            raise SpoolFull(reason)
        m.size = len(data)
        self.bytes += m.size  # reserve now, so concurrent sessions cannot overshoot together
        try:
            path = await asyncio.to_thread(self._write_body, m.id, data)
            try:
                await self._run(lambda ix: ix.insert(m))
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
        except BaseException:
            self.bytes -= m.size
            raise
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.kick.set()

    # ------------------------------------------------------------ the forwarder's side

    def body_path(self, msg_id: str) -> Path:
        return self.msg / msg_id

    async def read_body(self, msg_id: str) -> bytes:
        return await asyncio.to_thread(self.body_path(msg_id).read_bytes)

    async def due(self, limit: int, exclude: Iterable[str]) -> list[QueuedMessage]:
        now = self.clock()
        ex = list(exclude)
        return await self._run(lambda ix: ix.due(now, limit, ex))

    async def next_due(self) -> float | None:
        return await self._run(lambda ix: ix.next_due())

    async def update(self, m: QueuedMessage) -> bool:
        return await self._run(lambda ix: ix.update(m))

    async def finish(self, m: QueuedMessage, counter: str) -> None:
        """The message needs nothing more: forget the envelope, then the body."""
        await self._run(lambda ix: ix.remove(m.id, counter))
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.body_path(m.id).unlink)
        self.bytes = max(0, self.bytes - m.size)

    async def bump(self, name: str, amount: int = 1) -> None:
        await self._run(lambda ix: ix.bump(name, amount))

    async def wake_unreachable(self) -> int:
        now = self.clock()
        return await self._run(lambda ix: ix.wake_unreachable(now))

    async def resync_bytes(self) -> None:
        """Re-count after `mxguard queue delete` ran in another process."""
        self.bytes = await self._run(lambda ix: ix.total_bytes())
