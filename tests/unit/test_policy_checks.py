"""The policy core, table-driven: facts in, verdicts out, no sockets."""

from __future__ import annotations

import ipaddress

import pytest

from mxguard.policy.address import AddressKind, classify, client_network, normalize_sender
from mxguard.policy.checks.access import DenyListCheck
from mxguard.policy.checks.earlytalk import EarlyTalkerCheck
from mxguard.policy.checks.ratelimit import RateLimitCheck
from mxguard.policy.checks.recipients import RecipientCheck
from mxguard.policy.checks.relay import RelayCheck
from mxguard.policy.engine import PolicyEngine
from mxguard.policy.facts import Facts, MxInfo, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Action
from mxguard.state.memory import MemoryState

DOMAINS = frozenset({"example.test"})
PRIMARY = MxInfo("mail.example.test", Role.PRIMARY, 10)


def facts(stage: Stage = Stage.RCPT, ip: str = "192.0.2.1", **kw: object) -> Facts:
    return Facts(stage=stage, now=1000.0, client_ip=ipaddress.ip_address(ip), mx=PRIMARY, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("alice@example.test", AddressKind.LOCAL),
        ("Alice@EXAMPLE.TEST", AddressKind.LOCAL),
        ("bob@elsewhere.test", AddressKind.REMOTE),
        ("a%b@example.test", AddressKind.ROUTING),
        ("b!a@example.test", AddressKind.ROUTING),
        ('"a@b"@example.test', AddressKind.ROUTING),
        ('"a b"@example.test', AddressKind.LOCAL),
        ("@x.test:a@example.test", AddressKind.ROUTING),
        ("a@[192.0.2.1]", AddressKind.ROUTING),
        ("a@example.test.", AddressKind.ROUTING),
        ("a@b@example.test", AddressKind.ROUTING),
        (".a@example.test", AddressKind.ROUTING),
        ("a..b@example.test", AddressKind.ROUTING),
        ("", AddressKind.ROUTING),
        ("noat", AddressKind.ROUTING),
    ],
)
def test_address_classification(address: str, kind: AddressKind) -> None:
    assert classify(address, DOMAINS).kind is kind


def test_sender_normalisation_and_networks() -> None:
    assert normalize_sender("Bounces+123-x=y.test@Lists.Test") == "bounces@lists.test"
    assert normalize_sender("") == ""
    assert client_network(ipaddress.ip_address("192.0.2.77"), 24, 64) == "192.0.2.0/24"
    assert client_network(ipaddress.ip_address("2001:db8::1"), 24, 64) == "2001:db8::/64"
    assert client_network(ipaddress.ip_address("::ffff:192.0.2.9"), 32, 64) == "192.0.2.9/32"


RELAY = RelayCheck(DOMAINS, NetworkSet(["198.51.100.0/24"]))


@pytest.mark.parametrize(
    ("rcpt", "ip", "expected"),
    [
        ("alice@example.test", "192.0.2.1", None),
        ("v@elsewhere.test", "192.0.2.1", 554),
        ("v@elsewhere.test", "198.51.100.9", None),  # relay network
        ("v%elsewhere.test@example.test", "198.51.100.9", 554),  # never, even from there
    ],
)
async def test_relay_check(rcpt: str, ip: str, expected: int | None) -> None:
    v = await RELAY.check(facts(ip=ip, recipient=rcpt))
    assert (v.code if v else None) == expected


async def test_recipient_check_unknown_known_and_callout() -> None:
    known = {"alice"}

    def lookup(local: str, domain: str) -> bool | None:
        return None if local == "ask" else local.lower() in known

    async def callout(addr: str) -> bool | None:
        return {"ask@example.test": None}.get(addr)

    check = RecipientCheck(lambda: DOMAINS, lookup, callout)
    assert await check.check(facts(recipient="alice@example.test")) is None
    v = await check.check(facts(recipient="nobody@example.test"))
    assert v is not None and (v.code, v.status, v.reason) == (550, "5.1.1", "unknown_recipient")
    v = await check.check(facts(recipient="ask@example.test"))
    assert v is not None and (v.code, v.status) == (451, "4.4.3")
    assert await check.check(facts(recipient="v@elsewhere.test")) is None  # relay's question


