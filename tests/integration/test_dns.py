"""The DNS adapter against a real DNS server on 127.0.0.1 (tests/helpers/dnsserver.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time

import dns.asyncresolver
import dns.nameserver
import dns.resolver
import pytest

from mxguard.dns import (
    DnsListClient,
    DnsListSite,
    make_resolver,
    parse_list_site,
)
from mxguard.notnow import NOT_NOW
from mxguard.policy.checks.dnsbl import DnsblCheck
from mxguard.policy.facts import DnsListAnswer, Facts, MxInfo, Role, Stage
from tests.helpers.dnsserver import DnsTestServer, listing_name

BL = "bl.example.test"
BL2 = "bl2.example.test"
WL = "wl.example.test"
SLOW = "slow.example.test"
CLIENT = "192.0.2.1"
OTHER = "192.0.2.77"


class FakeClock:
    """The cache's clock, moved by hand so TTL expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lists(dns_server: DnsTestServer) -> DnsTestServer:
    for zone in (BL, BL2, WL, SLOW):
        dns_server.set_zone(zone, negative_ttl=60)
    return dns_server


def client_for(
    server: DnsTestServer,
    *specs: str,
    timeout: float = 1.0,
    clock: FakeClock | None = None,
    cache_size: int = 10000,
) -> DnsListClient:
    resolver = make_resolver([server.nameserver], timeout=timeout)
    sites = [parse_list_site(spec) for spec in specs or (BL,)]
    if clock is None:
        return DnsListClient(resolver, sites, timeout=timeout, cache_size=cache_size)
    return DnsListClient(resolver, sites, timeout=timeout, cache_size=cache_size, clock=clock)


def only(answers: tuple[DnsListAnswer, ...]) -> DnsListAnswer:
    assert len(answers) == 1
    return answers[0]


# -- lookups ---------------------------------------------------------------------------------


async def test_listed(lists: DnsTestServer) -> None:
    lists.add_listing(BL, CLIENT, "127.0.0.2", "127.0.0.4")
    answer = only(await client_for(lists).lookup(CLIENT))
    assert answer.zone == BL
    assert sorted(answer.addresses) == ["127.0.0.2", "127.0.0.4"]
    assert answer.error is None
    assert lists.queries[0].name == f"1.2.0.192.{BL}"


async def test_not_listed_is_nxdomain(lists: DnsTestServer) -> None:
    lists.add_listing(BL, OTHER)
    assert only(await client_for(lists).lookup(CLIENT)) == DnsListAnswer(BL)


async def test_nodata_is_not_listed(lists: DnsTestServer) -> None:
    # The name exists (a TXT record) but has no A record: NOERROR with no answer.
    lists.add(listing_name(CLIENT, BL), "TXT", '"only a reason"')
    client = client_for(lists)
    assert only(await client.lookup(CLIENT)) == DnsListAnswer(BL)
    assert client.errors == 0


@pytest.mark.parametrize("code", ["127.255.255.252", "127.255.255.254", "127.255.255.255"])
async def test_error_range_is_an_error_not_a_listing(lists: DnsTestServer, code: str) -> None:
    lists.add_listing(BL, CLIENT, code)
    client = client_for(lists)
    answer = only(await client.lookup(CLIENT))
    assert answer.error == f"dnsbl-error:{code}"
    assert client.errors == 1
    assert client.errors_by_kind["dnsbl-error"] == 1


async def test_servfail(lists: DnsTestServer) -> None:
    lists.servfail(BL)
    client = client_for(lists)
    answer = only(await client.lookup(CLIENT))
    assert answer == DnsListAnswer(BL, error="servfail")
    assert client.errors_by_kind["servfail"] == 1


async def test_timeout_is_unknown_and_keeps_the_deadline(lists: DnsTestServer) -> None:
    lists.add_listing(BL, CLIENT)
    lists.add_listing(SLOW, CLIENT)
    lists.delay(SLOW, 30.0)
    client = client_for(lists, BL, SLOW, timeout=0.5)
    started = time.monotonic()
    answers = await client.lookup(CLIENT)
    elapsed = time.monotonic() - started
    assert answers == (
        DnsListAnswer(BL, ("127.0.0.2",)),
        DnsListAnswer(SLOW, error="timeout"),
    )
    # Generous slack for a loaded machine: the point is "about the deadline, not 30 s".
    assert elapsed < 0.5 + 1.5
    assert client.errors_by_kind["timeout"] == 1


async def test_a_server_that_never_answers(lists: DnsTestServer) -> None:
    lists.delay(BL, None)
    answer = only(await client_for(lists, timeout=0.3).lookup(CLIENT))
    assert answer.error == "timeout"


