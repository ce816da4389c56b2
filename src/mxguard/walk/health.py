"""Liveness of the tier's MX hosts, as every host of the tier can read it from the shared state.

A trap may blocklist a client that skipped the lower MX hosts only if those hosts were
there to be tried: a legitimate sender whose primary refused it, or answered 421 at its
connection cap, walks on to the next host and must not be punished for it. So each process
heartbeats the listeners it runs (``live:<host>``, "up since | last beat"), and marks a host
"sick" (``sick:<host>``) when it refuses clients for its own reasons: over its connection cap,
stopped, or (from the backup's forwarder, later) not accepting mail.

Where mxguard does not run the listener (a Postfix in front, asking `mxguard policyd`), there
is no heartbeat; the sessions that front end reports are the evidence instead
(``ans:<host>``, the latest time it answered a client).

A heartbeated host counts as healthy only when it has been up *continuously* for the whole
health window and was not marked sick within it; a host known only from its sessions, when
it answered a client within the window and was not marked sick. Being wrong in that direction costs little (a bot at the
trap is tempfailed but not blocklisted); the other direction blocklists good senders. A host
that crashes is noticed when its beats stop (`stale_after`), not at once: that short blind
spot is the residual risk, written down in docs/walk.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from mxguard.notnow import NOT_NOW, NotNow
from mxguard.slotinit import fill_slots
from mxguard.state.base import StateStore
from mxguard.walk.ledger import Ledger, ledger_of

LIVE_PREFIX = "live:"
SICK_PREFIX = "sick:"
ANSWERED_PREFIX = "ans:"


def beat_interval(health_window: float) -> float:
    """How often to beat: several beats per window, never slower than every 5 s."""
    return max(0.05, min(5.0, health_window / 4))


@fill_slots
@dataclass(frozen=True, slots=True)
class MxHealth:
    host: str
    healthy: bool
    why: str  # for `explain` and the docs: "up 2m", "no heartbeat", "capacity 3s ago"
    up_since: float | None = None
    last_beat: float | None = None
    sick: str | None = None  # the reason of a sick mark inside the window
    sick_at: float | None = None


@functools.lru_cache(maxsize=1024)
def _split_floats(value: str | None) -> tuple[float, float] | None:
    """Cached: a host's heartbeat is read back at every judged contact until the next beat."""
    if value is None:
        return None
    a, _, b = value.partition("|")
    try:
        return float(a), float(b)
    except ValueError:
        return None


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def judge_health(
    host: str,
    live: str | None,
    sick: str | None,
    now: float,
    window: float,
    stale_after: float,
    answered: str | None = None,
) -> MxHealth:
    """Decide from the stored values; pure, so the table is tested without a clock.

    Heartbeats, when there are any, decide; session evidence (`answered`) only speaks for
    a host nobody heartbeats, so that a crashed listener is not kept alive by the sessions
    it answered just before it died.
    """
    mark = None
    if sick is not None:
        reason, _, at_s = sick.rpartition("|")
        try:
            at = float(at_s)
        except ValueError:
            at = now
        mark = (reason, at)
    beats = _split_floats(live)
    seen = None
    if beats is None and answered is not None:
        try:
            seen = float(answered)
        except ValueError:
            seen = -1e18
    return judge_marks(host, beats, mark, now, window, stale_after, seen)


