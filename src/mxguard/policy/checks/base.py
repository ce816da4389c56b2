"""The shape of a policy check: one question, asked at some stages, answered from facts and state.

A check never does I/O of its own beyond the state interface it was given, and never reads the
clock (`facts.now` is the time). Returning None means "no opinion"; the engine moves on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.facts import Facts, Role, Stage
from mxguard.policy.verdict import Verdict

__all__ = ["ALL_ROLES", "NOT_NOW", "Check", "NotNow", "SyncCheck"]

ALL_ROLES = frozenset({Role.PRIMARY, Role.BACKUP, Role.TRAP, Role.RETIRED})


class Check(ABC):
    #: the short name used in config, logs and `check-config`
    name: ClassVar[str]
    #: the stages at which the engine asks this check
    stages: ClassVar[frozenset[Stage]]
    #: the MX roles on which this check runs (a check may narrow this per instance)
    roles: frozenset[Role] = ALL_ROLES

    @abstractmethod
    async def check(self, facts: Facts) -> Verdict | None: ...

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        """The same answer without awaiting, when the check can give one; else NOT_NOW.

        Lets the SMTP listener answer most commands straight from data_received, without a
        task switch per command; checks that need the state keep the default.
        """
        return NOT_NOW


class SyncCheck(Check):
    """A check that decides from the facts alone, so it can always answer at once."""

    @abstractmethod
    def check_now(self, facts: Facts) -> Verdict | None: ...

    async def check(self, facts: Facts) -> Verdict | None:
        return self.check_now(facts)
