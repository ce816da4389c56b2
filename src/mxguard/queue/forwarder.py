"""The forwarder: hands spooled mail to the next hop (the primary), keeping the envelope exactly.

Retry policy: exponential backoff from `retry_min`, doubling up to `retry_max`, with upward
jitter only (x1.0 to x1.25), so a retry never comes sooner than configured and a storm's
messages do not all retry in the same second. After `max_lifetime` a message is `held`, never
dropped. A permanent (5xx) answer for a recipient holds that recipient; the others go on.

Order: messages from clients with a good history (allowlisted, auto-allowed, passed
greylisting) before the rest, then oldest first; this is what keeps a spam storm from
starving good mail (seed 004's three-hour delays). When the next hop comes back after being
unreachable, the messages that waited only because of that are made due at once, instead of
each sleeping out its own backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mxguard.delivery import DeliveryResult, smtp_send
from mxguard.queue.dsn import build_dsn
from mxguard.queue.spool import HELD, PENDING, SENT, QueuedMessage, Recipient, Spool
from mxguard.smtp.listener import new_id

log = logging.getLogger("mxguard.queue")

#: (host, port, sender, recipients, data) -> per-recipient result; tests may swap it
Sender = Callable[[str, int, str, list[str], bytes], Awaitable[DeliveryResult]]


def backoff(attempts: int, retry_min: float, retry_max: float, rng: random.Random) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1-based)."""
    base: float = min(retry_max, retry_min * 2.0 ** max(0, attempts - 1))
    return base * rng.uniform(1.0, 1.25)


def _reply_text(reply: tuple[int, str, str]) -> str:
    code, status, text = reply
    return " ".join(x for x in (str(code), status, text) if x)


@dataclass
class ForwardTarget:
    host: str
    port: int
    helo: str
    timeout: float
    source_address: str | None = None


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        target: ForwardTarget,
        retry_min: float,
        retry_max: float,
        max_lifetime: float,
        concurrency: int = 4,
        dsn: bool = False,
        poll: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.target = target
        self.retry_min, self.retry_max, self.max_lifetime = retry_min, retry_max, max_lifetime
        self.concurrency = max(1, concurrency)
        self.dsn = dsn
        self.poll = poll
        self.rng = rng or random.Random()
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.delivered = 0

    async def send(self, sender: str, recipients: list[str], data: bytes) -> DeliveryResult:
        t = self.target
        source = (t.source_address, 0) if t.source_address else None
        return await smtp_send(
            t.host, t.port, sender, recipients, data, t.timeout, t.helo, source_address=source
        )

    async def run(self) -> None:
        """Poll the index for due mail; a new message or a finished delivery wakes it early."""
        rounds = 0
        while True:
            self.spool.kick.clear()
            free = self.concurrency - len(self.inflight)
            if free > 0:
                try:
                    due = await self.spool.due(free, self.inflight)
                except Exception:
                    log.exception("queue index read failed; retrying")
                    due = []
                for m in due:
                    task = asyncio.create_task(self._attempt(m))
                    self.inflight[m.id] = task
                    task.add_done_callback(functools.partial(self._done, m.id))
            rounds += 1
            if rounds % 30 == 0 and not self.inflight:
                with contextlib.suppress(Exception):
                    await self.spool.resync_bytes()
            if free > 0 and len(due) == free:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self.spool.kick.wait()

    def _done(self, msg_id: str, _task: object = None) -> None:
        task = self.inflight.pop(msg_id, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("forwarding %s failed: %s", msg_id, task.exception())
        self.spool.kick.set()

    async def stop(self) -> None:
        tasks = list(self.inflight.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _attempt(self, m: QueuedMessage) -> None:
        now = self.spool.clock()
        try:
            data = await self.spool.read_body(m.id)
        except FileNotFoundError:
            m.state, m.last_error = HELD, "spool file missing"
            await self.spool.update(m)
            log.error("queue %s: spool file missing, held", m.id)
            return
        pending = m.pending
        result = await self.send(m.sender, pending, data)
        for r in m.recipients:
            if r.state != PENDING:
                continue
            if r.rcpt in result.accepted:
                r.state, r.reply = SENT, "250"
            elif r.rcpt in result.perm_failed:
                r.state, r.reply = HELD, _reply_text(result.perm_failed[r.rcpt])
                log.warning("queue %s: <%s> refused by next hop, held: %s", m.id, r.rcpt, r.reply)
            elif r.rcpt in result.temp_failed:
                r.reply = _reply_text(result.temp_failed[r.rcpt])
        m.attempts += 1
        temp = [result.temp_failed[r] for r in pending if r in result.temp_failed]
        m.unreachable = bool(temp) and not result.accepted and all(s == "4.4.1" for _, s, _ in temp)
        m.last_error = _reply_text(temp[0]) if temp else ""
        if result.accepted:
            self.delivered += 1
            woken = await self.spool.wake_unreachable()
            if woken:
                log.info("next hop reachable again; %d waiting messages are due now", woken)
        if not m.pending:
            held = [r for r in m.recipients if r.state == HELD]
            if not held:
                await self.spool.finish(m, "delivered")
                log.info("queue %s: forwarded to %s:%d", m.id, self.target.host, self.target.port)
                return
            m.state = HELD
            m.last_error = m.last_error or held[0].reply
            await self._held(m, data, "refused by the next hop")
            return
        if now - m.created >= self.max_lifetime:
            for r in m.recipients:
                if r.state == PENDING:
                    r.state = HELD
            m.state = HELD
            m.last_error = f"expired after {self.max_lifetime:.0f}s: {m.last_error}"
            await self._held(m, data, "max_lifetime reached")
            return
        m.next_attempt = now + backoff(m.attempts, self.retry_min, self.retry_max, self.rng)
        await self.spool.update(m)
        log.info(
            "queue %s: deferred (%s), attempt %d, next in %.0fs",
            m.id,
            m.last_error,
            m.attempts,
            m.next_attempt - now,
        )

    async def _held(self, m: QueuedMessage, data: bytes, why: str) -> None:
        if not await self.spool.update(m):
            return
        await self.spool.bump("held_ever")
        log.warning("queue %s: held (%s): %s", m.id, why, m.last_error)
        # Never bounce to <> (loops), never for spam (backscatter), never for our own DSNs.
        if not self.dsn or not m.sender or m.spam or m.dsn:
            return
        failed = [(r.rcpt, r.reply or m.last_error) for r in m.recipients if r.state == HELD]
        now = self.spool.clock()
        dsn_id = new_id()
        body = build_dsn(self.target.helo, m, failed, data, now, dsn_id)
        notice = QueuedMessage(
            id=dsn_id,
            sender="",
            recipients=[Recipient(m.sender)],
            size=len(body),
            created=now,
            next_attempt=now,
            priority=0,
            dsn=True,
        )
        try:
            await self.spool.store(notice, body)
            log.info("queue %s: DSN %s queued for <%s>", m.id, dsn_id, m.sender)
        except Exception as exc:
            log.error("queue %s: could not queue a DSN: %s", m.id, exc)