async def test_ipv6_client_uses_nibble_names(lists: DnsTestServer) -> None:
    ip = "2001:db8::25"
    lists.add_listing(BL, ip, "127.0.0.3")
    answer = only(await client_for(lists).lookup(ipaddress.IPv6Address(ip)))
    assert answer.addresses == ("127.0.0.3",)
    name = lists.queries[0].name
    assert name == listing_name(ip, BL)
    assert name.startswith("5.2.0.0.") and name.count(".") == 32 + BL.count(".")


async def test_ipv4_mapped_client_is_looked_up_as_ipv4(lists: DnsTestServer) -> None:
    lists.add_listing(BL, CLIENT)
    answer = only(await client_for(lists).lookup(f"::ffff:{CLIENT}"))
    assert answer.addresses == ("127.0.0.2",)
    assert lists.queries[0].name == f"1.2.0.192.{BL}"


async def test_every_zone_once_and_concurrently(lists: DnsTestServer) -> None:
    lists.add_listing(BL, CLIENT, "127.0.0.4")
    lists.add_listing(WL, CLIENT, "127.0.5.2")
    for zone in (BL, BL2, WL):
        lists.delay(zone, 0.3)
    # One deadline for all zones: asked one after another, the third would miss 0.75 s.
    client = client_for(
        lists,
        f"{BL}=127.0.0.[2..3]*3",
        f"{BL}=127.0.0.4*1",  # the same zone again: asked once
        BL2,
        f"{WL}=127.0.[0..255].[1..3]*-2",
        timeout=0.75,
    )
    answers = await client.lookup(CLIENT)
    assert answers == (
        DnsListAnswer(BL, ("127.0.0.4",)),
        DnsListAnswer(BL2),
        DnsListAnswer(WL, ("127.0.5.2",)),
    )
    assert lists.query_count() == 3


async def test_cname_in_a_list_answer_is_followed(lists: DnsTestServer) -> None:
    lists.add(listing_name(CLIENT, BL), "CNAME", f"code.{BL}.")
    lists.add(f"code.{BL}", "A", "127.0.0.9")
    assert only(await client_for(lists).lookup(CLIENT)).addresses == ("127.0.0.9",)


# -- caching ---------------------------------------------------------------------------------


async def test_positive_answer_is_cached_for_its_ttl(
    lists: DnsTestServer, clock: FakeClock
) -> None:
    lists.add_listing(BL, CLIENT, ttl=30)
    client = client_for(lists, clock=clock)
    first = await client.lookup(CLIENT)
    clock.now += 29
    assert await client.lookup(CLIENT) == first
    assert lists.query_count() == 1
    assert (client.cache_hits, client.cache_misses) == (1, 1)
    clock.now += 2
    assert await client.lookup(CLIENT) == first
    assert lists.query_count() == 2


async def test_lookup_now_answers_from_the_cache_only(
    lists: DnsTestServer, clock: FakeClock
) -> None:
    """The listener's no-task path at connect: the same answers as `lookup` while every zone
    is cached, NOT_NOW (and no query) as soon as one is not."""
    lists.add_listing(BL, CLIENT, "127.0.0.2", ttl=30)
    client = client_for(lists, f"{BL}.", BL2, clock=clock)  # a zone written with its dot
    assert client.lookup_now(CLIENT) is NOT_NOW
    assert client.lookup_now("2001:db8::1") is NOT_NOW  # IPv6 always takes the long way
    first = await client.lookup(CLIENT)
    assert client.lookup_now(CLIENT) == first
    assert client.lookup_now(ipaddress.ip_address(f"::ffff:{CLIENT}")) == first
    assert [a.addresses for a in first] == [("127.0.0.2",), ()]
    assert client.lookup_now(OTHER) is NOT_NOW
    assert lists.query_count() == 2
    clock.now += 31  # the listing's TTL is over; the negative answer is still good
    assert client.lookup_now(CLIENT) is NOT_NOW
    assert lists.query_count() == 2


async def test_negative_answer_is_cached_for_the_soa_negative_ttl(
    lists: DnsTestServer, clock: FakeClock
) -> None:
    client = client_for(lists, clock=clock)
    await client.lookup(CLIENT)
    clock.now += 59
    await client.lookup(CLIENT)
    assert lists.query_count() == 1
    clock.now += 2
    await client.lookup(CLIENT)
    assert lists.query_count() == 2


async def test_nodata_is_cached_like_nxdomain(lists: DnsTestServer, clock: FakeClock) -> None:
    lists.add(listing_name(CLIENT, BL), "TXT", '"x"')
    client = client_for(lists, clock=clock)
    await client.lookup(CLIENT)
    clock.now += 59
    await client.lookup(CLIENT)
    assert lists.query_count() == 1
    clock.now += 2
    await client.lookup(CLIENT)
    assert lists.query_count() == 2


