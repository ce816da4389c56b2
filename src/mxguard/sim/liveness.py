"""Background work of the installed features, replayed on the virtual clock.

In `serve`, features keep some state up to date from outside the policy calls: the walk
feature heartbeats each listener (so a trap can tell "the primary was up and answering"
from "the primary was down"), marks a host sick when it turns clients away at its cap, and
records what each MX answered from the event log. The simulator plays these parts in
virtual time, through the feature's own objects, so the checks read the same state they
would read in production:

- heartbeats: every `beat_every` seconds for each host that is up (not in a "down"
  condition); a host that goes down refusing is marked stopped, as a clean stop of its
  listener does; a host that drops or stays silent just stops beating and goes stale;
- the Runtime's `on_session` hook and the event-log listeners: the simulated sessions call
  them like the listener does; the writes they start as tasks run at once (`EagerTasks`).

Heartbeats are spaced `2 x interval` apart instead of `interval` (still inside the health
check's `stale_after` of 3 intervals, so "up since" is kept): half the work for the same
answers, give or take one interval in when a restarted host counts as up again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from mxguard import features
from mxguard.policy.facts import Role
from mxguard.serve import Server
from mxguard.sim.loop import EventLoop, run_sync
from mxguard.sim.tier import SimMx


class DoneTask:
    """What `create_task` returns in a simulation: the coroutine already ran to its end.

    The walk feature starts its state writes as tasks so that a listener never waits for
    them; in the simulator nothing waits, and running them at once keeps them in order with
    the sessions that caused them. A real `asyncio.Task` would cost a trip through the event
    loop per write; this is the part of the Task interface such callers use.
    """

    __slots__ = ("_exc", "_result")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._result: Any = None
        self._exc: BaseException | None = None
        try:
            self._result = run_sync(coro)
        except Exception as exc:  # handed to whoever asks, as a Task would
            self._exc = exc

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def cancel(self, msg: Any = None) -> bool:
        return False

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._result

    def exception(self) -> BaseException | None:
        return self._exc

    def add_done_callback(self, fn: Callable[[Any], Any], **_: Any) -> None:
        fn(self)

    def remove_done_callback(self, fn: Callable[[Any], Any]) -> int:
        return 0

    def get_name(self) -> str:
        return "sim"

    def set_name(self, name: Any) -> None:
        return None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result()
        yield  # a generator: awaiting a done task returns at once


def eager_task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                       **_: Any) -> DoneTask:  # fmt: skip
    return DoneTask(coro)


class WalkLiveness:
    """Heartbeats and stop marks for the walk feature's `Health`, in virtual time."""

    def __init__(self, feature: Any, loop: EventLoop, mxs: list[SimMx]) -> None:
        self.health = feature.health
        self.loop = loop
        self.every = min(2 * self.health.interval, 0.9 * self.health.stale_after)
        self.mxs = [m for m in mxs if m.role is not Role.FAKE]

    def start(self, t0: float) -> None:
        # up for longer than the health window before the scenario starts
        t = t0 - self.health.window - 2 * self.every
        while t < t0:
            for mx in self.mxs:
                run_sync(self.health.beat(mx.host, t))
            t += self.every
        # one event per round of beats, not one per host: a round's beats always ran back
        # to back (each host's next beat was queued as its last one ran, so nothing else
        # was ever queued between them), and each touches its own host's marks only
        if self.mxs:
            self.loop.housekeeping(t0, self._beats)
        for mx in self.mxs:
            for c in mx.conditions:
                if c.kind == "down" and c.mode == "refuse":
                    self.loop.housekeeping(c.start, self._stopped, mx)

    def _beats(self) -> None:
        loop = self.loop
        now = loop.now
        beat_now = self.health.beat_now
        for mx in self.mxs:
            cond = mx.condition_at(now) if mx.conditions else None
            if (cond is None or cond.kind != "down") and beat_now(mx.host, now) is not None:
                run_sync(self.health.beat(mx.host, now))  # a Health that stores text
        # the run's event count still counts a beat per host, as when each was an event
        loop.handled += len(self.mxs) - 1
        loop.housekeeping(now + self.every, self._beats)

    def _stopped(self, mx: SimMx) -> None:
        run_sync(self.health.stopped(mx.host, self.loop.now))


def walk_feature(server: Server) -> Any | None:
    """The walk feature installed on this server, if that feature exists and is on."""
    feature_of = features.optional("mxguard.walk.feature", "feature_of")
    if feature_of is None:
        return None
    try:
        return feature_of(server)
    except KeyError:
        return None
