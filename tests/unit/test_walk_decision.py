"""The walk check's decision table, liveness rule and state records, without sockets or a clock."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mxguard.notnow import NOT_NOW
from mxguard.policy.checks.blocklist import BlocklistCheck
from mxguard.policy.checks.walk import (
    BackupWalkCheck,
    Tier,
    TierMx,
    WalkGate,
    blocklists,
    classify,
    trap_verdict,
)
from mxguard.policy.facts import Facts, MxInfo, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Action
from mxguard.state.memory import MemoryState
from mxguard.state.sqlite import SqliteState
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.blocklist import REFRESH, RELOAD, Blocklist, network_of
from mxguard.walk.health import Health, MxHealth, judge_health
from mxguard.walk.ledger import ledger_of
from mxguard.walk.sightings import Contact, Outcome, Sightings, Walk, decode_contacts

TIER = Tier(
    [
        TierMx("fake0", Role.FAKE, 0),
        TierMx("mail", Role.PRIMARY, 10),
        TierMx("backup", Role.BACKUP, 20),
        TierMx("trap", Role.TRAP, 30),
        TierMx("old", Role.RETIRED, None),
    ]
)
MX = {
    "mail": MxInfo("mail", Role.PRIMARY, 10),
    "backup": MxInfo("backup", Role.BACKUP, 20),
    "trap": MxInfo("trap", Role.TRAP, 30),
    "old": MxInfo("old", Role.RETIRED, None),
}
UP = MxHealth("x", True, "up")
DOWN = MxHealth("x", False, "stopped")


def contact(host: str, pref: int | None) -> Contact:
    return Contact(host, "primary", pref, 100.0, 100.0, 1, Walk.NOT_JUDGED)


def health(**states: MxHealth) -> dict[str, MxHealth]:
    return dict(states)


# (role, contacts at, lower health) -> (walk, blocklisted)
TABLE = [
    # backup
    ("backup", ["mail"], {"mail": UP}, Walk.WALKED, False),
    ("backup", ["mail"], {"mail": DOWN}, Walk.WALKED, False),
    ("backup", [], {"mail": DOWN}, Walk.LOWER_UNHEALTHY, False),
    ("backup", [], {}, Walk.LOWER_UNHEALTHY, False),  # nothing known of the primary
    ("backup", [], {"mail": UP}, Walk.SKIPPED, False),
    ("backup", ["trap"], {"mail": UP}, Walk.SKIPPED, False),  # a higher MX is no walk
    # trap
    ("trap", ["backup"], {"mail": UP, "backup": UP}, Walk.WALKED, False),
    ("trap", ["mail"], {"mail": UP, "backup": UP}, Walk.WALKED, False),
    ("trap", [], {"mail": DOWN, "backup": UP}, Walk.LOWER_UNHEALTHY, False),
    ("trap", [], {"mail": UP, "backup": DOWN}, Walk.LOWER_UNHEALTHY, False),
    ("trap", [], {"mail": UP, "backup": UP}, Walk.SKIPPED, True),
    ("trap", ["old"], {"mail": UP, "backup": UP}, Walk.SKIPPED, True),
    # retired: any contact
    ("old", ["mail", "backup"], {}, Walk.RETIRED, True),
    ("old", [], {}, Walk.RETIRED, True),
    # primary: nothing below it
    ("mail", [], {}, Walk.NOT_JUDGED, False),
]


@pytest.mark.parametrize(("host", "seen", "lower_health", "walk", "blocked"), TABLE)
def test_decision_table(
    host: str, seen: list[str], lower_health: dict[str, MxHealth], walk: Walk, blocked: bool
) -> None:
    mx = MX[host]
    prefs = {"mail": 10, "backup": 20, "trap": 30, "old": None}
    contacts = {h: contact(h, prefs[h]) for h in seen}
    got = classify(mx.role, mx.preference, contacts, TIER.lower(mx), lower_health)
    assert got is walk
    assert blocklists(mx.role, got) is blocked


def test_lower_hosts_leave_out_fake_and_retired() -> None:
    assert [m.host for m in TIER.lower(MX["trap"])] == ["mail", "backup"]
    assert TIER.lower(MX["old"]) == []


def test_a_contact_refused_over_capacity_counts_as_seen() -> None:
    """Refused by the listener's cap, the contact has only an outcome field: still a walk."""
    o = Outcome(100.0, "connect", "disconnect", 421, "capacity")
    contacts = decode_contacts({"mail!o": o.encode()}, now=110.0, window=600.0)
    mx = MX["backup"]
    got = classify(mx.role, 20, contacts, TIER.lower(mx), {"mail": UP})
    assert got is Walk.WALKED


