"""The small pieces of the operations feature: series names, sliding counts, restart notes,
the timed state wrapper, the endpoint's answers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from mxguard.config import load_config_text
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.ops.endpoint import handler
from mxguard.ops.metrics import SlidingCounts, outcome_of, parse_series
from mxguard.ops.timing import TimedState, unwrap
from mxguard.serve import restart_needed
from mxguard.state.base import GreylistStatus
from mxguard.state.memory import MemoryState
from mxguard.state.sqlite import SqliteState

BASE = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test"]

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "127.0.0.1:2525"
"""


def test_parse_series() -> None:
    assert parse_series("blocklist_entries") == ("blocklist_entries", {})
    assert parse_series('queue_messages{mx="b.example",state="held"}') == (
        "queue_messages",
        {"mx": "b.example", "state": "held"},
    )
    with pytest.raises(ValueError):
        parse_series("not a name{")


def test_outcome_follows_the_reply_code() -> None:
    assert [outcome_of(c) for c in (250, 354, 421, 451, 550, 554, None)] == [
        "accepted",
        "accepted",
        "tempfailed",
        "tempfailed",
        "rejected",
        "rejected",
        "accepted",
    ]


def test_sliding_counts_forget_old_slots_and_cap_keys() -> None:
    c = SlidingCounts(60.0, 60, max_keys=2)
    c.add("a", 1000.0)
    c.add("b", 1000.5)
    c.add("c", 1000.7)  # over the cap in this slot
    assert c.totals(1001.0) == {"a": 1, "b": 1, "other": 1}
    c.add("a", 1030.0)
    assert c.totals(1030.0)["a"] == 2
    assert c.totals(1070.0) == {"a": 1}  # the first slot is gone
    assert c.totals(2000.0) == {}


def test_restart_needed_names_what_a_reload_cannot_apply() -> None:
    running = load_config_text(BASE, "a.toml")
    assert restart_needed(running, running) == []
    moved = load_config_text(BASE.replace("2525", "2526"), "a.toml")
    assert restart_needed(running, moved) == [
        "mx mail.example.test listen 127.0.0.1:2526 (still listening on 127.0.0.1:2525)"
    ]
    grace = dataclasses.replace(
        running, server=dataclasses.replace(running.server, shutdown_grace=5.0)
    )
    assert restart_needed(running, grace) == []  # read at stop time: applies at once
    state = load_config_text(BASE + '\n[state]\nurl = "memory://"\n', "a.toml")
    assert restart_needed(running, state) == ["[state]"]


class _Broken(MemoryState):
    async def get(self, key: str, now: float) -> str | None:
        raise RuntimeError("down")


async def test_timed_state_counts_calls_and_errors() -> None:
    reg = CollectorRegistry()
    seconds = Histogram("s", "s", ["op"], registry=reg)
    errors = Counter("e", "e", ["op"], registry=reg)
    state = TimedState(_Broken(), seconds, errors)
    await state.put("k", "v", 60, 0)
    with pytest.raises(RuntimeError):
        await state.get("k", 0)
    assert reg.get_sample_value("s_count", {"op": "put"}) == 1
    assert reg.get_sample_value("s_count", {"op": "get"}) == 1
    assert reg.get_sample_value("e_total", {"op": "get"}) == 1
    assert state.kind == "memory"
    assert isinstance(unwrap(state), _Broken)


async def test_timed_state_keeps_the_answers_without_waiting() -> None:
    """With metrics on, checks must still answer from data_received: the wrapper forwards
    the `_now` twins (timing what they did) and says NOT_NOW only when the backend does."""
    reg = CollectorRegistry()
    seconds = Histogram("s", "s", ["op"], registry=reg)
    errors = Counter("e", "e", ["op"], registry=reg)
    state = TimedState(MemoryState(), seconds, errors)
    assert state.immediate
    assert state.counter_add_now("c", 2, 60, 0) == 2
    assert state.get_now("c", 0) == "2"
    assert state.hash_put_now("h", "f", "v", 60, 0) is None
    result = state.greylist_now("g", 0, 60, 600, 3600, "n")
    assert not isinstance(result, NotNow) and result.status is GreylistStatus.NEW
    for op in ("counter_add", "get", "hash_put", "greylist"):
        assert reg.get_sample_value("s_count", {"op": op}) == 1
    sqlite = TimedState(SqliteState(":memory:"), seconds, errors)  # its fast path is off
    assert not sqlite.immediate
    assert sqlite.get_now("c", 0) is NOT_NOW
    assert reg.get_sample_value("s_count", {"op": "get"}) == 1  # nothing done, nothing timed


async def test_endpoint_answers_get_only() -> None:
    handle = handler(lambda path: (200, "text/plain", b"hi\n"))
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def ask(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        data = await reader.read()
        writer.close()
        return data

    try:
        ok = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.0 200") and ok.endswith(b"\r\n\r\nhi\n")
        assert (await ask(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.0 405")
        assert (await ask(b"nonsense\r\n\r\n")).startswith(b"HTTP/1.0 400")
    finally:
        server.close()
        await server.wait_closed()
