"""A small authoritative DNS server on loopback, for tests that need real DNS on the wire.

dnslib parses and packs the messages; the answering is ours, because dnslib's ZoneResolver
says NXDOMAIN where the truth is NODATA, and the difference matters to mxguard: NODATA for MX
means "use the implicit MX", NXDOMAIN means "no such domain", and both are "not listed" for a
DNS list but are cached by the SOA's negative TTL, which ZoneResolver never sends.

The server runs its own event loop in a thread, so it keeps answering while a test's loop is
busy or blocked, and sync tests (the CLI run as a subprocess) can use it too. UDP and TCP share
one random port on 127.0.0.1.

    with DnsTestServer() as server:
        server.set_zone("example.test", '''
            @      MX 10 mx1
            mx1    A  192.0.2.10
        ''')
        server.add("mx2.example.test", "AAAA", "2001:db8::25")
        server.delay("slow.example.test", 5.0)      # answer after 5 s (None: never)
        server.servfail("broken.example.test")
        resolver = make_resolver([server.nameserver])
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from dnslib import QTYPE, RCODE, RR, DNSError, DNSLabel, DNSRecord

__all__ = ["DnsTestServer", "Query", "listing_name"]

_MAX_CNAME_CHAIN = 8


def _norm(name: str | DNSLabel) -> str:
    return str(name).lower().rstrip(".")


def _is_at_or_below(name: str, ancestor: str) -> bool:
    return ancestor == "" or name == ancestor or name.endswith("." + ancestor)


def _qtype_number(rtype: str | int | None) -> int | None:
    if rtype is None or isinstance(rtype, int):
        return rtype
    return int(getattr(QTYPE, rtype.upper()))


def listing_name(ip: str, zone: str) -> str:
    """The name a DNS list is asked for `ip`: reversed octets, or nibbles for IPv6."""
    address = ipaddress.ip_address(ip)
    suffix = ".in-addr.arpa" if address.version == 4 else ".ip6.arpa"
    pointer = address.reverse_pointer
    return f"{pointer.removesuffix(suffix)}.{_norm(zone)}"


@dataclass(frozen=True, slots=True)
class Query:
    """One question the server was asked: name in lower case without the final dot."""

    name: str
    rtype: str
    transport: str  # "udp" or "tcp"


@dataclass(frozen=True, slots=True)
class _Fault:
    name: str
    qtype: int | None
    delay: float | None  # None with servfail False: never answer
    servfail: bool = False

    def applies(self, name: str, qtype: int) -> bool:
        return _is_at_or_below(name, self.name) and self.qtype in (None, qtype)


class DnsTestServer:
    """An authoritative server for a handful of test zones, on a loopback address only."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the test DNS server binds loopback addresses only, not {host}")
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._records: dict[str, list[RR]] = {}
        self._zones: set[str] = set()
        self._faults: list[_Fault] = []
        self._queries: list[Query] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DnsTestServer:
        self._thread = threading.Thread(target=self._run, name="dns-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the test DNS server did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("the test DNS server failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> DnsTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def nameserver(self) -> str:
        """`host:port` (or `[v6]:port`) as `mxguard.dns.make_resolver` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- zone data ---------------------------------------------------------------------------

    def set_zone(
        self, origin: str, text: str = "", *, ttl: int = 300, negative_ttl: int = 60
    ) -> None:
        """Replace everything at and below `origin` with `text` (zone-file syntax).

        Relative names are relative to `origin`. Without an SOA at the apex one is made up,
        with `negative_ttl` as its minimum, so NXDOMAIN and NODATA answers carry it.
        """
        origin = _norm(origin)
        records = self._parse(text, origin, ttl)
        if not any(_norm(rr.rname) == origin and rr.rtype == QTYPE.SOA for rr in records):
            soa = f"ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 {negative_ttl}"
            records += self._parse(f"@ {ttl} IN SOA {soa}", origin, ttl)
        with self._lock:
            for name in [n for n in self._records if _is_at_or_below(n, origin)]:
                del self._records[name]
            self._zones.add(origin)
            self._store(records)

    def add_records(self, text: str, origin: str = "", *, ttl: int = 300) -> None:
        """Add zone-file lines to what is served; names without a final dot are made absolute."""
        records = self._parse(text, _norm(origin), ttl)
        with self._lock:
            self._store(records)

    def add(self, name: str, rtype: str, rdata: str, *, ttl: int = 300) -> None:
        """Add one record, e.g. `add("example.test", "MX", "0 .")` for a null MX."""
        self.add_records(f"{_norm(name)}. {ttl} IN {rtype.upper()} {rdata}", ttl=ttl)

    def add_listing(
        self, zone: str, ip: str, *answers: str, ttl: int = 300, txt: str | None = None
    ) -> None:
        """List `ip` in the DNS list `zone` with the given A answers (127.0.0.2 by default)."""
        name = listing_name(ip, zone)
        for answer in answers or ("127.0.0.2",):
            self.add(name, "A", answer, ttl=ttl)
        if txt is not None:
            self.add(name, "TXT", '"' + txt.replace('"', '\\"') + '"', ttl=ttl)

    def add_ptr(self, ip: str, name: str, *, ttl: int = 300) -> None:
        self.add(ipaddress.ip_address(ip).reverse_pointer, "PTR", _norm(name) + ".", ttl=ttl)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Drop the records of one name (all of them, or of one type)."""
        name, qtype = _norm(name), _qtype_number(rtype)
        with self._lock:
            kept = [rr for rr in self._records.get(name, []) if qtype not in (None, rr.rtype)]
            if kept:
                self._records[name] = kept
            else:
                self._records.pop(name, None)

    def iter_records(self) -> Iterator[RR]:
        """Everything served, for a test that wants to print or compare the data."""
        with self._lock:
            records = [rr for rrs in self._records.values() for rr in rrs]
        yield from records

    # -- faults ------------------------------------------------------------------------------

    def delay(self, name: str, seconds: float | None, rtype: str | None = None) -> None:
        """Answer questions at or below `name` only after `seconds`; None never answers."""
        with self._lock:
            self._faults.append(_Fault(_norm(name), _qtype_number(rtype), seconds))

    def servfail(self, name: str, rtype: str | None = None) -> None:
        """Answer SERVFAIL to questions at or below `name`."""
        with self._lock:
            self._faults.append(_Fault(_norm(name), _qtype_number(rtype), None, servfail=True))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- what was asked ----------------------------------------------------------------------

    @property
    def queries(self) -> list[Query]:
        with self._lock:
            return list(self._queries)

    def query_count(self, name: str | None = None, rtype: str | None = None) -> int:
        wanted = None if name is None else _norm(name)
        return sum(
            1
            for q in self.queries
            if wanted in (None, q.name) and (rtype is None or q.rtype == rtype.upper())
        )

    def clear_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    # -- answering (called on the server thread) ---------------------------------------------

    @staticmethod
    def _parse(text: str, origin: str, ttl: int) -> list[RR]:
        return list(RR.fromZone(textwrap.dedent(text), origin=origin + ".", ttl=ttl))

    def _store(self, records: list[RR]) -> None:
        for rr in records:
            self._records.setdefault(_norm(rr.rname), []).append(rr)

    def _zone_of(self, name: str) -> str | None:
        zones = [z for z in self._zones if _is_at_or_below(name, z)]
        return max(zones, key=len) if zones else None

    def _exists(self, name: str) -> bool:
        """A name exists if it owns records or has names below it (RFC 8020)."""
        return any(n == name or n.endswith("." + name) for n in self._records)

    def _lookup(self, name: str) -> list[RR] | None:
        """The records owned by `name`, with wildcards expanded; None if the name is absent."""
        if name in self._records:
            return self._records[name]
        if self._exists(name):
            return []
        encloser = name
        while "." in encloser:
            encloser = encloser.split(".", 1)[1]
            if self._exists(encloser):
                wild = self._records.get("*." + encloser)
                if wild is None:
                    return None
                return [RR(DNSLabel(name), rr.rtype, rr.rclass, rr.ttl, rr.rdata) for rr in wild]
        return None

    def _soa(self, zone: str | None) -> list[RR]:
        if zone is None:
            return []
        return [rr for rr in self._records.get(zone, []) if rr.rtype == QTYPE.SOA]

    def _fault_for(self, name: str, qtype: int) -> _Fault | None:
        return next((f for f in self._faults if f.applies(name, qtype)), None)

    def _answer(self, request: DNSRecord, transport: str) -> tuple[DNSRecord | None, float]:
        """The reply and how long to hold it; a None reply is never sent."""
        qname, qtype = _norm(request.q.qname), request.q.qtype
        reply = request.reply()
        with self._lock:
            self._queries.append(Query(qname, QTYPE.get(qtype, str(qtype)), transport))
            fault = self._fault_for(qname, qtype)
            if fault is not None and fault.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply, 0.0
            self._resolve(reply, qname, qtype)
        if fault is None:
            return reply, 0.0
        if fault.delay is None:
            return None, 0.0
        return reply, fault.delay

    def _resolve(self, reply: DNSRecord, qname: str, qtype: int) -> None:
        name = qname
        for _ in range(_MAX_CNAME_CHAIN):
            zone = self._zone_of(name)
            records = self._lookup(name)
            if records is None:  # RFC 6604: the rcode speaks for the last name in the chain
                reply.header.rcode = RCODE.NXDOMAIN
                for soa in self._soa(zone):
                    reply.add_auth(soa)
                return
            wanted = [rr for rr in records if qtype in (rr.rtype, QTYPE.ANY)]
            if wanted:
                for rr in wanted:
                    reply.add_answer(rr)
                return
            cnames = [rr for rr in records if rr.rtype == QTYPE.CNAME]
            if not cnames or qtype == QTYPE.CNAME:
                for soa in self._soa(zone):  # NODATA: NOERROR, no answer, SOA for the TTL
                    reply.add_auth(soa)
                return
            reply.add_answer(cnames[0])
            name = _norm(cnames[0].rdata.label)
            if self._zone_of(name) is None and name not in self._records:
                return  # a target out of our zones: the resolver takes it from here

    # -- transports --------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:  # the port is taken for TCP: pick another pair
                udp.close()
                continue
            self._udp, self.port = udp, port
            return
        raise OSError("no free port for UDP and TCP together")

    async def _shutdown(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    def _handle_udp(self, data: bytes, addr: Any, transport: asyncio.DatagramTransport) -> None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return
        reply, hold = self._answer(request, "udp")
        if reply is None:
            return
        wire = self._fit_udp(request, reply)
        assert self._loop is not None
        if hold:
            self._loop.call_later(hold, _send_if_open, transport, wire, addr)
        else:
            transport.sendto(wire, addr)

    @staticmethod
    def _fit_udp(request: DNSRecord, reply: DNSRecord) -> bytes:
        """Truncate (TC) what does not fit, so clients retry over TCP as they would for real."""
        limit = 512
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(limit, int(rr.rclass))
        wire: bytes = reply.pack()
        if len(wire) <= limit:
            return wire
        truncated = request.reply()
        truncated.header.tc = 1
        truncated.header.rcode = reply.header.rcode
        packed: bytes = truncated.pack()
        return packed

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(2)
                data = await reader.readexactly(struct.unpack("!H", header)[0])
                try:
                    request = DNSRecord.parse(data)
                except (DNSError, struct.error, IndexError, ValueError):
                    return
                reply, hold = self._answer(request, "tcp")
                if reply is None:
                    continue
                if hold:
                    await asyncio.sleep(hold)
                wire = reply.pack()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


def _send_if_open(transport: asyncio.DatagramTransport, wire: bytes, addr: Any) -> None:
    if not transport.is_closing():
        transport.sendto(wire, addr)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsTestServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._transport is not None:
            self._server._handle_udp(data, addr, self._transport)
