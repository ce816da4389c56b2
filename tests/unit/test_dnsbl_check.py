"""DNSBL site specs, scoring and the check's verdicts: pure, no DNS."""

from __future__ import annotations

import ipaddress

import pytest

from mxguard.dns import DnsListSite, parse_list_site, score
from mxguard.policy.checks.dnsbl import DnsblCheck
from mxguard.policy.facts import DnsListAnswer, Facts, MxInfo, Role, Stage
from mxguard.policy.verdict import Action

ZEN = "zen.spamhaus.org"
BARRACUDA = "b.barracudacentral.org"
DNSWL = "list.dnswl.org"


def sites(*specs: str) -> list[DnsListSite]:
    return [parse_list_site(spec) for spec in specs]


def listed(zone: str, *addresses: str) -> DnsListAnswer:
    return DnsListAnswer(zone, addresses or ("127.0.0.2",))


def clean(zone: str) -> DnsListAnswer:
    return DnsListAnswer(zone)


def failed(zone: str, error: str = "timeout") -> DnsListAnswer:
    return DnsListAnswer(zone, error=error)


def facts(
    answers: tuple[DnsListAnswer, ...] | None,
    stage: Stage = Stage.RCPT,
    ip: str = "192.0.2.1",
    **changes: object,
) -> Facts:
    base = Facts(
        stage=stage,
        now=1_700_000_000.0,
        client_ip=ipaddress.ip_address(ip),
        mx=MxInfo("mx1.example.test", Role.PRIMARY, 10),
        sender="someone@example.net",
        recipient="user@example.test",
        dnsbl=answers,
    )
    return base.at(stage, **changes) if changes else base


# -- site specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "zone", "weight", "filter_text"),
    [
        ("zen.spamhaus.org", ZEN, 1, None),
        ("zen.spamhaus.org*2", ZEN, 2, None),
        ("b.barracudacentral.org=127.0.0.2*3", BARRACUDA, 3, "127.0.0.2"),
        ("zen.spamhaus.org=127.0.0.[2..11]*2", ZEN, 2, "127.0.0.[2..11]"),
        ("list.dnswl.org=127.0.[0..255].[1..3]*-5", DNSWL, -5, "127.0.[0..255].[1..3]"),
        ("x.example.test=127.0.0.[2;4;6..8]", "x.example.test", 1, "127.0.0.[2;4;6..8]"),
        ("x.example.test*+2", "x.example.test", 2, None),
        ("x.example.test*0", "x.example.test", 0, None),
        ("  Zen.Spamhaus.ORG.*2 ", ZEN, 2, None),
    ],
)
def test_parse_list_site(spec: str, zone: str, weight: int, filter_text: str | None) -> None:
    site = parse_list_site(spec)
    assert site.zone == zone
    assert site.weight == weight
    assert (None if site.filter is None else str(site.filter)) == filter_text
    assert parse_list_site(str(site)) == site  # the spec round-trips


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("zen.spamhaus.org*", "weight '' is not an integer"),
        ("zen.spamhaus.org*two", "weight 'two' is not an integer"),
        ("zen.spamhaus.org*2*3", "weight '2*3' is not an integer"),
        ("zen.spamhaus.org*1.5", "weight '1.5' is not an integer"),
        ("=127.0.0.2", "missing zone"),
        ("*2", "missing zone"),
        ("zen..spamhaus.org", "not a valid DNS zone name"),
        ("zen.spam haus.org", "spaces"),
        ("zen.spamhaus.org/24", "not a valid DNS zone name"),
        ("zen.spamhaus.org=", "missing filter"),
        ("zen.spamhaus.org=127.0.0", "four octets"),
        ("zen.spamhaus.org=127.0.0.2.1", "four octets"),
        ("zen.spamhaus.org=127.0.0.256", "'256' is not an octet value"),
        ("zen.spamhaus.org=127.0.0.x", "'x' is not an octet value"),
        ("zen.spamhaus.org=127.0.0.[11..2]", "runs backwards"),
        ("zen.spamhaus.org=127.0.0.[]", "empty octet set"),
        ("zen.spamhaus.org=127.0.0.[2..]", "'' is not an octet value"),
        ("zen.spamhaus.org=127.0.0.[2", "is not an octet value"),
    ],
)
def test_parse_list_site_rejects(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace(".", r"\.").replace("*", r"\*")):
        parse_list_site(spec)


def test_parse_error_names_the_spec() -> None:
    with pytest.raises(ValueError) as info:
        parse_list_site("zen.spamhaus.org*lots")
    assert "'zen.spamhaus.org*lots'" in str(info.value)


# -- scoring ---------------------------------------------------------------------------------

