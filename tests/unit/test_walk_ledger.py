"""The memory state's ledger answers as the stored text does, operation for operation.

Over the plain memory state, `Sightings`, `Health` and `Blocklist` keep their records as
objects (`walk/ledger.py`) instead of text in the state. The same long, seeded mix of writes,
reads and expiries runs over the ledger, over text in a memory state (`objects=False`) and
over text in a real SQLite file; every answer must be the same in all three.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from random import Random
from typing import Any

import pytest

from mxguard.notnow import NOT_NOW
from mxguard.policy.facts import MxInfo, Role
from mxguard.state.base import StateStore
from mxguard.state.memory import MemoryState
from mxguard.state.sqlite import SqliteState
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.blocklist import Blocklist
from mxguard.walk.health import Health
from mxguard.walk.ledger import ledger_of
from mxguard.walk.sightings import Outcome, Sightings, Walk

T0 = 1_800_000_000.0
MXS = [
    MxInfo("mail.example.test", Role.PRIMARY, 10),
    MxInfo("backup.example.test", Role.BACKUP, 20),
    MxInfo("trap.example.test", Role.TRAP, 30),
    MxInfo("old.example.test", Role.RETIRED, None),
]
CLIENTS = [
    ipaddress.ip_address(a) for a in ("192.0.2.1", "192.0.2.77", "2001:db8::5", "198.51.100.3")
]
OUTCOMES = [
    ("rcpt", "tempfail", 451, "trap"),
    ("rcpt", "reject", 550, "unknown_recipient"),
    ("connect", "disconnect", 421, "capacity"),
    ("eom", "accept", 250, "a|b"),  # the separator inside the last field
    ("rc|pt", "x", 0, "r"),  # and where it breaks the text: never read back
]


class Removed(tuple[bool]):
    """What `Blocklist.remove` said. The backends differ there for an expired entry (the
    memory state's `delete` still finds it, SQLite's does not); the ledger is the memory
    state's, so only the memory state's text is asked to agree on it."""

    def __new__(cls, found: bool) -> Removed:
        return super().__new__(cls, (found,))


def but_removals(answers: list[Any]) -> list[Any]:
    return [a for a in answers if not isinstance(a, Removed)]


async def script(state: StateStore, objects: bool, seed: int) -> list[Any]:
    """Drive one seeded mix of walk bookkeeping; return every answer read on the way."""
    rng = Random(seed)
    sightings = Sightings(state, 60.0, 24, 64, objects=objects)
    health = Health(state, 30.0, 5.0, objects=objects)
    blocklist = Blocklist(state, 32, 64, objects=objects)
    assert (sightings.ledger is not None) is (objects and type(state) is MemoryState)
    out: list[Any] = []
    now: float = T0
    for step in range(1500):
        now += rng.choice([0.0, 0.2, 0.5, 1.0, 1.0, 2.0, 3.0, 7.25, 20.0, 65.0]) * rng.random()
        if step % 97 == 0:
            now = int(now) + 1  # an int time, as a caller may give
        ip = rng.choice(CLIENTS)
        mx = rng.choice(MXS)
        op = rng.randrange(12)
        if op < 3:
            previous = await sightings.contact(ip, mx.host, now)
            walk = rng.choice(list(Walk))
            out.append(await sightings.record(ip, mx, now, walk, previous))
        elif op < 5:
            stage, action, code, reason = rng.choice(OUTCOMES)
            at = float(round(now, 6)) if rng.random() < 0.8 else now
            outcome = Outcome(at, stage, action, code, reason)
            way = rng.randrange(3)  # the three ways in: now, awaited, and as bare fields
            if way == 0:
                done = sightings.note_outcome_now(ip, mx.host, outcome, at)
            elif way == 1:
                done = NOT_NOW
            else:
                done = sightings.note_answer_now(ip, mx.host, at, stage, action, code, reason)
            if done is NOT_NOW:
                await sightings.note_outcome(ip, mx.host, outcome, at)
        elif op == 5:
            out.append(await sightings.contacts(ip, now))
            out.append(await sightings.contact(ip, mx.host, now))
        elif op == 6:
            which = rng.randrange(6)
            if which < 3:
                await health.beat(mx.host, now)
            elif which == 3:
                await health.mark(mx.host, rng.choice(["capacity", "odd|reason", ""]), now)
            elif which == 4:
                await health.stopped(mx.host, now)
            else:
                await health.answered(mx.host, now)
        elif op == 7:
            hosts = rng.sample([m.host for m in MXS], rng.randrange(1, 4))
            healthy = health.all_healthy_now(hosts, now)  # the walk check's question
            if healthy is NOT_NOW:
                healthy = await health.all_healthy(hosts, now)
            statuses = await health.statuses([m.host for m in MXS], now)
            assert healthy == all(statuses[h].healthy for h in hosts)
            out.append((healthy, statuses))
        elif op == 8:
            until = now + rng.choice([5.0, 100.0, 86400.0])
            reason, note = rng.choice(["trap", "manual"]), rng.choice(["", 'a "note" é'])
            entry = BlockEntry(blocklist.network(ip), reason, now, until, mx.host, str(ip), note)
            out.append(await blocklist.add(entry, now, keep_longer=rng.random() < 0.8))
        elif op == 9:
            out.append(await blocklist.get(ip, now))
            out.append(blocklist.get_now(ip, now))
        elif op == 10:
            out.append(await blocklist.entries(now))
            out.append(await blocklist.size(now))
        elif rng.random() < 0.3:
            out.append(Removed(await blocklist.remove(blocklist.network(ip))))
    return out


async def three_ways(
    run: Callable[[StateStore, bool, int], Awaitable[list[Any]]], seed: int, tmp_path: Path
) -> tuple[list[Any], list[Any], list[Any]]:
    """One seeded script over the ledger, over text in memory, and over SQLite (which always
    stores text), for their answers to be compared."""
    ledger = await run(MemoryState(), True, seed)
    text = await run(MemoryState(), False, seed)
    sqlite = SqliteState(tmp_path / "state.db")
    await sqlite.open()
    try:
        stored = await run(sqlite, True, seed)
    finally:
        await sqlite.close()
    return ledger, text, stored


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_ledger_answers_as_stored_text(seed: int, tmp_path: Path) -> None:
    ledger, text, stored = await three_ways(script, seed, tmp_path)
    assert len(ledger) > 200
    assert ledger == text
    assert but_removals(ledger) == but_removals(stored)


def test_one_ledger_per_memory_state_and_none_for_others() -> None:
    state = MemoryState()
    assert ledger_of(state) is ledger_of(state) is not None
    assert ledger_of(MemoryState()) is not ledger_of(state)
    assert ledger_of(state, objects=False) is None

    class Failing(MemoryState):  # a test double that overrides operations must be asked
        pass

    assert ledger_of(Failing()) is None


async def test_expired_sightings_are_swept_as_the_ledger_grows() -> None:
    state = MemoryState()
    sightings = Sightings(state, 60.0, 32, 64)
    ledger = sightings.ledger
    assert ledger is not None
    mx = MXS[0]
    for i in range(5000):
        ip = ipaddress.ip_address(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        await sightings.record(ip, mx, T0 + i, Walk.NOT_JUDGED, None)
    assert len(ledger.seen) < 4096  # the ones older than the window went at the sweep


async def test_expired_block_entries_are_swept_as_the_ledger_grows() -> None:
    state = MemoryState()
    blocklist = Blocklist(state)
    ledger = blocklist.ledger
    assert ledger is not None
    for i in range(5000):
        network = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}/32"
        await blocklist.add(BlockEntry(network, "trap", T0 + i, T0 + i + 60.0, "trap"), T0 + i)
    assert len(ledger.blocks) < 4096
    assert await blocklist.size(T0 + 5000) == 59  # the live ones (4941-4999), by the index


async def health_script(state: StateStore, objects: bool, seed: int) -> list[Any]:
    """Steady heartbeats with gaps, sick marks, stops and answers: hosts go healthy and back."""
    rng = Random(seed)
    health = Health(state, 30.0, 5.0, objects=objects)
    hosts = [m.host for m in MXS]
    out: list[Any] = []
    now = T0
    for _ in range(800):
        now += rng.choice([0.5, 1.0, 2.5, 4.0, 4.0, 5.0, 9.0, 17.0]) * (0.5 + rng.random())
        for host in hosts:
            if rng.random() < 0.9:
                await health.beat(host, now)
        r = rng.random()
        if r < 0.05:
            await health.mark(rng.choice(hosts), "capacity", now)
        elif r < 0.08:
            await health.stopped(rng.choice(hosts), now)
        elif r < 0.2:
            await health.answered(rng.choice(hosts), now)
        asked = rng.sample(hosts, rng.randrange(1, len(hosts) + 1))
        healthy = health.all_healthy_now(asked, now)
        if healthy is NOT_NOW:
            healthy = await health.all_healthy(asked, now)
        out.append((healthy, await health.statuses(hosts, now)))
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_health_answers_as_stored_text(seed: int, tmp_path: Path) -> None:
    ledger, text, stored = await three_ways(health_script, seed, tmp_path)
    assert ledger == text == stored
    answers = [healthy for healthy, _ in ledger]
    assert 50 < sum(answers) < len(answers) - 50  # both answers, many times
