"""Client addresses as the front ends parse them: `ipaddress` objects that hash and print fast.

A decision puts the client's address into several dicts (the blocklist's and the greylist's
network memos, the event log's JSON memo, the walk check's sightings), and `ipaddress`
computes both its hash (`hash(hex(int))`) and its text in Python, on every call. These
subclasses work both out once, when the address is parsed, and are equal to, and hash like,
the plain `ipaddress` objects, so the two mix freely as dict keys.

Parsing takes the C path for the dotted quad Postfix and the kernel write, and falls back
to `ipaddress` for anything else, so what is accepted and refused does not change.
"""

from __future__ import annotations

import ipaddress
import socket

from mxguard.policy.facts import IPAddress


class _Kept:
    """The hash and text of an address, worked out once (mixed in before the ipaddress
    class, whose own `__hash__` and `__str__` compute them)."""

    __slots__ = ()
    _hash: int
    _text: str

    def _worked_out(self) -> tuple[int, str]:
        return super().__hash__(), super().__str__()

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self._text


class ClientIPv4(_Kept, ipaddress.IPv4Address):
    __slots__ = ("_hash", "_text")

    def __init__(self, address: object) -> None:
        super().__init__(address)
        self._hash, self._text = self._worked_out()


class ClientIPv6(_Kept, ipaddress.IPv6Address):
    __slots__ = ("_hash", "_text")

    def __init__(self, address: object) -> None:
        super().__init__(address)
        self._hash, self._text = self._worked_out()


def client_ip(text: str) -> IPAddress:
    """The address in `text` (no zone), an IPv4-mapped IPv6 address as IPv4; ValueError if
    it is none."""
    if ":" not in text:
        try:
            packed = socket.inet_pton(socket.AF_INET, text)
        except OSError:
            packed = b""
        # only the canonical form takes the quick path ("010.1.2.3" is ipaddress's to refuse)
        if packed and socket.inet_ntop(socket.AF_INET, packed) == text:
            return ClientIPv4(packed)
        return ClientIPv4(text)
    ip = ClientIPv6(text)
    mapped = ip.ipv4_mapped
    return ip if mapped is None else ClientIPv4(mapped.packed)
