"""The policy service without sockets: attributes -> facts -> engine -> action, on a test clock."""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxguard.config import Config, load_config_text
from mxguard.events import EventLog
from mxguard.greylist_feature import make_check
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.checks.base import Check
from mxguard.policy.facts import DnsListAnswer, Facts, MxInfo, Role, Stage
from mxguard.policyd.guard import ObservedState, guard
from mxguard.policyd.mapping import BadRequest, RoleMap
from mxguard.policyd.protocol import PolicyRequest
from mxguard.policyd.server import ConnectionState, PolicyService, build_service
from mxguard.recipients import RecipientDirectory
from mxguard.state.base import GreylistResult, StateStore, StateUnavailable
from mxguard.state.memory import MemoryState

BASE = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "bob@example.test", "postmaster@example.test"]

[[mx]]
host = "mx1.example.test"
role = "primary"
preference = 10
listen = "127.0.0.1:2601"

[[mx]]
host = "mx2.example.test"
role = "backup"
preference = 20
listen = "127.0.0.1:2602"
"""


_logs: list[EventLog] = []


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Our own directory: suites running beside this one prune pytest's shared base dirs."""
    path = Path(tempfile.mkdtemp(prefix="mxg-policyd-unit-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def config(extra: str = "") -> Config:
    return load_config_text(BASE + extra, "test.toml")


def service(
    cfg: Config,
    tmp_path: Path,
    state: StateStore | None = None,
    dnsbl: Any = None,
) -> tuple[PolicyService, Clock, Path]:
    clock = Clock()
    store = state or MemoryState()
    events_path = tmp_path / "events.jsonl"

    def greylist(c: Config, s: StateStore) -> tuple[list[Check], list[Check]]:
        check = make_check(c, s)
        return [], [check] if check else []

    event_log = EventLog(events_path)
    _logs.append(event_log)
    svc = build_service(
        cfg,
        store,
        RecipientDirectory(cfg.domain, cfg.source),
        event_log,
        [greylist],
        dnsbl,
        clock,
    )
    return svc, clock, events_path


def req(**kw: str) -> PolicyRequest:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.7",
        "client_port": "40000",
        "client_name": "unknown",
        "helo_name": "mail.sender.example",
        "sender": "carol@sender.example",
        "recipient": "alice@example.test",
        "instance": "a.1",
        "server_address": "127.0.0.1",
        "server_port": "2601",
    }
    attrs.update(kw)
    return PolicyRequest(attrs)


async def ask(svc: PolicyService, conn: ConnectionState, **kw: str) -> str:
    out = await svc.handle(req(**kw), conn)
    assert out.startswith(b"action=") and out.endswith(b"\n\n") and out.count(b"\n") == 2
    return out[len(b"action=") : -2].decode()


def events(path: Path) -> list[dict[str, Any]]:
    import json

    for log in _logs:
        getattr(log, "flush", lambda: None)()  # the event log may buffer its lines

    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- role mapping


def test_role_from_server_address_and_port() -> None:
    roles = RoleMap(config())
    assert roles.lookup("127.0.0.1", "2601").info.role is Role.PRIMARY
    assert roles.lookup("127.0.0.1", "2602").info.role is Role.BACKUP
    assert roles.lookup("127.0.0.1", "2602").info.host == "mx2.example.test"
    # unknown address: the most preferred primary, never the backup's walk rules
    assert roles.lookup("10.9.9.9", "25").info.role is Role.PRIMARY
    assert roles.lookup("", "").info.role is Role.PRIMARY


def test_wildcard_listen_and_address_only_match() -> None:
    cfg = load_config_text(
        BASE.replace("127.0.0.1:2602", "0.0.0.0:2602").replace("127.0.0.1:2601", "127.0.0.5:25"),
        "t.toml",
    )
    roles = RoleMap(cfg)
    assert roles.lookup("127.0.0.9", "2602").info.role is Role.BACKUP
    assert roles.lookup("127.0.0.5", "587").info.role is Role.PRIMARY  # only entry on it
    assert roles.lookup("::ffff:127.0.0.5", "25").info.role is Role.PRIMARY


def test_fixed_role_wins() -> None:
    roles = RoleMap(config('[policyd]\nrole = "backup"\n'))
    assert roles.lookup("127.0.0.1", "2601").info.host == "mx2.example.test"


# ---------------------------------------------------------------- decisions


async def test_greylist_defer_then_pass_with_prepend_once(tmp_path: Path) -> None:
    cfg = config(
        '[greylist]\nroles = ["primary"]\ndelay = "60s"\n[policyd]\nprepend_header = true\n'
    )
    svc, clock, log = service(cfg, tmp_path)
    conn = ConnectionState()
    first = await ask(svc, conn)
    assert first == "DEFER_IF_PERMIT 4.7.1 Greylisted, try again in 60 seconds"
    clock.now += 61
    passed = await ask(svc, conn, instance="a.2")
    assert passed.startswith("PREPEND X-Greylist: delayed 61 seconds by mxguard-")
    assert await ask(svc, conn, instance="a.2", recipient="bob@example.test") == (
        "DEFER_IF_PERMIT 4.7.1 Greylisted, try again in 60 seconds"
    )
    assert await ask(svc, conn, instance="a.3") == "DUNNO"  # known triplet: no second header
    kinds = [(e["reason"], e["frontend"]) for e in events(log)]
    assert kinds[0] == ("greylisted", "policyd")


async def test_backup_port_is_judged_as_backup(tmp_path: Path) -> None:
    cfg = config('[greylist]\nroles = ["backup"]\n')
    svc, _, log = service(cfg, tmp_path)
    assert await ask(svc, ConnectionState(), server_port="2601") == "DUNNO"
    assert (await ask(svc, ConnectionState(), server_port="2602")).startswith("DEFER_IF_PERMIT")
    assert [(e["mx"], e["role"]) for e in events(log)] == [
        ("mx1.example.test", "primary"),
        ("mx2.example.test", "backup"),
    ]


async def test_unknown_recipient_and_relay(tmp_path: Path) -> None:
    svc, _, _ = service(config(), tmp_path)
    conn = ConnectionState()
    assert await ask(svc, conn, recipient="nobody@example.test") == "550 5.1.1 User unknown"
    assert await ask(svc, conn, recipient="x@elsewhere.example") == (
        "554 5.7.1 Relay access denied"
    )


async def test_connect_stage_verdict_caught_up_and_held_for_the_session(tmp_path: Path) -> None:
    cfg = config('[access]\ndeny = ["192.0.2.0/24"]\ndeny_stage = "connect"\n')
    svc, _, log = service(cfg, tmp_path)
    conn = ConnectionState()
    first = await ask(svc, conn)
    assert first.startswith("554 5.7.1 Service unavailable; client [192.0.2.7]")
    assert await ask(svc, conn, recipient="bob@example.test") == first
    e1, _ = events(log)
    assert e1["decided_at"] == "connect" and e1["stage"] == "connect"
    # a new SMTP session (new client port) is judged afresh
    other = await ask(svc, conn, client_address="198.51.100.1", client_port="1")
    assert other == "DUNNO"


async def test_mail_stage_checks_run_once_per_message(tmp_path: Path) -> None:
    svc, _, _ = service(config("[ratelimit]\nmessages_per_hour = 2\n"), tmp_path)
    conn = ConnectionState()
    for instance in ("m.1", "m.2"):
        for rcpt in ("alice@example.test", "bob@example.test"):
            assert await ask(svc, conn, instance=instance, recipient=rcpt) == "DUNNO"
    third = await ask(svc, conn, instance="m.3")
    assert third.startswith("450 4.7.1 Too many messages")
    assert await ask(svc, conn, instance="m.3", recipient="bob@example.test") == third


async def test_recipients_so_far_follow_the_instance(tmp_path: Path) -> None:
    svc, _, _ = service(config(), tmp_path)
    conn = ConnectionState()
    await ask(svc, conn, instance="i.1")
    await ask(svc, conn, instance="i.1", recipient="bob@example.test")
    await ask(svc, conn, instance="i.1", recipient="nobody@example.test")
    assert conn.session is not None
    assert conn.session.recipients == ["alice@example.test", "bob@example.test"]
    await ask(svc, conn, instance="i.2")
    assert conn.session.recipients == ["alice@example.test"]


async def test_data_and_end_of_message(tmp_path: Path) -> None:
    svc, _, log = service(config(), tmp_path)
    conn = ConnectionState()
    await ask(svc, conn)
    assert await ask(svc, conn, protocol_state="DATA", recipient_count="1") == "DUNNO"
    assert (
        await ask(svc, conn, protocol_state="END-OF-MESSAGE", size="1234", queue_id="4XyZ")
        == "DUNNO"
    )
    eom = events(log)[-1]
    assert eom["stage"] == "eom" and eom["size"] == 1234 and eom["queue_id"] == "4XyZ"


async def test_vrfy_and_etrn_are_not_ours(tmp_path: Path) -> None:
    svc, _, _ = service(config(), tmp_path)
    assert await ask(svc, ConnectionState(), protocol_state="VRFY") == "DUNNO"


async def test_a_request_without_a_client_address_cannot_be_judged(tmp_path: Path) -> None:
    svc, _, _ = service(config(), tmp_path)
    with pytest.raises(BadRequest):
        await svc.handle(req(client_address="unknown"), ConnectionState())


async def test_ipv6_client(tmp_path: Path) -> None:
    svc, _, log = service(config('[greylist]\nroles = ["primary"]\n'), tmp_path)
    assert (await ask(svc, ConnectionState(), client_address="2001:db8::25")).startswith(
        "DEFER_IF_PERMIT"
    )
    assert events(log)[0]["client"] == "2001:db8::25"


class FakeDnsbl:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def lookup(self, ip: Any) -> tuple[DnsListAnswer, ...]:
        self.asked.append(str(ip))
        return (DnsListAnswer("bl.test", ("127.0.0.2",)),)


async def test_dnsbl_answers_reach_the_check(tmp_path: Path) -> None:
    dnsbl = FakeDnsbl()
    cfg = config('[dnsbl]\nsites = ["bl.test"]\n')
    svc, _, _ = service(cfg, tmp_path, dnsbl=dnsbl)
    conn = ConnectionState()
    first = await ask(svc, conn)
    assert first.startswith("5"), first
    await ask(svc, conn, recipient="bob@example.test")
    assert dnsbl.asked == ["192.0.2.7"]  # once per SMTP session


# ---------------------------------------------------------------- state failures


class BrokenState(MemoryState):
    """A backend that cannot be reached: its fast paths wait (NOT_NOW), its round trips fail."""

    def get_now(self, key: str, now: float) -> NotNow:
        return NOT_NOW

    def counter_add_now(self, key: str, amount: int, window: float, now: float) -> NotNow:
        return NOT_NOW

    def greylist_now(self, *args: Any) -> NotNow:
        return NOT_NOW

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        raise StateUnavailable("redis down")

    async def get(self, key: str, now: float) -> str | None:
        raise StateUnavailable("redis down")

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        raise StateUnavailable("redis down")


GREY_AND_RATE = '[greylist]\nroles = ["primary"]\n[ratelimit]\nmessages_per_hour = 5\n'


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("default", "DEFER_IF_PERMIT 4.3.0 Temporary local problem, try again later"),
        ("tempfail", "451 4.3.0 Temporary local problem, try again later"),
        ("dunno", "DUNNO"),
    ],
)
async def test_on_state_error(tmp_path: Path, mode: str, expected: str) -> None:
    cfg = config(GREY_AND_RATE + f'[policyd]\non_state_error = "{mode}"\n')
    svc, _, log = service(cfg, tmp_path, state=BrokenState())
    conn = ConnectionState()
    assert await ask(svc, conn) == expected
    unknown = await ask(svc, conn, recipient="nobody@example.test")
    if mode == "tempfail":  # the message's MAIL stage (rate limit) already tempfailed it
        assert unknown == expected
    else:  # checks that need no state still answer
        assert unknown == "550 5.1.1 User unknown"
    if mode != "dunno":
        assert events(log)[0]["state_error"] in ("ratelimit", "greylist")