def judge_marks(
    host: str,
    beats: tuple[float, float] | None,
    mark: tuple[str, float] | None,
    now: float,
    window: float,
    stale_after: float,
    answered: float | None = None,
) -> MxHealth:
    """`judge_health` from the values parsed: (up since, last beat), (sick reason, at) and
    the time of the latest answer; the memory state's ledger keeps them so."""
    sick_reason = sick_at = None
    if mark is not None and mark[1] >= now - window:
        sick_reason, sick_at = mark[0] or "sick", mark[1]
    up_since, last = beats if beats is not None else (None, None)
    case = _case(beats, sick_at, now, window, stale_after, answered)
    if case is _ANSWERED and answered is not None:
        return MxHealth(host, True, f"answered a client {_ago(now - answered)} ago")
    if case is _NO_BEATS:
        why = "no heartbeat" if last is None else f"last heartbeat {_ago(now - last)} ago"
        return MxHealth(host, False, why, up_since, last, sick_reason, sick_at)
    if (case is _ANSWERED_SICK or case is _SICK) and sick_at is not None:
        why = f"{sick_reason} {_ago(now - sick_at)} ago"
        if case is _ANSWERED_SICK:
            return MxHealth(host, False, why, None, None, sick_reason, sick_at)
        return MxHealth(host, False, why, up_since, last, sick_reason, sick_at)
    assert up_since is not None  # the cases left are "up"
    if case is _UP_SHORT:
        why = f"up only {_ago(now - up_since)} (needs {_ago(window)})"
        return MxHealth(host, False, why, up_since, last, None, None)
    return MxHealth(host, True, f"up {_ago(now - up_since)}", up_since, last, None, None)


#: which row of the rule a host's marks fall in (`_case`); two of them are healthy
_ANSWERED_SICK, _ANSWERED, _NO_BEATS, _SICK, _UP_SHORT, _UP = (
    "answered_sick", "answered", "no_beats", "sick", "up_short", "up"
)  # fmt: skip
HEALTHY_CASES = frozenset({_ANSWERED, _UP})


def _case(
    beats: tuple[float, ...] | None,
    sick_at: float | None,
    now: float,
    window: float,
    stale_after: float,
    answered: float | None,
) -> str:
    """The rule itself (`beats` starts with up since and last beat; `sick_at`: a sick mark
    inside the window, or None); `judge_marks` words the answer, and the walk check over the
    ledger asks only whether it is healthy."""
    if beats is None and answered is not None and now - answered <= window:
        return _ANSWERED if sick_at is None else _ANSWERED_SICK
    if beats is None or now - beats[1] > stale_after:
        return _NO_BEATS
    if sick_at is not None:
        return _SICK
    if now - beats[0] < window:
        return _UP_SHORT
    return _UP


