"""A virtual clock and an event heap: a simulated week runs as fast as the events can be handled.

The policy core takes `now` from its facts and the memory state takes it as an argument, so
nothing in a simulated session ever reads the wall clock; all the simulator needs is "what
happens next, and when". Events at the same time run in the order they were scheduled (the
sequence number breaks ties), which keeps runs reproducible.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class SimAwaitError(RuntimeError):
    """A check awaited something that really waits (a socket, a timer): not simulatable."""


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, without an event loop.

    The checks only await the state store, and `MemoryState` answers without suspending, so
    one `send(None)` runs a whole `PolicyEngine.decide` to its end. This is several times
    cheaper than a trip through an asyncio loop per decision (see bench/simulate/README.md);
    a coroutine that does suspend is a bug in the set-up (a real network state, a DNS
    lookup in a check) and is reported, never silently waited for.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise SimAwaitError("a policy check awaited real I/O; the simulator needs memory state")


@contextlib.contextmanager
def fewer_collections(young: int = 50_000) -> Iterator[None]:
    """Let the young generation grow to `young` objects before a collection, for a run.

    A simulated day allocates millions of short-lived objects (facts, verdicts, records)
    and the default threshold (700) runs a collection every few sessions, each walking
    objects that are about to die anyway: about a tenth of a run's time. The few cycles a
    run makes are still collected, only in larger batches; the threshold is put back after.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(young, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


class EventLoop:
    """Timed callbacks on a virtual clock."""

    __slots__ = ("_heap", "_seq", "handled", "live", "now")

    def __init__(self, start: float) -> None:
        self.now = start
        self._heap: list[tuple[float, int, bool, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.handled = 0
        self.live = 0  # queued events that are not housekeeping

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` at virtual time `when` (never earlier than now)."""
        self._seq += 1
        self.live += 1
        t = when if when > self.now else self.now
        heapq.heappush(self._heap, (t, self._seq, False, fn, args))

    def series(self, events: Sequence[tuple[float, Callable[..., None], tuple[Any, ...]]]) -> None:
        """`at(when, fn, *args)` for each of `events`, given in time order, queued one at a
        time: each takes its place in the heap when the one before it runs.

        A run's arrivals (every message of the day) are known before it starts: queued all
        at once they made the heap tens of thousands of entries deep, and every push and pop
        of the whole run paid for that depth. Each event keeps the sequence number `at`
        would have given it now, so the order of everything is the same.
        """
        if not events:
            return
        now = self.now
        times = [when if when > now else now for when, _, _ in events]
        if any(b < a for a, b in itertools.pairwise(times)):
            for when, fn, args in events:  # not in order: one at a time would be wrong
                self.at(when, fn, *args)
            return
        first = self._seq + 1
        self._seq += len(events)
        self.live += len(events)
        step = self._series_step
        heapq.heappush(self._heap, (times[0], first, False, step, (events, times, first, 0)))

    def _series_step(
        self,
        events: Sequence[tuple[float, Callable[..., None], tuple[Any, ...]]],
        times: list[float],
        first: int,
        i: int,
    ) -> None:
        j = i + 1
        if j < len(events):  # the next one takes its place before this one runs
            heapq.heappush(self._heap, (times[j], first + j, False, self._series_step,
                                        (events, times, first, j)))  # fmt: skip
        _, fn, args = events[i]
        fn(*args)

    def housekeeping(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Like `at`, for background chores (heartbeats): they alone do not keep a run going."""
        self._seq += 1
        t = when if when > self.now else self.now
        heapq.heappush(self._heap, (t, self._seq, True, fn, args))

    def run(self, until: float, max_events: int = 0) -> bool:
        """Handle events up to `until`, or until only housekeeping is left.

        With `max_events`, stop after that many (the caller may resume); returns whether
        there is more to do before `until`.
        """
        heap = self._heap
        pop = heapq.heappop
        n = 0
        while heap and self.live and heap[0][0] <= until:
            when, _, chore, fn, args = pop(heap)
            if not chore:
                self.live -= 1
            self.now = when
            fn(*args)
            n += 1
            if n == max_events:
                self.handled += n
                return True
        self.handled += n
        return False

    def pending(self) -> int:
        return len(self._heap)
