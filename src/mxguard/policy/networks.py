"""CIDR sets for allow, deny, relay and trusted-peer lists (IPv4 and IPv6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mxguard.policy.facts import IPAddress


class NetworkSet:
    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __contains__(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self._nets)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self._nets]})"
