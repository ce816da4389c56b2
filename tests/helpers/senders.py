"""Scripted SMTP clients: how real senders and bots walk a domain's MX hosts, over real sockets.

Each behaviour is a small async function that talks SMTP (aiosmtplib) to the listeners from
its own loopback source address, so the tier sees one client per behaviour. The MTA walk
follows what a real Postfix 3.7 did in the lab (docs/research/postfix-mx-walk.md, section 5):
every attempt starts at the lowest preference, moves on after a refused connection, a 4xx or
5xx greeting or a 4xx at RCPT or after DATA, stops at a 250 after DATA or a 5xx at RCPT, and
gives up for this attempt after `session_limit` sessions that got past EHLO (Postfix: 2) or
5 addresses. Exim tries every host (`session_limit=None`). Between attempts the sender waits
with the world's clock (`World.advance`), which the tests move by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib

SENDER = "news@sender.test"
RECIPIENT = "alice@example.test"
#: a sender's retry schedule in seconds (Postfix: minimal_backoff_time 300 s, doubling)
RETRIES = (330.0, 660.0, 1320.0, 2640.0)


@dataclass(frozen=True)
class MxTarget:
    host: str
    preference: int | None
    ip: str
    port: int


@dataclass
class Hop:
    """One contact with one MX, as the sender saw it."""

    host: str
    outcome: str  # refused, greet4xx, greet5xx, mail4xx, mail5xx, rcpt4xx, rcpt5xx,
    #              data4xx, data5xx, delivered, dropped
    code: int | None = None
    text: str = ""

    @property
    def session(self) -> bool:
        """Counts against Postfix's smtp_mx_session_limit (got past EHLO)."""
        return self.outcome not in ("refused", "greet4xx", "greet5xx", "dropped")

    @property
    def final(self) -> bool:
        return self.outcome == "delivered" or (self.outcome.endswith("5xx") and self.session)


@dataclass
class Attempt:
    hops: list[Hop] = field(default_factory=list)

    @property
    def result(self) -> str:
        if any(h.outcome == "delivered" for h in self.hops):
            return "delivered"
        if any(h.final for h in self.hops):
            return "bounced"
        return "deferred"


@dataclass
class MessageLog:
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return any(a.result == "delivered" for a in self.attempts)

    @property
    def refused(self) -> bool:
        return any(a.result == "bounced" for a in self.attempts)

    @property
    def delayed(self) -> bool:
        """Not delivered at the first attempt, and not refused either: it waited."""
        return bool(self.attempts) and self.attempts[0].result == "deferred" and not self.refused

    def codes(self) -> list[tuple[str, str, int | None]]:
        return [(h.host, h.outcome, h.code) for a in self.attempts for h in a.hops]


@dataclass
class World:
    """What a behaviour knows: the published MX hosts, a retired address, and the clock."""

    mxs: list[MxTarget]  # published, any order
    retired: MxTarget | None
    advance: Callable[[float], Awaitable[None]]
    #: the hosts a bot script aims at by name ("primary", "backup"): a bot reads the same
    #: MX records, and these are the ones it picks
    named: dict[str, MxTarget] = field(default_factory=dict)

    def by_preference(self) -> list[MxTarget]:
        return sorted(self.mxs, key=lambda m: m.preference or 0)

    def host(self, name: str) -> MxTarget:
        return next(
            m for m in [*self.mxs, *([self.retired] if self.retired else [])] if m.host == name
        )


def message(tag: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@sender.test>\r\n\r\nHello from {tag}.\r\n"
    ).encode()


def _client(mx: MxTarget, ip: str) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=mx.ip,
        port=mx.port,
        source_address=(ip, 0),
        local_hostname="mta.sender.test",
        timeout=10,
        start_tls=False,
    )


async def _open(mx: MxTarget, ip: str) -> tuple[aiosmtplib.SMTP | None, Hop | None]:
    smtp = _client(mx, ip)
    try:
        await smtp.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        kind = "greet4xx" if 400 <= exc.code < 500 else "greet5xx"
        return None, Hop(mx.host, kind, exc.code, exc.message)
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError):
        return None, Hop(mx.host, "refused")
    return smtp, None


