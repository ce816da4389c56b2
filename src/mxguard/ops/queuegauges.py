"""Queue depth, oldest message and deliveries of each backup spool, as `Server.gauges`.

Until the queue feature publishes its own gauges, this reads each spool's index the way
`mxguard queue stats` does: a `SpoolIndex` of our own on the same WAL database, on a
thread of our own, once a second. Scrapes then read the cached numbers and never wait on
SQLite. The spools are found through the backup listeners' sinks (`sink.spool`), so the
queue feature stays the only place that knows where a spool lives. When the queue feature
registers a 'queue_messages{mx=...}' gauge itself, this one steps aside for that MX.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxguard.serve import Server

log = logging.getLogger("mxguard.metrics")

#: spool counter names -> the outcome label operators know
OUTCOMES = {"delivered": "delivered", "held_ever": "held"}


class QueueGauges:
    def __init__(self, server: Server, interval: float = 1.0) -> None:
        self.server = server
        self.interval = interval
        self.stats: dict[str, dict[str, Any]] = {}  # mx host -> last SpoolIndex.stats()
        self._indexes: dict[str, Any] = {}  # mx host -> our own SpoolIndex
        self._roots: dict[str, Path] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mxguard-qstat")

    def _discover(self) -> None:
        for listener in self.server.listeners:
            host = listener.mx.host
            spool = getattr(listener.sink, "spool", None)
            if spool is None or host in self._roots:
                continue
            if any(
                k.startswith("queue_messages{") and f'"{host}"' in k for k in self.server.gauges
            ):
                continue  # the queue feature publishes this one itself
            self._roots[host] = Path(spool.root)
            self._register(host)

    def _register(self, host: str) -> None:
        g = self.server.gauges
        mx = f'mx="{host}"'
        g[f'queue_messages{{{mx},state="queued"}}'] = lambda: self._get(host, "queued")
        g[f'queue_messages{{{mx},state="held"}}'] = lambda: self._get(host, "held")
        g[f"queue_bytes{{{mx}}}"] = lambda: self._get(host, "bytes")
        g[f"queue_oldest_message_seconds{{{mx}}}"] = lambda: self._age(host)
        for counter, outcome in OUTCOMES.items():
            g[f'queue_deliveries_total{{{mx},outcome="{outcome}"}}'] = functools.partial(
                self._get, host, counter
            )

    def _get(self, host: str, key: str) -> float:
        return float(self.stats.get(host, {}).get(key) or 0)

    def _age(self, host: str) -> float:
        oldest = self.stats.get(host, {}).get("oldest")
        if not oldest:
            return 0.0
        rt = self.server.runtime
        now = rt.clock() if rt is not None else 0.0
        return max(0.0, now - float(oldest))

    def _read(self, host: str) -> dict[str, Any]:
        from mxguard.queue.spool import SpoolIndex

        index = self._indexes.get(host)
        if index is None:
            index = self._indexes[host] = SpoolIndex(self._roots[host])
        stats: dict[str, Any] = index.stats()
        return stats

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._discover()
            for host in list(self._roots):
                try:
                    self.stats[host] = await loop.run_in_executor(self._executor, self._read, host)
                except Exception as exc:  # a busy or broken index: keep the last numbers
                    log.debug("queue stats for %s: %s", host, exc)
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        def close_all() -> None:
            for index in self._indexes.values():
                with contextlib.suppress(Exception):
                    index.close()

        self._executor.submit(close_all)
        self._executor.shutdown(wait=True)
