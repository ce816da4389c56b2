"""The connection protocol: replies straight from data_received, a task only when a decision waits.

Real sockets are in tests/integration/policyd; here a fake transport and a state that waits on
demand show the two paths meet: strict order, the per-request notes kept across the wait, and
silence plus a close when something breaks after the wait.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxguard.config import load_config_text
from mxguard.events import EventLog
from mxguard.greylist_feature import make_check
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.checks.base import Check
from mxguard.policyd.server import PolicyConnection, PolicyService, build_service
from mxguard.recipients import RecipientDirectory
from mxguard.state.base import GreylistResult, StateStore
from mxguard.state.memory import MemoryState

BASE = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "bob@example.test"]

[[mx]]
host = "mx1.example.test"
role = "primary"
preference = 10
listen = "127.0.0.1:2601"
"""
GREYLIST = '[greylist]\nroles = ["primary"]\ndelay = "60s"\n[policyd]\nprepend_header = true\n'


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mxg-policyd-conn-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def service(tmp: Path, state: StateStore | None = None) -> tuple[PolicyService, Clock]:
    cfg = load_config_text(BASE + GREYLIST, "test.toml")
    clock = Clock()

    def greylist(c: Any, s: StateStore) -> tuple[list[Check], list[Check]]:
        check = make_check(c, s)
        return [], [check] if check else []

    recipients = RecipientDirectory(cfg.domain, cfg.source)
    events = EventLog(tmp / "events.jsonl")
    svc = build_service(cfg, state or MemoryState(), recipients, events, [greylist], None, clock)
    return svc, clock


def wire(**kw: str) -> bytes:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.7",
        "client_port": "40000",
        "helo_name": "mail.sender.example",
        "sender": "carol@sender.example",
        "recipient": "alice@example.test",
        "instance": "a.1",
        "server_address": "127.0.0.1",
        "server_port": "2601",
    }
    attrs.update(kw)
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


class GatedState(MemoryState):
    """Greylist steps wait for `gate` while it is set: a locked SQLite file, or Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Future[None] | None = None
        self.fail_after_wait = False

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
        if self.gate is not None:
            return NOT_NOW  # as SQLite does when even its read would have to wait
        return super().greylist_now(
            key, now, delay, retry_window, pass_ttl, pass_counter, allow_after
        )

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        if self.gate is not None:
            await self.gate
            if self.fail_after_wait:
                raise RuntimeError("a bug after the wait")
        return await super().greylist(key, now, delay, retry_window, pass_ttl)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(svc: PolicyService) -> tuple[PolicyConnection, FakeTransport]:
    daemon: Any = types.SimpleNamespace(service=svc, connections=set())
    conn = PolicyConnection(daemon)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_decision_that_needs_no_wait_is_answered_at_once(tmp: Path) -> None:
    svc, _ = service(tmp)
    conn, transport = connect(svc)
    conn.data_received(wire() + wire(recipient="nobody@example.test"))
    assert conn.worker is None  # no task was needed
    assert transport.written[0].startswith(b"action=DEFER_IF_PERMIT 4.7.1 Greylisted")
    assert transport.written[1].startswith(b"action=550 5.1.1")


async def test_a_waiting_decision_holds_back_the_ones_behind_it(tmp: Path) -> None:
    state = GatedState()
    svc, _ = service(tmp, state)
    conn, transport = connect(svc)
    state.gate = asyncio.get_running_loop().create_future()
    # the first waits on the state; the second would need no wait, but must come second
    conn.data_received(wire() + wire(recipient="nobody@example.test"))
    await settle()
    assert conn.worker is not None and transport.written == []
    state.gate.set_result(None)
    state.gate = None
    await settle()
    assert [w[:24] for w in transport.written] == [
        b"action=DEFER_IF_PERMIT 4",
        b"action=550 5.1.1 User un",
    ]
    assert conn.worker is None
    conn.data_received(wire(instance="a.2"))  # back on the path without a task
    assert conn.worker is None and len(transport.written) == 3


class TimeoutState(MemoryState):
    """No fast path, and an async path that needs a current task, as redis-py's does."""

    def get_now(self, key: str, now: float) -> str | NotNow | None:
        return NOT_NOW

    async def get(self, key: str, now: float) -> str | None:
        async with asyncio.timeout(5):  # RuntimeError outside a task
            return await super().get(key, now)


async def test_a_wait_on_a_remote_state_runs_inside_the_task(tmp: Path) -> None:
    svc, _ = service(tmp, TimeoutState())
    conn, transport = connect(svc)
    # from the loop, as a transport calls it: outside any task
    asyncio.get_running_loop().call_soon(
        conn.data_received, wire() + wire(recipient="nobody@example.test")
    )
    await settle()
    assert len(transport.written) == 2
    assert transport.written[0].startswith(b"action=DEFER_IF_PERMIT 4.7.1 Greylisted")
    assert transport.written[1].startswith(b"action=550 5.1.1")  # not a state error


async def test_the_greylist_pass_note_survives_the_wait(tmp: Path) -> None:
    state = GatedState()
    svc, clock = service(tmp, state)
    conn, transport = connect(svc)
    conn.data_received(wire())
    clock.now += 61
    state.gate = asyncio.get_running_loop().create_future()
    conn.data_received(wire(instance="a.2"))
    await settle()
    state.gate.set_result(None)
    await settle()
    assert transport.written[1].startswith(b"action=PREPEND X-Greylist: delayed 61 seconds")


async def test_a_bug_after_the_wait_closes_without_a_reply(tmp: Path) -> None:
    state = GatedState()
    svc, _ = service(tmp, state)
    conn, transport = connect(svc)
    state.gate = asyncio.get_running_loop().create_future()
    state.fail_after_wait = True
    conn.data_received(wire() + wire())
    await settle()
    state.gate.set_result(None)
    await settle()
    assert transport.written == [] and transport.closed and conn.worker is None


@pytest.mark.parametrize("bad", [b"garbage\n\n", wire(client_address="not-an-ip")])
async def test_bad_input_after_good_closes_without_a_reply(tmp: Path, bad: bytes) -> None:
    svc, _ = service(tmp)
    conn, transport = connect(svc)
    conn.data_received(wire() + bad + wire())
    assert len(transport.written) == 1 and transport.closed
