"""Each sender model's own decisions, on a tier of records that no session reaches."""

from __future__ import annotations

import math
from random import Random

from mxguard.config import MxSettings, load_config
from mxguard.policy.facts import Role
from mxguard.sim.model import (
    BANNER_4XX,
    BANNER_5XX,
    REFUSED,
    SESSION,
    TIMEOUT,
    Contact,
    SimMessage,
)
from mxguard.sim.policy import build_sim_engine, build_sim_server
from mxguard.sim.senders import BEHAVIOURS, by_preference
from mxguard.sim.tier import SimMx, Tier

DAY = 86400.0


def mx(host: str, role: Role, pref: int | None) -> SimMx:
    return SimMx(MxSettings(host=host, role=role, preference=pref, address="127.0.0.9"))


def msg(born: float = 0.0, attempts: int = 1) -> SimMessage:
    m = SimMessage(1, "postfix", False, "a@b.example", ("u@example.test",),
                   frozenset({"u@example.test"}), 1000, born, 0, False)  # fmt: skip
    m.attempts = attempts
    return m


def tier(*mxs: SimMx) -> Tier:
    cfg = load_config(None)
    return Tier(cfg, build_sim_engine(build_sim_server(cfg)), list(mxs), Random(0))


FAKE0 = mx("fake0", Role.FAKE, 0)
PRIMARY = mx("mail", Role.PRIMARY, 10)
BACKUP = mx("backup", Role.BACKUP, 20)
TRAP = mx("trap", Role.TRAP, 30)
RETIRED = mx("old", Role.RETIRED, None)
TIER = tier(FAKE0, PRIMARY, BACKUP, TRAP, RETIRED)
RNG = Random(1)


def test_equal_preferences_are_shuffled_lower_first_always() -> None:
    a, b = mx("a", Role.PRIMARY, 10), mx("b", Role.PRIMARY, 10)
    orders = {tuple(m.host for m in by_preference([a, b, BACKUP], Random(i))) for i in range(30)}
    assert orders == {("a", "b", "backup"), ("b", "a", "backup")}


def test_postfix_walks_everything_in_order_with_its_limits() -> None:
    p = BEHAVIOURS["postfix"]
    assert [m.host for m in p.hosts(TIER, RNG)] == ["fake0", "mail", "backup", "trap"]
    assert p.session_limit == 2 and p.address_limit == 5
    for kind in (REFUSED, TIMEOUT, BANNER_4XX, BANNER_5XX, SESSION):
        assert p.moves_on(Contact(kind))
    assert not p.fail_on_5xx_greeting


def test_postfix_backoff_is_the_message_age_clamped() -> None:
    p = BEHAVIOURS["postfix"]
    m = msg(born=0.0)
    first = p.retry_at(m, 10.0, Random(0))
    assert first is not None and 310.0 <= first <= 610.0  # 300 s + up to one queue scan
    later = p.retry_at(m, 3000.0, Random(0))
    assert later is not None and 6000.0 <= later <= 6300.0  # wait = age
    capped = p.retry_at(m, 20000.0, Random(0))
    assert capped is not None and 24000.0 <= capped <= 24300.0  # 4000 s at most
    assert p.retry_at(m, 5 * DAY + 1, Random(0)) is None  # expired after 5 days


def test_exim_fails_on_5xx_greeting_and_follows_its_retry_rule() -> None:
    e = BEHAVIOURS["exim"]
    assert e.fail_on_5xx_greeting and e.connect_timeout == 300.0
    m = msg()
    assert e.retry_at(m, 60.0, RNG) == 60.0 + 900.0  # F,2h,15m
    t = 3 * 3600.0
    assert e.retry_at(m, t, RNG) == t + 3600.0  # G,16h,1h,1.5 starts at 1h
    assert e.retry_at(m, t + 3600.0, RNG) == t + 3600.0 + 5400.0  # then x1.5
    assert e.retry_at(m, 2 * DAY, RNG) == 2 * DAY + 6 * 3600.0  # F,4d,6h
    assert e.retry_at(m, 4 * DAY + 1, RNG) is None


def test_qmail_falls_back_only_when_the_connect_fails() -> None:
    q = BEHAVIOURS["qmail"]
    assert q.moves_on(Contact(REFUSED)) and q.moves_on(Contact(TIMEOUT))
    assert not q.moves_on(Contact(BANNER_4XX))
    assert not q.moves_on(Contact(SESSION, 451))
    m = msg(born=0.0)
    assert q.retry_at(m, 0.0, RNG) == 400.0  # (0 + 20)^2
    assert q.retry_at(m, 1000.0, RNG) == (math.isqrt(1000) + 20) ** 2
    assert q.retry_at(m, 7 * DAY + 1, RNG) is None


def test_exchange_gives_up_after_two_days() -> None:
    x = BEHAVIOURS["exchange"]
    assert x.retry_at(msg(attempts=2), 100.0, RNG) == 400.0
    assert x.retry_at(msg(attempts=8), 100.0, RNG) == 1000.0
    assert x.retry_at(msg(), 2 * DAY + 1, RNG) is None
    assert not x.moves_on(Contact(SESSION, 451))


def test_big_provider_never_falls_back_after_a_4xx_and_changes_address() -> None:
    g = BEHAVIOURS["bigprovider"]
    assert g.moves_on(Contact(REFUSED))
    assert not g.moves_on(Contact(BANNER_4XX)) and not g.moves_on(Contact(SESSION, 450))
    assert g.pool > 1
    assert g.retry_at(msg(), 3 * DAY + 1, RNG) is None


def test_in_app_sender_tries_the_first_record_once() -> None:
    a = BEHAVIOURS["inapp"]
    assert [m.host for m in a.hosts(TIER, RNG)] == ["fake0"]
    assert not a.queueing and a.retry_at(msg(), 10.0, RNG) is None


def test_bots_choose_their_targets() -> None:
    assert [m.host for m in BEHAVIOURS["bot_highest"].hosts(TIER, RNG)] == ["trap"]
    assert [m.host for m in BEHAVIOURS["bot_backup_first"].hosts(TIER, RNG)] == [
        "trap", "backup", "mail", "fake0"]  # fmt: skip
    assert not BEHAVIOURS["bot_backup_first"].moves_on(Contact(SESSION, 450))
    assert [m.host for m in BEHAVIOURS["bot_cached"].hosts(TIER, RNG)] == ["old"]
    no_retired = tier(FAKE0, PRIMARY, BACKUP)
    assert [m.host for m in BEHAVIOURS["bot_cached"].hosts(no_retired, RNG)] == ["backup"]
    assert [m.host for m in BEHAVIOURS["bot_first_mx"].hosts(TIER, RNG)] == ["fake0"]
    assert BEHAVIOURS["bot_all_mx"].send_to_all
    for name in ("bot_highest", "bot_backup_first", "bot_cached", "bot_first_mx", "bot_all_mx"):
        assert not BEHAVIOURS[name].queueing


def test_the_retrying_spam_tool_retries_for_hours_only() -> None:
    s = BEHAVIOURS["spam_retrying"]
    assert s.retry_at(msg(), 100.0, RNG) == 100.0 + 900.0
    assert s.retry_at(msg(), 6 * 3600.0 + 1, RNG) is None


def test_every_model_names_its_source() -> None:
    for b in BEHAVIOURS.values():
        assert len(b.source) > 30, b.name
