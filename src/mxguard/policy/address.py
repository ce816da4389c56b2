"""Address canonicalisation and the relay question: is this recipient ours, someone else's, or a trick?

Routing syntax (percent hack, bang paths, source routes, quoted local parts hiding an "@",
address literals, trailing dots, a second "@") is how open relays were abused for decades.
Such an address is never "local", whatever catch-all the domain has, so it can never be
relayed through a downstream MTA that would honour the routing.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import math
from dataclasses import dataclass


class AddressKind(enum.StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    ROUTING = "routing"  # routing characters or malformed: refused as relaying, never local


@dataclass(frozen=True, slots=True)
class SplitAddress:
    kind: AddressKind
    local: str
    domain: str  # lower-case, no trailing dot


def split_address(address: str) -> tuple[str, str] | None:
    """Split at the last "@" outside quotes; None when that is impossible."""
    if not address or address.startswith("@"):
        return None
    at = address.rfind("@")
    if at <= 0:
        return None
    return address[:at], address[at + 1 :]


def _has_routing(local: str, domain: str) -> bool:
    if local.startswith('"'):
        if not local.endswith('"') or len(local) < 2:
            return True
        inner = local[1:-1]
        return any(c in inner for c in "@%!:") or "\\" in inner
    if '"' in local or "@" in local or "%" in local or "!" in local:
        return True
    if domain.endswith(".") or domain.startswith("[") or not domain:
        return True
    if domain.startswith(".") or ".." in domain or ".." in local:
        return True
    return local.startswith(".") or local.endswith(".")


@functools.lru_cache(maxsize=8192)
def classify(address: str, local_domains: frozenset[str]) -> SplitAddress:
    """Cached: relay control and recipient validation both ask it for every RCPT."""
    parts = split_address(address)
    if parts is None:
        return SplitAddress(AddressKind.ROUTING, address, "")
    local, domain = parts
    if _has_routing(local, domain):
        return SplitAddress(AddressKind.ROUTING, local, domain.lower())
    domain = domain.lower()
    kind = AddressKind.LOCAL if domain in local_domains else AddressKind.REMOTE
    return SplitAddress(kind, local, domain)


def normalize_sender(sender: str) -> str:
    """The sender as greylisting keys it: lower-case, with a VERP/SRS-ish tag folded away.

    Mailing lists and bounce handlers put a per-message token in the local part
    (bounces+12345-user=example.org@...); keeping it would make every message a new triplet.
    """
    if not sender:
        return ""
    parts = split_address(sender)
    if parts is None:
        return sender.lower()
    local, domain = parts
    local = local.lower()
    for sep in ("+", "="):
        if sep in local:
            local = local.split(sep, 1)[0]
    if local.startswith(("srs0", "srs1", "prvs", "btv1", "bounce")):
        local = local.split("-", 1)[0].split("=", 1)[0]
    return f"{local}@{domain.lower()}"


@functools.lru_cache(maxsize=65536)
def client_network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, v4: int, v6: int) -> str:
    """The network a client is keyed by ("192.0.2.0/24"); IPv4-mapped IPv6 counts as IPv4.

    Cached: the same clients come back all day, and building networks is not cheap.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):  # by arithmetic: ip_network() is slow
        n = int(ip) & (0xFFFFFFFF << (32 - v4)) & 0xFFFFFFFF
        return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}/{v4}"
    return str(ipaddress.ip_network(f"{ip}/{v6}", strict=False))


def ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