async def test_default_mode_lets_non_delay_checks_fail_open(tmp_path: Path) -> None:
    cfg = config("[ratelimit]\nmessages_per_hour = 5\n")
    svc, _, _ = service(cfg, tmp_path, state=BrokenState())
    assert await ask(svc, ConnectionState()) == "DUNNO"


class Boom(Check):
    name = "boom"
    stages = frozenset(Stage)

    async def check(self, facts: Any) -> None:
        raise RuntimeError("a bug")


async def test_a_bug_is_not_a_state_error(tmp_path: Path) -> None:
    svc, _, _ = service(config(), tmp_path)
    svc.engine.screens.append(Boom())
    with pytest.raises(RuntimeError):
        await svc.handle(req(), ConnectionState())


# ---------------------------------------------------------------- the fast paths through the guards


class NowBroken(Check):
    name = "greylist_now"  # a soft check: its outage must not mean "accept"
    stages = frozenset({Stage.RCPT})

    def check_now(self, facts: Any) -> None:
        raise StateUnavailable("down")

    async def check(self, facts: Any) -> None:
        raise StateUnavailable("down")


@pytest.mark.parametrize("mode", ["default", "tempfail", "dunno"])
async def test_guard_answers_a_state_error_alike_with_or_without_awaiting(mode: str) -> None:
    guarded = guard(NowBroken(), mode)  # type: ignore[arg-type]
    f = Facts(Stage.RCPT, 0.0, ipaddress.ip_address("192.0.2.7"), MxInfo("mx", Role.PRIMARY))
    assert guarded.check_now(f) == await guarded.check(f)
    assert (guarded.check_now(f) is None) is (mode == "dunno")


async def test_observed_state_keeps_the_backends_fast_paths() -> None:
    inner = MemoryState()
    observed = ObservedState(inner)
    await inner.put("k", "v", 10.0, 0.0)
    assert observed.get_now("k", 1.0) == "v"
    assert observed.counter_add_now("c", 2, 10.0, 0.0) == 2
    assert await inner.get("c", 1.0) == "2"
    assert ObservedState(BrokenState()).get_now("k", 1.0) is NOT_NOW
