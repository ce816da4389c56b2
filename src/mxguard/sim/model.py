"""The simulator's small records: a message in flight, what one contact with one MX gave back,
and the per-MX counters.

They are slotted classes with positional construction because a simulated day makes hundreds
of thousands of them; the numbers the report prints are computed from them afterwards.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# How a contact with one MX ended, as the sender sees it (postfix-mx-walk.md, section 2).
REFUSED = 0  # RST: nothing listening (a fake MX, a host that is down and says so)
TIMEOUT = 1  # SYN dropped: the sender waits out its connect timeout
SILENT = 2  # TCP accepted, no banner: the sender waits out its greeting timeout
BANNER_4XX = 3  # 421 (or 450) instead of 220: at capacity, or a screen at CONNECT
BANNER_5XX = 4  # 554 instead of 220
SESSION = 5  # got past the banner and EHLO: per-recipient answers in the contact

KIND_NAMES = ("refused", "timeout", "silent", "banner_4xx", "banner_5xx", "session")


@dataclass(slots=True)
class Contact:
    """One connection to one MX and what each recipient got."""

    kind: int
    code: int = 0  # the banner code, or the last failing code of a session
    delivered: list[str] = field(default_factory=list)  # 250 after the body
    temp: list[str] = field(default_factory=list)  # 4xx at MAIL, RCPT, DATA or the body
    perm: list[str] = field(default_factory=list)  # 5xx at MAIL, RCPT, DATA or the body
    data_sent: bool = False  # the body crossed the wire (load), whatever the final answer

    @property
    def connected(self) -> bool:
        return self.kind >= BANNER_4XX


@dataclass(slots=True)
class SimMessage:
    """One message a sender wants to hand over, and what became of each recipient."""

    id: int
    behaviour: str
    spam: bool
    sender: str
    recipients: tuple[str, ...]
    valid: frozenset[str]  # recipients that exist (the ground truth, not what an MX thinks)
    size: int
    born: float
    host: int  # which sender host (index into the behaviour's hosts)
    listed: bool  # answers positively on the configured DNSBLs
    pending: list[str] = field(default_factory=list)
    attempts: int = 0
    sessions: int = 0  # contacts that reached a banner
    body_sent: bool = False  # some MX received the body (whatever it answered)
    accepted_at: float | None = None  # first 250 after the body at any MX
    delivered: dict[str, float] = field(default_factory=dict)  # rcpt -> time in the mailbox
    bounced: list[str] = field(default_factory=list)  # 5xx: the sender gives up (a DSN)
    gave_up: list[str] = field(default_factory=list)  # expired, or never retried
    dropped: list[str] = field(default_factory=list)  # accepted, then lost behind our back
    backscatter: int = 0  # bounces a backup sent to the (forged) envelope sender
    held: int = 0  # recipients an mxguard backup holds (never dropped, never bounced)
    ip: ipaddress.IPv4Address | None = None
    memo: float = 0.0  # a behaviour's own retry bookkeeping (Exim's last interval)

    @property
    def done(self) -> bool:
        return not self.pending


@dataclass(slots=True)
class MxStats:
    """Load and decisions on one MX host."""

    host: str
    role: str
    preference: int | None
    connections: int = 0  # every SYN that reached the host (refused ones too)
    refused: int = 0
    timeouts: int = 0
    capacity: int = 0  # turned away at the connection cap (421)
    sessions: int = 0  # got a banner
    spam_sessions: int = 0  # of those, sessions of spam senders (the seeds' question)
    bytes: int = 0  # message bodies received (accepted or not)
    accepted: int = 0  # messages answered 250 after the body
    forwarded_in: int = 0  # of those, handed over by our own backup
    reasons: dict[str, int] = field(default_factory=dict)  # refusal reason tag -> count
