"""Parse inputs in worker processes and feed the analysis in log order.

Parsing is per line and stateless, so blocks go to a pool (both cores on a typical
MX box) while the main process only joins the much smaller event stream.  Each file
keeps a few blocks in flight, which is what bounds memory.  Several files (one per
MX) are merged on time so that "first contacted" and the dedup window compare like
with like.  Workers are fresh, lean interpreters (see worker.py).  With several files, the
workers are shared: a file's generator only sends a block when a worker is free.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

from mxguard.logs.analysis import Analysis
from mxguard.logs.blocks import BlockResult, parse_block
from mxguard.logs.inputs import Source
from mxguard.logs.worker import Worker

ADVANCE_EVERY = 20_000
IN_FLIGHT = 1  # blocks queued per worker (the feeding thread keeps workers busy)
# Spans (plain files) queued per worker: a queued span costs a few bytes, so each
# worker has its next block waiting and never idles while the parent merges results.
SPANS_IN_FLIGHT = 2
T = TypeVar("T")
Progress = Callable[[int], None]


def default_jobs(total_bytes: int) -> int:
    if total_bytes and total_bytes < 16 * 1024 * 1024:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


class Runner:
    """Hands blocks to the worker processes (or parses in-process for one job) and
    yields results in input order."""

    def __init__(self, src: Source, jobs: int, processes: bool | None = None) -> None:
        self.jobs = jobs
        use = jobs > 1 if processes is None else processes
        # workers read a plain file themselves (see Source.spans)
        self.direct = src.direct
        fd = src.fileno() if self.direct else None
        self.workers: list[Worker] = [Worker(fd) for _ in range(jobs)] if use else []

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.close()

    def terminate(self) -> None:
        for w in self.workers:
            w.kill()

    def results(self, src: Source) -> Iterator[BlockResult]:
        if not self.workers:
            for data in src.blocks():
                yield parse_block(data)
            return
        if self.direct:
            yield from self._in_order(src.spans(), SPANS_IN_FLIGHT, Worker.send_span)
        else:
            yield from self._in_order(src.blocks(), IN_FLIGHT, Worker.send)

    def _in_order(
        self, jobs: Iterator[T], depth: int, send: Callable[[Worker, T], None]
    ) -> Iterator[BlockResult]:
        # round robin, so results come back in input order; ``depth`` jobs per worker
        order: deque[Worker] = deque()
        free = deque(self.workers * depth)
        for job in jobs:
            if not free:
                w = order.popleft()
                yield w.receive()  # type: ignore[misc]
                free.append(w)
            w = free.popleft()
            send(w, job)
            order.append(w)
        while order:
            yield order.popleft().receive()  # type: ignore[misc]


def run(
    analysis: Analysis, sources: list[Source], jobs: int, progress: Progress | None = None
) -> None:
    if len(sources) == 1:
        runners = [Runner(sources[0], jobs)]
    else:
        # each file gets its own workers so that the time merge can pull from any
        per = max(1, jobs // len(sources))
        runners = [Runner(s, per, processes=jobs > 1 and i < jobs) for i, s in enumerate(sources)]
    try:
        if len(sources) == 1:
            _single(analysis, runners[0], sources[0], progress)
        else:
            _merged(analysis, runners, sources, progress)
        for r in runners:
            r.close()
    except BaseException:
        for r in runners:
            r.terminate()
        raise


def _single(analysis: Analysis, runner: Runner, src: Source, progress: Progress | None) -> None:
    add = analysis.add_event
    last = float("-inf")
    for block in runner.results(src):
        analysis.add_block(0, block)
        for ts, host, ev in block.events:
            add(0, ts, host, ev)
            if ts is not None and ts > last:
                last = ts
        analysis.advance(last)
        if progress is not None:
            progress(src.position())


def _merged(
    analysis: Analysis, runners: list[Runner], sources: list[Source], progress: Progress | None
) -> None:
    positions = [0] * len(sources)

    def events(
        idx: int, src: Source
    ) -> Iterator[tuple[float, int, float | None, str | None, tuple[object, ...]]]:
        last = float("-inf")
        for block in runners[idx].results(src):
            analysis.add_block(idx, block)
            if progress is not None:
                positions[idx] = src.position()
                progress(sum(positions))
            for ts, host, ev in block.events:
                if ts is not None:
                    last = ts
                yield (last, idx, ts, host, ev)

    add = analysis.add_event
    merged = heapq.merge(*(events(i, s) for i, s in enumerate(sources)), key=lambda x: x[0])
    for n, (key, idx, ts, host, ev) in enumerate(merged):
        add(idx, ts, host, ev)
        if n % ADVANCE_EVERY == ADVANCE_EVERY - 1:
            analysis.advance(key)
