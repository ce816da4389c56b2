"""The walk feature's bookkeeping short cuts give what the plain paths give.

Each short cut (a decision handed over without its event dict, stored records parsed once,
block entries written without the generic encoder, one host's sightings read alone) is
checked against the path it stands in for, on the same input.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import pytest

from mxguard.config import load_config
from mxguard.events import EventLog
from mxguard.policy.facts import Facts, MxInfo, Role, Stage
from mxguard.policy.verdict import ACCEPT, Verdict, reject, tempfail
from mxguard.state.memory import MemoryState
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.feature import WalkFeature
from mxguard.walk.ledger import ledger_of
from mxguard.walk.sightings import OUTCOME_SUFFIX, Contact, Outcome, Sightings, Walk

CFG = load_config(None)  # primary, backup and trap: every role is recorded
MXS = {m.role: MxInfo(m.host, m.role, m.preference) for m in CFG.mx}


def feature(state: MemoryState) -> WalkFeature:
    server: Any = SimpleNamespace(config=CFG, state=state, runtime=None, listeners=[])
    return WalkFeature(server)


DELIVERED = Verdict(ACCEPT.action, 250, "2.0.0", "Ok", "delivered")
# (stage, role, verdict, client, whether an outcome is written)
DECISIONS: list[tuple[Stage, Role, Verdict, str, bool]] = [
    (Stage.RCPT, Role.TRAP, tempfail("trap", "t", 451, "4.3.2"), "192.0.2.7", True),
    (Stage.RCPT, Role.PRIMARY, reject("unknown_recipient", "u", 550, "5.1.1"), "192.0.2.7", True),
    (Stage.RCPT, Role.PRIMARY, ACCEPT, "192.0.2.8", False),  # the busiest event, skipped
    (Stage.EOM, Role.PRIMARY, DELIVERED, "2001:db8::5", True),
    (Stage.CONNECT, Role.BACKUP, tempfail("capacity", "c", 421, "4.3.2"), "127.0.0.2", False),
]


@pytest.mark.parametrize(("stage", "role", "verdict", "client", "written"), DECISIONS)
def test_on_decision_writes_what_the_event_would(
    stage: Stage, role: Role, verdict: Verdict, client: str, written: bool
) -> None:
    facts = Facts(stage, 1_800_000_000.1234567, ipaddress.ip_address(client), MXS[role], "S1")
    by_event, direct = MemoryState(), MemoryState()
    log = EventLog(None)
    log.listeners.append(feature(by_event).on_event)
    log.decision(facts, verdict, queue_id="S1", rcpt_count=1)
    feature(direct).on_decision(facts, verdict, queue_id="S1", rcpt_count=1)
    assert kept(direct) == kept(by_event)
    assert bool(kept(direct)) is written  # 127.0.0.2 is a trusted peer: exempt


def kept(state: MemoryState) -> dict[str, object]:
    """The sightings the memory state's ledger holds, as comparable values."""
    ledger = ledger_of(state)
    assert ledger is not None
    return {k: (r.expires, r.contacts, r.outcomes) for k, r in ledger.seen.items()}


def block_entries() -> list[BlockEntry]:
    return [
        BlockEntry("192.0.2.0/24", "trap", 1_800_000_000.25, 1_800_086_400.5, "trap.example",
                   "192.0.2.7", "reached the trap without trying mail (10), all healthy"),
        BlockEntry("2001:db8::/64", "manual", 1.0, 2.0, "cli", "", 'a "quote", \\, \n, é, 日本, \x01'),
        BlockEntry("198.51.100.0/24", "trap", 5, 7, "x"),  # int times, as a caller may give
        BlockEntry("x", "trap", math.nan, math.inf, "x"),
        BlockEntry("x", "retired", 1e-300, 1e300, "x"),
    ]  # fmt: skip


@pytest.mark.parametrize("entry", block_entries())
def test_block_entry_json_is_the_generic_encoders(entry: BlockEntry) -> None:
    expected = json.dumps(asdict(entry), separators=(",", ":"), sort_keys=True)
    assert entry.to_json() == expected
    back = BlockEntry.from_json(expected)
    assert back is not None and back.to_json() == expected
    assert BlockEntry.from_json(expected) is back  # parsed once


async def test_one_hosts_contact_is_the_whole_reads() -> None:
    state = MemoryState()
    s = Sightings(state, 600.0, 32, 64, objects=False)  # the stored text is what is read
    ip = ipaddress.ip_address("192.0.2.9")
    key = s.key(ip)
    old = Contact("mail", "primary", 10, 100.0, 100.0, 1, Walk.NOT_JUDGED).encode()
    shapes: list[dict[str, str]] = [
        {},
        {"mail": old},
        {"mail" + OUTCOME_SUFFIX: Outcome(650.0, "rcpt", "reject", 550, "x").encode()},
        {"mail": old, "mail" + OUTCOME_SUFFIX: Outcome(650.0, "rcpt", "x", 0, "a|b").encode()},
        {"mail": old, "trap": old, "mail" + OUTCOME_SUFFIX: "garbage"},
    ]
    for fields in shapes:
        state._hashes[key] = (dict(fields), 1e9)
        for host in ("mail", "trap", "backup"):
            whole = (await s.contacts(ip, 720.0)).get(host)
            assert await s.contact(ip, host, 720.0) == whole


@pytest.mark.parametrize("objects", [True, False])
async def test_records_read_back_as_written_whatever_the_time_type(objects: bool) -> None:
    """A record kept at write time must equal what parsing the stored text gives."""
    state = MemoryState()
    s = Sightings(state, 600.0, 32, 64, objects=objects)
    ip = ipaddress.ip_address("192.0.2.10")
    mx = MXS[Role.PRIMARY]
    for now in (100, 100.5):  # an int time comes back as a float, as before
        written = await s.record(ip, mx, now, Walk.NOT_JUDGED, None)
        read = (await s.contacts(ip, now))[mx.host]
        assert read == written
        assert type(read.first) is float and type(read.last) is float
    await s.note_outcome(ip, mx.host, Outcome(101, "rcpt", "reject", 550, "r"), 101)
    outcome = (await s.contacts(ip, 101.0))[mx.host].outcome
    assert outcome is not None and type(outcome.at) is float
