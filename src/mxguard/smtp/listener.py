"""The asyncio adapter around the sans-I/O SMTP engine: sockets, timers, TLS and the policy calls.

One `Listener` per [[mx]] entry. It owns what happens before the banner (connection caps,
the greet pause that catches early talkers, DNSBL lookups started at accept), the per-phase
timeouts (one sweeper for all sessions instead of a timer per read), STARTTLS, and turning the
engine's events into facts for the policy core. What a role does with an accepted message
(deliver, queue, never accept) is a `MessageSink`, so roles plug in without touching this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import time
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Protocol

from mxguard.clientip import client_ip
from mxguard.config import Config, MxSettings, parse_hostport
from mxguard.events import EventLog
from mxguard.memo import Memo
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.address import client_network
from mxguard.policy.engine import Pending, PolicyEngine
from mxguard.policy.facts import DnsListAnswer, Facts, IPAddress, MxInfo, Stage
from mxguard.policy.verdict import ACCEPT, Action, Verdict, tempfail
from mxguard.smtp import protocol as p
from mxguard.state.base import StateUnavailable

log = logging.getLogger("mxguard.smtp")

_ids = itertools.count(1)


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(reversed(out)) or "0"


_PREFIX = _base36((int(time.time()) << 16) | (os.getpid() & 0xFFFF))


def new_id() -> str:
    """A short id for sessions and messages, unique per host: start time, pid and a counter."""
    return f"{_PREFIX}{next(_ids):07X}"


SENDER_OK = p.Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = p.Reply(250, "2.1.5", "Recipient OK")
START_DATA = p.Reply(354, "", "End data with <CR><LF>.<CR><LF>")

_peers: Memo[str, IPAddress] = Memo(4096)


def _peer_ip(host: str) -> IPAddress:
    """The client's address, IPv4-mapped IPv6 as IPv4; parsed once per address, because
    `ipaddress` is slow Python and the same clients come back."""
    ip = _peers.get(host)
    if ip is None:
        ip = _peers.remember(host, client_ip(host.split("%", 1)[0]))
    return ip


@dataclass
class Message:
    """An accepted transaction, handed to the role's sink after the policy said yes to it."""

    queue_id: str
    sender: str
    recipients: list[str]
    data: bytes  # with our Received: header on top
    facts: Facts  # the EOM facts (client, helo, mx, ...)


class MessageSink(Protocol):
    async def __call__(self, msg: Message) -> Verdict:
        """Store or deliver the message; return the verdict to answer the client with."""
        ...


class DnsLookup(Protocol):
    async def lookup(self, ip: Any) -> tuple[DnsListAnswer, ...]: ...


@dataclass
class ConnectionGate:
    """Counts open connections, in total and per client network, across all listeners."""

    max_total: int
    max_per_network: int
    v4: int = 24
    v6: int = 64
    total: int = 0
    per_net: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    def enter(self, ip: Any) -> str | None:
        """Return the network key if admitted, None if over a cap."""
        net = client_network(ip, self.v4, self.v6)
        if self.total >= self.max_total or self.per_net.get(net, 0) >= self.max_per_network:
            self.refused += 1
            return None
        self.total += 1
        self.per_net[net] = self.per_net.get(net, 0) + 1
        return net

    def leave(self, net: str) -> None:
        self.total -= 1
        n = self.per_net.get(net, 1) - 1
        if n:
            self.per_net[net] = n
        else:
            self.per_net.pop(net, None)


@dataclass
class Runtime:
    """What every listener of one process shares."""

    config: Config
    engine: PolicyEngine
    events: EventLog
    gate: ConnectionGate
    dnsbl: DnsLookup | None = None
    clock: Callable[[], float] = time.time
    #: called with (mx host, event name) for liveness bookkeeping; optional
    on_session: Callable[[MxSettings, str], None] | None = None
    sessions: set[Session] = field(default_factory=set)
    #: called with (session, "open") once a session is admitted and (session, "close") when
    #: it ends; metrics time sessions with it
    observers: list[Callable[[Session, str], None]] = field(default_factory=list)