def test_contacts_older_than_the_window_are_ignored() -> None:
    c = Contact("mail", "primary", 10, 0.0, 0.0, 1, Walk.NOT_JUDGED)
    assert decode_contacts({"mail": c.encode()}, now=601.0, window=600.0) == {}
    assert "mail" in decode_contacts({"mail": c.encode()}, now=600.0, window=600.0)


def test_trap_answers_are_tempfails_never_5xx() -> None:
    for role in (Role.TRAP, Role.RETIRED):
        for walk in Walk:
            rcpt = trap_verdict(role, walk, Stage.RCPT)
            assert (rcpt.code, rcpt.status, rcpt.action) == (451, "4.3.2", Action.TEMPFAIL)
            conn = trap_verdict(role, walk, Stage.CONNECT)
            assert (conn.code, conn.action) == (421, Action.DISCONNECT)
    assert trap_verdict(Role.TRAP, Walk.SKIPPED, Stage.RCPT).reason == "trap_blocklisted"
    assert trap_verdict(Role.TRAP, Walk.WALKED, Stage.RCPT).reason == "trap"


# ---------------------------------------------------------------- liveness


@pytest.mark.parametrize(
    ("live", "sick", "healthy", "why"),
    [
        ("0.0|995.0", None, True, "up 16m40s"),
        (None, None, False, "no heartbeat"),
        ("0.0|900.0", None, False, "last heartbeat"),  # beats stopped: a crash
        ("960.0|995.0", None, False, "up only 40s"),  # restarted 40 s ago
        ("0.0|995.0", "capacity|990.0", False, "capacity 10s ago"),
        ("0.0|995.0", "capacity|900.0", True, "up"),  # the mark is older than the window
    ],
)
def test_health_rule(live: str | None, sick: str | None, healthy: bool, why: str) -> None:
    h = judge_health("mail", live, sick, now=1000.0, window=60.0, stale_after=15.0)
    assert h.healthy is healthy
    assert h.why.startswith(why)


def test_sessions_speak_only_for_a_host_nobody_heartbeats() -> None:
    """policyd: Postfix's sessions are the evidence; a heartbeated host is judged by its beats."""
    fresh = judge_health("mail", None, None, 1000.0, 60.0, 15.0, answered="990.0")
    assert fresh.healthy and fresh.why.startswith("answered a client 10s ago")
    old = judge_health("mail", None, None, 1000.0, 60.0, 15.0, answered="900.0")
    assert not old.healthy
    full = judge_health("mail", None, "capacity|995.0", 1000.0, 60.0, 15.0, answered="999.0")
    assert not full.healthy
    crashed = judge_health("mail", "0.0|900.0", None, 1000.0, 60.0, 15.0, answered="999.0")
    assert not crashed.healthy


async def test_beats_keep_up_since_until_a_gap_or_a_stop() -> None:
    state = MemoryState()
    health = Health(state, window=60.0, interval=5.0)
    for t in range(0, 70, 5):
        await health.beat("mail", float(t))
    assert (await health.status("mail", 65.0)).healthy
    await health.beat("mail", 100.0)  # 35 s without a beat: a new run starts
    assert (await health.status("mail", 100.0)).why.startswith("up only")
    await health.stopped("mail", 101.0)
    assert not (await health.status("mail", 101.0)).healthy


# ---------------------------------------------------------------- the checks over memory state


def facts(
    stage: Stage, host: str, ip: str = "192.0.2.7", now: float = 1000.0, **kw: object
) -> Facts:
    return Facts(stage, now, ipaddress.ip_address(ip), MX[host], **kw)  # type: ignore[arg-type]


async def make(answer: str = "rcpt") -> tuple[WalkGate, Health, Blocklist, Sightings]:
    state = MemoryState()
    health = Health(state, 60.0, 5.0)
    for t in range(900, 1001, 5):
        for h in ("mail", "backup"):
            await health.beat(h, float(t))
    sightings = Sightings(state, 600.0, 32, 64)
    bl = Blocklist(state)
    gate = WalkGate(
        TIER,
        sightings,
        health,
        bl,
        86400.0,
        NetworkSet(["198.51.100.0/24"]),
        {"trap": answer, "old": answer},  # type: ignore[dict-item]
    )
    return gate, health, bl, sightings


async def test_gate_blocklists_at_connect_and_answers_451_at_rcpt() -> None:
    gate, _, bl, _ = await make()
    assert await gate.check(facts(Stage.CONNECT, "trap")) is None
    entry = await bl.get(ipaddress.ip_address("192.0.2.7"), 1000.0)
    assert entry is not None and entry.reason == "trap" and entry.by == "trap"
    v = await gate.check(facts(Stage.RCPT, "trap", recipient="x@example.test"))
    assert v is not None and (v.code, v.reason) == (451, "trap_blocklisted")