async def test_deny_list_ipv4_and_ipv6() -> None:
    check = DenyListCheck(NetworkSet(["203.0.113.0/24", "2001:db8:bad::/48"]), "rcpt")
    assert (await check.check(facts(ip="203.0.113.5"))).code == 554  # type: ignore[union-attr]
    assert (await check.check(facts(ip="2001:db8:bad::1"))).code == 554  # type: ignore[union-attr]
    assert await check.check(facts(ip="192.0.2.1")) is None
    at_connect = DenyListCheck(NetworkSet(["203.0.113.0/24"]), "connect")
    v = await at_connect.check(facts(Stage.CONNECT, ip="203.0.113.5"))
    assert v is not None and v.action is Action.DISCONNECT


async def test_rate_limits_per_network() -> None:
    state = MemoryState()
    check = RateLimitCheck(state, connections_per_minute=2, messages_per_hour=1, ipv4_prefix=24)
    verdicts = [await check.check(facts(Stage.CONNECT, ip=f"192.0.2.{i}")) for i in range(3)]
    assert verdicts[:2] == [None, None]
    assert verdicts[2] is not None and (verdicts[2].code, verdicts[2].status) == (421, "4.7.0")
    later = facts(Stage.CONNECT, ip="192.0.2.1")
    later = later.at(Stage.CONNECT, now=later.now + 61)
    assert await check.check(later) is None  # a new minute
    assert await check.check(facts(Stage.MAIL)) is None
    v = await check.check(facts(Stage.MAIL))
    assert v is not None and (v.code, v.status) == (450, "4.7.1")


@pytest.mark.parametrize(
    ("action", "stage", "code"),
    [
        ("ignore", Stage.RCPT, None),
        ("tempfail", Stage.RCPT, 450),
        ("reject", Stage.RCPT, 550),
        ("reject", Stage.CONNECT, None),
        ("drop", Stage.CONNECT, 521),
    ],
)
async def test_early_talker(action: str, stage: Stage, code: int | None) -> None:
    v = await EarlyTalkerCheck(action).check(facts(stage, pregreet=b"EHLO x\r\n"))
    assert (v.code if v else None) == code
    assert await EarlyTalkerCheck(action).check(facts(stage)) is None


async def test_engine_allowlist_skips_screens_but_never_relay_control() -> None:
    deny = DenyListCheck(NetworkSet(["192.0.2.0/24"]), "rcpt")
    engine = PolicyEngine([RELAY], [deny], allow=NetworkSet(["192.0.2.1/32"]))
    v = await engine.decide(facts(ip="192.0.2.1", recipient="alice@example.test"))
    assert v.action is Action.ACCEPT  # allowlisted: the deny screen is skipped
    v = await engine.decide(facts(ip="192.0.2.1", recipient="v@elsewhere.test"))
    assert v.code == 554 and v.reason == "relay_denied"  # the gate still runs
    v = await engine.decide(facts(ip="192.0.2.2", recipient="alice@example.test"))
    assert v.reason == "denylist"
    v = await engine.decide(
        facts(ip="192.0.2.2", recipient="alice@example.test", trusted_peer=True)
    )
    assert v.action is Action.ACCEPT


def test_network_set_membership_by_family() -> None:
    nets = NetworkSet(["198.51.100.0/24", "2001:db8:1::/48"])
    ip = ipaddress.ip_address
    assert ip("198.51.100.7") in nets and ip("::ffff:198.51.100.7") in nets
    assert ip("2001:db8:1:2::1") in nets
    assert ip("198.51.101.7") not in nets and ip("2001:db8:2::1") not in nets
    assert ip("::ffff:203.0.113.1") not in nets
    assert ip("198.51.100.7") not in NetworkSet() and not NetworkSet()


def test_network_set_matches_as_ipaddress_does() -> None:
    """NetworkSet compares integers; the answers are those of `ip in ip_network(...)`."""
    import random

    cidrs = ["127.0.0.0/8", "10.1.0.0/16", "192.0.2.7/32", "2001:db8::/32", "::1/128", "0.0.0.0/0"]
    rng = random.Random(1)
    for _ in range(300):
        chosen = rng.sample(cidrs, rng.randrange(0, 4))
        nets = [ipaddress.ip_network(c) for c in chosen]
        s = NetworkSet(chosen)
        for _ in range(20):
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address
            if rng.random() < 0.5:
                ip = ipaddress.IPv4Address(rng.choice([0x7F000001, 0x0A010203, 0xC0000207,
                                                       rng.getrandbits(32)]))  # fmt: skip
            else:
                ip = ipaddress.IPv6Address(rng.choice([1, 0x20010DB8 << 96,
                                                       (0xFFFF << 32) | 0x7F000001,
                                                       rng.getrandbits(128)]))  # fmt: skip
            plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            probe = plain or ip
            expected = any(probe in n for n in nets if n.version == probe.version)
            assert (ip in s) is expected, (chosen, ip)