class Listener:
    def __init__(self, mx: MxSettings, runtime: Runtime, sink: MessageSink) -> None:
        self.mx = mx
        self.rt = runtime
        self.sink = sink
        #: the sink's answer without waiting, when it has one (or NOT_NOW when it must wait)
        self.sink_now: Callable[[Message], Verdict | NotNow] | None = getattr(sink, "now", None)
        cfg = runtime.config
        self.info = MxInfo(mx.host, mx.role, mx.preference)
        self.hostname = cfg.server.hostname or mx.host
        self.helo_ok = p.Reply(250, "", self.hostname)
        lim = cfg.limits
        cert = mx.tls_cert or cfg.tls.cert
        key = mx.tls_key or cfg.tls.key
        self.tls: ssl.SSLContext | None = None
        if cert and key:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(cert, key)
        self.engine_config = p.EngineConfig(
            hostname=self.hostname,
            max_message_size=lim.max_message_size,
            max_recipients=lim.max_recipients,
            max_text_line=lim.max_text_line,
            max_errors=lim.max_errors,
            bare_lf=lim.bare_lf,
            starttls=self.tls is not None,
        )
        pause = mx.greet_pause if mx.greet_pause is not None else cfg.early_talker.greet_pause
        self.greet_pause = pause
        # The stage whose facts carry the DNSBL answers (waiting for them earlier would delay
        # every banner by a DNS round trip for nothing).
        self.dnsbl_stage = Stage.CONNECT if cfg.dnsbl.stage == "connect" else Stage.RCPT
        self.server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.mx.listen
        return parse_hostport(self.mx.listen)

    async def start(self, sock: Any = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(lambda: Session(self), sock=sock)
        else:
            host, port = self.address
            self.server = await loop.create_server(
                lambda: Session(self), host, port, reuse_address=True, backlog=1024
            )

    def bound(self) -> list[tuple[str, int]]:
        assert self.server is not None
        return [s.getsockname()[:2] for s in self.server.sockets]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Session(asyncio.Protocol):
    """One client connection."""

    def __init__(self, listener: Listener) -> None:
        self.l = listener
        self.rt = listener.rt
        self.engine = p.ServerEngine(listener.engine_config)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.greeted = False
        self.pregreet = bytearray()
        self.net: str | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.session_deadline = 0.0
        self.task: asyncio.Task[None] | None = None
        self.dnsbl_task: asyncio.Future[tuple[DnsListAnswer, ...]] | None = None
        self.facts: Facts | None = None
        self.tls = False
        self.paused = False
        self.screened = True
        self.opened = time.monotonic()
        self._pending: Pending | None = None  # a decision decide_now began and decide ends

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self.transport = typing.cast(asyncio.Transport, transport)
        ip = _peer_ip(transport.get_extra_info("peername")[0])
        self.net = self.rt.gate.enter(ip)
        self.facts = Facts(
            stage=Stage.CONNECT,
            now=self.rt.clock(),
            client_ip=ip,
            mx=self.l.info,
            session_id=new_id(),
            trusted_peer=self.rt.engine.is_trusted(ip),
        )
        self.screened = self.rt.engine.screened(self.facts)
        if self.net is None:
            # Over a cap: answer and close before any work (postscreen's "all ports busy").
            self.transport.write(b"421 4.3.2 Too many connections, try again later\r\n")
            self.rt.events.decision(
                self.facts,
                Verdict(Action.DISCONNECT, 421, "4.3.2", "Too many connections", "capacity"),
            )
            if self.rt.on_session:
                self.rt.on_session(self.l.mx, "capacity")
            self.closed = True
            transport.close()
            return
        lim = self.rt.config.limits
        mono = time.monotonic()
        self.session_deadline = mono + lim.session_timeout
        self.deadline = mono + self.l.greet_pause + lim.greeting_timeout
        self.rt.sessions.add(self)
        for observe in self.rt.observers:
            observe(self, "open")
        dnsbl = self.rt.dnsbl
        if dnsbl is not None and self.screened:
            cached = dnsbl.lookup_now(ip) if hasattr(dnsbl, "lookup_now") else NOT_NOW
            if isinstance(cached, NotNow):
                self.dnsbl_task = asyncio.ensure_future(dnsbl.lookup(ip))
            else:  # answered from the cache: a finished future, no task
                self.dnsbl_task = asyncio.get_running_loop().create_future()
                self.dnsbl_task.set_result(cached)
        verdict = None if self.l.greet_pause > 0 else self.decide_now(self.facts)
        if verdict is None:
            self._spawn(self._connect_phase())
        else:
            self._open(self.facts, verdict)

    def data_received(self, data: bytes) -> None:
        if not self.greeted and len(self.pregreet) < 1024:
            self.pregreet += data[: 1024 - len(self.pregreet)]
        self.engine.receive_data(data)
        lim = self.rt.config.limits
        self.deadline = time.monotonic() + (
            lim.data_timeout if self.engine.in_data else lim.command_timeout
        )
        if self.engine.buffered_bytes > 4 * 1024 * 1024 and not self.paused:
            # A client pipelining faster than we decide: stop reading until we catch up.
            assert self.transport is not None
            self.transport.pause_reading()
            self.paused = True
        if self.greeted and self.task is None:
            self._pump()
        else:
            self._wake()

    def eof_received(self) -> bool | None:
        self.engine.receive_eof()
        if self.greeted and self.task is None:
            self._pump()
        else:
            self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        if self.net is not None:
            self.rt.gate.leave(self.net)
            self.net = None
        if self in self.rt.sessions:
            self.rt.sessions.discard(self)
            for observe in self.rt.observers:
                observe(self, "close")
        if self.dnsbl_task is not None and not self.dnsbl_task.done():
            self.dnsbl_task.cancel()

    # ------------------------------------------------------------ plumbing

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            self.paused = False
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out and self.transport is not None and not self.closed:
            self.transport.write(out)

    def close(self, reply: bytes | None = None) -> None:
        if self.closed or self.transport is None:
            return
        self._flush()
        if reply:
            self.transport.write(reply)
        self.closed = True
        self.transport.close()
        self._wake()

    @property
    def idle(self) -> bool:
        """Waiting for the client outside a transaction: closing now loses no message."""
        return (
            self.greeted
            and self.task is None
            and not self.closed
            and not self.engine.in_data
            and self.engine.sender is None
            and not self.engine.recipients
        )

    def timed_out(self, now: float) -> bool:
        return not self.closed and (now > self.deadline or now > self.session_deadline)

    def expire(self) -> None:
        phase = "DATA" if self.engine.in_data else "command"
        self.log_decision(
            self.facts_at(Stage.DATA if self.engine.in_data else Stage.CONNECT),
            tempfail("timeout", f"Timeout in {phase} phase", 421, "4.4.2"),
        )
        self.close(f"421 4.4.2 {self.l.hostname} Error: timeout exceeded\r\n".encode())

    def facts_at(
        self,
        stage: Stage,
        recipient: str | None = None,
        size: int | None = None,
        **changes: Any,
    ) -> Facts:
        """The session's facts at `stage`, from what the engine knows now.

        Built positionally: this runs for every command, and `Facts.at`'s keyword merging
        costs a dict and a lookup per field. `changes` is for the rarer overrides.
        """
        f = self.facts
        assert f is not None
        e = self.engine
        facts = Facts(
            stage,
            self.rt.clock(),
            f.client_ip,
            f.mx,
            f.session_id,
            f.client_name,
            e.helo_name,
            e.esmtp,
            self.tls,
            e.sender,
            recipient,
            tuple(e.recipients),
            size,
            f.dnsbl,
            f.pregreet,
            f.trusted_peer,
            f.extra,
        )
        return facts.at(stage, **changes) if changes else facts

    def log_decision(self, facts: Facts, verdict: Verdict, **extra: Any) -> None:
        self.rt.events.decision(facts, verdict, **extra)

    def decide_now(self, facts: Facts) -> Verdict | None:
        """The verdict without waiting when possible (most commands), else None."""
        if self.dnsbl_task is not None and facts.stage is self.l.dnsbl_stage:
            if not self.dnsbl_task.done():
                return None
            facts = facts.at(facts.stage, dnsbl=self._dnsbl_result())
        try:
            v = self.rt.engine.decide_now(facts, self.screened)
        except Exception as exc:
            return self._policy_error(facts, exc)
        if isinstance(v, Pending):
            self._pending = v
            return None
        return v

    def _policy_error(self, facts: Facts, exc: Exception) -> Verdict:
        if isinstance(exc, StateUnavailable):  # logged once per outage by the state wrapper
            text = "Policy state unavailable, try again later"
            return tempfail("state_unavailable", text, 451, "4.3.0")
        log.error("policy error at %s: %s", facts.stage, exc, exc_info=exc)
        return tempfail("policy_error", "Local policy error, try again later", 451, "4.3.0")

    def _dnsbl_result(self) -> tuple[DnsListAnswer, ...] | None:
        assert self.dnsbl_task is not None
        if self.dnsbl_task.cancelled():
            return None
        exc = self.dnsbl_task.exception()
        if exc is not None:
            log.warning("DNSBL lookup failed: %s", exc)
            return None
        return self.dnsbl_task.result()

    async def decide(self, facts: Facts) -> Verdict:
        """The verdict, waiting for DNS and state as needed; resumes what decide_now began."""
        pending, self._pending = self._pending, None
        try:
            if pending is not None:
                return await pending.finish()
            if self.dnsbl_task is not None and facts.stage is self.l.dnsbl_stage:
                facts = facts.at(facts.stage, dnsbl=await self._dnsbl())
            return await self.rt.engine.decide(facts, self.screened)
        except Exception as exc:  # a broken state backend must not crash the session
            return self._policy_error(facts, exc)

    async def _dnsbl(self) -> tuple[DnsListAnswer, ...] | None:
        assert self.dnsbl_task is not None
        try:
            return await self.dnsbl_task
        except Exception as exc:
            log.warning("DNSBL lookup failed: %s", exc)
            return None

    @staticmethod
    def reply_of(v: Verdict) -> p.Reply:
        return p.Reply(v.code, v.status, v.text)

    # ------------------------------------------------------------ the session
    #
    # Commands are answered straight from data_received whenever the policy can decide from
    # the facts alone (relay control, recipient tables, deny lists, DNSBL scores): no task
    # switch per command. An answer that has to wait (state, delivery, TLS) runs as one task;
    # input that arrives meanwhile stays in the engine, which pipelines it in order after.

    def needs_policy(self, stage: Stage) -> bool:
        return self.rt.engine.has_checks(stage, self.l.info.role, self.screened)

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        # Always a task, never run eagerly: code under a step (redis-py, aiosmtplib) may use
        # asyncio.timeout(), which needs a current task.
        self.task = asyncio.ensure_future(self._run_step(step))

    async def _run_step(self, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except Exception:
            log.exception("session crashed")
            self.close(b"421 4.3.0 Internal error, closing connection\r\n")
        finally:
            self.task = None
        if not self.closed and self.greeted:
            self._pump()

    def _pump(self) -> None:
        """Answer every event the engine has; hand the first one that must wait to a task."""
        e = self.engine
        while not self.closed and self.task is None:
            ev = e.next_event()
            if ev is None:
                self._flush()
                if e.wants_close:
                    self.close()
                elif self.paused and self.transport is not None:
                    self.transport.resume_reading()
                    self.paused = False
                return
            step = self._handle(ev)
            if step is not None:
                self._spawn(step)
                return

    def _handle(self, ev: p.Event) -> Coroutine[Any, Any, None] | None:
        kind = type(ev)
        if kind is p.RcptTo:
            return self.on_rcpt(ev)  # type: ignore[arg-type]
        if kind is p.MailFrom:
            return self.on_mail(ev)  # type: ignore[arg-type]
        if kind is p.Helo:
            return self.on_helo(ev)  # type: ignore[arg-type]
        if kind is p.DataCommand:
            return self.on_data()
        if kind is p.MessageReceived:
            return self.on_message(ev)  # type: ignore[arg-type]
        if kind is p.StartTLS:
            return self.on_starttls()
        if kind is p.MessageRejected:
            reason = ev.reason  # type: ignore[union-attr]
            code = {"too_big": 552, "line_too_long": 500}.get(reason, 550)
            self.log_decision(
                self.facts_at(Stage.EOM), Verdict(Action.REJECT, code, "", "", reason)
            )
        elif kind is p.Closed:
            self._flush()
            self.close()
        return None

    async def _connect_phase(self) -> None:
        if self.l.greet_pause > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.l.greet_pause):
                    while not self.closed:
                        await self._wait()
            if self.closed:
                return
        pregreet = bytes(self.pregreet) if self.pregreet else None
        facts = self.facts_at(Stage.CONNECT, pregreet=pregreet)
        verdict = await self.decide(facts) if self.needs_policy(Stage.CONNECT) else ACCEPT
        self._open(facts, verdict)

    def _open(self, facts: Facts, verdict: Verdict) -> None:
        """After the connect-stage verdict: the banner, or a refusal and close."""
        self.facts = facts  # pregreet is remembered for the later stages
        if self.rt.on_session:
            self.rt.on_session(self.l.mx, "connect")
        if self.closed:
            return
        if verdict.action is not Action.ACCEPT or facts.pregreet:
            self.log_decision(facts, verdict, pregreet_bytes=len(facts.pregreet or b""))
        if verdict.action in (Action.DISCONNECT, Action.REJECT, Action.TEMPFAIL):
            self.close(self.reply_of(verdict).to_bytes())
            return
        if self.engine.wants_close:  # the client hung up before our banner
            self.close()
            return
        self.engine.greet(p.Reply(220, "", f"{self.l.hostname} ESMTP mxguard"))
        self.greeted = True
        if self.task is None:
            self._pump()  # else the connect task pumps when it ends

    def answer(self, v: Verdict) -> None:
        self.engine.send(self.reply_of(v))
        if v.action is Action.DISCONNECT:
            self.close()

    def _gate(
        self, facts: Facts, ok: p.Reply, log_accept: bool = False
    ) -> Coroutine[Any, Any, None] | None:
        """Decide a command now if the facts suffice, else return the step that waits."""
        v = self.decide_now(facts)
        if v is None:
            return self._gate_later(facts, ok, log_accept)
        self._answer_gate(facts, v, ok, log_accept)
        return None

    async def _gate_later(self, facts: Facts, ok: p.Reply, log_accept: bool) -> None:
        self._answer_gate(facts, await self.decide(facts), ok, log_accept)

    def _answer_gate(self, facts: Facts, v: Verdict, ok: p.Reply, log_accept: bool) -> None:
        if log_accept or v.action is not Action.ACCEPT:
            self.log_decision(facts, v)
        if self.closed:
            return
        if v.action is Action.ACCEPT:
            self.engine.send(ok)
        else:
            self.answer(v)

    def on_helo(self, ev: p.Helo) -> Coroutine[Any, Any, None] | None:
        ok = self.l.helo_ok
        if not self.needs_policy(Stage.HELO):
            self.engine.send(ok)
            return None
        return self._gate(self.facts_at(Stage.HELO, helo=ev.name, esmtp=ev.extended), ok)

    def on_mail(self, ev: p.MailFrom) -> Coroutine[Any, Any, None] | None:
        ok = SENDER_OK
        if not self.needs_policy(Stage.MAIL):
            self.engine.send(ok)
            return None
        size = ev.params.get("SIZE")
        facts = self.facts_at(
            Stage.MAIL,
            sender=ev.address,
            recipients=(),
            size=int(size) if size and size.isdigit() else None,
        )
        return self._gate(facts, ok)

    def on_rcpt(self, ev: p.RcptTo) -> Coroutine[Any, Any, None] | None:
        facts = self.facts_at(Stage.RCPT, recipient=ev.address)
        return self._gate(facts, RECIPIENT_OK, log_accept=True)

    def on_data(self) -> Coroutine[Any, Any, None] | None:
        ok = START_DATA
        if not self.needs_policy(Stage.DATA):
            self.engine.send(ok)
            return None
        return self._gate(self.facts_at(Stage.DATA), ok)

    def received_header(self, queue_id: str, recipients: list[str]) -> bytes:
        f = self.facts
        assert f is not None
        helo = self.engine.helo_name or "unknown"
        proto = ("ESMTP" if self.engine.esmtp else "SMTP") + ("S" if self.tls else "")
        rcpt = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
        line = (
            f"Received: from {helo} ([{f.client_ip}])\r\n\tby {self.l.hostname} (mxguard) "
            f"with {proto} id {queue_id}{rcpt};\r\n\t{_date(self.rt.clock())}\r\n"
        )
        return line.encode("utf-8", "replace")

    def on_message(self, ev: p.MessageReceived) -> Coroutine[Any, Any, None] | None:
        """The sink stores or delivers before the client hears 250: at once when it can
        answer without waiting (a sink with a `now` method that does not say NOT_NOW),
        else in the session's task."""
        recipients = list(self.engine.recipients)
        sender = self.engine.sender or ""
        queue_id = new_id()
        facts = self.facts_at(Stage.EOM, size=len(ev.data))
        if self.needs_policy(Stage.EOM):
            return self._message_later(ev, facts, queue_id, sender, recipients)
        msg = Message(
            queue_id,
            sender,
            recipients,
            self.received_header(queue_id, recipients) + ev.data,
            facts,
        )
        now = self.l.sink_now
        v = now(msg) if now is not None else NOT_NOW
        if isinstance(v, NotNow):
            return self._deliver_later(ev, msg)
        self._message_answered(ev, msg, v)
        return None

    async def _message_later(
        self, ev: p.MessageReceived, facts: Facts, queue_id: str, sender: str, rcpts: list[str]
    ) -> None:
        v = await self.decide(facts)
        data = self.received_header(queue_id, rcpts) + ev.data
        msg = Message(queue_id, sender, rcpts, data, facts)
        if v.action is Action.ACCEPT:
            v = await self.sink(msg)
        self._message_answered(ev, msg, v)

    async def _deliver_later(self, ev: p.MessageReceived, msg: Message) -> None:
        self._message_answered(ev, msg, await self.sink(msg))

    def _message_answered(self, ev: p.MessageReceived, msg: Message, v: Verdict) -> None:
        self.log_decision(
            msg.facts,
            v,
            queue_id=msg.queue_id,
            msgid=_message_id(ev.data),
            rcpt_count=len(msg.recipients),
        )
        if v.action is Action.ACCEPT and v.code == 250:
            self.engine.send(p.Reply(250, "2.0.0", f"Ok: queued as {msg.queue_id}"))
        else:
            self.answer(v)

    @property
    def sink(self) -> Callable[[Message], Awaitable[Verdict]]:
        return self.l.sink

    async def on_starttls(self) -> None:
        if self.l.tls is None or self.transport is None:
            self.engine.send(p.Reply(454, "4.7.0", "TLS not available"))
            return
        self.engine.send(p.Reply(220, "2.0.0", "Ready to start TLS"))
        self._flush()
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(self.transport, self, self.l.tls, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake failed: %s", exc)
            self.closed = True
            return
        if new is None:
            self.closed = True
            return
        self.transport = new
        self.tls = True
        self.engine.tls_started()


_dates: dict[int, str] = {}


def _date(t: float) -> str:
    """The RFC 5322 date of a Received: header, formatted once per second."""
    second = int(t)
    text = _dates.get(second)
    if text is None:
        _dates.clear()  # only the current second is worth keeping
        text = _dates[second] = formatdate(second)
    return text


def _message_id(data: bytes) -> str | None:
    """The Message-ID header value, read from the header block only (for the event log)."""
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else 65536]
    i = head.lower().find(b"\nmessage-id:")
    if i < 0:
        if not head.lower().startswith(b"message-id:"):
            return None
        i = -1
    line_end = head.find(b"\r\n", i + 1)
    value = head[i + 12 : line_end if line_end >= 0 else None].strip()
    return value.decode("ascii", "replace")[:256] or None


async def sweep_timeouts(runtime: Runtime, interval: float = 1.0) -> None:
    """Close sessions past their phase deadline: one timer for all instead of one per read."""
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        for s in [s for s in runtime.sessions if s.timed_out(now)]:
            s.expire()