SCORE_CASES = [
    pytest.param(sites(ZEN), [clean(ZEN)], 0, [], id="not-listed"),
    pytest.param(sites(ZEN), [listed(ZEN)], 1, [ZEN], id="listed"),
    pytest.param(sites(ZEN), [], 0, [], id="no-answer-for-zone"),
    pytest.param(sites(f"{ZEN}*2"), [listed(ZEN)], 2, [ZEN], id="weight"),
    pytest.param(
        sites(f"{ZEN}*2", f"{BARRACUDA}*3"),
        [listed(ZEN), listed(BARRACUDA)],
        5,
        [ZEN, BARRACUDA],
        id="weights-add-up",
    ),
    pytest.param(
        sites(f"{ZEN}=127.0.0.[2..11]*2"), [listed(ZEN, "127.0.0.4")], 2, [ZEN], id="range-hit"
    ),
    pytest.param(
        sites(f"{ZEN}=127.0.0.[2..11]*2"), [listed(ZEN, "127.0.0.20")], 0, [], id="range-miss"
    ),
    pytest.param(sites(f"{ZEN}=127.0.0.[2;4]"), [listed(ZEN, "127.0.0.3")], 0, [], id="set-miss"),
    pytest.param(
        sites(f"{ZEN}=127.0.0.[2;4]"),
        [listed(ZEN, "127.0.0.3", "127.0.0.4")],
        1,
        [ZEN],
        id="any-address-of-several",
    ),
    pytest.param(
        # One zone, two filters: SBL/XBL weigh more than the PBL.
        sites(f"{ZEN}=127.0.0.[2..9]*3", f"{ZEN}=127.0.0.[10;11]*1"),
        [listed(ZEN, "127.0.0.4", "127.0.0.11")],
        4,
        [ZEN],
        id="same-zone-two-filters",
    ),
    pytest.param(
        sites(f"{ZEN}*2", f"{DNSWL}=127.0.[0..255].[1..3]*-5"),
        [listed(ZEN), listed(DNSWL, "127.0.15.2")],
        -3,
        [ZEN, DNSWL],
        id="allowlist-outweighs",
    ),
    pytest.param(
        sites(f"{DNSWL}=127.0.[0..255].[1..3]*-5"),
        [listed(DNSWL, "127.0.15.0")],
        0,
        [],
        id="allowlist-trust-level-0-not-counted",
    ),
    pytest.param(
        sites(ZEN), [listed(ZEN, "127.255.255.254")], 0, [], id="error-code-without-error-flag"
    ),
    pytest.param(
        sites(ZEN),
        [DnsListAnswer(ZEN, ("127.255.255.252",), error="dnsbl-error:127.255.255.252")],
        0,
        [],
        id="error-code",
    ),
    pytest.param(
        sites(f"{ZEN}=127.[0..255].[0..255].[0..255]"),
        [DnsListAnswer(ZEN, ("127.255.255.255",), error="dnsbl-error:127.255.255.255")],
        0,
        [],
        id="error-even-if-filter-matches",
    ),
    pytest.param(sites(ZEN), [failed(ZEN, "timeout")], 0, [], id="timeout"),
    pytest.param(sites(ZEN), [failed(ZEN, "servfail")], 0, [], id="servfail"),
    pytest.param(
        sites(f"{DNSWL}*-5"), [failed(DNSWL)], 0, [], id="allowlist-timeout-does-not-allow"
    ),
    pytest.param(sites(ZEN), [listed(ZEN, "192.0.2.99")], 0, [], id="outside-127/8-ignored"),
    pytest.param(
        sites(f"{ZEN}=192.0.2.99"), [listed(ZEN, "192.0.2.99")], 1, [ZEN], id="filter-is-explicit"
    ),
    pytest.param(sites(ZEN), [listed("Zen.Spamhaus.Org.")], 1, [ZEN], id="zone-case-and-dot"),
    pytest.param(sites(f"{ZEN}*0"), [listed(ZEN)], 0, [ZEN], id="weight-0-only-observes"),
]


@pytest.mark.parametrize(("site_list", "answers", "total", "matched"), SCORE_CASES)
def test_score(
    site_list: list[DnsListSite], answers: list[DnsListAnswer], total: int, matched: list[str]
) -> None:
    assert score(answers, site_list) == (total, matched)


# -- the check -------------------------------------------------------------------------------

