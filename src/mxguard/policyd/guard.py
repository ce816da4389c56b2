"""What the policy server does when shared state fails, and what it learns from greylisting.

A shared cache between MX hosts is a single point of failure (postscreen's own warning). The
SMTP listener answers a failing engine with one tempfail; a policy server beside Postfix can do
better, because Postfix still has its own restrictions after ours: each check is guarded on
its own, so a Redis outage only costs what depends on Redis. `[policyd].on_state_error`:

- `default`: checks whose whole point is a delay (greylisting, the walk check) tempfail with
  DEFER_IF_PERMIT, since letting everything through would silently switch them off; every
  other check has no opinion (DUNNO), so mail keeps flowing.
- `tempfail`: any check that cannot reach its state tempfails (451 4.3.0).
- `dunno`: fail open everywhere.

Errors other than state errors are bugs; they propagate, and the server closes the connection
without a reply, which Postfix answers with its own 451 4.3.5.
"""

from __future__ import annotations

import contextvars
import logging
import sqlite3
import time
from typing import Any, Literal

from mxguard.policy.checks.base import Check, NotNow
from mxguard.policy.engine import PolicyEngine
from mxguard.policy.facts import Facts
from mxguard.policy.verdict import Verdict, tempfail
from mxguard.state.base import GreylistResult, GreylistStatus, StateStore, StateUnavailable

log = logging.getLogger("mxguard.policyd")

Mode = Literal["default", "tempfail", "dunno"]

#: name prefixes of checks whose outage must not mean "accept" in the default mode
SOFT_CHECKS = ("greylist", "walk", "trap")


def _state_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [StateUnavailable, OSError, sqlite3.Error]
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - redis is a dependency, but state may not need it
        pass
    else:
        errors.append(RedisError)
    return tuple(errors)


STATE_ERRORS = _state_errors()

#: per-request notes (set by the guards and the observed state, read by the server)
NOTES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "mxguard_policyd_notes", default=None
)


def _note(key: str, value: Any) -> None:
    notes = NOTES.get()
    if notes is not None:
        notes.setdefault(key, value)


def is_soft(check_name: str) -> bool:
    return check_name.startswith(SOFT_CHECKS)


class _Guarded(Check):
    """Runs one check and turns a state error into the configured answer."""

    name = "guarded"
    stages = frozenset()

    def __init__(self, inner: Check, mode: Mode) -> None:
        self.inner = inner
        self.roles = inner.roles
        self.mode = mode
        self.failures = 0
        self._last_warning = 0.0

    async def check(self, facts: Facts) -> Verdict | None:
        try:
            return await self.inner.check(facts)
        except STATE_ERRORS as exc:
            return self.failed(exc)

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        """The inner check's answer without awaiting, guarded alike: the engine's decide_now
        then needs no coroutine per check, which is most of a policy request's cost."""
        try:
            return self.inner.check_now(facts)
        except STATE_ERRORS as exc:
            return self.failed(exc)

    def failed(self, exc: BaseException) -> Verdict | None:
        self.failures += 1
        _note("state_error", self.inner.name)
        mono = time.monotonic()
        if mono - self._last_warning > 10.0:  # an outage at 1,000 requests/s is one line per 10s
            self._last_warning = mono
            log.warning(
                "policyd: check %s: state unavailable (%s); on_state_error=%s (%d failures)",
                self.inner.name,
                exc,
                self.mode,
                self.failures,
            )
        soft = is_soft(self.inner.name)
        if self.mode == "tempfail" or (self.mode == "default" and soft):
            return tempfail(
                "state_unavailable",
                "Temporary local problem, try again later",
                451,
                "4.3.0",
                soft=soft,
            )
        return None


def guard(check: Check, mode: Mode) -> Check:
    """Wrap `check`, keeping the name, stages and roles the engine plans with."""
    cls = type(
        f"Guarded_{type(check).__name__}",
        (_Guarded,),
        {"name": check.name, "stages": check.stages},
    )
    guarded: Check = cls(check, mode)
    return guarded


def guard_engine(engine: PolicyEngine, mode: Mode) -> PolicyEngine:
    """Guard every check of a freshly built engine (before its first decision)."""
    engine.gates = [guard(c, mode) for c in engine.gates]
    engine.screens = [guard(c, mode) for c in engine.screens]
    return engine


class ObservedState(StateStore):
    """The real store, plus a note when a greylist entry passes, for the optional PREPEND.

    The greylist check answers "no opinion" on a pass; the pass itself (and how long the
    client waited) is only visible here, where the state answers.
    """

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:  # backend extras (open, scripts) pass through
        return getattr(self.inner, name)

    async def get(self, key: str, now: float) -> str | None:
        return await self.inner.get(key, now)

    def get_now(self, key: str, now: float) -> str | NotNow | None:
        return self.inner.get_now(key, now)  # else the base's NOT_NOW hides the fast path

    def counter_add_now(self, key: str, amount: int, window: float, now: float) -> int | NotNow:
        return self.inner.counter_add_now(key, amount, window, now)

    async def put(self, key: str, value: str, ttl: float, now: float) -> None:
        await self.inner.put(key, value, ttl, now)

    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        return await self.inner.put_if_absent(key, value, ttl, now)

    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        return await self.inner.compare_and_put(key, expected, value, ttl, now)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        return await self.inner.counter_add(key, amount, window, now)

    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        await self.inner.hash_put(key, field, value, ttl, now)

    async def hash_get(self, key: str, now: float) -> dict[str, str]:
        return await self.inner.hash_get(key, now)

    async def hash_delete(self, key: str, field: str) -> bool:
        return await self.inner.hash_delete(key, field)

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        result = await self.inner.greylist(key, now, delay, retry_window, pass_ttl)
        if result.status is GreylistStatus.PASSED:
            _note("greylist_passed", now - result.first_seen)
        return result

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
        result = self.inner.greylist_now(
            key, now, delay, retry_window, pass_ttl, pass_counter, allow_after
        )
        if not isinstance(result, NotNow) and result.status is GreylistStatus.PASSED:
            _note("greylist_passed", now - result.first_seen)
        return result

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def count(self, use: str, now: float) -> int:
        return await self.inner.count(use, now)

    async def purge_expired(self, now: float) -> int:
        return await self.inner.purge_expired(now)

    async def close(self) -> None:
        await self.inner.close()
