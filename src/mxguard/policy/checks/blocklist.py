"""The blocklist check: a client network the trap or a retired address caught is refused tier-wide.

It answers at RCPT rather than at connect so that the refused envelope (sender, recipient)
reaches the event log: that is the evidence an operator reads before lifting an entry. It
also asks at DATA, because a bot blasting every MX at once can be caught at the trap while
its session at the primary is already past RCPT.

At a trap or a retired address it only ever tempfails (a trap never sends a 5xx); the walk
gate answers there first anyway. Being a screen, it never applies to our trusted peers (a
backup forwarding to the primary) or to `[access].allow`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from mxguard.policy.checks.base import NOT_NOW, Check, NotNow
from mxguard.policy.facts import Facts, Role, Stage
from mxguard.policy.verdict import Verdict, reject, tempfail
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.blocklist import Blocklist

_NEVER_5XX = frozenset({Role.TRAP, Role.RETIRED})


class BlocklistCheck(Check):
    name: ClassVar[str] = "blocklist"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.RCPT, Stage.DATA})

    def __init__(self, blocklist: Blocklist, action: Literal["reject", "tempfail"]) -> None:
        self.blocklist = blocklist
        self.action = action

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        entry = self.blocklist.get_now(facts.client_ip, facts.now)
        if isinstance(entry, NotNow):
            return NOT_NOW
        return self._verdict(facts, entry)

    async def check(self, facts: Facts) -> Verdict | None:
        return self._verdict(facts, await self.blocklist.get(facts.client_ip, facts.now))

    def _verdict(self, facts: Facts, entry: BlockEntry | None) -> Verdict | None:
        if entry is None:
            return None
        # the text names the client, never the trap that caught it
        text = f"Service unavailable; client host [{facts.client_ip}] blocked"
        if self.action == "tempfail" or facts.mx.role in _NEVER_5XX:
            return tempfail("blocklisted", text, 450, "4.7.1")
        return reject("blocklisted", text, 554, "5.7.1")
