"""One contract for every state backend: memory (the reference), SQLite and a real redis-server.

The suite drives time through the `now` arguments, so Redis runs here with
`trust_client_clock=True`; what changes with the server's clock (the default in production) is
tested in `test_redis_state.py` with short real TTLs. Concurrency tests run many callers at once
(for Redis: through several clients, as several MX hosts would) and expect exactly one winner.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mxguard.notnow import NOT_NOW, NotNow
from mxguard.state.base import (
    GreylistResult,
    GreylistStatus,
    StateStore,
    complete_now,
    greylist_transition,
)
from mxguard.state.memory import MemoryState
from mxguard.state.redis import RedisState
from mxguard.state.sqlite import SqliteState
from tests.helpers.redis_server import RedisTestServer

T0 = 1_700_000_000.0
#: keys as callers build them: IPv6 networks, braces (Redis hash-tag syntax), bars, non-ASCII
AWKWARD_KEYS = [
    "gl:2001:db8:1234::/64:9f86d081884c7d65",
    "rate:c:192.0.2.0/24",
    "seen:{tag}:x}",
    "block:a|b|c",
    "rcpt:\u00e9l\u00e8ve@exemple.test",
    "plain",
]

StoreFactory = Callable[[], StateStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Makes stores that share one backing store, as several MX hosts share one state."""
    made: list[StateStore] = []
    memory = MemoryState()

    def make() -> StateStore:
        store: StateStore
        if request.param == "memory":
            store = memory  # one process: "two hosts" are the same object
        elif request.param == "sqlite":
            store = SqliteState(tmp_path / "state.db")
        else:
            server: RedisTestServer = request.getfixturevalue("redis_session")
            store = RedisState(server.url, key_prefix=prefix, trust_client_clock=True)
        made.append(store)
        return store

    # a fresh prefix per test keeps tests that share the session's redis-server apart
    prefix = f"t{random.randrange(1 << 30):x}"
    if request.param == "sqlite":
        # Create the file in WAL mode first: SQLite answers "database is locked" without
        # waiting when several connections switch a new file to WAL at once, which is a
        # start-up race of its own, not what these tests are about.
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")
    yield make
    for store in {id(s): s for s in made}.values():
        await store.close()


@pytest.fixture
async def store(factory: StoreFactory) -> StateStore:
    s = factory()
    open_fn = getattr(s, "open", None)
    if open_fn is not None:
        await open_fn()
    return s


# ---------------------------------------------------------------- plain entries


@pytest.mark.parametrize("key", AWKWARD_KEYS)
async def test_put_get_round_trip_with_awkward_keys(store: StateStore, key: str) -> None:
    for value in ("v", "", "a|b|c", "\u00fc\u00f1\u00ee"):
        await store.put(key, value, 60, T0)
        assert await store.get(key, T0) == value


async def test_awkward_keys_do_not_collide(store: StateStore) -> None:
    for i, key in enumerate(AWKWARD_KEYS):
        await store.put(key, str(i), 60, T0)
    for i, key in enumerate(AWKWARD_KEYS):
        assert await store.get(key, T0) == str(i)


async def test_entry_expires_exactly_ttl_after_the_write(store: StateStore) -> None:
    await store.put("k", "v", 10, T0)
    assert await store.get("k", T0 + 9.999) == "v"
    assert await store.get("k", T0 + 10) is None
    assert await store.get("missing", T0) is None


async def test_put_overwrites_value_and_expiry(store: StateStore) -> None:
    await store.put("k", "one", 10, T0)
    await store.put("k", "two", 100, T0 + 5)
    assert await store.get("k", T0 + 50) == "two"
    assert await store.get("k", T0 + 105) is None


async def test_put_if_absent(store: StateStore) -> None:
    assert await store.put_if_absent("k", "first", 10, T0) is None
    assert await store.put_if_absent("k", "second", 10, T0 + 1) == "first"
    assert await store.get("k", T0 + 1) == "first"
    # an expired entry counts as absent, and the new one gets its own expiry
    assert await store.put_if_absent("k", "third", 10, T0 + 10) is None
    assert await store.get("k", T0 + 19) == "third"
    assert await store.get("k", T0 + 20) is None


