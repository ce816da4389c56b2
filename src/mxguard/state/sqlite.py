"""SQLite state for one host: the embedded default.

Every operation is one transaction, so check-and-set is atomic even with several processes
on the file (a policyd beside the SMTP listener). The event loop must never wait on a lock or
on the disk, so an operation first tries a fast path on the loop's own connection that can
not wait: `busy_timeout=0` (a lock held elsewhere fails at once instead of waiting), WAL with
`synchronous=NORMAL` (a commit appends to the WAL in the page cache, no fsync) and no
automatic checkpoint (the fsyncing checkpoint runs on the worker thread). That path takes
tens of microseconds. Whenever it could not take the lock, the operation goes to the worker
thread, which may wait; operations queued there together run in one transaction, each in
its own savepoint, so a busy tier pays one commit per batch. `synchronous=NORMAL` is enough
because this is policy state, not mail: a power cut may forget the last greylist pass, never
a message.

The steps that come with every RCPT (`greylist_now`, `counter_add_now`) read at once and
leave their write a few milliseconds, so that the steps of that moment share one commit
(group commit): a write costs several times a read. Until its group is in the file, a
step's result is this process's to know: it is kept in an overlay that this process's reads
answer from first, and another process sees it at most `GROUP_WINDOW` later. Every other
operation of this process comes after the groups, in order. A crash loses at most that
window of steps, which only greylists those triplets again or forgets a few counts. (The
group is written on the loop, not on the worker: a second thread taking turns at the GIL
with the loop costs the loop more than the write.)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mxguard.batching import BatchWorker
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.state.base import (
    GreylistResult,
    GreylistStatus,
    StateStore,
    StateUnavailable,
    greylist_transition,
)

T = TypeVar("T")

log = logging.getLogger("mxguard.state")

#: a live entry: (value, expiry)
Entry = tuple[str, float]
#: what a group wrote, by key: the overlay's entry it wrote (stores), or the amount (adds)
Written = tuple[str, "Entry | int | None"]
#: one deferred write: a statement and its parameters
Write = tuple[str, tuple[Any, ...]]

_STORE = (
    "INSERT INTO kv(key, value, expires) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires"
)
# one statement, so it is atomic on its own: a new window starts when the old one has
# expired, else the amount is added (SET sees the old row's values)
_ADD = (
    "INSERT INTO kv(key, value, expires) VALUES (?1, ?2, ?3) "
    "ON CONFLICT(key) DO UPDATE SET "
    "value = CASE WHEN kv.expires <= ?4 THEN excluded.value "
    "ELSE CAST(CAST(kv.value AS INTEGER) + ?5 AS TEXT) END, "
    "expires = CASE WHEN kv.expires <= ?4 THEN excluded.expires ELSE kv.expires END"
)
_READ_ONE = "SELECT key, value, expires FROM kv WHERE key = ?"
# two point lookups in one statement: cheaper than `IN (?, ?)`, which builds a table first
_READ_TWO = _READ_ONE + " UNION ALL " + _READ_ONE


def _write_all(db: sqlite3.Connection, writes: list[Write]) -> None:
    """The writes in order; a run of one statement goes to SQLite in one call."""
    for sql, run in itertools.groupby(writes, key=lambda w: w[0]):
        db.executemany(sql, [params for _, params in run])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires);
CREATE TABLE IF NOT EXISTS hashes (
    key TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hash_expiry (
    key TEXT PRIMARY KEY,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hash_expiry_expires ON hash_expiry(expires);
"""