CHECK_CASES = [
    # (id, check kwargs, answers, stage, expected (action, code, status, reason) or None)
    ("not-looked-up", {}, None, Stage.RCPT, None),
    ("not-listed", {}, (clean(ZEN),), Stage.RCPT, None),
    ("listed", {}, (listed(ZEN),), Stage.RCPT, (Action.REJECT, 554, "5.7.1", f"dnsbl:{ZEN}")),
    ("listed-not-at-connect", {}, (listed(ZEN),), Stage.CONNECT, None),
    ("timeout-never-listed", {}, (failed(ZEN),), Stage.RCPT, None),
    ("servfail-never-listed", {}, (failed(ZEN, "servfail"),), Stage.RCPT, None),
    (
        "error-code-never-listed",
        {},
        (DnsListAnswer(ZEN, ("127.255.255.254",), error="dnsbl-error:127.255.255.254"),),
        Stage.RCPT,
        None,
    ),
    ("below-threshold", {"threshold": 3}, (listed(ZEN),), Stage.RCPT, None),
    (
        "threshold-reached-by-sum",
        {"threshold": 3},
        (listed(ZEN), listed(BARRACUDA)),
        Stage.RCPT,
        (Action.REJECT, 554, "5.7.1", f"dnsbl:{ZEN}"),  # the first matched site names it
    ),
    (
        "allowlisted",
        {},
        (listed(ZEN), listed(DNSWL, "127.0.10.3")),
        Stage.RCPT,
        None,
    ),
    (
        "allowlist-timed-out",
        {},
        (listed(ZEN), failed(DNSWL)),
        Stage.RCPT,
        (Action.REJECT, 554, "5.7.1", f"dnsbl:{ZEN}"),
    ),
    (
        "tempfail",
        {"action": "tempfail"},
        (listed(ZEN),),
        Stage.RCPT,
        (Action.TEMPFAIL, 450, "4.7.1", f"dnsbl:{ZEN}"),
    ),
    (
        "connect-reject",
        {"stage": "connect"},
        (listed(ZEN),),
        Stage.CONNECT,
        (Action.DISCONNECT, 554, "5.7.1", f"dnsbl:{ZEN}"),
    ),
    (
        "connect-tempfail",
        {"stage": "connect", "action": "tempfail"},
        (listed(ZEN),),
        Stage.CONNECT,
        (Action.DISCONNECT, 421, "4.7.1", f"dnsbl:{ZEN}"),
    ),
    ("connect-stage-silent-at-rcpt", {"stage": "connect"}, (listed(ZEN),), Stage.RCPT, None),
]


@pytest.mark.parametrize(
    ("kwargs", "answers", "stage", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CHECK_CASES],
)
async def test_check(
    kwargs: dict[str, object],
    answers: tuple[DnsListAnswer, ...] | None,
    stage: Stage,
    expected: tuple[Action, int, str, str] | None,
) -> None:
    check = DnsblCheck(
        sites(ZEN, f"{BARRACUDA}*2", f"{DNSWL}=127.0.[0..255].[1..3]*-5"),
        **kwargs,  # type: ignore[arg-type]
    )
    verdict = await check.check(facts(answers, stage))
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert (verdict.action, verdict.code, verdict.status, verdict.reason) == expected
        assert verdict.is_final


async def test_reply_names_client_and_zone() -> None:
    verdict = await DnsblCheck(sites(ZEN)).check(facts((listed(ZEN),)))
    assert verdict is not None
    assert verdict.reply_line() == (
        "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org"
    )


async def test_reply_for_ipv6_client() -> None:
    verdict = await DnsblCheck(sites(ZEN)).check(facts((listed(ZEN),), ip="2001:db8::25"))
    assert verdict is not None
    assert "client [2001:db8::25] blocked" in verdict.text


async def test_reason_is_first_blocking_zone_not_the_allowlist() -> None:
    check = DnsblCheck(sites(f"{DNSWL}=127.0.[0..255].[1..3]*-1", f"{ZEN}*3"))
    verdict = await check.check(facts((listed(DNSWL, "127.0.10.1"), listed(ZEN))))
    assert verdict is not None
    assert verdict.reason == f"dnsbl:{ZEN}"


async def test_secret_zone_is_not_in_the_reply() -> None:
    private = parse_list_site("paid.example.test*2", secret=True)
    check = DnsblCheck([private])
    verdict = await check.check(facts((listed("paid.example.test"),)))
    assert verdict is not None
    assert "paid.example.test" not in verdict.reply_line()
    assert verdict.text.endswith("blocked using a DNS blocklist")
    assert verdict.reason == "dnsbl:paid.example.test"  # logs may name it


async def test_secret_zone_reply_shows_a_public_one_when_both_matched() -> None:
    check = DnsblCheck([parse_list_site("paid.example.test", secret=True), *sites(ZEN)])
    verdict = await check.check(facts((listed("paid.example.test"), listed(ZEN))))
    assert verdict is not None
    assert verdict.text.endswith(f"blocked using {ZEN}")
    assert verdict.reason == "dnsbl:paid.example.test"


async def test_reply_text_override() -> None:
    check = DnsblCheck(sites(ZEN), reply_text="Go away {ip} ({zone}) {not-a-field}")
    verdict = await check.check(facts((listed(ZEN),)))
    assert verdict is not None
    assert verdict.text == f"Go away 192.0.2.1 ({ZEN}) {{not-a-field}}"


async def test_trusted_peer_is_not_scored() -> None:
    verdict = await DnsblCheck(sites(ZEN)).check(facts((listed(ZEN),), trusted_peer=True))
    assert verdict is None


def test_check_declares_its_stages() -> None:
    assert DnsblCheck.name == "dnsbl"
    assert DnsblCheck.stages == frozenset({Stage.CONNECT, Stage.RCPT})


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"sites": []}, "no DNS list sites"),
        ({"threshold": 0}, "threshold must be at least 1"),
        ({"action": "discard"}, "action must be"),
        ({"stage": "data"}, "stage must be"),
        ({"reply_text": "one\r\n250 two"}, "one line"),
    ],
)
def test_check_rejects_bad_settings(kwargs: dict[str, object], problem: str) -> None:
    arguments: dict[str, object] = {"sites": sites(ZEN), **kwargs}
    with pytest.raises(ValueError, match=problem):
        DnsblCheck(**arguments)  # type: ignore[arg-type]