async def test_compare_and_put(store: StateStore) -> None:
    assert await store.compare_and_put("k", "x", "v1", 10, T0) is False
    assert await store.get("k", T0) is None
    assert await store.compare_and_put("k", None, "v1", 10, T0) is True
    assert await store.compare_and_put("k", None, "v2", 10, T0) is False
    assert await store.compare_and_put("k", "other", "v2", 10, T0) is False
    assert await store.compare_and_put("k", "v1", "v2", 10, T0 + 1) is True
    assert await store.get("k", T0 + 1) == "v2"
    assert await store.get("k", T0 + 11) is None
    assert await store.compare_and_put("k", "v2", "v3", 10, T0 + 11) is False
    assert await store.compare_and_put("k", None, "v3", 10, T0 + 11) is True
    assert await store.compare_and_put("e", None, "", 10, T0) is True
    assert await store.compare_and_put("e", "", "full", 10, T0) is True


async def test_delete_removes_entry_and_hash_of_the_key(store: StateStore) -> None:
    assert await store.delete("k") is False
    await store.put("k", "v", 60, T0)
    await store.hash_put("k", "f", "1", 60, T0)
    assert await store.delete("k") is True
    assert await store.get("k", T0) is None
    assert await store.hash_get("k", T0) == {}
    assert await store.delete("k") is False


# ---------------------------------------------------------------- counters


async def test_counter_window_starts_at_first_add_and_is_not_extended(store: StateStore) -> None:
    assert await store.counter_add("c", 1, 60, T0) == 1
    assert await store.counter_add("c", 2, 60, T0 + 30) == 3
    assert await store.counter_add("c", 1, 60, T0 + 59.5) == 4
    assert await store.get("c", T0 + 59.5) == "4"
    # the window ran out at T0+60 even though the last add was at T0+59.5
    assert await store.counter_add("c", 5, 60, T0 + 60) == 5
    assert await store.get("c", T0 + 119) == "5"
    assert await store.get("c", T0 + 120) is None


async def test_counter_negative_and_large_amounts(store: StateStore) -> None:
    assert await store.counter_add("c", 10, 60, T0) == 10
    assert await store.counter_add("c", -3, 60, T0) == 7
    assert await store.counter_add("big", 2**40, 60, T0) == 2**40
    assert await store.counter_add("big", 2**40, 60, T0) == 2**41


# ---------------------------------------------------------------- hashes


async def test_hash_fields_and_sliding_expiry(store: StateStore) -> None:
    assert await store.hash_get("h", T0) == {}
    await store.hash_put("h", "mx1", "a", 10, T0)
    await store.hash_put("h", "mx2:[2001:db8::1]", "b|c", 10, T0 + 8)
    await store.hash_put("h", "mx1", "a2", 10, T0 + 8)
    # every write moves the expiry of the whole hash
    assert await store.hash_get("h", T0 + 17.9) == {"mx1": "a2", "mx2:[2001:db8::1]": "b|c"}
    assert await store.hash_get("h", T0 + 18) == {}


async def test_hash_written_after_expiry_starts_empty(store: StateStore) -> None:
    await store.hash_put("h", "old", "1", 10, T0)
    await store.hash_put("h", "new", "2", 10, T0 + 10)
    assert await store.hash_get("h", T0 + 11) == {"new": "2"}


async def test_hash_delete(store: StateStore) -> None:
    await store.hash_put("h", "a", "1", 60, T0)
    await store.hash_put("h", "b", "2", 60, T0)
    assert await store.hash_delete("h", "a") is True
    assert await store.hash_delete("h", "a") is False
    assert await store.hash_delete("nothing", "a") is False
    assert await store.hash_get("h", T0) == {"b": "2"}
    assert await store.hash_delete("h", "b") is True
    assert await store.hash_get("h", T0) == {}


