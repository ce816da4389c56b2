"""The greylist check on its own: a memory state and a clock we move by hand."""

from __future__ import annotations

import ipaddress
import random

import pytest

from mxguard.config import ConfigError, load_config_text
from mxguard.greylist_feature import make_check
from mxguard.notnow import NOT_NOW
from mxguard.policy.checks.greylist import (
    HISTORY_ALLOWED,
    HISTORY_NONE,
    HISTORY_PASSED,
    GreylistCheck,
    triplet_key,
)
from mxguard.policy.facts import Facts, MxInfo, Role, Stage
from mxguard.policy.verdict import Action
from mxguard.state.memory import MemoryState

T0 = 1_700_000_000.0
BACKUP = MxInfo("backup.example.test", Role.BACKUP, 20)


def facts(
    now: float,
    ip: str = "192.0.2.10",
    sender: str = "a@sender.test",
    rcpt: str = "alice@example.test",
    mx: MxInfo = BACKUP,
) -> Facts:
    return Facts(
        stage=Stage.RCPT,
        now=now,
        client_ip=ipaddress.ip_address(ip),
        mx=mx,
        sender=sender,
        recipient=rcpt,
    )


def check(state: MemoryState | None = None, **kw: object) -> GreylistCheck:
    args: dict[str, object] = {
        "roles": [Role.BACKUP],
        "delay": 300.0,
        "retry_window": 86400.0,
        "pass_ttl": 35 * 86400.0,
        "auto_allow_after": 3,
    }
    args.update(kw)
    return GreylistCheck(state or MemoryState(), **args)  # type: ignore[arg-type]


async def test_first_sight_is_450_with_retry_hint() -> None:
    v = await check().check(facts(T0))
    assert v is not None
    assert (v.action, v.code, v.status, v.reason, v.soft) == (
        Action.TEMPFAIL,
        450,
        "4.7.1",
        "greylisted",
        True,
    )
    assert v.text == "Greylisted, try again in 300 seconds"


async def test_early_retry_keeps_first_seen_and_counts_down() -> None:
    g = check()
    await g.check(facts(T0))
    v = await g.check(facts(T0 + 100))
    assert v is not None and v.text.endswith("in 200 seconds")
    v = await g.check(facts(T0 + 299))
    assert v is not None and v.text.endswith("in 1 seconds")
    assert await g.check(facts(T0 + 300)) is None  # first-seen was never pushed forward


async def test_pass_is_remembered_and_window_expiry_restarts() -> None:
    g = check()
    await g.check(facts(T0))
    assert await g.check(facts(T0 + 301)) is None
    assert await g.check(facts(T0 + 5 * 86400)) is None  # known within pass_ttl
    other = facts(T0, rcpt="bob@example.test")
    await g.check(other)
    v = await g.check(facts(T0 + 86400 + 1, rcpt="bob@example.test"))
    assert v is not None and v.text.endswith("in 300 seconds")  # retry window ran out


async def test_network_keying_same_slash24_shares_the_triplet() -> None:
    g = check()
    await g.check(facts(T0, ip="198.51.100.7"))
    assert await g.check(facts(T0 + 301, ip="198.51.100.200")) is None
    v = await g.check(facts(T0 + 301, ip="198.51.101.7"))
    assert v is not None


async def test_ipv6_keyed_by_slash64() -> None:
    g = check()
    await g.check(facts(T0, ip="2001:db8:1:2::1"))
    assert await g.check(facts(T0 + 301, ip="2001:db8:1:2:ffff::9")) is None
    assert await g.check(facts(T0 + 301, ip="2001:db8:1:3::1")) is not None


async def test_sender_normalised_verp_tags_do_not_make_new_triplets() -> None:
    g = check()
    await g.check(facts(T0, sender="bounces+123-alice=example.test@list.test"))
    assert await g.check(facts(T0 + 301, sender="bounces+999-bob=example.test@LIST.test")) is None


async def test_auto_allow_after_n_passes_from_a_network() -> None:
    g = check(auto_allow_after=2)
    for i in range(2):
        rcpt = f"user{i}@example.test"
        await g.check(facts(T0, rcpt=rcpt))
        assert await g.check(facts(T0 + 301, rcpt=rcpt)) is None
    assert await g.check(facts(T0 + 302, rcpt="new@example.test")) is None
    assert await g.check(facts(T0 + 302, ip="203.0.113.5", rcpt="new@example.test")) is not None


async def test_repeated_known_passes_do_not_count_for_auto_allow() -> None:
    g = check(auto_allow_after=2)
    await g.check(facts(T0))
    for k in range(5):
        assert await g.check(facts(T0 + 301 + k)) is None
    assert await g.check(facts(T0 + 400, rcpt="other@example.test")) is not None


