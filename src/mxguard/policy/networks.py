"""CIDR sets for allow, deny, relay and trusted-peer lists (IPv4 and IPv6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mxguard.policy.facts import IPAddress


class NetworkSet:
    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        # split by family once: asked for every client, and most sets are empty or small
        # as (network, mask) integers: `ip in network` is several Python calls a network,
        # and the relay check alone asks at every RCPT
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in self._nets
                         if n.version == 4)  # fmt: skip
        self._v6 = tuple((int(n.network_address), int(n.netmask)) for n in self._nets
                         if n.version == 6)  # fmt: skip

    def __contains__(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv4Address):
            nets = self._v4
        elif ip.ipv4_mapped is not None:
            ip, nets = ip.ipv4_mapped, self._v4
        else:
            nets = self._v6
        if not nets:
            return False
        n = int(ip)
        for network, mask in nets:  # noqa: SIM110 (a loop: no generator made per client)
            if n & mask == network:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self._nets]})"