async def test_gate_judges_at_connect_so_a_later_lower_contact_does_not_excuse() -> None:
    gate, *_ = await make()
    await gate.check(facts(Stage.CONNECT, "trap"))
    await gate.check(facts(Stage.CONNECT, "mail", now=1000.5))
    v = await gate.check(facts(Stage.RCPT, "trap", now=1001.0))
    assert v is not None and v.reason == "trap_blocklisted"


async def test_trusted_and_allowlisted_clients_are_answered_but_never_judged() -> None:
    gate, _, bl, sightings = await make("connect")
    for f in (
        facts(Stage.CONNECT, "trap", trusted_peer=True),
        facts(Stage.CONNECT, "old", ip="198.51.100.9"),
    ):
        v = await gate.check(f)
        assert v is not None and (v.code, v.reason) == (421, f.mx.role.value)
        assert await bl.get(f.client_ip, 1000.0) is None
        assert await sightings.contacts(f.client_ip, 1000.0) == {}


@pytest.mark.parametrize("answer", ["rcpt", "connect"])
async def test_gate_answers_without_waiting_exactly_when_there_is_nothing_to_record(
    answer: str,
) -> None:
    """check_now spares the SMTP listener a task per connection; when it answers, the answer
    is the one `check` gives, and it waits (NOT_NOW) whenever sightings are to be kept."""
    gate, _, bl, sightings = await make(answer)
    gate.immediate = False  # as over SQLite or Redis (memory state lets the gate run in full)
    exempt = (
        facts(Stage.CONNECT, "trap", trusted_peer=True),
        facts(Stage.RCPT, "trap", trusted_peer=True),
        facts(Stage.CONNECT, "old", ip="198.51.100.9"),
        facts(Stage.CONNECT, "mail", ip="198.51.100.9"),
    )
    for f in exempt:
        assert gate.check_now(f) == await gate.check(f)
    assert await sightings.contacts(ipaddress.ip_address("198.51.100.9"), 1000.0) == {}
    for f in (facts(Stage.CONNECT, "mail"), facts(Stage.CONNECT, "trap")):
        assert gate.check_now(f) is NOT_NOW
    assert gate.check_now(facts(Stage.RCPT, "mail")) is None  # after connect: traps only
    gate.record = False  # a tier nobody judges (primaries only): every answer is immediate
    for stage, host in [(Stage.CONNECT, "mail"), (Stage.CONNECT, "trap"), (Stage.RCPT, "old")]:
        f = facts(stage, host)
        assert gate.check_now(f) == await gate.check(f)
    assert await bl.get(ipaddress.ip_address("192.0.2.7"), 1000.0) is None


@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("answer", ["rcpt", "connect"])
@pytest.mark.parametrize("host", ["mail", "backup", "trap", "old"])
@pytest.mark.parametrize("ip", ["192.0.2.7", "198.51.100.9"])
async def test_gate_check_now_answers_as_check_or_waits(
    record: bool, answer: str, host: str, ip: str
) -> None:
    gate, _, bl, _ = await make(answer)
    gate.record = record
    for stage in (Stage.CONNECT, Stage.RCPT):
        f = facts(stage, host, ip=ip)
        now = gate.check_now(f)
        if now is NOT_NOW:  # only where the state is read or written
            assert (record and stage is Stage.CONNECT) or host in ("trap", "old")
            continue
        assert now == await gate.check(f)
    if not record:
        assert await bl.get(ipaddress.ip_address(ip), 1000.0) is None


async def test_backup_check_tempfails_a_skip_only() -> None:
    gate, _, _, sightings = await make()
    check = BackupWalkCheck(sightings)
    await gate.check(facts(Stage.CONNECT, "backup"))
    v = await check.check(facts(Stage.RCPT, "backup"))
    assert v is not None and (v.code, v.status, v.reason, v.soft) == (450, "4.7.1", "mx_walk", True)
    ip = "192.0.2.8"
    await gate.check(facts(Stage.CONNECT, "mail", ip=ip, now=999.0))
    await gate.check(facts(Stage.CONNECT, "backup", ip=ip))
    assert await check.check(facts(Stage.RCPT, "backup", ip=ip)) is None


async def test_blocklist_check_rejects_at_rcpt_but_tempfails_on_traps() -> None:
    state = MemoryState()
    bl = Blocklist(state)
    await bl.add(BlockEntry("192.0.2.7/32", "manual", 0.0, 5000.0, "cli"), 0.0)
    check = BlocklistCheck(bl, "reject")
    v = await check.check(facts(Stage.RCPT, "mail"))
    assert v is not None and (v.code, v.status, v.reason) == (554, "5.7.1", "blocklisted")
    v = await check.check(facts(Stage.RCPT, "trap"))
    assert v is not None and v.code == 450
    v = await BlocklistCheck(bl, "tempfail").check(facts(Stage.RCPT, "mail"))
    assert v is not None and v.action is Action.TEMPFAIL
    assert await check.check(facts(Stage.RCPT, "mail", now=5001.0)) is None


