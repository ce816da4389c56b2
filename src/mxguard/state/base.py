"""The one small state interface that every policy check talks to.

Every operation is atomic on its own and maps to one round trip on Redis (a single command or
one Lua script), so that two MX hosts racing on the same key cannot both win. Times are passed
in (`now`, seconds since the epoch) so that the simulator can drive the same code on a virtual
clock; a backend that owns a shared clock (Redis) may use its own instead.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from mxguard.notnow import NOT_NOW, NotNow

T = TypeVar("T")


class StateUnavailable(Exception):
    """The backend cannot be reached; callers decide whether to tempfail or fall back."""


class GreylistStatus(enum.StrEnum):
    NEW = "new"  # first sight, or the retry window ran out: the entry was (re)started
    EARLY = "early"  # seen, but the delay has not passed; first-seen is left as it was
    PASSED = "passed"  # this retry passed the delay for the first time
    KNOWN = "known"  # passed before; the pass was refreshed
    ALLOWED = "allowed"  # the network has passed often enough (auto-allow); nothing written


@dataclass(frozen=True, slots=True)
class GreylistResult:
    status: GreylistStatus
    first_seen: float

    @property
    def allowed(self) -> bool:
        return self.status in (GreylistStatus.PASSED, GreylistStatus.KNOWN, GreylistStatus.ALLOWED)


def greylist_transition(
    old: str | None, now: float, delay: float, retry_window: float, pass_ttl: float
) -> tuple[str | None, float, GreylistResult]:
    """Decide one greylist step from the stored value; return (new value or None to keep, ttl, result).

    The value is "<first_seen>|<passed 0/1>". First-seen is never moved by an early retry
    (postgrey's model), so a client that hammers cannot push its own delay forward.
    Every backend runs this same rule (Redis as a Lua twin checked by the contract tests).
    """
    if old is not None:
        first_s, _, passed = old.partition("|")
        first = float(first_s)
        if passed == "1":
            return f"{first!r}|1", pass_ttl, GreylistResult(GreylistStatus.KNOWN, first)
        age = now - first
        if age < delay:
            return None, 0.0, GreylistResult(GreylistStatus.EARLY, first)
        if age <= retry_window:
            return f"{first!r}|1", pass_ttl, GreylistResult(GreylistStatus.PASSED, first)
    return f"{now!r}|0", retry_window, GreylistResult(GreylistStatus.NEW, now)


class StateStore(ABC):
    """Keyed entries, counters and small hashes, each with an expiry."""

    #: a short name for logs and `check-config`: "memory", "sqlite", "redis"
    kind: str = "abstract"
    #: every operation completes without suspending (an in-process store): a caller may run
    #: a coroutine that only awaits this store to its end in place (`complete_now`), instead
    #: of starting a task or leaving a decision pending
    immediate: bool = False

    @abstractmethod
    async def get(self, key: str, now: float) -> str | None: ...

    @abstractmethod
    async def put(self, key: str, value: str, ttl: float, now: float) -> None: ...

    @abstractmethod
    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        """Store `value` unless a live entry exists; return the existing value, or None if stored."""

    @abstractmethod
    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        """Store `value` only if the live entry equals `expected` (None: absent)."""

    @abstractmethod
    async def delete(self, key: str) -> bool: ...

    @abstractmethod
    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        """Add to a counter whose window starts at its first add; return the new total."""

    @abstractmethod
    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        """Set one field; the whole hash expires `ttl` after its latest write."""

    @abstractmethod
    async def hash_get(self, key: str, now: float) -> dict[str, str]: ...

    @abstractmethod
    async def hash_delete(self, key: str, field: str) -> bool: ...

    @abstractmethod
    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        """One atomic greylist step for a hashed triplet key (see `greylist_transition`)."""

    @abstractmethod
    async def count(self, use: str, now: float) -> int:
        """How many live entries have keys starting with `use` + ":" (e.g. "gl" for the
        greylist triplets). A level for metrics, read now and then, never on a decision's
        path: Redis answers it with a SCAN, SQLite off the event loop."""

    def get_now(self, key: str, now: float) -> str | NotNow | None:
        """`get` without awaiting, when the backend can answer without waiting; else NOT_NOW.

        Lets checks that only read (the blocklist on every RCPT) answer from data_received.
        """
        return NOT_NOW

    def counter_add_now(self, key: str, amount: int, window: float, now: float) -> int | NotNow:
        """`counter_add` without awaiting, when the backend can do it without waiting."""
        return NOT_NOW

    def greylist_now(
        self,
        key: str,
        now: float,
        delay: float,
        retry_window: float,
        pass_ttl: float,
        pass_counter: str | None = None,
        allow_after: int = 0,
    ) -> GreylistResult | NotNow:
        """`greylist` without awaiting, when the backend can do it without waiting; else
        NOT_NOW, and nothing was changed.

        On a first pass (PASSED) it also adds 1 to the counter `pass_counter` (window
        `pass_ttl`), in the same atomic step: a caller that cannot await must never be left
        with a pass recorded and its count still to do. With `allow_after` > 0, a
        `pass_counter` that has reached it answers ALLOWED and nothing is written (the
        network's auto-allow, read with the triplet). Lets the greylist check, the one
        check that writes on every RCPT, answer from data_received.
        """
        return NOT_NOW

    def hash_put_now(
        self, key: str, field: str, value: str, ttl: float, now: float
    ) -> NotNow | None:
        """`hash_put` without awaiting, when the backend can write without waiting.

        Lets bookkeeping writes that follow each decision (the walk feature's outcomes) skip
        starting a task of their own.
        """
        return NOT_NOW

    async def ping(self) -> bool:
        return True

    async def purge_expired(self, now: float) -> int:
        """Drop expired entries; backends with native expiry do nothing."""
        return 0

    async def close(self) -> None:
        return None


def complete_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro`, which awaits only an `immediate` store, to its end in place.

    One `send` does it; a coroutine that suspends all the same is a bug (the store's claim,
    or something else awaited) and is reported, never silently dropped.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a coroutine over an immediate state store suspended")
