"""What mxguard does while the shared state is down (`[state].on_unavailable`).

A shared store is a single point of failure for the whole MX tier (postscreen's own warning
about sharing its cache), so mail flow must not depend on it:

- ``"tempfail"``: checks that need state get `StateUnavailable`, which the SMTP listener
  turns into ``451 4.3.0``; senders retry later and nothing is accepted without a decision.
- ``"local"``: while the shared store is down, decisions use a local SQLite store
  (`[state].local_fallback`). This host then decides alone: greylist entries and counters
  made during the outage stay local and are not merged back, so a sender greylisted here
  during the outage may be greylisted once more by the shared store afterwards.

The wrapper notices an outage on the first call that fails, logs it once, and from then on
answers from the fallback (or fails fast) without touching the dead store, so messages do not
each wait for a connect timeout. A background probe pings the store with growing pauses and
switches back when it answers, logging the recovery once with what happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from mxguard.state.base import GreylistResult, StateStore, StateUnavailable

if TYPE_CHECKING:
    from mxguard.config import StateSettings

T = TypeVar("T")
Mode = Literal["tempfail", "local"]

log = logging.getLogger("mxguard.state")

#: backends on another machine, which can be unreachable while this host is fine
REMOTE_KINDS = frozenset({"redis"})
#: the entry the reconnect probe writes
PROBE_KEY = "probe:failover"


class FailoverState(StateStore):
    """`primary` while it answers; `fallback` (mode "local") or fast `StateUnavailable` if not."""

    def __init__(
        self,
        primary: StateStore,
        fallback: StateStore | None,
        mode: Mode,
        *,
        probe_min: float = 0.25,
        probe_max: float = 5.0,
    ) -> None:
        if mode == "local" and fallback is None:
            raise ValueError('on_unavailable = "local" needs a local fallback store')
        self.primary = primary
        self.fallback = fallback if mode == "local" else None
        self.mode: Mode = mode
        self.kind = primary.kind
        self.probe_min, self.probe_max = probe_min, probe_max
        self._down_since: float | None = None
        self._missed = 0  # calls answered without the primary during the current outage
        self._probe: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def available(self) -> bool:
        """Is the shared store in use right now (False during an outage)?"""
        return self._down_since is None

    # ------------------------------------------------------------ outage bookkeeping

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._missed = 0
        then = (
            "deciding from the local fallback"
            if self.mode == "local"
            else "tempfailing checks that need it"
        )
        log.error("shared state %s unavailable (%s); %s until it is back", self.kind, exc, then)
        if not self._closed:
            self._probe = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        pause = self.probe_min
        while True:
            await asyncio.sleep(pause)
            try:
                # a write, not a PING: a store that answers PING may still refuse writes (a
                # demoted primary, one out of memory), and flipping back to it would only
                # start the next outage, logged again
                await self.primary.put(PROBE_KEY, "1", 60.0, time.time())
                break
            except StateUnavailable:
                pass
            pause = min(pause * 2, self.probe_max)
        assert self._down_since is not None
        took = time.monotonic() - self._down_since
        what = "answered locally" if self.mode == "local" else "tempfailed"
        log.warning(
            "shared state %s is back after %.1f s; %d state calls were %s meanwhile",
            self.kind,
            took,
            self._missed,
            what,
        )
        self._down_since = None
        self._probe = None

    async def _call(self, op: Callable[[StateStore], Awaitable[T]]) -> T:
        if self._down_since is None:
            try:
                return await op(self.primary)
            except StateUnavailable as exc:
                self._mark_down(exc)
        self._missed += 1
        if self.fallback is None:
            raise StateUnavailable(f"shared state {self.kind} is unavailable")
        return await op(self.fallback)

    # ------------------------------------------------------------ the interface

    async def get(self, key: str, now: float) -> str | None:
        return await self._call(lambda s: s.get(key, now))

    async def put(self, key: str, value: str, ttl: float, now: float) -> None:
        await self._call(lambda s: s.put(key, value, ttl, now))

    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        return await self._call(lambda s: s.put_if_absent(key, value, ttl, now))

    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        return await self._call(lambda s: s.compare_and_put(key, expected, value, ttl, now))

    async def delete(self, key: str) -> bool:
        return await self._call(lambda s: s.delete(key))

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        return await self._call(lambda s: s.counter_add(key, amount, window, now))

    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        await self._call(lambda s: s.hash_put(key, field, value, ttl, now))

    async def hash_get(self, key: str, now: float) -> dict[str, str]:
        return await self._call(lambda s: s.hash_get(key, now))

    async def hash_delete(self, key: str, field: str) -> bool:
        return await self._call(lambda s: s.hash_delete(key, field))

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        return await self._call(lambda s: s.greylist(key, now, delay, retry_window, pass_ttl))

    async def count(self, use: str, now: float) -> int:
        return await self._call(lambda s: s.count(use, now))

    async def ping(self) -> bool:
        """True only when the shared store answers; the fallback keeps mail moving, not health."""
        if self._down_since is not None:
            return False
        try:
            return await self.primary.ping()
        except StateUnavailable as exc:
            self._mark_down(exc)
            return False

    async def purge_expired(self, now: float) -> int:
        n = 0
        if self.fallback is not None:
            n += await self.fallback.purge_expired(now)
        if self._down_since is None:
            with contextlib.suppress(StateUnavailable):
                n += await self.primary.purge_expired(now)
        return n

    async def open(self) -> None:
        """Open the fallback; a primary that is down at start-up is an outage, not an error.

        mxguard must start and answer mail when the shared store is down (a reboot of the
        whole room brings the MX up before Redis, say); the outage is logged like any other.
        """
        if self.fallback is not None:
            await _open(self.fallback)
        try:
            await _open(self.primary)
        except StateUnavailable as exc:
            self._mark_down(exc)

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()


async def _open(store: StateStore) -> None:
    open_fn = getattr(store, "open", None)
    if open_fn is not None:
        await open_fn()


def open_configured_state(settings: StateSettings) -> StateStore:
    """The store `[state]` asks for; a remote store comes wrapped in its outage policy."""
    from mxguard.state import open_state

    primary = open_state(settings.url, key_prefix=settings.key_prefix)
    if primary.kind not in REMOTE_KINDS:
        return primary
    fallback = open_state(settings.local_fallback) if settings.on_unavailable == "local" else None
    return FailoverState(primary, fallback, settings.on_unavailable)
