"""The shape of a policy check: one question, asked at some stages, answered from facts and state.

A check never does I/O of its own beyond the state interface it was given, and never reads the
clock (`facts.now` is the time). Returning None means "no opinion"; the engine moves on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mxguard.policy.facts import Facts, Role, Stage
from mxguard.policy.verdict import Verdict

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
