"""What only the Redis backend has: the server's clock, scripts, key layout, URLs, outages.

The behaviour shared with the other backends is in `tests/contract/`. Here every test gets its
own redis-server on loopback (tests/helpers/redis_server.py), because several stop or restart it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from redis.crc import key_slot

from mxguard.config import StateSettings
from mxguard.state.base import GreylistStatus, StateUnavailable
from mxguard.state.failover import FailoverState, open_configured_state
from mxguard.state.redis import RedisState, redis_key
from mxguard.state.sqlite import SqliteState
from tests.helpers.redis_server import (
    RedisTestSentinel,
    RedisTestServer,
    free_port,
    requires_redis,
)

pytestmark = requires_redis


async def wait_for(condition: object, timeout: float = 10.0) -> None:
    """Poll `condition()` (bounded), for things that happen in a background task."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- the server's clock


async def test_server_clock_ignores_the_callers_now(redis_server: RedisTestServer) -> None:
    state = RedisState(redis_server.url)
    try:
        await state.put("k", "v", 0.3, now=0.0)  # a caller's clock from 1970 changes nothing
        assert await state.get("k", now=1e12) == "v"
        await asyncio.sleep(0.5)
        assert await state.get("k", now=0.0) is None
        # and Redis itself forgot it (its TTL is the same as the logical expiry)
        assert redis_server.client().exists(redis_key("mxg", "k")) == 0
    finally:
        await state.close()


async def test_server_clock_greylist_and_counter(redis_server: RedisTestServer) -> None:
    state = RedisState(redis_server.url)
    try:
        before = time.time()
        r = await state.greylist("gl:t", 0.0, delay=0.3, retry_window=5.0, pass_ttl=5.0)
        assert r.status is GreylistStatus.NEW
        assert before - 1 <= r.first_seen <= time.time() + 1  # the server's time, not 0.0
        assert (await state.greylist("gl:t", 0.0, 0.3, 5.0, 5.0)).status is GreylistStatus.EARLY
        await asyncio.sleep(0.4)
        assert (await state.greylist("gl:t", 0.0, 0.3, 5.0, 5.0)).status is GreylistStatus.PASSED
        assert await state.counter_add("c", 1, 0.3, 0.0) == 1
        assert await state.counter_add("c", 1, 0.3, 0.0) == 2
        await asyncio.sleep(0.4)
        assert await state.counter_add("c", 1, 0.3, 0.0) == 1
        await state.hash_put("h", "f", "v", 0.3, 0.0)
        assert await state.hash_get("h", 0.0) == {"f": "v"}
        await asyncio.sleep(0.4)
        assert await state.hash_get("h", 0.0) == {}
    finally:
        await state.close()


async def test_client_clock_keeps_redis_ttl_as_garbage_collection(
    redis_server: RedisTestServer,
) -> None:
    """A virtual clock behind real time must not lose entries to Redis's own TTL."""
    state = RedisState(redis_server.url, trust_client_clock=True)
    try:
        await state.put("k", "v", 0.05, now=100.0)
        await asyncio.sleep(0.2)  # real time passes, the virtual clock does not
        assert await state.get("k", now=100.01) == "v"
        assert await state.get("k", now=100.05) is None
        ttl = redis_server.client().pttl(redis_key("mxg", "k"))
        assert 0 < ttl <= 60_050  # still collected by Redis, a minute after its time
    finally:
        await state.close()


# ---------------------------------------------------------------- scripts and keys


async def test_scripts_reload_after_noscript(redis_server: RedisTestServer) -> None:
    state = RedisState(redis_server.url)
    try:
        await state.open()
        assert await state.put_if_absent("k", "v", 60, 0) is None
        redis_server.client().script_flush()  # what a restart or a failover does
        assert await state.put_if_absent("k", "w", 60, 0) == "v"
        assert (await state.greylist("g", 0, 300, 600, 600)).status is GreylistStatus.NEW
    finally:
        await state.close()


