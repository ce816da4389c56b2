"""Timing wrappers for what the policy waits on: the state backend and the DNSBL client.

They sit between the policy and the real object, so every backend (SQLite, Redis, memory,
the failover wrapper) and every DNS client is measured the same way, without each of them
knowing about Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from mxguard.notnow import NOT_NOW, NotNow
from mxguard.state.base import GreylistResult, StateStore

T = TypeVar("T")


class TimedState(StateStore):
    """A StateStore that records each call's latency and failures by operation."""

    def __init__(self, inner: StateStore, seconds: Histogram, errors: Counter) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.immediate = inner.immediate
        self._seconds = seconds
        self._errors = errors

    def __getattr__(self, name: str) -> Any:
        # open(), available, ... of the wrapped backend; only reached for names not set here
        return getattr(self.inner, name)

    async def _timed(self, op: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await call
        except Exception:
            self._errors.labels(op).inc()
            raise
        finally:
            self._seconds.labels(op).observe(time.perf_counter() - start)

    async def get(self, key: str, now: float) -> str | None:
        return await self._timed("get", self.inner.get(key, now))

    async def put(self, key: str, value: str, ttl: float, now: float) -> None:
        await self._timed("put", self.inner.put(key, value, ttl, now))

    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        return await self._timed("put_if_absent", self.inner.put_if_absent(key, value, ttl, now))

    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        call = self.inner.compare_and_put(key, expected, value, ttl, now)
        return await self._timed("compare_and_put", call)

    async def delete(self, key: str) -> bool:
        return await self._timed("delete", self.inner.delete(key))

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        return await self._timed("counter_add", self.inner.counter_add(key, amount, window, now))

    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        await self._timed("hash_put", self.inner.hash_put(key, field, value, ttl, now))

    async def hash_get(self, key: str, now: float) -> dict[str, str]:
        return await self._timed("hash_get", self.inner.hash_get(key, now))

    async def hash_delete(self, key: str, field: str) -> bool:
        return await self._timed("hash_delete", self.inner.hash_delete(key, field))

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        call = self.inner.greylist(key, now, delay, retry_window, pass_ttl)
        return await self._timed("greylist", call)

    async def ping(self) -> bool:
        return await self._timed("ping", self.inner.ping())

    async def count(self, use: str, now: float) -> int:
        return await self._timed("count", self.inner.count(use, now))

    async def purge_expired(self, now: float) -> int:
        return await self._timed("purge_expired", self.inner.purge_expired(now))

    async def close(self) -> None:
        await self.inner.close()

    # The answers without waiting: without these the base class would say NOT_NOW, and
    # turning metrics on would send every state-reading check down the async path.

    def _timed_now(self, op: str, call: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            result = call()
        except Exception:
            self._errors.labels(op).inc()
            raise
        if result is not NOT_NOW:  # NOT_NOW did nothing: the async call will be timed
            self._seconds.labels(op).observe(time.perf_counter() - start)
        return result

    def get_now(self, key: str, now: float) -> str | NotNow | None:
        return self._timed_now("get", lambda: self.inner.get_now(key, now))

    def counter_add_now(self, key: str, amount: int, window: float, now: float) -> int | NotNow:
        return self._timed_now(
            "counter_add", lambda: self.inner.counter_add_now(key, amount, window, now)
        )

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
        return self._timed_now(
            "greylist",
            lambda: self.inner.greylist_now(
                key, now, delay, retry_window, pass_ttl, pass_counter, allow_after
            ),
        )

    def hash_put_now(
        self, key: str, field: str, value: str, ttl: float, now: float
    ) -> NotNow | None:
        return self._timed_now(
            "hash_put", lambda: self.inner.hash_put_now(key, field, value, ttl, now)
        )


class TimedLookup:
    """A DNSBL client that records how long each client's lookup (all zones) took."""

    def __init__(self, inner: Any, seconds: Histogram) -> None:
        self.inner = inner
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def lookup(self, ip: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.lookup(ip)
        finally:
            self._seconds.observe(time.perf_counter() - start)

    def lookup_now(self, ip: Any) -> Any:
        """A cache hit is a lookup too (it took next to nothing); NOT_NOW is not one."""
        start = time.perf_counter()
        result = self.inner.lookup_now(ip) if hasattr(self.inner, "lookup_now") else NOT_NOW
        if result is not NOT_NOW:
            self._seconds.observe(time.perf_counter() - start)
        return result


def unwrap(obj: Any) -> Any:
    """The real object behind our wrappers (for counters the client keeps itself)."""
    while isinstance(obj, TimedLookup | TimedState):
        obj = obj.inner
    return obj