async def test_negative_answer_without_soa_is_cached_300s(
    dns_server: DnsTestServer, clock: FakeClock
) -> None:
    # No zone configured: NXDOMAIN comes without an SOA, so there is no negative TTL to use.
    client = client_for(dns_server, "nosoa.example.test", clock=clock)
    assert only(await client.lookup(CLIENT)) == DnsListAnswer("nosoa.example.test")
    clock.now += 299
    await client.lookup(CLIENT)
    assert dns_server.query_count() == 1
    clock.now += 2
    await client.lookup(CLIENT)
    assert dns_server.query_count() == 2


async def test_long_ttls_are_capped_at_an_hour(lists: DnsTestServer, clock: FakeClock) -> None:
    lists.add_listing(BL, CLIENT, ttl=86400)
    client = client_for(lists, clock=clock)
    await client.lookup(CLIENT)
    clock.now += 3599
    await client.lookup(CLIENT)
    assert lists.query_count() == 1
    clock.now += 2
    await client.lookup(CLIENT)
    assert lists.query_count() == 2


async def test_errors_are_not_cached(lists: DnsTestServer, clock: FakeClock) -> None:
    lists.add_listing(BL, CLIENT, "127.255.255.254")
    lists.servfail(BL2)
    client = client_for(lists, BL, BL2, clock=clock)
    await client.lookup(CLIENT)
    await client.lookup(CLIENT)
    assert lists.query_count(rtype="A") == 4
    assert client.cache_hits == 0
    assert client.errors == 4


async def test_cache_recovers_after_an_error(lists: DnsTestServer, clock: FakeClock) -> None:
    lists.add_listing(BL, CLIENT)
    lists.servfail(BL)
    client = client_for(lists, clock=clock)
    assert only(await client.lookup(CLIENT)).error == "servfail"
    lists.clear_faults()
    assert only(await client.lookup(CLIENT)).addresses == ("127.0.0.2",)


async def test_cache_is_bounded(lists: DnsTestServer, clock: FakeClock) -> None:
    client = client_for(lists, clock=clock, cache_size=1)
    for ip in (CLIENT, OTHER, CLIENT):
        await client.lookup(ip)
    assert lists.query_count() == 3
    client = client_for(lists, clock=clock, cache_size=0)
    lists.clear_queries()
    await client.lookup(CLIENT)
    await client.lookup(CLIENT)
    assert lists.query_count() == 2


async def test_concurrent_lookups_share_nothing_but_the_server(lists: DnsTestServer) -> None:
    lists.add_listing(BL, CLIENT)
    client = client_for(lists)
    results = await asyncio.gather(*(client.lookup(CLIENT if i % 2 else OTHER) for i in range(20)))
    assert {only(r).addresses for r in results} == {(), ("127.0.0.2",)}


# -- from lookup to verdict ------------------------------------------------------------------


async def test_lookup_feeds_the_check(lists: DnsTestServer) -> None:
    lists.add_listing(BL, CLIENT, "127.0.0.2")
    lists.add_listing(WL, OTHER, "127.0.9.3")
    lists.add_listing(BL, OTHER, "127.0.0.2")
    specs = [f"{BL}*2", f"{WL}=127.0.[0..255].[1..3]*-5", SLOW]
    lists.delay(SLOW, None)
    sites: list[DnsListSite] = [parse_list_site(s) for s in specs]
    client = DnsListClient(make_resolver([lists.nameserver], 0.2), sites, timeout=0.2)
    check = DnsblCheck(sites, threshold=2)

    async def verdict_for(ip: str) -> tuple[str, int] | None:
        facts = Facts(
            stage=Stage.RCPT,
            now=0.0,
            client_ip=ipaddress.ip_address(ip),
            mx=MxInfo("mx1.example.test", Role.PRIMARY, 10),
            dnsbl=await client.lookup(ip),
        )
        verdict = await check.check(facts)
        return None if verdict is None else (verdict.reason, verdict.code)

    assert await verdict_for(CLIENT) == (f"dnsbl:{BL}", 554)
    assert await verdict_for(OTHER) is None  # allowlisted
    assert await verdict_for("192.0.2.200") is None  # nowhere


# -- reverse names ---------------------------------------------------------------------------


async def test_reverse_name(dns_server: DnsTestServer) -> None:
    dns_server.set_zone("2.0.192.in-addr.arpa")
    dns_server.set_zone("8.b.d.0.1.0.0.2.ip6.arpa")
    dns_server.add_ptr(CLIENT, "mail.example.test")
    dns_server.add_ptr("2001:db8::25", "mail6.example.test")
    client = client_for(dns_server)
    assert await client.reverse_name(CLIENT) == "mail.example.test"
    assert await client.reverse_name(ipaddress.ip_address("2001:db8::25")) == "mail6.example.test"
    assert await client.reverse_name(OTHER) is None
    dns_server.servfail("2.0.192.in-addr.arpa")
    assert await client.reverse_name(CLIENT) is None