async def test_hash_and_entry_of_one_key_are_separate(store: StateStore) -> None:
    await store.put("k", "entry", 60, T0)
    await store.hash_put("k", "f", "field", 60, T0)
    assert await store.get("k", T0) == "entry"
    assert await store.hash_get("k", T0) == {"f": "field"}


# ---------------------------------------------------------------- greylist


async def test_greylist_lifecycle(store: StateStore) -> None:
    delay, window, pass_ttl = 300.0, 86400.0, 35 * 86400.0
    r = await store.greylist("gl:t", T0, delay, window, pass_ttl)
    assert r == GreylistResult(GreylistStatus.NEW, T0)
    assert not r.allowed
    # an early retry leaves first-seen where it was (a hammering client gains nothing)
    r = await store.greylist("gl:t", T0 + 299.5, delay, window, pass_ttl)
    assert r == GreylistResult(GreylistStatus.EARLY, T0)
    r = await store.greylist("gl:t", T0 + 300, delay, window, pass_ttl)
    assert r == GreylistResult(GreylistStatus.PASSED, T0)
    assert r.allowed
    r = await store.greylist("gl:t", T0 + 400, delay, window, pass_ttl)
    assert r == GreylistResult(GreylistStatus.KNOWN, T0)
    # the greylist check reads the stored value to tell a passed triplet
    value = await store.get("gl:t", T0 + 400)
    assert value is not None
    first, _, passed = value.partition("|")
    assert (float(first), passed) == (T0, "1")
    # each KNOWN refreshes the pass for pass_ttl
    r = await store.greylist("gl:t", T0 + 400 + pass_ttl - 1, delay, window, pass_ttl)
    assert r.status is GreylistStatus.KNOWN
    r = await store.greylist("gl:t", T0 + 400 + 2 * pass_ttl, delay, window, pass_ttl)
    assert r == GreylistResult(GreylistStatus.NEW, T0 + 400 + 2 * pass_ttl)


async def test_greylist_retry_window_boundaries(store: StateStore) -> None:
    delay, window, pass_ttl = 60.0, 600.0, 3600.0
    await store.greylist("late", T0, delay, window, pass_ttl)
    # a retry after the window restarts the entry with a new first-seen
    r = await store.greylist("late", T0 + 601, delay, window, pass_ttl)
    assert r == GreylistResult(GreylistStatus.NEW, T0 + 601)
    await store.greylist("edge", T0, delay, window, pass_ttl)
    r = await store.greylist("edge", T0 + 599.999, delay, window, pass_ttl)
    assert r.status is GreylistStatus.PASSED
    first_seen = T0 + 0.123456789
    r = await store.greylist("precise", first_seen, delay, window, pass_ttl)
    assert r.first_seen == first_seen  # a float survives the trip through every backend


def _model_step(
    model: dict[str, tuple[str, float]],
    key: str,
    now: float,
    delay: float,
    window: float,
    pass_ttl: float,
) -> GreylistResult:
    """`greylist_transition` over a dict with expiries: the rule every backend must follow."""
    item = model.get(key)
    old = item[0] if item is not None and item[1] > now else None
    new, ttl, result = greylist_transition(old, now, delay, window, pass_ttl)
    if new is not None:
        model[key] = (new, now + ttl)
    return result


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_greylist_matches_the_pure_transition(store: StateStore, seed: int) -> None:
    rng = random.Random(seed)
    model: dict[str, tuple[str, float]] = {}
    keys = [f"gl:{i}" for i in range(4)]
    now = T0
    for _ in range(300):
        now += rng.choice([0.0, 0.5, 10.0, 59.9, 60.0, 61.0, 250.0, 1000.0, 5000.0])
        key = rng.choice(keys)
        delay = rng.choice([0.0, 60.0, 300.0])
        window = delay + rng.choice([0.0, 100.0, 2000.0])
        pass_ttl = rng.choice([1.0, 500.0, 10000.0])
        expected = _model_step(model, key, now, delay, window, pass_ttl)
        got = await store.greylist(key, now, delay, window, pass_ttl)
        assert got == expected, (seed, key, now)