async def _transaction(smtp: aiosmtplib.SMTP, mx: MxTarget, data: bytes) -> Hop:
    step = "mail"
    try:
        await smtp.ehlo()
        await smtp.mail(SENDER)
        step = "rcpt"
        await smtp.rcpt(RECIPIENT)
        step = "data"
        _, text = await smtp.data(data)
        return Hop(mx.host, "delivered", 250, text)
    except aiosmtplib.SMTPServerDisconnected:
        return Hop(mx.host, "dropped")
    except aiosmtplib.SMTPResponseException as exc:
        kind = "4xx" if 400 <= exc.code < 500 else "5xx"
        return Hop(mx.host, f"{step}{kind}", exc.code, exc.message)
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()
        smtp.close()


async def contact(mx: MxTarget, ip: str, data: bytes) -> Hop:
    """One whole contact: connect, EHLO, MAIL, RCPT, DATA, QUIT; what the MX answered."""
    smtp, refused = await _open(mx, ip)
    if smtp is None:
        assert refused is not None
        return refused
    return await _transaction(smtp, mx, data)


async def mta_attempt(
    world: World, ip: str, data: bytes, session_limit: int | None = 2, address_limit: int = 5
) -> Attempt:
    """One delivery attempt of a real MTA: up the MX list until it is taken or refused."""
    attempt = Attempt()
    sessions = 0
    for mx in world.by_preference()[:address_limit]:
        hop = await contact(mx, ip, data)
        attempt.hops.append(hop)
        if hop.outcome == "delivered" or hop.final:
            break
        sessions += hop.session
        if session_limit is not None and sessions >= session_limit:
            break
    return attempt


async def rfc_sender(world: World, ip: str, session_limit: int | None = 2) -> list[MessageLog]:
    """A standards-following MTA (Postfix by default): walks in order and retries."""
    log = MessageLog()
    data = message(f"rfc-{ip}")
    for wait in (0.0, *RETRIES):
        if wait:
            await world.advance(wait)
        attempt = await mta_attempt(world, ip, data, session_limit)
        log.attempts.append(attempt)
        if attempt.result != "deferred":
            break
    return [log]


async def exim_sender(world: World, ip: str) -> list[MessageLog]:
    """Exim walks every MX host in one attempt (no session limit), so it reaches the trap."""
    return await rfc_sender(world, ip, session_limit=None)


async def bot_highest(world: World, ip: str) -> list[MessageLog]:
    """Straight to the highest-numbered MX (seed 002); later, one try at the primary."""
    log = MessageLog()
    ordered = world.by_preference()
    data = message(f"bot-highest-{ip}")
    log.attempts.append(Attempt([await contact(ordered[-1], ip, data)]))
    log.attempts.append(Attempt([await contact(world.named["primary"], ip, data)]))
    return [log]


async def bot_backup(world: World, ip: str) -> list[MessageLog]:
    """Starts at the backup while the primary is up, and keeps coming back there."""
    log = MessageLog()
    backup = world.named["backup"]
    data = message(f"bot-backup-{ip}")
    for wait in (0.0, *RETRIES[:2]):
        if wait:
            await world.advance(wait)
        attempt = Attempt([await contact(backup, ip, data)])
        log.attempts.append(attempt)
        if attempt.result != "deferred":
            break
    return [log]


async def bot_blast(world: World, ip: str) -> list[MessageLog]:
    """Opens a session to every MX at once (highest first) and pushes the message through all."""
    log = MessageLog()
    data = message(f"bot-blast-{ip}")
    opened: list[tuple[MxTarget, aiosmtplib.SMTP]] = []
    attempt = Attempt()
    for mx in reversed(world.by_preference()):
        smtp, refused = await _open(mx, ip)
        if smtp is None:
            assert refused is not None
            attempt.hops.append(refused)
        else:
            opened.append((mx, smtp))
    attempt.hops += await asyncio.gather(*(_transaction(s, mx, data) for mx, s in opened))
    log.attempts.append(attempt)
    return [log]


async def bot_retired(world: World, ip: str) -> list[MessageLog]:
    """Comes to an address that is no longer in DNS (seed 001); later, tries the primary."""
    assert world.retired is not None
    log = MessageLog()
    data = message(f"bot-retired-{ip}")
    log.attempts.append(Attempt([await contact(world.retired, ip, data)]))
    log.attempts.append(Attempt([await contact(world.named["primary"], ip, data)]))
    return [log]