async def test_keys_are_hashed_tagged_and_prefixed(redis_server: RedisTestServer) -> None:
    state = RedisState(redis_server.url, key_prefix="site1")
    other = RedisState(redis_server.url, key_prefix="site2")
    try:
        key = 'gl:2001:db8:1::/64:{quoted"local}part|x'
        await state.put(key, "v", 60, 0)
        await state.hash_put(key, "f", "v", 60, 0)
        stored = sorted(redis_server.client().scan_iter("*"))
        assert len(stored) == 2
        entry, hashed = stored
        assert entry.startswith("site1:gl:{") and entry.endswith("}")
        assert hashed == entry + ":h"
        assert "2001" not in entry and "quoted" not in entry
        # one hash tag: the entry and the hash of a key live in one cluster slot
        assert key_slot(entry.encode()) == key_slot(hashed.encode())
        assert await other.get(key, 0) is None  # prefixes keep deployments apart
        assert await state.memory_usage(key) is not None
    finally:
        await state.close()
        await other.close()


def test_key_prefix_may_not_hold_braces() -> None:
    with pytest.raises(ValueError):
        RedisState("redis://127.0.0.1:1/0", key_prefix="a{b}")


# ---------------------------------------------------------------- URLs


async def test_unix_socket_url(redis_server: RedisTestServer) -> None:
    state = RedisState(redis_server.unix_url)
    try:
        assert await state.ping()
        assert await state.counter_add("c", 3, 60, 0) == 3
    finally:
        await state.close()


async def test_sentinel_url_finds_the_master(redis_server: RedisTestServer) -> None:
    with RedisTestSentinel(redis_server, service="mxg-test") as sentinel:
        state = RedisState(sentinel.url)
        try:
            assert await state.put_if_absent("k", "v", 60, 0) is None
        finally:
            await state.close()
    assert redis_server.client().exists(redis_key("mxg", "k")) == 1


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1/svc",
        "redis+sentinel://127.0.0.1:26379/svc/0/extra",
        "redis+sentinel://127.0.0.1:26379/svc?bogus=1",
        "redis://127.0.0.1:6379/0?bogus=1",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        RedisState(url)


# ---------------------------------------------------------------- unavailability


async def test_unreachable_server_raises_state_unavailable() -> None:
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StateUnavailable):
            await state.get("k", 0)
        with pytest.raises(StateUnavailable):
            await state.ping()
    finally:
        await state.close()


async def test_read_only_replica_counts_as_unavailable(redis_server: RedisTestServer) -> None:
    """A primary demoted under us answers READONLY; that is an outage, not a bug."""
    with RedisTestServer(
        "127.0.0.1", None, "--replicaof", "127.0.0.1", str(redis_server.port)
    ) as replica:
        state = RedisState(replica.url)
        try:
            with pytest.raises(StateUnavailable):
                await state.put("k", "v", 60, 0)
        finally:
            await state.close()


async def test_primary_without_its_replicas_counts_as_unavailable() -> None:
    """`min-replicas-to-write` makes a cut-off primary refuse writes (NOREPLICAS): an outage."""
    with RedisTestServer("127.0.0.1", None, "--min-replicas-to-write", "1") as lonely:
        state = RedisState(lonely.url)
        try:
            with pytest.raises(StateUnavailable):
                await state.greylist("g", 0, 300, 600, 600)
            assert await state.get("g", 0) is None  # reads still work
        finally:
            await state.close()


async def test_killed_and_restarted_server(redis_server: RedisTestServer) -> None:
    state = RedisState(redis_server.url)
    try:
        await state.open()
        assert await state.counter_add("c", 1, 60, 0) == 1
        redis_server.kill()
        with pytest.raises(StateUnavailable):
            await state.counter_add("c", 1, 60, 0)
        redis_server.start()
        # the pool replaces its dead connections and the scripts are loaded again
        assert await state.counter_add("c", 1, 60, 0) == 1
    finally:
        await state.close()