@pytest.mark.parametrize("seed", [1, 2])
async def test_greylist_now_is_greylist_plus_the_count_of_a_first_pass(
    store: StateStore, seed: int
) -> None:
    """The fast path either declines (NOT_NOW, nothing changed) or takes the same step as
    `greylist` and, on a first pass, the `counter_add` the greylist check would await."""
    rng = random.Random(seed)
    model: dict[str, tuple[str, float]] = {}
    counts: dict[str, tuple[int, float]] = {}  # counter key -> (total, expires)
    keys = [f"gl:{i}" for i in range(3)]
    now = T0
    for _ in range(200):
        now += rng.choice([0.0, 0.5, 10.0, 60.0, 61.0, 250.0, 1000.0, 5000.0])
        key = rng.choice(keys)
        delay = rng.choice([0.0, 60.0, 300.0])
        window = delay + rng.choice([0.0, 100.0, 2000.0])
        pass_ttl = rng.choice([1.0, 500.0, 10000.0])
        counter = "glnet:" + key
        expected = _model_step(model, key, now, delay, window, pass_ttl)
        got = store.greylist_now(key, now, delay, window, pass_ttl, counter)
        if isinstance(got, NotNow):  # nothing was done: the awaited path does it all
            got = await store.greylist(key, now, delay, window, pass_ttl)
            if got.status is GreylistStatus.PASSED:
                await store.counter_add(counter, 1, pass_ttl, now)
        assert got == expected, (seed, key, now)
        if expected.status is GreylistStatus.PASSED:
            total, expires = counts.get(counter, (0, 0.0))
            counts[counter] = (total + 1, expires) if expires > now else (1, now + pass_ttl)
        for name, (total, expires) in counts.items():
            assert await store.get(name, now) == (str(total) if expires > now else None)


async def test_greylist_now_without_a_counter_counts_nothing(store: StateStore) -> None:
    for now in (T0, T0 + 61):
        got = store.greylist_now("gl:x", now, 60.0, 600.0, 3600.0)
        if isinstance(got, NotNow):
            got = await store.greylist("gl:x", now, 60.0, 600.0, 3600.0)
    assert got.status is GreylistStatus.PASSED
    assert await store.get("glnet:gl:x", T0 + 61) is None


# ---------------------------------------------------------------- atomicity


def _hosts(factory: StoreFactory, n: int = 4) -> list[StateStore]:
    return [factory() for _ in range(n)]


async def test_concurrent_put_if_absent_has_one_winner(factory: StoreFactory) -> None:
    hosts = _hosts(factory)
    for round_ in range(5):
        key = f"fc:{round_}"
        results = await asyncio.gather(
            *(hosts[i % len(hosts)].put_if_absent(key, f"v{i}", 60, T0) for i in range(64))
        )
        winners = [i for i, r in enumerate(results) if r is None]
        assert len(winners) == 1
        assert {r for r in results if r is not None} == {f"v{winners[0]}"}


async def test_concurrent_compare_and_put_has_one_winner(factory: StoreFactory) -> None:
    hosts = _hosts(factory)
    await hosts[0].put("cas", "start", 60, T0)
    results = await asyncio.gather(
        *(hosts[i % len(hosts)].compare_and_put("cas", "start", f"v{i}", 60, T0) for i in range(64))
    )
    assert results.count(True) == 1


