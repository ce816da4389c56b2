"""A worker thread that takes jobs in batches: one wake-up, one transaction, one fsync round per batch.

Under load, many sessions want the same slow resource at once (SQLite's write lock, fsync on
one disk). Handing the worker every waiting job together turns N thread hand-offs, N
transactions and N journal commits into one of each, which is where the durable primary gets
most of its speed. With one job waiting, it behaves like a plain executor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

J = TypeVar("J")


class BatchWorker(Generic[J]):
    """Runs `process(batch) -> results` on its own thread; `submit(job)` awaits one result.

    `process` returns one item per job, in order: a value, or an exception instance that
    is raised to that job's caller only.
    """

    def __init__(self, name: str, process: Callable[[list[J]], list[Any]], max_batch: int = 256):
        self._process = process
        self._max_batch = max_batch
        self._jobs: list[tuple[J, asyncio.Future[Any], asyncio.AbstractEventLoop]] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, job: J) -> Any:
        return await self.enqueue(job)

    def enqueue(self, job: J) -> asyncio.Future[Any]:
        """Queue `job` now, in order with every job queued before it; its result comes on
        the future. For a caller that must fix the order before it can await."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._cv:
            if self._stopping:
                raise RuntimeError("worker stopped")
            self._jobs.append((job, fut, loop))
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stopping:
                    self._cv.wait()
                if not self._jobs and self._stopping:
                    return
                batch = self._jobs[: self._max_batch]
                del self._jobs[: self._max_batch]
            try:
                results = self._process([job for job, _, _ in batch])
            except BaseException as exc:  # the whole batch failed: every caller hears it
                results = [exc] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, fut, loop), result in zip(batch, results, strict=True):
                by_loop.setdefault(loop, []).append((fut, result))
            for loop, items in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, items)
                except RuntimeError:  # that loop is closed; nobody is waiting any more
                    pass

    def stop(self) -> None:
        """Finish the queued jobs, then end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=30)


def _deliver(items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, result in items:
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
