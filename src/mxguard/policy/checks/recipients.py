"""Recipient validation at RCPT: an unknown user is refused now, never accepted and dropped later.

Refusing at RCPT is what keeps a backup from bouncing to forged senders (seed 004).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mxguard.policy.address import AddressKind, classify
from mxguard.policy.checks.base import Check
from mxguard.policy.facts import Facts, Role, Stage
from mxguard.policy.verdict import Verdict, reject, tempfail

#: lookup(local, domain) -> True known, False unknown, None ask the callout
Lookup = Callable[[str, str], bool | None]
#: callout(address) -> True known, False unknown, None could not ask
Callout = Callable[[str], Awaitable[bool | None]]


class RecipientCheck(Check):
    name = "recipients"
    stages = frozenset({Stage.RCPT})
    roles = frozenset({Role.PRIMARY, Role.BACKUP})

    def __init__(
        self,
        local_domains: Callable[[], frozenset[str]],
        lookup: Lookup,
        callout: Callout | None = None,
    ) -> None:
        self.local_domains = local_domains
        self.lookup = lookup
        self.callout = callout

    async def check(self, facts: Facts) -> Verdict | None:
        rcpt = facts.recipient or ""
        addr = classify(rcpt, self.local_domains())
        if addr.kind is not AddressKind.LOCAL:
            return None  # relay control answers for these
        known = self.lookup(addr.local, addr.domain)
        if known is None:
            known = await self.callout(rcpt) if self.callout else None
            if known is None:
                return tempfail(
                    "recipient_unverified",
                    f"<{rcpt}>: Recipient address cannot be verified now, try again later",
                    451,
                    "4.4.3",
                )
        if known:
            return None
        return reject(
            "unknown_recipient",
            f"<{rcpt}>: Recipient address rejected: User unknown",
            550,
            "5.1.1",
        )
