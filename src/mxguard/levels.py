"""Levels that live in the state store (greylist size, blocklist size), as `Server.gauges`.

A gauge is read synchronously when metrics are scraped and must not wait, while counting
entries in the store takes a round trip (a SCAN on Redis). So each read returns the last
count and, when that is older than `every` seconds, starts one recount in the background:
an idle mxguard that nobody scrapes never counts anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("mxguard.metrics")


class StoredLevel:
    def __init__(self, name: str, count: Callable[[], Awaitable[int]], every: float = 30.0) -> None:
        self.name = name
        self.count = count
        self.every = every
        self.value: float | None = None
        self._asked = -float("inf")
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        """The last count; LookupError before the first one (the gauge is left out then)."""
        mono = time.monotonic()
        if mono - self._asked >= self.every and (self._task is None or self._task.done()):
            self._asked = mono
            try:
                self._task = asyncio.get_running_loop().create_task(self._recount())
            except RuntimeError:  # no loop: a tool reading the gauges offline
                pass
        if self.value is None:
            raise LookupError(f"{self.name}: not counted yet")
        return self.value

    async def _recount(self) -> None:
        try:
            self.value = float(await self.count())
        except Exception as exc:  # the store may be down; the last count stays
            log.warning("metrics: counting %s: %s", self.name, exc)