async def test_reverse_name_timeout(dns_server: DnsTestServer) -> None:
    dns_server.delay("in-addr.arpa", None)
    started = time.monotonic()
    assert await client_for(dns_server, timeout=0.3).reverse_name(CLIENT) is None
    assert time.monotonic() - started < 0.3 + 1.5


# -- the resolver ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "address", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 53),
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("::1", "::1", 53),
        ("[::1]:5353", "::1", 5353),
        ("[::1]", "::1", 53),
        (" 127.0.0.53 ", "127.0.0.53", 53),
    ],
)
def test_make_resolver_nameservers(spec: str, address: str, port: int) -> None:
    resolver = make_resolver([spec], timeout=1.5)
    (nameserver,) = resolver.nameservers
    assert isinstance(nameserver, dns.nameserver.Do53Nameserver)
    assert (nameserver.address, nameserver.port) == (address, port)
    assert resolver.lifetime == 1.5
    assert resolver.cache is None


def test_make_resolver_splits_the_budget_between_servers() -> None:
    resolver = make_resolver(["127.0.0.1:5300", "127.0.0.1:5301"], timeout=2.0)
    assert resolver.lifetime == 2.0
    assert resolver.timeout == 1.0


@pytest.mark.parametrize(
    ("nameservers", "problem"),
    [
        (["localhost"], "not an IP address"),
        (["127.0.0.1:0"], "port"),
        (["127.0.0.1:99999"], "port"),
        (["127.0.0.1:dns"], "port"),
        (["[::1"], r"\[IPv6\]:PORT"),
        (["[::1]5353"], r"\[IPv6\]:PORT"),
        (["[::1]:"], "missing port"),
        ([], "empty"),
        ("127.0.0.1", "a list"),
    ],
)
def test_make_resolver_rejects(nameservers: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_resolver(nameservers)


@pytest.mark.skipif(not os.path.exists("/etc/resolv.conf"), reason="no /etc/resolv.conf")
def test_make_resolver_defaults_to_the_system() -> None:
    resolver = make_resolver(None, timeout=3.0)
    assert isinstance(resolver, dns.asyncresolver.Resolver)
    assert resolver.nameservers
    assert resolver.lifetime == 3.0


# -- the test server itself (later used by the audit tests) ----------------------------------


async def test_server_tells_nxdomain_from_nodata_and_follows_cnames(
    dns_server: DnsTestServer,
) -> None:
    dns_server.set_zone(
        "example.test",
        """
        @        MX 10 mx1
        mx1      A    192.0.2.10
        mx1      AAAA 2001:db8::10
        alias    CNAME mx1
        dangling CNAME gone
        a.b.ent  TXT "deep"
        *.wild   A    192.0.2.99
        """,
    )
    dns_server.set_zone("null.test", "@ MX 0 .")
    resolver = make_resolver([dns_server.nameserver], timeout=1.0)

    mx = await resolver.resolve("example.test", "MX")
    assert [r.to_text() for r in mx] == ["10 mx1.example.test."]
    assert [r.to_text() for r in await resolver.resolve("null.test", "MX")] == ["0 ."]
    alias = await resolver.resolve("alias.example.test", "AAAA")
    assert alias.canonical_name.to_text() == "mx1.example.test."
    assert [r.to_text() for r in alias] == ["2001:db8::10"]
    wild = await resolver.resolve("x.wild.example.test", "A")
    assert [r.to_text() for r in wild] == ["192.0.2.99"]

    with pytest.raises(dns.resolver.NoAnswer):  # NODATA: the name exists
        await resolver.resolve("mx1.example.test", "MX")
    with pytest.raises(dns.resolver.NoAnswer):  # an empty non-terminal exists too
        await resolver.resolve("b.ent.example.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):  # no MX at all: the implicit-MX case
        await resolver.resolve("null.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("nothing.example.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("dangling.example.test", "A")


async def test_server_falls_back_to_tcp_for_big_answers(dns_server: DnsTestServer) -> None:
    dns_server.set_zone("example.test")
    for i in range(20):
        dns_server.add("big.example.test", "TXT", f'"{i:02d}{"x" * 200}"')
    resolver = make_resolver([dns_server.nameserver], timeout=2.0)
    answer = await resolver.resolve("big.example.test", "TXT")
    assert len(answer) == 20
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]


def test_server_binds_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        DnsTestServer("0.0.0.0")