# ---------------------------------------------------------------- the failover wrapper


def _outage_logs(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    down = sum("unavailable" in r.getMessage() for r in caplog.records)
    back = sum("is back after" in r.getMessage() for r in caplog.records)
    return down, back


async def test_failover_local_serves_from_sqlite_and_comes_back(
    redis_server: RedisTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mxguard.state")
    local = SqliteState(tmp_path / "fallback.db")
    state = FailoverState(RedisState(redis_server.url), local, "local", probe_max=0.2)
    try:
        await state.open()
        assert await state.counter_add("c", 1, 60, time.time()) == 1
        redis_server.kill()
        for i in range(20):  # many messages, one outage
            assert await state.counter_add("c", 1, 60, time.time()) == i + 1
        assert not state.available
        assert await local.get("c", time.time()) == "20"
        assert await state.ping() is False
        redis_server.start()
        await wait_for(lambda: state.available)
        assert await state.counter_add("c", 1, 60, time.time()) == 1  # Redis again, restarted empty
        assert _outage_logs(caplog) == (1, 1)
        assert "20 state calls were answered locally" in caplog.text
    finally:
        await state.close()


async def test_failover_tempfail_fails_fast_and_comes_back(
    redis_server: RedisTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mxguard.state")
    state = FailoverState(RedisState(redis_server.url), None, "tempfail", probe_max=0.2)
    try:
        await state.open()
        await state.put("k", "v", 60, 0)
        redis_server.kill()
        for _ in range(20):
            with pytest.raises(StateUnavailable):
                await state.get("k", 0)
        redis_server.start()
        await wait_for(lambda: state.available)
        assert await state.get("k", 0) is None  # the restarted server is empty
        assert _outage_logs(caplog) == (1, 1)
    finally:
        await state.close()


async def test_failover_starts_while_redis_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mxguard must come up and answer when the shared store is down at start-up."""
    caplog.set_level(logging.WARNING, logger="mxguard.state")
    port = free_port()
    settings = StateSettings(
        url=f"redis://127.0.0.1:{port}/0",
        on_unavailable="local",
        local_fallback=f"sqlite:///{tmp_path}/fallback.db",
    )
    state = open_configured_state(settings)
    assert isinstance(state, FailoverState)
    try:
        await state.open()
        assert not state.available
        assert (await state.greylist("g", 1000, 300, 600, 600)).status is GreylistStatus.NEW
        with RedisTestServer("127.0.0.1", port):
            await wait_for(lambda: state.available)
            assert await state.get("g", 1000) is None  # now asking Redis
    finally:
        await state.close()
    assert _outage_logs(caplog) == (1, 1)


def test_local_backends_are_not_wrapped(tmp_path: Path) -> None:
    settings = StateSettings(url=f"sqlite:///{tmp_path}/s.db", on_unavailable="local")
    assert isinstance(open_configured_state(settings), SqliteState)


async def test_failover_waits_for_a_writable_store(
    redis_server: RedisTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica answers PING but refuses writes: no flapping until it is promoted."""
    caplog.set_level(logging.WARNING, logger="mxguard.state")
    with RedisTestServer(
        "127.0.0.1", None, "--replicaof", "127.0.0.1", str(redis_server.port)
    ) as replica:
        local = SqliteState(tmp_path / "fallback.db")
        state = FailoverState(RedisState(replica.url), local, "local", probe_max=0.1)
        try:
            await state.open()
            assert await state.counter_add("c", 1, 60, time.time()) == 1  # answered locally
            await asyncio.sleep(0.5)  # several probes, all refused
            assert not state.available
            replica.client().replicaof("NO", "ONE")  # what Sentinel does on a failover
            await wait_for(lambda: state.available)
            assert await state.counter_add("c", 1, 60, time.time()) == 1  # now in Redis
        finally:
            await state.close()
    assert _outage_logs(caplog) == (1, 1)
