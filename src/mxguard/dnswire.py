"""A lean DNS A-record query over UDP, for DNSBL lookups only.

A spam storm brings a new client address with nearly every connection, so a DNSBL lookup
is a cache miss per connection. dnspython builds and parses each message through many
objects (names, rdatasets, enums): about a millisecond of CPU here, more than the whole
SMTP session costs. A DNSBL question is always the same shape (one A query, an answer of
A records, or a negative answer with an SOA), so this module encodes it and reads the answer
with struct and slices, and leaves everything else to dnspython: a truncated answer, an
unusable reply, a nameserver that is not plain UDP/53-style all make `query` return None,
and the caller asks dnspython instead.
"""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
TYPE_A, TYPE_CNAME, TYPE_SOA, CLASS_IN = 1, 5, 6, 1
RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 2, 3, 5
#: RFC 2308 leaves a negative answer without an SOA uncacheable; dnspython's default
NEGATIVE_TTL_WITHOUT_SOA = 300


class WireError(Exception):
    """The reply could not be read the lean way."""


@dataclass(frozen=True, slots=True)
class Reply:
    rcode: int
    addresses: tuple[str, ...]
    ttl: int  # the answer's TTL, or the negative TTL for NXDOMAIN/NODATA


def encode_query(qid: int, qname: str) -> bytes:
    """An A/IN query with recursion desired, for a name given as text."""
    out = bytearray(_HEADER.pack(qid, 0x0100, 1, 0, 0, 0))
    for label in qname.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise WireError(f"bad label in {qname!r}")
        out.append(len(raw))
        out += raw
    out += b"\x00" + struct.pack("!HH", TYPE_A, CLASS_IN)
    return bytes(out)


def _skip_name(msg: bytes, i: int) -> int:
    """The offset after a (possibly compressed) name starting at i."""
    while True:
        if i >= len(msg):
            raise WireError("name runs past the end")
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        if n & 0xC0:
            raise WireError("unknown label type")
        i += 1 + n


def _read_name(msg: bytes, i: int) -> str:
    labels: list[str] = []
    for _ in range(128):  # bounded: a pointer loop is an error, not a hang
        if i >= len(msg):
            raise WireError("name runs past the end")
        n = msg[i]
        if n == 0:
            return ".".join(labels).lower()
        if n & 0xC0 == 0xC0:
            i = ((n & 0x3F) << 8) | msg[i + 1]
            continue
        labels.append(msg[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    raise WireError("compression loop")


def decode_reply(msg: bytes, qid: int, qname: str) -> Reply:
    if len(msg) < _HEADER.size:
        raise WireError("short reply")
    rid, flags, qd, an, ns, _ar = _HEADER.unpack_from(msg)
    if rid != qid or not flags & 0x8000:
        raise WireError("not our reply")
    if flags & 0x0200:
        raise WireError("truncated")
    rcode = flags & 0x000F
    i = _HEADER.size
    if qd != 1 or _read_name(msg, i) != qname.rstrip(".").lower():
        raise WireError("question does not match")
    i = _skip_name(msg, i) + 4
    addresses: list[str] = []
    ttl: int | None = None
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, rclass, rttl, rdlen = _RR.unpack_from(msg, i)
        i += _RR.size
        if rtype == TYPE_A and rclass == CLASS_IN and rdlen == 4:
            addresses.append(".".join(str(b) for b in msg[i : i + 4]))
            ttl = rttl if ttl is None else min(ttl, rttl)
        elif rtype == TYPE_CNAME:
            ttl = rttl if ttl is None else min(ttl, rttl)
        i += rdlen
    if addresses:
        return Reply(rcode, tuple(addresses), ttl or 0)
    negative = NEGATIVE_TTL_WITHOUT_SOA
    for _ in range(ns):
        i = _skip_name(msg, i)
        rtype, _rclass, rttl, rdlen = _RR.unpack_from(msg, i)
        i += _RR.size
        if rtype == TYPE_SOA:
            j = _skip_name(msg, _skip_name(msg, i))  # MNAME, RNAME
            minimum = struct.unpack_from("!I", msg, j + 16)[0]
            negative = min(rttl, minimum)
            break
        i += rdlen
    return Reply(rcode, (), negative)


class _Dispatch(asyncio.DatagramProtocol):
    """One UDP socket per nameserver; replies find their query by id and name."""

    def __init__(self) -> None:
        self.waiting: dict[int, tuple[str, asyncio.Future[Reply]]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 2:
            return
        entry = self.waiting.get(int.from_bytes(data[:2], "big"))
        if entry is None or entry[1].done():
            return  # late, or a stray datagram
        qname, fut = entry
        try:
            fut.set_result(decode_reply(data, int.from_bytes(data[:2], "big"), qname))
        except WireError as exc:
            if str(exc) != "question does not match":  # not ours: keep waiting
                fut.set_exception(exc)
        except (struct.error, IndexError) as exc:
            fut.set_exception(WireError(f"malformed reply: {exc}"))

    def error_received(self, exc: Exception) -> None:
        for _, fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class UdpClient:
    """Sends lean A queries; keeps one connected UDP socket per nameserver and event loop."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[str, int], _Dispatch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _endpoint(self, host: str, port: int) -> _Dispatch:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests, reload): the old sockets are gone
            self._sockets, self._loop = {}, loop
        proto = self._sockets.get((host, port))
        if proto is None or proto.transport is None:
            _, proto = await loop.create_datagram_endpoint(_Dispatch, remote_addr=(host, port))
            self._sockets[(host, port)] = proto
        return proto

    async def query(self, host: str, port: int, qname: str, timeout: float) -> Reply:
        """One A query; raises TimeoutError, OSError or WireError."""
        proto = await self._endpoint(host, port)
        qid = random.getrandbits(16)
        while qid in proto.waiting:
            qid = random.getrandbits(16)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        proto.waiting[qid] = (qname, fut)
        try:
            assert proto.transport is not None
            proto.transport.sendto(encode_query(qid, qname))
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            del proto.waiting[qid]

    def close(self) -> None:
        for proto in self._sockets.values():
            if proto.transport is not None:
                proto.transport.close()
        self._sockets = {}
