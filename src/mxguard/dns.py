"""The DNS adapter: a configured resolver, and DNSBL/DNSWL lookups with their own cache.

Lookups live here, in the I/O layer, so that the policy core only ever sees
`DnsListAnswer` facts. The pure half (site specs and scoring) sits beside the client because
both sides must agree on what a site is; it never touches the network.

DNS list semantics worth keeping in mind (Spamhaus and postscreen practice):

- NXDOMAIN means "not listed"; so does NODATA (the name exists but has no A record).
- An A record in 127.0.0.0/8 is a listing, and its last octets say which list or why, which is
  what per-site filters and weights are for.
- 127.255.255.0/24 is an error code (public resolver, rate limit, typo in the zone), never a
  listing; neither is a timeout or a SERVFAIL. Only a clear answer may cost a sender mail.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdtypes.ANY.PTR
import dns.rdtypes.IN.A
import dns.resolver
import dns.reversename

from mxguard import dnswire
from mxguard.memo import Memo
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.facts import DnsListAnswer, IPAddress

__all__ = [
    "AddressFilter",
    "DnsListClient",
    "DnsListSite",
    "ERROR_NETWORK",
    "LISTING_NETWORK",
    "MAX_CACHE_TTL",
    "make_resolver",
    "parse_list_site",
    "score",
]

#: answers in here are a DNS list talking about itself (error codes), not about the client
ERROR_NETWORK = ipaddress.IPv4Network("127.255.255.0/24")
#: a site without a filter counts any answer in here (minus the errors) as a listing
LISTING_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")
#: lists change within the hour; an hour-long TTL from a list would keep a delisted host out
MAX_CACHE_TTL = 3600


# --------------------------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------------------------


def _parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """Accept the spellings people paste: `IP`, `IP:PORT`, `[v6]:PORT`, or a bare v6 address."""
    raw = text.strip()
    host, port_text = raw, ""
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"nameserver {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
        if rest and not port_text:
            raise ValueError(f"nameserver {text!r}: missing port after ':'")
    elif raw.count(":") == 1:  # IPv4:PORT; a bare IPv6 address has two colons or more
        host, _, port_text = raw.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: {host!r} is not an IP address") from None
    port = 53
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"nameserver {text!r}: port {port_text!r} is not in 1..65535")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(str(address), port)


def make_resolver(
    nameservers: Sequence[str] | None = None, timeout: float = 2.0
) -> dns.asyncresolver.Resolver:
    """A resolver whose total time per query is bounded by `timeout`.

    `nameservers=None` reads the system's resolv.conf (a local recursive resolver is what DNS
    lists expect; public resolvers get 127.255.255.254 from Spamhaus). dnspython's own cache
    stays off: `DnsListClient` caches with the TTL caps a mail server wants.
    """
    if timeout <= 0:
        raise ValueError(f"DNS timeout must be positive, not {timeout}")
    if nameservers is None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration as exc:
            # A config problem the operator can fix, not a crash: say where to look.
            raise ValueError(f"no usable nameserver in /etc/resolv.conf ({exc})") from None
    else:
        if isinstance(nameservers, str):
            raise ValueError("nameservers must be a list of addresses, not one string")
        if not nameservers:
            raise ValueError("nameservers is empty; leave it unset to use resolv.conf")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [_parse_nameserver(ns) for ns in nameservers]
    resolver.cache = None
    resolver.lifetime = timeout
    # One dead server must not eat the whole budget: give each its share, so the next one is
    # still tried within the lifetime.
    resolver.timeout = timeout / max(1, len(resolver.nameservers))
    return resolver


# --------------------------------------------------------------------------------------------
# Site specs and scoring (pure)
# --------------------------------------------------------------------------------------------

Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class AddressFilter:
    """An IPv4 answer pattern such as `127.0.0.[2..11]` or `127.0.[0..255].[1;3]`.

    Lists encode the reason for a listing in the answer's octets; a filter picks the reasons
    a site's weight applies to, so one zone can be listed twice with different weights.
    """

    octets: tuple[Ranges, Ranges, Ranges, Ranges]

    def matches(self, address: str) -> bool:
        try:
            parts = [int(p) for p in address.split(".")]
        except ValueError:
            return False
        if len(parts) != 4:
            return False
        return all(
            any(lo <= value <= hi for lo, hi in ranges)
            for value, ranges in zip(parts, self.octets, strict=True)
        )

    def __str__(self) -> str:
        def octet(ranges: Ranges) -> str:
            if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
                return str(ranges[0][0])
            items = (str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in ranges)
            return "[" + ";".join(items) + "]"

        return ".".join(octet(r) for r in self.octets)


@dataclass(frozen=True, slots=True)
class DnsListSite:
    """One postscreen-style site: a zone, an optional answer filter and a weight.

    A negative weight makes the site an allowlist (DNSWL): a hit lowers the total. `secret`
    keeps the zone name out of SMTP replies (some lists are paid or private); logs still name it.
    """

    zone: str
    weight: int = 1
    filter: AddressFilter | None = None
    secret: bool = False

    def matches(self, addresses: Iterable[str]) -> bool:
        """Whether any answer address counts for this site (errors never do)."""
        for text in addresses:
            try:
                address = ipaddress.IPv4Address(text)
            except ValueError:
                continue
            if address in ERROR_NETWORK:
                continue
            if self.filter is None:
                if address in LISTING_NETWORK:
                    return True
            elif self.filter.matches(text):
                return True
        return False

    def __str__(self) -> str:
        spec = self.zone
        if self.filter is not None:
            spec += f"={self.filter}"
        if self.weight != 1:
            spec += f"*{self.weight}"
        return spec


_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_WEIGHT = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[0-9]{1,3}$")


def _parse_zone(spec: str, text: str) -> str:
    zone = text.strip().lower().removesuffix(".")
    if not zone:
        raise ValueError(f"{spec!r}: missing zone name")
    if len(zone) > 253:
        raise ValueError(f"{spec!r}: zone name is longer than 253 characters")
    for label in zone.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"{spec!r}: {zone!r} is not a valid DNS zone name")
    return zone


def _parse_octet_value(spec: str, text: str) -> int:
    if not _NUMBER.match(text) or int(text) > 255:
        raise ValueError(f"{spec!r}: {text!r} is not an octet value (0..255)")
    return int(text)


def _parse_octet(spec: str, text: str) -> Ranges:
    if not (text.startswith("[") and text.endswith("]")):
        value = _parse_octet_value(spec, text)
        return ((value, value),)
    body = text[1:-1]
    if not body:
        raise ValueError(f"{spec!r}: empty octet set '[]'")
    ranges: list[tuple[int, int]] = []
    for item in body.split(";"):
        lo_text, dots, hi_text = item.partition("..")
        lo = _parse_octet_value(spec, lo_text)
        hi = _parse_octet_value(spec, hi_text) if dots else lo
        if lo > hi:
            raise ValueError(f"{spec!r}: range {item!r} runs backwards")
        ranges.append((lo, hi))
    return tuple(ranges)


def _split_octets(spec: str, text: str) -> list[str]:
    """Split on the dots between octets, not the `..` inside a `[lo..hi]` range."""
    parts = [""]
    inside = False
    for char in text:
        if char == "." and not inside:
            parts.append("")
            continue
        if char == "[":
            if inside:
                raise ValueError(f"{spec!r}: nested '[' in filter {text!r}")
            inside = True
        elif char == "]":
            inside = False
        parts[-1] += char
    return parts


def _parse_filter(spec: str, text: str) -> AddressFilter:
    if not text:
        raise ValueError(f"{spec!r}: missing filter after '='")
    parts = _split_octets(spec, text)
    if len(parts) != 4:
        raise ValueError(f"{spec!r}: filter {text!r} must have four octets, like 127.0.0.[2..11]")
    o1, o2, o3, o4 = (_parse_octet(spec, p) for p in parts)
    return AddressFilter((o1, o2, o3, o4))


def parse_list_site(spec: str, *, secret: bool = False) -> DnsListSite:
    """Parse `zone[=filter][*weight]`, as in postscreen_dnsbl_sites.

    Raises ValueError naming the spec and what is wrong with it, for the config layer to
    prefix with the file and key.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty DNS list site")
    if any(c.isspace() for c in text):
        raise ValueError(f"{spec!r}: a site may not contain spaces")
    head, star, weight_text = text.partition("*")
    weight = 1
    if star:
        if not _WEIGHT.match(weight_text):
            raise ValueError(f"{spec!r}: weight {weight_text!r} is not an integer")
        weight = int(weight_text)
    zone_text, eq, filter_text = head.partition("=")
    zone = _parse_zone(spec, zone_text)
    address_filter = _parse_filter(spec, filter_text) if eq else None
    return DnsListSite(zone, weight, address_filter, secret)


