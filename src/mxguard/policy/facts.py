"""What an adapter knows about a session at one stage, handed to the policy core.

Adapters (the SMTP listener, the Postfix policy server, the simulator) gather these facts,
including DNS answers and early talk, so that no check ever does I/O or reads the clock.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, fields
from typing import Any

from mxguard.slotinit import fill_slots

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Stage(enum.StrEnum):
    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command, before the body
    EOM = "eom"  # end of message, the body received


class Role(enum.StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"
    TRAP = "trap"
    RETIRED = "retired"
    FAKE = "fake"


@dataclass(frozen=True, slots=True)
class MxInfo:
    """The MX host that received the session, as the config describes it."""

    host: str
    role: Role
    preference: int | None = None


@dataclass(frozen=True, slots=True)
class DnsListAnswer:
    """One DNSBL/DNSWL zone's answer for the client address.

    `addresses` empty and `error` None means "not listed" (NXDOMAIN). `error` set means the
    answer is unknown (timeout, SERVFAIL, or an answer in 127.255.255.0/24).
    """

    zone: str
    addresses: tuple[str, ...] = ()
    error: str | None = None


@fill_slots
@dataclass(frozen=True, slots=True)
class Facts:
    stage: Stage
    now: float
    client_ip: IPAddress
    mx: MxInfo
    session_id: str = ""
    client_name: str | None = None  # reverse DNS, when known
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    sender: str | None = None  # "" is the null sender
    recipient: str | None = None  # the recipient of this RCPT
    recipients: tuple[str, ...] = ()  # recipients accepted so far
    size: int | None = None  # SIZE= at MAIL, the real size at EOM
    dnsbl: tuple[DnsListAnswer, ...] | None = None  # None: not looked up
    pregreet: bytes | None = None  # what the client sent before the greeting ended
    # Set by an adapter for a client that this MX trusts to have screened the sender already
    # (a backup of ours forwarding to the primary, a content filter re-injecting).
    trusted_peer: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def at(self, stage: Stage, **changes: Any) -> Facts:
        """A copy for another stage; hand-written because dataclasses.replace is slow on a hot path."""
        get = changes.get
        return Facts(
            stage,
            get("now", self.now),
            get("client_ip", self.client_ip),
            get("mx", self.mx),
            get("session_id", self.session_id),
            get("client_name", self.client_name),
            get("helo", self.helo),
            get("esmtp", self.esmtp),
            get("tls", self.tls),
            get("sender", self.sender),
            get("recipient", self.recipient),
            get("recipients", self.recipients),
            get("size", self.size),
            get("dnsbl", self.dnsbl),
            get("pregreet", self.pregreet),
            get("trusted_peer", self.trusted_peer),
            get("extra", self.extra),
        )


# Facts.at lists every field by position: fail at import if a field is added without it.
assert [f.name for f in fields(Facts)] == [
    "stage",
    "now",
    "client_ip",
    "mx",
    "session_id",
    "client_name",
    "helo",
    "esmtp",
    "tls",
    "sender",
    "recipient",
    "recipients",
    "size",
    "dnsbl",
    "pregreet",
    "trusted_peer",
    "extra",
], "update Facts.at for the new field"