async def test_concurrent_greylist_has_one_new_and_one_pass(factory: StoreFactory) -> None:
    hosts = _hosts(factory)
    args = (300.0, 86400.0, 86400.0)
    first = await asyncio.gather(
        *(hosts[i % len(hosts)].greylist("gl:race", T0, *args) for i in range(64))
    )
    statuses = sorted(r.status for r in first)
    assert statuses.count(GreylistStatus.NEW) == 1
    assert statuses.count(GreylistStatus.EARLY) == 63
    assert {r.first_seen for r in first} == {T0}
    later = await asyncio.gather(
        *(hosts[i % len(hosts)].greylist("gl:race", T0 + 301, *args) for i in range(64))
    )
    statuses = sorted(r.status for r in later)
    assert statuses.count(GreylistStatus.PASSED) == 1
    assert statuses.count(GreylistStatus.KNOWN) == 63


async def test_concurrent_counter_adds_are_all_counted(factory: StoreFactory) -> None:
    hosts = _hosts(factory)
    totals = await asyncio.gather(
        *(hosts[i % len(hosts)].counter_add("rate:c:x", 1, 60, T0) for i in range(100))
    )
    assert sorted(totals) == list(range(1, 101))


async def test_concurrent_hash_puts_keep_every_field(factory: StoreFactory) -> None:
    hosts = _hosts(factory)
    await asyncio.gather(
        *(hosts[i % len(hosts)].hash_put("seen:x", f"mx{i}", str(i), 60, T0) for i in range(50))
    )
    assert await hosts[0].hash_get("seen:x", T0) == {f"mx{i}": str(i) for i in range(50)}


# ---------------------------------------------------------------- upkeep


async def test_count_counts_live_entries_of_one_use(store: StateStore) -> None:
    for i in range(5):
        await store.put(f"gl:{i:032x}", f"{T0!r}|0", 10 if i else 1, T0)
    await store.put("glnet:192.0.2.0/24", "3", 60, T0)  # another use, same first letters
    await store.hash_put("gl:hash", "f", "v", 60, T0)  # a hash, not an entry
    await store.counter_add("rate:c:x", 1, 60, T0)
    assert await store.count("gl", T0) == 5
    assert await store.count("gl", T0 + 1) == 4  # one expired
    assert await store.count("glnet", T0) == 1
    assert await store.count("block", T0) == 0


async def test_purge_expired_keeps_live_entries(store: StateStore) -> None:
    await store.put("dead", "v", 1, T0)
    await store.put("live", "v", 100, T0)
    await store.hash_put("hdead", "f", "v", 1, T0)
    await store.hash_put("hlive", "f", "v", 100, T0)
    assert await store.purge_expired(T0 + 50) >= 0
    assert await store.get("live", T0 + 50) == "v"
    assert await store.hash_get("hlive", T0 + 50) == {"f": "v"}
    assert await store.get("dead", T0 + 50) is None
    assert await store.hash_get("hdead", T0 + 50) == {}
    assert await store.ping() is True


async def test_sqlite_greylist_now_answers_while_another_process_writes(tmp_path: Path) -> None:
    """Another process holding the write lock: steps are still answered at once (a WAL read
    does not wait for a writer), from this process's own unwritten steps where it has them;
    the writes wait on the worker and land once the lock is free, the awaited path behind."""
    path = tmp_path / "state.db"
    store = SqliteState(path)
    await store.open()
    try:
        with contextlib.closing(sqlite3.connect(path)) as other:
            other.execute("BEGIN IMMEDIATE")
            got = store.greylist_now("gl:t", T0, 60.0, 600.0, 3600.0, "glnet:t")
            assert got == GreylistResult(GreylistStatus.NEW, T0)
            await asyncio.sleep(SqliteState.GROUP_WINDOW * 4)  # its group now waits on the lock
            got = store.greylist_now("gl:t", T0 + 61, 60.0, 600.0, 3600.0, "glnet:t")
            assert got == GreylistResult(GreylistStatus.PASSED, T0)
            assert store.get_now("gl:t", T0 + 61) == f"{T0!r}|1"
            assert store.get_now("glnet:t", T0 + 61) == "1"
            assert store.get_now("gl:other", T0 + 61) is None  # other keys read from the file
            assert other.execute("SELECT count(*) FROM kv").fetchone() == (0,)
            other.execute("ROLLBACK")
        got = await store.greylist("gl:t", T0 + 62, 60.0, 600.0, 3600.0)
        assert got == GreylistResult(GreylistStatus.KNOWN, T0)
        with contextlib.closing(sqlite3.connect(path)) as other:
            rows = dict(other.execute("SELECT key, value FROM kv").fetchall())
        assert rows == {"gl:t": f"{T0!r}|1", "glnet:t": "1"}
    finally:
        await store.close()


