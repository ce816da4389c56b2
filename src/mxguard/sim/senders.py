"""Sender behaviours: how each kind of client walks the MX records, and when it tries again.

Each model is small and says where its numbers come from. They answer three questions, and
the runner (`sim/run.py`) does the rest:

- `hosts`: which MX addresses one delivery attempt tries, in which order;
- `moves_on`: after a contact that did not finish the message, does the attempt go on to the
  next address (or stop and wait for a retry)?
- `retry_at`: after an attempt that left recipients pending, when is the next one (None: the
  sender gives up, and those recipients are lost)?

Sources (short names used below):

- PF: a real Postfix 3.7 walking a test domain's MX records, measured while the walk check
  was built (docs/walk.md), and its source: smtp_connect.c, smtp_trouble.c, qmgr_active.c.
- FA: published reports on senders that retry badly or never fall back, and their sources:
  the Exim spec ("Errors in outgoing SMTP", "Default retry rule", hosts_max_try), notqmail's
  qmail-remote.c and qmail-send.c, Microsoft's Exchange 2010 transport parameters, Gmail delay
  DSNs, Broadcom's Email Security.cloud note, Matt Simerson's nolisting report.
- Seeds 000-004 for the bots.
"""

from __future__ import annotations

import math
from random import Random
from typing import ClassVar

from mxguard.sim.model import (
    BANNER_4XX,
    BANNER_5XX,
    REFUSED,
    SESSION,
    SILENT,
    TIMEOUT,
    Contact,
    SimMessage,
)
from mxguard.sim.tier import SimMx, Tier

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def by_preference(records: list[SimMx], rng: Random) -> list[SimMx]:
    """Ascending preference, equal preferences in a fresh random order (RFC 5321 5.1, PF 0.1)."""
    out: list[SimMx] = []
    i = 0
    n = len(records)
    while i < n:
        j = i + 1
        while j < n and records[j].preference == records[i].preference:
            j += 1
        group = records[i:j]
        if len(group) > 1:
            group = group[:]
            rng.shuffle(group)
        out += group
        i = j
    return out


def in_order(tier: Tier, rng: Random) -> list[SimMx]:
    """`by_preference(tier.records, rng)`; asked at every attempt, and without equal
    preferences that is the records' own order (no random draw either way)."""
    if tier.ties:
        return by_preference(tier.records, rng)
    return tier.records[:]


class Behaviour:
    """The shared shape; subclasses override what differs."""

    name: ClassVar[str] = "abstract"
    #: one line: who this is and where the model comes from
    source: ClassVar[str] = ""
    #: a queueing MTA keeps the message and retries; the others lose what they could not hand over
    queueing: ClassVar[bool] = True
    connect_timeout: ClassVar[float] = 30.0  # a dropped SYN costs this much
    greeting_timeout: ClassVar[float] = 300.0  # a silent listener costs this much
    address_limit: ClassVar[int] = 5  # addresses tried per attempt
    session_limit: ClassVar[int] = 0  # sessions past EHLO per attempt; 0: no limit
    fail_on_5xx_greeting: ClassVar[bool] = False  # a 554 banner bounces the message
    send_to_all: ClassVar[bool] = False  # one copy to every MX at once
    pool: ClassVar[int] = 1  # client addresses per sender host (new one per attempt)

    def hosts(self, tier: Tier, rng: Random) -> list[SimMx]:
        return in_order(tier, rng)

    def moves_on(self, c: Contact) -> bool:
        return True

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        return None


class Postfix(Behaviour):
    name = "postfix"
    source = (
        "Postfix 3.7 defaults, measured (PF 5): MX order, every attempt from the lowest; next MX "
        "after RST, timeout, 4xx/5xx banner, 4xx at RCPT or after DATA; 5 addresses, 2 sessions; "
        "retry after clamp(age, 300 s, 4000 s) + queue scan; gives up after 5 days"
    )
    address_limit = 5
    session_limit = 2
    minimal_backoff = 300.0
    maximal_backoff = 4000.0
    queue_run_delay = 300.0
    lifetime = 5 * DAY

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        age = now - msg.born
        if age > self.lifetime:  # expiry is tested after a failed attempt (PF 0.6)
            return None
        wait = min(max(age, self.minimal_backoff), self.maximal_backoff)
        # the deferred queue is scanned every queue_run_delay: up to one scan late (PF 3.3)
        return now + wait + rng.uniform(0.0, self.queue_run_delay)


class Exim(Behaviour):
    name = "exim"
    source = (
        "Exim defaults (FA 4.2, Exim spec): host errors (RST, timeout, 4xx banner) and 4xx at RCPT "
        "try the next host in the same run; a 5xx banner fails the message; hosts_max_try 5; "
        "connect_timeout 5 min; retry rule F,2h,15m; G,16h,1h,1.5; F,4d,6h"
    )
    connect_timeout = 300.0
    fail_on_5xx_greeting = True

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        age = now - msg.born
        if age < 2 * HOUR:
            wait = 15 * MINUTE
        elif age < 16 * HOUR:
            wait = HOUR if msg.memo < HOUR else msg.memo * 1.5
        elif age < 4 * DAY:
            wait = 6 * HOUR
        else:
            return None  # past the last rule's cutoff: bounce
        msg.memo = wait
        return now + wait