class SqliteState(StateStore):
    kind = "sqlite"

    #: fast-path commits (a group commit counts its steps) between two checkpoints handed
    #: to the worker
    CHECKPOINT_EVERY = 2000
    #: how long a deferred greylist write waits for others to share its commit (seconds),
    GROUP_WINDOW = 0.005
    #: or how many may wait
    GROUP_MAX = 256

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._loop_db: sqlite3.Connection | None = None
        self._worker: BatchWorker[Callable[[sqlite3.Connection], Any]] | None = None
        self._since_checkpoint = 0
        # ":memory:" is private to one connection, so it only ever uses the worker's
        self._memory = str(path) == ":memory:"
        # writes waiting for their group commit, in order; what they will have written, for
        # this process's reads; how many groups the worker has yet to write
        self._deferred: list[Write] = []
        self._overlay: dict[str, Entry] = {}
        # counters: what this process has added and the file does not have yet, by key, and
        # the expiry its first add saw; a read adds it to the file's value, so other
        # processes' adds are always seen (a stored value would hide them while groups wait)
        self._adding: dict[str, tuple[int, float]] = {}
        self._flying = 0
        self._group_timer: asyncio.TimerHandle | None = None

    def _connect_loop(self) -> sqlite3.Connection:
        if self._loop_db is None:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA busy_timeout=0")
                # may need the WAL index, hence a lock another process can hold: then this
                # raises "locked", and the caller goes to the worker and tries again next time
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA wal_autocheckpoint=0")
            except BaseException:
                db.close()
                raise
            self._loop_db = db
        return self._loop_db

    def _try_now(
        self, fn: Callable[[sqlite3.Connection], T], single: bool = False
    ) -> tuple[bool, T | None]:
        """Run `fn` at once if that needs no waiting; (False, None) means "use the worker".

        `single`: fn is one statement, which SQLite runs as a transaction of its own.
        """
        try:
            db = self._connect_loop()
        except sqlite3.OperationalError:
            return False, None  # another process holds a lock we need to open it
        if single:
            try:
                result = fn(db)
            except sqlite3.OperationalError:
                return False, None  # another process holds the write lock
            return True, result
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False, None  # another process holds the write lock
        try:
            result = fn(db)
            db.execute("COMMIT")
        except sqlite3.OperationalError:
            db.execute("ROLLBACK")
            return False, None
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._committed(1)
        return True, result

    def _committed(self, steps: int) -> None:
        """Count steps written on the fast path; every CHECKPOINT_EVERY, a checkpoint."""
        self._since_checkpoint += steps
        if self._since_checkpoint >= self.CHECKPOINT_EVERY and self._worker is not None:
            self._since_checkpoint = 0
            self._checkpoint_soon()

    def _defer(self, writes: list[tuple[str, str, float, Write]]) -> bool:
        """Queue `writes` ((key, value it will have, expiry, write)) for the next group
        commit, or with no event loop to time one, write them now; False when neither could
        be done (the lock is taken), nothing written. A counter's add is kept as the amount
        added, not the value (see `_adding`)."""
        if not self._deferred:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                done, _ = self._try_now(lambda db: _write_all(db, [w[3] for w in writes]))
                return done
            self._group_timer = loop.call_later(self.GROUP_WINDOW, self._write_deferred)
        overlay, adding = self._overlay, self._adding
        for key, value, expires, write in writes:
            if write[0] is _ADD:
                pending = adding.get(key)
                amount = write[1][4]
                adding[key] = (
                    (amount, expires) if pending is None else (pending[0] + amount, pending[1])
                )
            else:
                overlay[key] = (value, expires)
            self._deferred.append(write)
        if len(self._deferred) >= self.GROUP_MAX:
            self._write_deferred()
        return True

    def _write_deferred(self) -> bool:
        """Commit the deferred writes now, or hand them to the worker if the lock is taken.

        True when nothing of this process's is left unwritten, so an operation may run on
        the loop's connection now; else it must queue on the worker, behind the groups."""
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None
        writes, self._deferred = self._deferred, []
        if writes:
            # what this group writes, as the overlay holds it now: a later step on a key
            # replaces its entry, which then stays until that step's own group is written;
            # for a counter, the amount it adds
            written: list[Written] = [
                (w[1][0], w[1][4] if w[0] is _ADD else self._overlay.get(w[1][0])) for w in writes
            ]
            # behind a group still on the worker, on the worker too: groups land in order
            done = not self._flying and self._try_now(lambda db: _write_all(db, writes))[0]
            if done:
                self._committed(len(writes) - 1)  # _try_now counted the commit
                self._forget(written)
            else:
                assert self._worker is not None
                self._flying += 1
                fut = self._worker.enqueue(lambda db: _write_all(db, writes))
                fut.add_done_callback(lambda f: self._group_landed(f, written))
        return not self._flying

    def _group_landed(self, fut: asyncio.Future[Any], written: list[Written]) -> None:
        self._flying -= 1
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            # policy state, not mail: those triplets will be greylisted again
            log.warning("sqlite %s: a group of greylist steps was not written: %s", self.path, exc)
        else:
            # the WAL grows by about a page per step, not per commit: count the steps
            # towards the next checkpoint, or a busy server's WAL would grow unchecked
            self._committed(len(written))
        self._forget(written)

    def _forget(self, written: list[Written]) -> None:
        """Drop the overlay's entries that are now in the file (not those written since),
        and the counters' amounts that are. (A group the worker wrote is in the file a
        moment before this runs on the loop: a read in between counts its adds twice.)"""
        overlay, adding = self._overlay, self._adding
        for key, entry in written:
            if isinstance(entry, int):
                pending = adding.get(key)
                if pending is not None:
                    if pending[0] <= entry:
                        del adding[key]
                    else:
                        adding[key] = (pending[0] - entry, pending[1])
            elif entry is not None and overlay.get(key) is entry:
                del overlay[key]

    def _read_now(self, keys: tuple[str, ...], now: float) -> list[Entry | None] | NotNow:
        """The live (value, expiry) of one or two keys: this process's unwritten steps
        first, the rest in one statement on the loop's connection (a WAL read never waits)."""
        if self._memory or self._worker is None:
            return NOT_NOW
        overlay = self._overlay
        found: dict[str, Entry | None] = {}
        ask: list[str] = []
        for key in keys:
            hit = overlay.get(key)
            if hit is None:
                ask.append(key)
                found[key] = None
            elif hit[1] > now:
                found[key] = hit
            else:
                found[key] = None
        if ask:
            try:
                rows = (
                    self._connect_loop()
                    .execute(_READ_ONE if len(ask) == 1 else _READ_TWO, ask)
                    .fetchall()
                )
            except sqlite3.OperationalError:
                return NOT_NOW
            for key, value, expires in rows:
                if expires > now:
                    found[key] = (str(value), expires)
            adding = self._adding
            if adding:
                for key in ask:
                    pending = adding.get(key)
                    if pending is not None:
                        entry = found[key]
                        found[key] = (
                            (str(pending[0]), pending[1])
                            if entry is None  # the adds start a new window
                            else (str(int(entry[0]) + pending[0]), entry[1])
                        )
        return [found[key] for key in keys]

    def _checkpoint_soon(self) -> None:
        def checkpoint(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

        assert self._worker is not None
        task = asyncio.ensure_future(self._worker.submit(checkpoint))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            # the wait first: switching to WAL needs a lock that a second process may hold
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _batch(self, jobs: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [StateUnavailable(f"sqlite {self.path}: {exc}")] * len(jobs)
        results: list[Any] = []
        for fn in jobs:
            db.execute("SAVEPOINT op")
            try:
                results.append(fn(db))
                db.execute("RELEASE op")
            except Exception as exc:
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
                if isinstance(exc, sqlite3.OperationalError):
                    exc = StateUnavailable(f"sqlite {self.path}: {exc}")
                results.append(exc)
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            return [StateUnavailable(f"sqlite {self.path}: {exc}")] * len(jobs)
        return results

    async def _run(self, fn: Callable[[sqlite3.Connection], T], single: bool = False) -> T:
        if self._worker is None:
            self._worker = BatchWorker("mxguard-sqlite", self._batch)
            await self._worker.submit(lambda db: None)  # the schema exists before a fast path
        elif not self._memory and self._write_deferred():
            done, value = self._try_now(fn, single)
            if done:
                return value  # type: ignore[return-value]
        # else earlier writes are on the worker's queue, and `fn` must come after them
        result: T = await self._worker.submit(fn)
        return result

    def prepare(self) -> None:
        """Create the file and its schema now, on a connection of its own that is closed
        again (no thread, nothing kept): for a parent about to fork workers that would
        otherwise race to switch a new file to WAL, which SQLite refuses without waiting."""
        if self._memory:
            return
        self._connect().close()
        self._db = None

    async def open(self) -> None:
        """Create the file and schema now, so a bad path fails at start-up, not on first mail."""
        await self._run(lambda db: None)

    @staticmethod
    def _live(db: sqlite3.Connection, key: str, now: float) -> str | None:
        row = db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None or row[1] <= now:
            return None
        return str(row[0])

    @staticmethod
    def _store(db: sqlite3.Connection, key: str, value: str, expires: float) -> None:
        db.execute(_STORE, (key, value, expires))

    async def get(self, key: str, now: float) -> str | None:
        return await self._run(lambda db: self._live(db, key, now), single=True)

    def get_now(self, key: str, now: float) -> str | NotNow | None:
        """A plain read on the loop's connection: WAL readers never wait for a writer."""
        entries = self._read_now((key,), now)
        if isinstance(entries, NotNow):
            return NOT_NOW
        return None if entries[0] is None else entries[0][0]

    async def put(self, key: str, value: str, ttl: float, now: float) -> None:
        await self._run(lambda db: self._store(db, key, value, now + ttl))

    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        def op(db: sqlite3.Connection) -> str | None:
            old = self._live(db, key, now)
            if old is None:
                self._store(db, key, value, now + ttl)
            return old

        return await self._run(op)

    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            if self._live(db, key, now) != expected:
                return False
            self._store(db, key, value, now + ttl)
            return True

        return await self._run(op)

    async def delete(self, key: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            n = db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount
            n += db.execute("DELETE FROM hashes WHERE key = ?", (key,)).rowcount
            db.execute("DELETE FROM hash_expiry WHERE key = ?", (key,))
            return n > 0

        return await self._run(op)

    def counter_add_now(self, key: str, amount: int, window: float, now: float) -> int | NotNow:
        """The count as it will be once this group is written: another process adding to
        the same key in the same few milliseconds is in the file, not in the answer."""
        entries = self._read_now((key,), now)
        if isinstance(entries, NotNow):
            return NOT_NOW
        total, expires = _added(entries[0], amount, window, now)
        if not self._defer([(key, str(total), expires, _add_write(key, amount, window, now))]):
            return NOT_NOW
        return total

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        return await self._run(self._counter_op(key, amount, window, now))

    def _counter_op(
        self, key: str, amount: int, window: float, now: float
    ) -> Callable[[sqlite3.Connection], int]:
        def op(db: sqlite3.Connection) -> int:
            # all rows: the statement (and its transaction) ends here
            row = db.execute(
                _ADD + " RETURNING value", (key, str(amount), now + window, now, amount)
            ).fetchall()
            return int(row[0][0])

        return op

    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        def op(db: sqlite3.Connection) -> None:
            # an expired hash starts empty: its old fields go before the new one is written
            db.execute(
                "DELETE FROM hashes WHERE key = ?1 AND EXISTS "
                "(SELECT 1 FROM hash_expiry WHERE key = ?1 AND expires <= ?2)",
                (key, now),
            )
            db.execute(
                "INSERT INTO hashes(key, field, value) VALUES (?, ?, ?) "
                "ON CONFLICT(key, field) DO UPDATE SET value = excluded.value",
                (key, field, value),
            )
            db.execute(
                "INSERT INTO hash_expiry(key, expires) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET expires = excluded.expires",
                (key, now + ttl),
            )

        await self._run(op)

    async def hash_get(self, key: str, now: float) -> dict[str, str]:
        def op(db: sqlite3.Connection) -> dict[str, str]:
            # one statement, so a read needs no transaction; expired rows are left for purge
            rows = db.execute(
                "SELECT h.field, h.value FROM hash_expiry e JOIN hashes h ON h.key = e.key "
                "WHERE e.key = ? AND e.expires > ?",
                (key, now),
            ).fetchall()
            return {str(f): str(v) for f, v in rows}

        return await self._run(op, single=True)

    async def hash_delete(self, key: str, field: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            n = db.execute("DELETE FROM hashes WHERE key = ? AND field = ?", (key, field)).rowcount
            return n > 0

        return await self._run(op)

    def _greylist_op(
        self,
        key: str,
        now: float,
        delay: float,
        retry_window: float,
        pass_ttl: float,
        pass_counter: str | None = None,
    ) -> Callable[[sqlite3.Connection], GreylistResult]:
        count = self._counter_op(pass_counter, 1, pass_ttl, now) if pass_counter else None

        def op(db: sqlite3.Connection) -> GreylistResult:
            new, ttl, result = greylist_transition(
                self._live(db, key, now), now, delay, retry_window, pass_ttl
            )
            if new is not None:
                self._store(db, key, new, now + ttl)
            if count is not None and result.status is GreylistStatus.PASSED:
                count(db)  # in the same transaction: the pass and its count, or neither
            return result

        return op

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        return await self._run(self._greylist_op(key, now, delay, retry_window, pass_ttl))

    def greylist_now(
        self,
        key: str,
        now: float,
        delay: float,
        retry_window: float,
        pass_ttl: float,
        pass_counter: str | None = None,
        allow_after: int = 0,
    ) -> GreylistResult | NotNow:
        """The same step, read now (with the network's count, in one statement) and written
        with the next group commit (see the module docstring); NOT_NOW, with nothing done,
        if even the read would have to wait."""
        keys = (key,) if pass_counter is None else (key, pass_counter)
        entries = self._read_now(keys, now)
        if isinstance(entries, NotNow):
            return NOT_NOW
        passes = entries[1] if pass_counter is not None else None
        if allow_after > 0 and passes is not None and int(passes[0]) >= allow_after:
            return GreylistResult(GreylistStatus.ALLOWED, now)
        triplet = entries[0]
        new, ttl, result = greylist_transition(
            None if triplet is None else triplet[0], now, delay, retry_window, pass_ttl
        )
        writes: list[tuple[str, str, float, Write]] = []
        if new is not None:
            writes.append((key, new, now + ttl, (_STORE, (key, new, now + ttl))))
        if pass_counter is not None and result.status is GreylistStatus.PASSED:
            # in the same group: the pass and its count are written together, or neither
            total, expires = _added(passes, 1, pass_ttl, now)
            writes.append(
                (pass_counter, str(total), expires, _add_write(pass_counter, 1, pass_ttl, now))
            )
        if writes and not self._defer(writes):
            return NOT_NOW
        return result

    async def count(self, use: str, now: float) -> int:
        # a range over the primary key; on the worker, never the loop's fast path: a big
        # table takes milliseconds to count
        def op(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT count(*) FROM kv WHERE key >= ? AND key < ? AND expires > ?",
                (use + ":", use + ";", now),  # ";" is the character after ":"
            ).fetchone()
            return int(row[0])

        await self._run(lambda db: None)  # the worker exists
        assert self._worker is not None
        result: int = await self._worker.submit(op)
        return result

    async def ping(self) -> bool:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())
        return True

    async def purge_expired(self, now: float) -> int:
        def op(db: sqlite3.Connection) -> int:
            n = db.execute("DELETE FROM kv WHERE expires <= ?", (now,)).rowcount
            dead = [
                r[0] for r in db.execute("SELECT key FROM hash_expiry WHERE expires <= ?", (now,))
            ]
            for key in dead:
                db.execute("DELETE FROM hashes WHERE key = ?", (key,))
                db.execute("DELETE FROM hash_expiry WHERE key = ?", (key,))
            return n + len(dead)

        return await self._run(op)

    async def close(self) -> None:
        if self._worker is not None:
            self._write_deferred()  # on the worker if need be, which finishes its queue
        if self._loop_db is not None:
            self._loop_db.close()
            self._loop_db = None
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._db is not None:
            self._db.close()
            self._db = None


def _added(entry: Entry | None, amount: int, window: float, now: float) -> tuple[int, float]:
    """A counter after adding `amount`: (total, expiry), by `_ADD`'s rule."""
    if entry is None:
        return amount, now + window
    return int(entry[0]) + amount, entry[1]


def _add_write(key: str, amount: int, window: float, now: float) -> Write:
    return (_ADD, (key, str(amount), now + window, now, amount))