async def test_sqlite_auto_allow_is_read_with_the_triplet(tmp_path: Path) -> None:
    """A network with `allow_after` passes is ALLOWED and nothing is written for the triplet;
    below that, the step goes on as usual."""
    store = SqliteState(tmp_path / "state.db")
    await store.open()
    try:
        await store.put("glnet:n", "2", 3600, T0)
        got = store.greylist_now("gl:x", T0, 60.0, 600.0, 3600.0, "glnet:n", 3)
        assert got == GreylistResult(GreylistStatus.NEW, T0)
        await store.put("glnet:n", "3", 3600, T0)
        got = store.greylist_now("gl:y", T0, 60.0, 600.0, 3600.0, "glnet:n", 3)
        assert got == GreylistResult(GreylistStatus.ALLOWED, T0) and got.allowed
        assert store.get_now("gl:y", T0) is None
        assert store.get_now("gl:x", T0) == f"{T0!r}|0"
    finally:
        await store.close()


async def test_sqlite_deferred_greylist_writes_reach_the_file(tmp_path: Path) -> None:
    """Group commit: written by the group timer, by any awaited operation of the process (in
    order before it), and at close; with the first pass's count in the same commit."""
    path = tmp_path / "state.db"
    here, there = SqliteState(path), SqliteState(path)
    await here.open()
    await there.open()
    try:
        assert here.greylist_now("gl:a", T0, 60.0, 600.0, 3600.0) == GreylistResult(
            GreylistStatus.NEW, T0
        )
        for _ in range(200):  # the timer fires after GROUP_WINDOW; bounded wait
            if await there.get("gl:a", T0) is not None:
                break
            await asyncio.sleep(SqliteState.GROUP_WINDOW)
        assert await there.get("gl:a", T0) is not None
        # an awaited operation writes the waiting step first
        assert here.greylist_now("gl:a", T0 + 61, 60.0, 600.0, 3600.0, "glnet:a") == (
            GreylistResult(GreylistStatus.PASSED, T0)
        )
        await here.put("unrelated", "v", 60, T0)
        assert await there.get("glnet:a", T0 + 61) == "1"
        # close writes what is still waiting
        got = here.greylist_now("gl:b", T0, 60.0, 600.0, 3600.0)
        assert got == GreylistResult(GreylistStatus.NEW, T0)
    finally:
        await here.close()
    try:
        assert await there.get("gl:b", T0) is not None
    finally:
        await there.close()


# ---------------------------------------------------------------- answering at once


async def test_hash_put_now_writes_as_hash_put_or_defers(store: StateStore) -> None:
    """A backend either writes at once, exactly as hash_put would, or says NOT_NOW and
    writes nothing (the caller then takes the async path)."""
    await store.hash_put("h", "a", "1", 10, T0)
    done = store.hash_put_now("h", "b", "2|x", 10, T0 + 8)
    if done is NOT_NOW:
        assert await store.hash_get("h", T0 + 8) == {"a": "1"}
        return
    assert done is None
    assert await store.hash_get("h", T0 + 17) == {"a": "1", "b": "2|x"}  # expiry slid
    assert await store.hash_get("h", T0 + 18) == {}


