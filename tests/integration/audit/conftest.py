"""Real MX tiers on 127.0.0.x for `mxguard audit`: mxguard's own listeners and scripted peers.

Every address is on loopback, each MX host gets its own 127.0.0.x address (so DNS can point
at it as it would in production) and the tests map addresses to the free ports the listeners
got. The peers are the layouts people really run: an accept-all backup (aiosmtpd), a backup
that greylists, a closed port (a fake done right), a listener that never greets and one that
drops SYNs (fakes done wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from mxguard import serve
from mxguard.config import load_config_text
from mxguard.dns import make_resolver
from mxguard.mxplan.audit import AuditReport, audit_domain
from mxguard.mxplan.probe import ProbeOptions
from mxguard.policy.facts import Role
from tests.helpers.dnsserver import DnsTestServer

DOMAIN = "audit.test"

TIER = """
[[domain]]
name = "audit.test"
recipients = ["alice@audit.test", "postmaster@audit.test"]

[delivery]
target = "maildir:{tmp}/maildir"

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"

[[mx]]
host = "mx1.audit.test"
role = "primary"
preference = 10
listen = "127.0.0.11:0"
tls_cert = "{tmp}/mx1.crt"
tls_key = "{tmp}/mx1.key"

[[mx]]
host = "mx2.audit.test"
role = "backup"
preference = 20
listen = "127.0.0.12:0"
tls_cert = "{tmp}/mx2.crt"
tls_key = "{tmp}/mx2.key"
forward_to = "mx1.audit.test"
spool = "{tmp}/spool"

[[mx]]
host = "trap.audit.test"
role = "trap"
preference = 30
listen = "127.0.0.13:0"

[[mx]]
host = "fake.audit.test"
role = "fake"
preference = 90
address = "127.0.0.19"
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Tier:
    """mxguard's own primary, backup and trap, running in the test's event loop."""

    server: serve.Server
    tmp: Path
    config_path: Path
    cafile: str
    ports: dict[str, int] = field(default_factory=dict)  # address -> port


@dataclass
class Scripted:
    """An aiosmtpd handler with fixed answers: how other people's MX hosts behave."""

    known: frozenset[str] = frozenset({"alice", "postmaster"})
    known_reply: str = "250 2.1.5 Ok"
    unknown_reply: str = "550 5.1.1 User unknown"
    mail_reply: str = "250 2.1.0 Ok"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        envelope.mail_from = address
        return self.mail_reply

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        local = address.split("@")[0].lower()
        reply = self.known_reply if local in self.known else self.unknown_reply
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply


ACCEPT_ALL = Scripted(known_reply="250 2.1.5 Ok", unknown_reply="250 2.1.5 Ok")
GREYLISTING = Scripted(known_reply="451 4.7.1 Greylisted, try again later")
NO_POSTMASTER = Scripted(known=frozenset({"alice"}))


class Peers:
    """Scripted listeners the test starts; all stopped at teardown."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self._controllers: list[Controller] = []
        self._sockets: list[socket.socket] = []
        self._servers: list[asyncio.Server] = []

    def smtp(self, ip: str, handler: Scripted) -> int:
        port = free_port(ip)
        controller = Controller(handler, hostname=ip, port=port, ready_timeout=10)
        controller.start()
        self._controllers.append(controller)
        self.ports[ip] = port
        return port

    def accept_all(self, ip: str) -> int:
        """The bad backup: takes any recipient, so unknown ones bounce later (backscatter)."""
        return self.smtp(ip, ACCEPT_ALL)

    def greylisting(self, ip: str) -> int:
        """Refuses unknown users, tempfails known ones: greylisting as a sender sees it."""
        return self.smtp(ip, GREYLISTING)

    def no_postmaster(self, ip: str) -> int:
        return self.smtp(ip, NO_POSTMASTER)

    def careful(self, ip: str) -> int:
        """Refuses unknown users, takes known ones: a well-run server (the one behind a filter)."""
        return self.smtp(ip, Scripted())

    def closed(self, ip: str) -> int:
        """A port with nothing behind it: the connect is refused (RST), as for a good fake."""
        self.ports[ip] = free_port(ip)
        return self.ports[ip]

    async def silent(self, ip: str) -> int:
        """Accepts the connection and never says a word (a tarpit, or a hung server)."""

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.read()
            writer.close()

        server = await asyncio.start_server(hold, ip, 0)
        self._servers.append(server)
        self.ports[ip] = server.sockets[0].getsockname()[1]
        return self.ports[ip]

    def dropping(self, ip: str) -> int:
        """A listener whose accept queue is full and never drained: SYNs go unanswered.

        That is what a firewall DROP looks like to a sender (a connect timeout), made on
        loopback without touching the firewall.
        """
        listener = socket.socket()
        listener.bind((ip, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.socket()
        filler.connect((ip, port))
        self._sockets += [listener, filler]
        self.ports[ip] = port
        return port

    async def stop(self) -> None:
        for c in self._controllers:
            await asyncio.to_thread(c.stop)
        for s in self._servers:
            s.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    p = Peers()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tier(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[Tier]:
    for name in ("mx1", "mx2"):
        cert = ca.issue_cert(f"{name}.audit.test")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.crt"))
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    text = textwrap.dedent(TIER).format(tmp=tmp_path)
    path = tmp_path / "mxguard.toml"
    path.write_text(text)
    cfg = load_config_text(text, str(path))
    server = serve.build_server(cfg)
    await serve.start(server)
    t = Tier(server, tmp_path, path, str(cafile))
    for listener in server.listeners:
        host, port = listener.bound()[0][:2]
        t.ports[host] = port
    try:
        yield t
    finally:
        await serve.stop(server)


@pytest.fixture
def zone(dns_server: DnsTestServer) -> Iterator[Any]:
    def set_zone(text: str) -> DnsTestServer:
        dns_server.set_zone(DOMAIN, textwrap.dedent(text))
        return dns_server

    yield set_zone


@dataclass
class Auditor:
    dns: DnsTestServer
    ports: dict[str, int]
    cafile: str | None = None

    async def __call__(
        self,
        *,
        probe: bool = True,
        hints: dict[str, Role] | None = None,
        also: tuple[str, ...] = (),
        config: Any = None,
        timeout: float = 1.0,
        max_time: float = 30.0,
    ) -> AuditReport:
        opts = ProbeOptions(
            port=free_port("127.0.0.1"),  # nothing there: an unmapped address is refused
            port_map=dict(self.ports),
            timeout=timeout,
            helo="probe.client.test",
            cafile=self.cafile,
            min_interval=0.0,
            max_time=max_time,
        )
        resolver = make_resolver([self.dns.nameserver], 2.0)
        return await audit_domain(
            DOMAIN, resolver, probe=probe, options=opts, hints=hints, also=also, config=config
        )


@pytest.fixture
def auditor(dns_server: DnsTestServer, peers: Peers) -> Auditor:
    """Audits audit.test with the test's DNS server; ports from the tier and the peers."""
    return Auditor(dns_server, peers.ports)