def _zone_key(zone: str) -> str:
    return zone.lower().removesuffix(".")


def score(answers: Iterable[DnsListAnswer], sites: Sequence[DnsListSite]) -> tuple[int, list[str]]:
    """Sum the weights of the sites whose zone answered with a matching address.

    Returns the total and the matched zones, each once, in site order. An answer with an
    error counts for nothing, so an unreachable list can neither block nor allowlist.
    """
    by_zone = {_zone_key(a.zone): a for a in answers}
    total = 0
    matched: list[str] = []
    for site in sites:
        answer = by_zone.get(site.zone)
        if answer is None or answer.error is not None:
            continue
        if site.matches(answer.addresses):
            total += site.weight
            if site.zone not in matched:
                matched.append(site.zone)
    return total, matched


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


def _client_address(ip: IPAddress | str) -> IPAddress:
    """A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; lists know them as IPv4."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_reversed: Memo[IPAddress, str] = Memo(4096)


def _reversed_v4(address: IPAddress) -> str:
    """The "d.c.b.a" that dnspython's reversename writes before the zone for an IPv4 client."""
    text = _reversed.get(address)
    if text is None:
        text = _reversed.remember(address, ".".join(reversed(str(address).split("."))))
    return text


@dataclass
class _CacheEntry:
    expires: float
    answer: DnsListAnswer


