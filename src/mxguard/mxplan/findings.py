"""Findings: what `plan` and `audit` report, as data, so rendering and exit codes stay separate.

Both commands judge the same thing (an MX layout), once from the config and once from DNS and
the wire, so they share the finding shape and the one rule that needs arithmetic: how many
addresses a sender tries before it gives up on a delivery.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mxguard.policy.facts import Role

#: Postfix's smtp_mx_address_limit: addresses tried per delivery, A and AAAA alike
#: (research/postfix-mx-walk.md section 0, scenario l: the sixth host was never contacted)
SENDER_ADDRESS_LIMIT = 5

#: roles that take mail; the others exist to catch senders that break the rules
REAL_ROLES = frozenset({Role.PRIMARY, Role.BACKUP})


class Severity(enum.IntEnum):
    """Ordered, so `--fail-on warning` is a comparison."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(frozen=True)
class Finding:
    """One problem (or notable fact) with the evidence that shows it and the way to fix it."""

    code: str
    severity: Severity
    subject: str  # the host, address or domain it is about
    message: str
    fix: str = ""
    evidence: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.label,
            "subject": self.subject,
            "message": self.message,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first; stable otherwise, so the order of the checks still reads as a story."""
    return sorted(findings, key=lambda f: -f.severity)


def worst(findings: Iterable[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


def fails(findings: Iterable[Finding], threshold: Severity) -> bool:
    return any(f.severity >= threshold for f in findings)


@dataclass(frozen=True)
class PublishedHost:
    """One MX record with the addresses a sender would find for it, for the limit check."""

    host: str
    role: Role | None  # None: unknown (an audit without role hints)
    preference: int
    addresses: tuple[str, ...]


def address_limit_findings(
    hosts: Sequence[PublishedHost], limit: int = SENDER_ADDRESS_LIMIT
) -> list[Finding]:
    """Which real MX hosts a sender may never reach because lower records used up its limit.

    Senders walk records in preference order and shuffle equal preferences, so the worst case
    for a host is to come last among its equals. A primary that can fall off the list is an
    error (mail defers for as long as the fakes and traps in front answer); a backup is a
    warning; traps and fakes past the limit are only seen by senders that break the rules,
    which is what they are for.
    """
    total = sum(len(h.addresses) for h in hosts)
    if total <= limit:
        return []
    out: list[Finding] = []
    order = ", ".join(
        f"{h.preference} {h.host} ({len(h.addresses)})"
        for h in sorted(hosts, key=lambda h: h.preference)
    )
    evidence = (f"{total} addresses in preference order: {order}", f"sender limit: {limit}")
    for h in hosts:
        if h.role is not None and h.role not in REAL_ROLES:
            continue
        before = sum(
            len(o.addresses)
            for o in hosts
            if o is not h and (o.preference < h.preference or o.preference == h.preference)
        )
        if before + len(h.addresses) <= limit:
            continue
        primary = h.role is Role.PRIMARY or (
            h.role is None and h.preference == min(o.preference for o in hosts)
        )
        unreachable = before >= limit
        what = "none of its addresses" if unreachable else "some of its addresses"
        out.append(
            Finding(
                code="address-limit",
                severity=Severity.ERROR if primary or unreachable else Severity.WARNING,
                subject=h.host,
                message=(
                    f"senders try at most {limit} MX addresses per delivery (A and AAAA count "
                    f"alike); {before} addresses come before or beside {h.host}, so in the "
                    f"worst case {what} are tried"
                ),
                fix=(
                    "publish fewer fake/trap records or fewer addresses per record, or give "
                    "the real hosts lower preference numbers than the fakes and traps"
                ),
                evidence=evidence,
            )
        )
    if not out:
        out.append(
            Finding(
                code="address-limit",
                severity=Severity.INFO,
                subject=", ".join(h.host for h in hosts if h.role not in REAL_ROLES) or "-",
                message=(
                    f"{total} MX addresses: records past the first {limit} are never tried by "
                    "a sender that follows the rules; only senders that skip ahead reach them"
                ),
                fix="nothing to do if those are traps or fakes",
                evidence=evidence,
            )
        )
    return out