async def test_allow_lists_by_cidr_and_sender_domain() -> None:
    g = check(allow_networks=["203.0.113.0/24"], allow_sender_domains=["bigsender.test"])
    assert await g.check(facts(T0, ip="203.0.113.9")) is None
    assert await g.check(facts(T0, sender="x@bigsender.test")) is None
    assert await g.check(facts(T0, sender="x@mail.bigsender.test")) is None
    assert await g.check(facts(T0, sender="x@notbigsender.test")) is not None


async def test_postmaster_is_never_greylisted() -> None:
    g = check()
    assert await g.check(facts(T0, rcpt="postmaster@example.test")) is None
    assert await g.check(facts(T0, rcpt="PostMaster@example.test")) is None


async def test_null_sender_is_greylisted_keyed_by_recipient() -> None:
    g = check()
    v = await g.check(facts(T0, sender=""))
    assert v is not None and v.reason == "greylisted"
    assert await g.check(facts(T0 + 301, sender="")) is None
    # a real sender to the same recipient is another triplet
    assert await g.check(facts(T0 + 301, sender="a@sender.test")) is not None


def test_keys_are_hashed_and_do_not_collide_on_separators() -> None:
    a = triplet_key("2001:db8::/64", '"a:b"@x.test', "r@example.test")
    b = triplet_key("2001:db8::/64", "a", 'b"@x.test\0r@example.test')
    assert a != b
    assert a.startswith("gl:") and ":" not in a[3:] and "@" not in a


async def test_history_levels() -> None:
    state = MemoryState()
    g = check(state, allow_networks=["203.0.113.0/24"])
    ip = ipaddress.ip_address("192.0.2.1")
    assert await g.history(ipaddress.ip_address("203.0.113.1"), "a@b.test", ["x@e.test"], T0) == (
        HISTORY_ALLOWED
    )
    assert await g.history(ip, "a@sender.test", ["alice@example.test"], T0) == HISTORY_NONE
    await g.check(facts(T0, ip="192.0.2.1"))
    await g.check(facts(T0 + 301, ip="192.0.2.1"))
    assert await g.history(ip, "a@sender.test", ["alice@example.test"], T0 + 302) == HISTORY_PASSED
    # asking never starts an entry
    assert (
        await state.get(triplet_key("192.0.2.0/24", "q@q.test", "alice@example.test"), T0) is None
    )


def _cfg(greylist: str) -> str:
    return f"""
[[domain]]
name = "example.test"
recipients = ["alice@example.test"]
[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
[greylist]
{greylist}
"""


def test_config_roles_and_errors() -> None:
    cfg = load_config_text(_cfg('roles = ["backup"]\ndelay = "2s"'), "t.toml")
    g = make_check(cfg, MemoryState())
    assert g is not None and g.roles == frozenset({Role.BACKUP}) and g.delay == 2.0
    assert make_check(load_config_text(_cfg("roles = []"), "t.toml"), MemoryState()) is None
    with pytest.raises(ConfigError, match=r"greylist.roles\[0\]"):
        make_check(load_config_text(_cfg('roles = ["bakup"]'), "t.toml"), MemoryState())
    with pytest.raises(ConfigError, match="retry_window"):
        make_check(
            load_config_text(_cfg('roles = ["backup"]\ndelay="1h"\nretry_window="1m"'), "t.toml"),
            MemoryState(),
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("auto_allow_after", [0, 2])
async def test_check_now_decides_and_writes_as_check_does(seed: int, auto_allow_after: int) -> None:
    """Two hosts' worth of the same traffic, one through check_now and one through check:
    the same verdicts, and the same state afterwards (triplets and auto-allow counters)."""
    rng = random.Random(seed)
    fast_state, slow_state = MemoryState(), MemoryState()
    kw = {"auto_allow_after": auto_allow_after, "allow_sender_domains": ["big.test"]}
    fast, slow = check(fast_state, **kw), check(slow_state, **kw)
    now = T0
    for _ in range(400):
        now += rng.choice([0.0, 1.0, 100.0, 301.0, 5000.0])
        f = facts(
            now,
            ip=f"192.0.{rng.randrange(3)}.{rng.randrange(1, 4)}",
            sender=rng.choice(["a@sender.test", "", "b+tag@Sender.test", "x@mx.big.test"]),
            rcpt=rng.choice(["alice@example.test", "bob@example.test", "postmaster@example.test"]),
        )
        got = fast.check_now(f)
        assert got is not NOT_NOW  # memory state never has to wait
        assert got == await slow.check(f)
    assert fast_state._kv == slow_state._kv