class Qmail(Behaviour):
    name = "qmail"
    source = (
        "netqmail/notqmail (FA 3.3, qmail-remote.c): next MX only when the TCP connect fails; once "
        "connected any failure defers the whole message; retry at birth + (isqrt(age) + 20)^2 "
        "(qmail-send.c nextretry, remote channel); queuelifetime 7 days; timeoutconnect 60 s"
    )
    connect_timeout = 60.0
    greeting_timeout = 1200.0  # timeoutremote
    lifetime = 7 * DAY

    def moves_on(self, c: Contact) -> bool:
        return c.kind == REFUSED or c.kind == TIMEOUT

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        age = now - msg.born
        if age > self.lifetime:
            return None
        n = math.isqrt(int(max(age, 0.0))) + 20
        return max(msg.born + n * n, now + 1.0)


class Exchange(Behaviour):
    name = "exchange"
    source = (
        "Microsoft Exchange 2010+ defaults (FA 3.2): TransientFailureRetryCount 6 at 5 min, then "
        "MessageRetryInterval 15 min, MessageExpirationTimeout 2 days. Whether it tries the next "
        "MX after a 4xx at RCPT is not documented; assumed not (it waits and retries)"
    )

    def moves_on(self, c: Contact) -> bool:
        return c.kind != SESSION

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        if now - msg.born > 2 * DAY:
            return None
        return now + (5 * MINUTE if msg.attempts <= 6 else 15 * MINUTE)


class BigProvider(Behaviour):
    name = "bigprovider"
    source = (
        "a large provider (FA 4.2: Gmail DSNs and postfix-users, Broadcom Email Security.cloud): "
        "next MX only after a failed connect, never after a 4xx; every retry from another "
        "address of its pool (8 addresses in 8 networks); retries 5 min doubling to 1 h; about "
        "3 days (Will-Retry-Until). Retry spacing is an assumption"
    )
    pool = 8

    def moves_on(self, c: Contact) -> bool:
        return c.kind == REFUSED or c.kind == TIMEOUT

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        if now - msg.born > 3 * DAY:
            return None
        return now + min(HOUR, 5 * MINUTE * 2.0 ** max(0, msg.attempts - 1))


class InApp(Behaviour):
    name = "inapp"
    source = (
        "in-app/JavaMail-like senders and devices (FA 3.3: Simerson 2013, Wikipedia Nolisting): "
        "the first MX record only, no queue, no retry"
    )
    queueing = False

    def hosts(self, tier: Tier, rng: Random) -> list[SimMx]:
        return in_order(tier, rng)[:1]


# ---------------------------------------------------------------- bots


class BotHighestFirst(Behaviour):
    name = "bot_highest"
    source = (
        "spambot aiming at the highest-numbered MX, once, no retry "
        "(seed 003: 'nothing responds, and they go away'; seeds 002, 004)"
    )
    queueing = False

    def hosts(self, tier: Tier, rng: Random) -> list[SimMx]:
        return in_order(tier, rng)[-1:]


class BotBackupFirst(Behaviour):
    name = "bot_backup_first"
    source = (
        "spam tool inverting MX order, weakest-looking (highest number) first, on to the next "
        "only after a failed connect, one pass, no retry (seed 004; seed 000's 7-14%)"
    )
    queueing = False

    def hosts(self, tier: Tier, rng: Random) -> list[SimMx]:
        return in_order(tier, rng)[::-1]

    def moves_on(self, c: Contact) -> bool:
        return c.kind == REFUSED or c.kind == TIMEOUT


class BotAllAtOnce(Behaviour):
    name = "bot_all_mx"
    source = "spam sent to every MX at once, no retry (seed 000's open question)"
    queueing = False
    send_to_all = True


class BotCached(Behaviour):
    name = "bot_cached"
    source = (
        "bot delivering to an address it cached long ago, ignoring DNS, no retry (seed 001; "
        "seed 000's old secondary): the retired address if the config has one, else the second "
        "MX record"
    )
    queueing = False

    def hosts(self, tier: Tier, rng: Random) -> list[SimMx]:
        if tier.retired:
            return tier.retired[:1]
        real = [m for m in tier.records if m.role.value != "fake"]
        return real[1:2] or real[:1]


class BotPrimaryOnly(Behaviour):
    name = "bot_first_mx"
    source = "bot that tries the first (lowest) MX record once, no fallback, no retry (seed 003)"
    queueing = False

    def hosts(self, tier: Tier, rng: Random) -> list[SimMx]:
        return in_order(tier, rng)[:1]


class RetryingSpamTool(Behaviour):
    name = "spam_retrying"
    source = (
        "spam tool with a queue: walks the MX records in order like an MTA and retries every "
        "15 min for 6 hours from the same address (greylisting lets it through; FA 4.3.4)"
    )
    session_limit = 2

    def retry_at(self, msg: SimMessage, now: float, rng: Random) -> float | None:
        if now - msg.born > 6 * HOUR:
            return None
        return now + 15 * MINUTE


BEHAVIOURS: dict[str, Behaviour] = {
    b.name: b
    for b in (
        Postfix(),
        Exim(),
        Qmail(),
        Exchange(),
        BigProvider(),
        InApp(),
        BotHighestFirst(),
        BotBackupFirst(),
        BotAllAtOnce(),
        BotCached(),
        BotPrimaryOnly(),
        RetryingSpamTool(),
    )
}

__all__ = [
    "BANNER_4XX",
    "BANNER_5XX",
    "BEHAVIOURS",
    "SILENT",
    "Behaviour",
    "by_preference",
]