class DnsListClient:
    """Looks a client address up in every configured zone at once, with one deadline.

    Answers are cached per query name by their TTL (negative answers by the SOA's negative
    TTL, 300 s without one), capped at an hour; errors are not cached so that a list that was
    briefly unreachable is asked again on the next connection. The counters are plain
    attributes for a metrics exporter to read. `clock` is only for the cache's expiry.
    """

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        sites: Sequence[DnsListSite],
        timeout: float = 2.0,
        cache_size: int = 10000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"DNS list timeout must be positive, not {timeout}")
        if cache_size < 0:
            raise ValueError(f"DNS list cache size must not be negative, not {cache_size}")
        self.resolver = resolver
        self.sites = tuple(sites)
        self.timeout = timeout
        self.cache_size = cache_size
        self.clock = clock
        self.cache_hits = 0
        self.cache_misses = 0
        self.errors = 0
        self.errors_by_kind: collections.Counter[str] = collections.Counter()
        # A zone listed twice (two filters, two weights) is still asked only once.
        self._zones = {site.zone: dns.name.from_text(site.zone) for site in self.sites}
        self._origins = [origin.to_text() for origin in self._zones.values()]  # end in "."
        self._cache: collections.OrderedDict[str, _CacheEntry] = collections.OrderedDict()
        self._udp = dnswire.UdpClient()

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(self._zones)

    def clear_cache(self) -> None:
        self._cache.clear()

    async def lookup(self, ip: IPAddress | str) -> tuple[DnsListAnswer, ...]:
        """One answer per zone, in site order; never raises for DNS trouble."""
        address = _client_address(ip)
        deadline = asyncio.get_running_loop().time() + self.timeout
        return tuple(
            await asyncio.gather(
                *(
                    self._lookup_zone(address, zone, origin, deadline)
                    for zone, origin in self._zones.items()
                )
            )
        )

    def lookup_now(self, ip: IPAddress | str) -> tuple[DnsListAnswer, ...] | NotNow:
        """`lookup` from the cache alone: the answers when every zone's is cached, else
        NOT_NOW (and nothing counted). A client that comes back within the TTL then costs
        no task and no query name built by dnspython."""
        address = _client_address(ip)
        if address.version != 4:
            return NOT_NOW  # IPv6 names are nibbles: left to dnspython in `lookup`
        reversed_ip = _reversed_v4(address)
        answers = []
        for origin in self._origins:
            cached = self._cache_get(f"{reversed_ip}.{origin}")
            if cached is None:
                return NOT_NOW
            answers.append(cached)
        self.cache_hits += len(answers)
        return tuple(answers)

    async def reverse_name(self, ip: IPAddress | str) -> str | None:
        """The client's PTR name (the first one given), or None for any failure."""
        address = _client_address(ip)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.resolver.resolve_address(str(address), lifetime=self.timeout)
        except (dns.exception.DNSException, TimeoutError, OSError):
            return None
        for rdata in answer:
            if isinstance(rdata, dns.rdtypes.ANY.PTR.PTR):
                return rdata.target.to_text(omit_final_dot=True)
        return None

    async def _lookup_zone(
        self, address: IPAddress, zone: str, origin: dns.name.Name, deadline: float
    ) -> DnsListAnswer:
        qname = dns.reversename.from_address(str(address), v4_origin=origin, v6_origin=origin)
        key = qname.to_text()
        cached = self._cache_get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        self.cache_misses += 1
        answer, ttl = await self._query(zone, qname, deadline)
        if answer.error is None:
            self._cache_put(key, answer, ttl)
        else:
            self.errors += 1
            self.errors_by_kind[answer.error.partition(":")[0]] += 1
        return answer

    async def _query(
        self, zone: str, qname: dns.name.Name, deadline: float
    ) -> tuple[DnsListAnswer, int]:
        lean = await self._query_lean(zone, qname, deadline)
        if lean is not None:
            return lean
        loop = asyncio.get_running_loop()
        try:
            # dnspython's lifetime bounds each query; the asyncio deadline is the belt to those
            # braces, so that the whole lookup ends on time whatever the resolver does.
            async with asyncio.timeout_at(deadline):
                remaining = max(deadline - loop.time(), 0.001)
                result = await self.resolver.resolve(qname, "A", lifetime=remaining)
        except dns.resolver.NXDOMAIN as exc:
            # The exceptions keep the responses in `kwargs` (their accessors are untyped).
            return DnsListAnswer(zone), _negative_ttl(exc.kwargs.get("responses", {}).values())
        except dns.resolver.NoAnswer as exc:
            return DnsListAnswer(zone), _negative_ttl([exc.kwargs.get("response")])
        except (dns.exception.Timeout, TimeoutError):
            return DnsListAnswer(zone, error="timeout"), 0
        except dns.resolver.NoNameservers:
            return DnsListAnswer(zone, error="servfail"), 0
        except (dns.exception.DNSException, OSError):
            return DnsListAnswer(zone, error="error"), 0
        addresses = tuple(
            rdata.address for rdata in result if isinstance(rdata, dns.rdtypes.IN.A.A)
        )
        for text in addresses:
            if ipaddress.IPv4Address(text) in ERROR_NETWORK:
                return DnsListAnswer(zone, addresses, error=f"dnsbl-error:{text}"), 0
        return DnsListAnswer(zone, addresses), result.chaining_result.minimum_ttl

    async def _query_lean(
        self, zone: str, qname: dns.name.Name, deadline: float
    ) -> tuple[DnsListAnswer, int] | None:
        """The common case without dnspython's message objects (see dnswire); None: ask it."""
        servers = [
            (ns.address, ns.port)
            for ns in self.resolver.nameservers
            if isinstance(ns, dns.nameserver.Do53Nameserver)
        ]
        if not servers or len(servers) != len(self.resolver.nameservers):
            return None
        loop = asyncio.get_running_loop()
        text = qname.to_text()
        failed = False
        for n, (host, port) in enumerate(servers):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            share = remaining / (len(servers) - n)  # the later servers keep their share
            try:
                reply = await self._udp.query(host, port, text, share)
            except (TimeoutError, OSError):
                continue
            except dnswire.WireError:
                return None  # truncated or unusual: dnspython handles it (TCP and all)
            if reply.rcode in (dnswire.RCODE_SERVFAIL, dnswire.RCODE_REFUSED):
                failed = True
                continue
            if reply.rcode == dnswire.RCODE_NXDOMAIN or (
                reply.rcode == dnswire.RCODE_NOERROR and not reply.addresses
            ):
                return DnsListAnswer(zone), reply.ttl
            if reply.rcode != dnswire.RCODE_NOERROR:
                return DnsListAnswer(zone, error="error"), 0
            for address in reply.addresses:
                if ipaddress.IPv4Address(address) in ERROR_NETWORK:
                    return DnsListAnswer(zone, reply.addresses, error=f"dnsbl-error:{address}"), 0
            return DnsListAnswer(zone, reply.addresses), reply.ttl
        return DnsListAnswer(zone, error="servfail" if failed else "timeout"), 0

    def _cache_get(self, key: str) -> DnsListAnswer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry.answer

    def _cache_put(self, key: str, answer: DnsListAnswer, ttl: int) -> None:
        ttl = min(ttl, MAX_CACHE_TTL)
        if ttl <= 0 or self.cache_size == 0:
            return
        self._cache[key] = _CacheEntry(self.clock() + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _negative_ttl(responses: Iterable[object]) -> int:
    """RFC 2308: min(SOA TTL, SOA minimum) from the authority section.

    dnspython's chaining result computes exactly that, and falls back to 300 s when the
    server sent no SOA (`dns.message.NEGATIVE_TTL_WITHOUT_SOA`).
    """
    for response in responses:
        if isinstance(response, dns.message.QueryMessage):
            try:
                return response.resolve_chaining().minimum_ttl
            except dns.exception.DNSException:
                break
    return 300
