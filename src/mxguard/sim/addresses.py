"""Simulated client addresses: `IPv4Address` values whose text and hash are worked out once.

The policy core keys its state by client network (`client_network` caches by address), the
event log writes the address as text, the blocklist's reply names it: each of those calls
`hash()` or `str()` on the address, which `ipaddress` computes afresh every time in Python
(`hash(hex(int(ip)))`, four octets joined). A simulated day makes hundreds of thousands of
such calls for a few thousand addresses that never change, so they are computed at creation.
The values compare, hash and print exactly as the plain addresses do; only the work moves.
"""

from __future__ import annotations

import ipaddress


class SimAddress(ipaddress.IPv4Address):
    __slots__ = ("_hash", "_text")

    def __init__(self, address: int | str | bytes) -> None:
        super().__init__(address)
        self._text = super().__str__()
        self._hash = super().__hash__()

    def __str__(self) -> str:
        return self._text

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"IPv4Address('{self._text}')"  # as the plain address, for logs and reports