async def test_an_immediate_store_never_suspends() -> None:
    """What `immediate` promises (only the memory store makes the promise; SQLite and Redis
    say immediate = False): every operation runs to its end in one step."""
    store = MemoryState()
    assert store.immediate
    assert not SqliteState(":memory:").immediate
    assert complete_now(store.put("k", "v", 10, T0)) is None
    assert complete_now(store.get("k", T0)) == "v"
    assert complete_now(store.hash_put("h", "f", "v", 10, T0)) is None
    assert complete_now(store.hash_get("h", T0)) == {"f": "v"}
    assert complete_now(store.counter_add("c", 2, 10, T0)) == 2
    result = complete_now(store.greylist("g", T0, 60, 3600, 86400))
    assert result.status is GreylistStatus.NEW


def test_complete_now_reports_a_coroutine_that_suspends() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="suspended"):
        complete_now(waits())


def test_sqlite_greylist_now_without_an_event_loop_writes_at_once(tmp_path: Path) -> None:
    """No loop to time a group commit (a script, a thread): the step is written before it
    is answered, so nothing waits for a timer that would never fire."""
    path = tmp_path / "state.db"
    store = SqliteState(path)
    asyncio.run(store.open())  # the worker and schema exist; that loop is gone now
    try:
        got = store.greylist_now("gl:s", T0, 60.0, 600.0, 3600.0)
        assert got == GreylistResult(GreylistStatus.NEW, T0)
        with contextlib.closing(sqlite3.connect(path)) as other:
            assert other.execute("SELECT count(*) FROM kv WHERE key = 'gl:s'").fetchone() == (1,)
    finally:
        asyncio.run(store.close())


async def test_sqlite_group_commits_count_their_steps_towards_a_checkpoint(tmp_path: Path) -> None:
    """The WAL grows by about a page per greylist step, however they are grouped: the steps,
    not the commits, bring the next checkpoint (else a busy server's WAL grows unchecked)."""

    class Counting(SqliteState):
        CHECKPOINT_EVERY = 50
        GROUP_MAX = 20
        checkpoints = 0

        def _checkpoint_soon(self) -> None:
            self.checkpoints += 1
            super()._checkpoint_soon()

    store = Counting(tmp_path / "state.db")
    await store.open()
    try:
        for i in range(300):
            assert not isinstance(store.greylist_now(f"gl:{i}", T0, 60.0, 600.0, 3600.0), NotNow)
        await store.get("anything", T0)  # writes what still waits
        # 300 steps in 15 commits of 20: a checkpoint once 50 steps are passed (the commit
        # that passes 50 may overshoot by a group), never none as 15 commits would give
        assert store.checkpoints >= 300 // (50 + 20)
    finally:
        await store.close()


async def test_sqlite_counter_answers_see_other_processes_adds_while_groups_wait(
    tmp_path: Path,
) -> None:
    """A counter this process adds to while its groups wait for a lock another process
    holds: its answers are the file's count plus its own adds not yet written, so the other
    process's adds show as soon as they are committed, not once this process stops adding."""
    path = tmp_path / "state.db"
    store = SqliteState(path)
    await store.open()
    try:
        assert store.counter_add_now("rate:x", 1, 60.0, T0) == 1
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            await asyncio.sleep(SqliteState.GROUP_WINDOW * 4)  # the group waits on the worker
            assert store.counter_add_now("rate:x", 1, 60.0, T0) == 2
            # the other process adds 10 in the same window, and commits
            other.execute("UPDATE kv SET value = '10' WHERE key = 'rate:x'")
            other.execute(
                "INSERT OR IGNORE INTO kv(key, value, expires) VALUES ('rate:x', '10', ?)",
                (T0 + 60.0,),
            )
            other.execute("COMMIT")
        for _ in range(200):  # bounded: the worker writes once the lock is free
            await asyncio.sleep(SqliteState.GROUP_WINDOW)
            if store.counter_add_now("rate:x", 0, 60.0, T0) == 12:
                break
        assert store.counter_add_now("rate:x", 1, 60.0, T0) == 13
        assert await store.get("rate:x", T0) == "13"  # and the file agrees once written
    finally:
        await store.close()