class Health:
    """Heartbeats, sick marks and the question "was every lower MX up and answering?".

    Over the plain memory state the marks are kept parsed in its ledger (`walk/ledger.py`);
    `objects=False` keeps text there too (tests).
    """

    def __init__(
        self,
        state: StateStore,
        window: float,
        interval: float | None = None,
        *,
        objects: bool = True,
    ) -> None:
        self.state = state
        self.window = window
        self.interval = interval if interval is not None else beat_interval(window)
        # two missed beats: the host is gone
        self.stale_after = 3 * self.interval
        self.ledger = ledger_of(state, objects)

    async def beat(self, host: str, now: float) -> None:
        """Say `host` is up now; keeps "up since" while the beats are unbroken.

        Only the process that runs the listener beats for it, so the read-then-write
        cannot race with another writer.
        """
        if self.ledger is not None:
            self.beat_now(host, now)
            return
        old = _split_floats(await self.state.get(LIVE_PREFIX + host, now))
        up_since = now
        if old is not None and 0 <= now - old[1] <= self.stale_after:
            up_since = old[0]
        # the entry outlives a missed beat or two, then its absence says "down"
        await self.state.put(LIVE_PREFIX + host, f"{up_since!r}|{now!r}", self.stale_after, now)

    def beat_now(self, host: str, now: float) -> NotNow | None:
        """`beat` without a coroutine, when the marks are in the ledger; else NOT_NOW.

        The simulator beats every host every few virtual seconds of a whole day.
        """
        ledger = self.ledger
        if ledger is None:
            return NOT_NOW
        live = ledger.live
        up_since = now
        old = live.get(host)
        if old is not None and old[2] > now and 0 <= now - old[1] <= self.stale_after:
            up_since = old[0]
        # as the stored text "up_since|now" parses back: floats
        live[host] = (float(up_since), float(now), now + self.stale_after)
        return None

    async def mark(self, host: str, reason: str, now: float) -> None:
        """`host` turned clients away for its own reasons (capacity, stopped, ...)."""
        if self.ledger is not None:
            self.ledger.sick[host] = (reason, float(now), now + self.window)
            return
        await self.state.put(SICK_PREFIX + host, f"{reason}|{now!r}", self.window, now)

    async def stopped(self, host: str, now: float) -> None:
        """A clean stop: down at once, rather than when the beats go stale."""
        await self.mark(host, "stopped", now)
        if self.ledger is not None:
            self.ledger.live.pop(host, None)
            return
        await self.state.delete(LIVE_PREFIX + host)

    def answered_now(self, host: str, now: float) -> NotNow | None:
        """`answered` without a coroutine, into the ledger; NOT_NOW over stored text (and
        nothing was written). A connect hook asks it every few seconds per host."""
        ledger = self.ledger
        if ledger is None:
            return NOT_NOW
        ledger.answered[host] = (float(now), now + self.window)
        return None

    async def answered(self, host: str, now: float) -> None:
        """A front end without heartbeats (policyd) saw `host` answer a client now."""
        if self.answered_now(host, now) is None:  # kept in the ledger
            return
        await self.state.put(ANSWERED_PREFIX + host, repr(now), self.window, now)

    async def status(self, host: str, now: float) -> MxHealth:
        ledger = self.ledger
        if ledger is not None:
            live = _live(ledger.live, host, now)
            sick = _live(ledger.sick, host, now)
            answered = None if live is not None else _live(ledger.answered, host, now)
            return judge_marks(
                host,
                None if live is None else (live[0], live[1]),
                None if sick is None else (sick[0], sick[1]),
                now,
                self.window,
                self.stale_after,
                None if answered is None else answered[0],
            )
        live_s = await self.state.get(LIVE_PREFIX + host, now)
        sick_s = await self.state.get(SICK_PREFIX + host, now)
        answered_s = (
            None if live_s is not None else await self.state.get(ANSWERED_PREFIX + host, now)
        )
        return judge_health(host, live_s, sick_s, now, self.window, self.stale_after, answered_s)

    async def statuses(self, hosts: Iterable[str], now: float) -> dict[str, MxHealth]:
        return {h: await self.status(h, now) for h in hosts}

    async def all_healthy(self, hosts: Iterable[str], now: float) -> bool:
        """Whether every one of `hosts` is healthy now (the walk check's question)."""
        if self.ledger is not None:
            return self._kept_healthy(self.ledger, hosts, now)
        return all(s.healthy for s in (await self.statuses(hosts, now)).values())

    def all_healthy_now(self, hosts: Iterable[str], now: float) -> bool | NotNow:
        """`all_healthy` without a coroutine or the words of `status`, from the ledger;
        NOT_NOW over stored text."""
        if self.ledger is None:
            return NOT_NOW
        return self._kept_healthy(self.ledger, hosts, now)

    def _kept_healthy(self, ledger: Ledger, hosts: Iterable[str], now: float) -> bool:
        # as `status` reads them, without dropping the marks that expired (nobody sees
        # them either way), asked at every contact that did not walk
        healthy = True
        window, stale_after = self.window, self.stale_after
        live_marks, sick_marks, answers = ledger.live, ledger.sick, ledger.answered
        for host in hosts:
            live = live_marks.get(host)
            if live is not None and live[2] <= now:
                live = None
            sick = sick_marks.get(host)
            sick_at = None
            if sick is not None and sick[2] > now and sick[1] >= now - window:
                sick_at = sick[1]
            answered = None
            if live is None:
                answer = answers.get(host)
                if answer is not None and answer[1] > now:
                    answered = answer[0]
            case = _case(live, sick_at, now, window, stale_after, answered)
            healthy = healthy and case in HEALTHY_CASES
        return healthy


V = TypeVar("V", bound=tuple[Any, ...])


def _live(marks: dict[str, V], host: str, now: float) -> V | None:
    """A ledger mark unless its expiry (the last item) is due; a due one is dropped, as
    the memory state drops an expired entry when it is read."""
    item = marks.get(host)
    if item is not None and item[-1] <= now:
        del marks[host]
        return None
    return item
