"""The decision core: run the checks that apply to a stage and role, first final verdict wins.

Checks come in two kinds. Gates (relay control, recipient validation) run for every client,
because no allowlist may turn an MX into an open relay. Screens (DNSBL, rate limits,
greylisting, the walk check, ...) are skipped for allowlisted clients and for our own trusted
peers, whose checks already judged the real client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mxguard.policy.checks.base import Check, NotNow
from mxguard.policy.facts import Facts, IPAddress, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import ACCEPT, Action, Verdict

_ACCEPT = Action.ACCEPT


class PolicyEngine:
    def __init__(
        self,
        gates: Sequence[Check],
        screens: Sequence[Check],
        allow: NetworkSet | None = None,
        trusted: NetworkSet | None = None,
    ) -> None:
        self.gates = list(gates)
        self.screens = list(screens)
        self.allow = allow or NetworkSet()
        self.trusted = trusted or NetworkSet()
        self._plan: dict[tuple[Stage, Role, bool], list[Check]] = {}

    def checks(self) -> Iterable[Check]:
        return [*self.gates, *self.screens]

    def is_trusted(self, ip: IPAddress) -> bool:
        return ip in self.trusted

    def _checks_for(self, stage: Stage, role: Role, screened: bool) -> list[Check]:
        key = (stage, role, screened)
        plan = self._plan.get(key)
        if plan is None:
            pool = [*self.gates, *self.screens] if screened else self.gates
            plan = [c for c in pool if stage in c.stages and role in c.roles]
            self._plan[key] = plan
        return plan

    def screened(self, facts: Facts) -> bool:
        """Whether the screening checks apply to this client (adapters may cache the answer)."""
        return not (
            facts.trusted_peer or facts.client_ip in self.allow or facts.client_ip in self.trusted
        )

    def has_checks(self, stage: Stage, role: Role, screened: bool) -> bool:
        """Lets an adapter skip building facts for a stage nothing looks at."""
        return bool(self._checks_for(stage, role, screened))

    def decide_now(self, facts: Facts, screened: bool | None = None) -> Verdict | Pending:
        """The verdict, if every check that applies can answer without waiting; else a
        `Pending` that finishes the decision from the first check that has to wait.

        Checks that answered here (some count, like rate limits) are not asked again.
        """
        if screened is None:
            screened = self.screened(facts)
        plan = self._checks_for(facts.stage, facts.mx.role, screened)
        for i, check in enumerate(plan):
            verdict = check.check_now(facts)
            if verdict is not None:
                if isinstance(verdict, NotNow):
                    return Pending(facts, plan, i)
                # `verdict.is_final`, without a property call at every verdict of every stage
                if verdict.action is not _ACCEPT:
                    return verdict
        return ACCEPT

    async def decide(self, facts: Facts, screened: bool | None = None) -> Verdict:
        if screened is None:
            screened = self.screened(facts)
        return await Pending(facts, self._checks_for(facts.stage, facts.mx.role, screened)).finish()


class Pending:
    """The rest of a decision that has to wait for the state."""

    __slots__ = ("facts", "plan", "start")

    def __init__(self, facts: Facts, plan: list[Check], start: int = 0) -> None:
        self.facts, self.plan, self.start = facts, plan, start

    async def finish(self) -> Verdict:
        facts = self.facts
        for check in self.plan[self.start :]:
            verdict = await check.check(facts)
            if verdict is not None and verdict.is_final:
                return verdict
        return ACCEPT
