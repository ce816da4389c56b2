"""The backup's store-and-forward on the virtual clock: a queue that forwards to the primary.

mxguard's forwarder (`queue/forwarder.py`) is asyncio and SMTP; what matters for the numbers
is its policy, and that is reused here, not rewritten: the same `backoff()` (exponential from
`retry_min` to `retry_max`, upward jitter), `max_lifetime` then *held*, never dropped; order by
the client's history (`GreylistCheck.history`, as `BackupSink.priority` asks it) and then age;
when the primary answers again, what waited only for it becomes due at once. A forward is a
real simulated session at the primary, from the backup's source address, so the primary's
checks (and its view of a trusted peer) decide it.

The classic accept-all backup of the seeds is the same queue with the status-quo choices:
first come first served, and a recipient the primary refuses is bounced to the envelope sender
(backscatter, seed 004) or, with `drop_unknown`, silently dropped (what seed 004's author
does). Throughput is `concurrency` forwards at a time, each taking `forward_seconds` plus the
size at `forward_rate` bytes per second: that is what lets a storm delay good mail (seed 004).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Callable
from random import Random

from mxguard.policy.checks.greylist import HISTORY_ALLOWED, HISTORY_NONE, GreylistCheck
from mxguard.policy.networks import NetworkSet
from mxguard.queue.forwarder import backoff
from mxguard.sim.addresses import SimAddress
from mxguard.sim.loop import EventLoop, run_sync
from mxguard.sim.model import SESSION, SimMessage
from mxguard.sim.tier import IP, SimMx, Tier


class QueuedItem:
    __slots__ = ("attempts", "created", "gen", "msg", "priority", "rcpts", "unreachable")

    def __init__(self, msg: SimMessage, rcpts: list[str], created: float, priority: int) -> None:
        self.msg = msg
        self.rcpts = rcpts
        self.created = created
        self.attempts = 0
        self.priority = priority
        self.unreachable = False
        self.gen = 0  # bumped when woken early, so the old backoff timer is ignored


class BackupQueue:
    """One backup host's queue and forwarder."""

    def __init__(
        self,
        tier: Tier,
        mx: SimMx,
        loop: EventLoop,
        rng: Random,
        source_ip: IP,
        retry_min: float,
        retry_max: float,
        max_lifetime: float,
        concurrency: int,
        forward_seconds: float,
        forward_rate: float,
        classic: bool = False,
        drop_unknown: bool = False,
        greylist: GreylistCheck | None = None,
        allow: NetworkSet | None = None,
        on_delivered: Callable[[SimMessage, list[str], float], None] | None = None,
    ) -> None:
        self.tier = tier
        self.mx = mx
        self.loop = loop
        self.rng = rng
        self.source_ip = source_ip
        self.retry_min, self.retry_max, self.max_lifetime = retry_min, retry_max, max_lifetime
        self.concurrency = max(1, concurrency)
        self.forward_seconds = forward_seconds
        self.forward_rate = forward_rate
        self.classic = classic
        self.drop_unknown = drop_unknown
        self.greylist = greylist
        self.allow = allow or NetworkSet()
        self.on_delivered = on_delivered
        self._due: list[tuple[int, float, int, QueuedItem]] = []  # ready to go, best first
        self._waiting: list[QueuedItem] = []  # waiting for the primary only (unreachable)
        self._seq = 0
        self.inflight = 0
        self.queued = 0  # in the queue now (due, waiting or sleeping out a backoff)
        self.peak = 0
        self.peak_bytes = 0
        self.bytes = 0
        self.forwarded = 0
        self.held = 0
        self.backscatter = 0
        self.dropped = 0

    # ------------------------------------------------------------ in

    def enqueue(self, msg: SimMessage, rcpts: list[str], client: IP, now: float) -> None:
        item = QueuedItem(msg, rcpts, now, self._priority(msg, rcpts, client, now))
        self.queued += 1
        self.bytes += msg.size
        if self.queued > self.peak:
            self.peak = self.queued
        if self.bytes > self.peak_bytes:
            self.peak_bytes = self.bytes
        self._make_due(item, now)

    def _priority(self, msg: SimMessage, rcpts: list[str], client: IP, now: float) -> int:
        """The order `BackupSink.priority` gives (classic: everyone equal, first come first)."""
        if self.classic:
            return 0
        if client in self.allow:
            return HISTORY_ALLOWED
        if self.greylist is None:
            return HISTORY_NONE
        return run_sync(self.greylist.history(client, msg.sender, rcpts, now))

    def _make_due(self, item: QueuedItem, now: float) -> None:
        self._seq += 1
        key = 0 if self.classic else item.priority
        heapq.heappush(self._due, (key, item.created, self._seq, item))
        self._pump(now)

    # ------------------------------------------------------------ out

    def _pump(self, now: float) -> None:
        while self.inflight < self.concurrency and self._due:
            item = heapq.heappop(self._due)[3]
            self.inflight += 1
            took = self.forward_seconds + item.msg.size / self.forward_rate
            self.loop.at(now + took, self._forward, item)

    def _forward(self, item: QueuedItem) -> None:
        now = self.loop.now
        self.inflight -= 1
        tier = self.tier
        msg = item.msg
        c = tier.contact(
            tier.primary, self.source_ip, msg, item.rcpts, now, self.mx.host, forwarded=True
        )
        item.attempts += 1
        if c.kind == SESSION:
            if c.delivered:
                self._wake(now)
            for rcpt in c.perm:
                self._refused(msg, rcpt)
            item.rcpts = c.temp
            item.unreachable = False
        else:
            item.unreachable = True  # no session: the primary is down, refusing or full
        if not item.rcpts:
            self._finish(item)
        elif now - item.created >= self.max_lifetime:
            self.held += len(item.rcpts)
            msg.held += len(item.rcpts)
            if self.classic:  # the status quo gives up and bounces
                for rcpt in item.rcpts:
                    self._refused(msg, rcpt)
            self._finish(item)
        else:
            wait = backoff(item.attempts, self.retry_min, self.retry_max, self.rng)
            if item.unreachable and not self.classic:
                self._waiting.append(item)
            self.loop.at(now + wait, self._retry, item, item.gen)
        self._pump(now)

    def _retry(self, item: QueuedItem, gen: int) -> None:
        if gen != item.gen:  # woken early and already sent on
            return
        if item in self._waiting:
            self._waiting.remove(item)
        self._make_due(item, self.loop.now)

    def _wake(self, now: float) -> None:
        """The primary took mail again: what waited only for it goes now (`wake_unreachable`)."""
        if not self._waiting:
            return
        woken, self._waiting = self._waiting, []
        for item in woken:
            item.gen += 1  # its backoff timer will find it gone
            item.unreachable = False
            self._seq += 1
            heapq.heappush(self._due, (item.priority, item.created, self._seq, item))
        self._pump(now)

    def _refused(self, msg: SimMessage, rcpt: str) -> None:
        """The primary said 5xx for a recipient the backup had accepted."""
        if self.classic:
            if self.drop_unknown or not msg.sender:
                msg.dropped.append(rcpt)
                self.dropped += 1
            else:
                msg.dropped.append(rcpt)
                msg.backscatter += 1
                self.backscatter += 1
        else:
            msg.held += 1
            self.held += 1

    def _finish(self, item: QueuedItem) -> None:
        self.queued -= 1
        self.bytes -= item.msg.size
        self.forwarded += 1


def backup_source_ip(mx_source: str | None, index: int) -> IP:
    """The address a backup forwards from: its configured source_address, else a loopback one."""
    if mx_source:
        return ipaddress.ip_address(mx_source)
    return SimAddress(0x7F000000 + 200 + index)