@pytest.mark.parametrize("objects", [True, False])
async def test_blocklist_index_lists_and_prunes(objects: bool) -> None:
    state = MemoryState()
    bl = Blocklist(state, objects=objects)
    await bl.add(BlockEntry("192.0.2.1/32", "trap", 0.0, 100.0, "trap"), 0.0)
    await bl.add(BlockEntry("192.0.2.2/32", "manual", 1.0, 10_000.0, "cli"), 1.0)
    # a trap's renewal never shortens a longer entry made by hand
    kept = await bl.add(BlockEntry("192.0.2.2/32", "trap", 2.0, 50.0, "trap"), 2.0)
    assert kept.reason == "manual"
    assert [e.network for e in await bl.entries(10.0)] == ["192.0.2.1/32", "192.0.2.2/32"]
    assert [e.network for e in await bl.entries(200.0)] == ["192.0.2.2/32"]
    if objects:  # the memory state's ledger holds the index
        ledger = ledger_of(state)
        assert ledger is not None and list(ledger.index) == ["192.0.2.2/32"]
    else:
        assert list(await state.hash_get("blockidx:all", 200.0)) == ["192.0.2.2/32"]
    assert await bl.remove("192.0.2.2/32")
    assert await bl.entries(200.0) == []


def test_network_of() -> None:
    assert network_of("192.0.2.7", 32, 64) == "192.0.2.7/32"
    assert network_of("2001:db8::1", 32, 64) == "2001:db8::/64"
    assert network_of("192.0.2.0/24", 24, 64) == "192.0.2.0/24"
    with pytest.raises(ValueError, match="access"):
        network_of("192.0.2.0/16", 24, 64)


async def test_each_process_answers_from_its_copy_of_the_blocklist(tmp_path: Path) -> None:
    """Two processes on one SQLite file: a change here is in this copy at once; a change
    there reaches this copy once it asks for the version again (REFRESH), and a copy that
    must be read again says NOT_NOW to the check's quick path, never a stale "not listed"
    past that second."""
    state = SqliteState(tmp_path / "state.db")
    await state.open()
    try:
        here, there = Blocklist(state), Blocklist(state)
        ip = ipaddress.ip_address("192.0.2.7")
        assert here.get_now(ip, 100.0) is NOT_NOW  # no copy yet
        assert await here.get(ip, 100.0) is None
        assert here.get_now(ip, 100.0) is None  # the copy answers, no read
        await there.add(BlockEntry("192.0.2.7/32", "trap", 100.0, 5000.0, "trap"), 100.0)
        assert here.get_now(ip, 100.5) is None  # within REFRESH: the copy as it was
        assert here.get_now(ip, 100.0 + REFRESH) is NOT_NOW  # the version moved
        entry = await here.get(ip, 100.0 + REFRESH)
        assert entry is not None and entry.reason == "trap"
        await here.remove("192.0.2.7/32")
        assert here.get_now(ip, 101.5) is None  # its own change, at once
        assert there.get_now(ip, 102.0) is NOT_NOW  # it has no copy yet
        assert await there.get(ip, 102.0) is None  # its first reading has the removal
        await here.add(BlockEntry("192.0.2.7/32", "manual", 103.0, 150.0, "cli"), 103.0)
        assert here.get_now(ip, 103.0) is not None
        assert await here.get(ip, 150.0) is None  # expired in the copy as in the state
    finally:
        await state.close()


async def test_a_copy_is_read_again_after_reload_whatever_the_version(tmp_path: Path) -> None:
    """An entry whose version write was lost (written to the index by hand here) is late by
    at most RELOAD, never missed for good."""
    state = SqliteState(tmp_path / "state.db")
    await state.open()
    try:
        bl = Blocklist(state)
        ip = ipaddress.ip_address("192.0.2.9")
        assert await bl.get(ip, 100.0) is None
        entry = BlockEntry("192.0.2.9/32", "trap", 100.0, 5000.0, "trap")
        await state.hash_put("blockidx:all", entry.network, entry.to_json(), 86400.0, 100.0)
        assert await bl.get(ip, 100.0 + REFRESH) is None  # same version: the copy stands
        assert bl.get_now(ip, 100.0 + RELOAD) is NOT_NOW
        got = await bl.get(ip, 100.0 + RELOAD)
        assert got is not None and got.network == entry.network
    finally:
        await state.close()
