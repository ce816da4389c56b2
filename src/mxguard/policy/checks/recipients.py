"""Recipient validation at RCPT: an unknown user is refused now, never accepted and dropped later.

Refusing at RCPT is what keeps a backup from bouncing to forged senders (seed 004).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mxguard.policy.address import AddressKind, classify
from mxguard.policy.checks.base import NOT_NOW, Check, NotNow
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

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        rcpt = facts.recipient or ""
        addr = classify(rcpt, self.local_domains())
        if addr.kind is not AddressKind.LOCAL:
            return None  # relay control answers for these
        known = self.lookup(addr.local, addr.domain)
        if known is None:
            return NOT_NOW if self.callout else self._unverified(rcpt)
        return None if known else self._unknown(rcpt)

    async def check(self, facts: Facts) -> Verdict | None:
        now = self.check_now(facts)
        if now is not NOT_NOW:
            return now  # type: ignore[return-value]
        rcpt = facts.recipient or ""
        assert self.callout is not None
        known = await self.callout(rcpt)
        if known is None:
            return self._unverified(rcpt)
        return None if known else self._unknown(rcpt)

    @staticmethod
    def _unverified(rcpt: str) -> Verdict:
        return tempfail(
            "recipient_unverified",
            f"<{rcpt}>: Recipient address cannot be verified now, try again later",
            451,
            "4.4.3",
        )

    @staticmethod
    def _unknown(rcpt: str) -> Verdict:
        return reject(
            "unknown_recipient", f"<{rcpt}>: Recipient address rejected: User unknown", 550, "5.1.1"
        )
