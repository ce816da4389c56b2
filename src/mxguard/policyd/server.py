"""The Postfix policy server: the same engine, state and checks as `serve`, behind Postfix.

Three layers, thinnest last:

- `PolicyService` turns one request into facts, asks the engine (running the stages Postfix
  skipped, see `mapping.EARLIER`), renders the verdict and logs it. It keeps what the SMTP
  listener would know from the session itself: the recipients accepted so far and the
  verdicts of earlier stages, per Postfix `instance` (one message) and per SMTP session.
- `PolicyConnection` is the asyncio protocol: it frames with the pure parser and answers one
  request at a time, in order, only after the empty line; on a protocol error or a bug it
  closes without a word, which Postfix turns into its own 451 4.3.5 and a retry.
- `PolicyDaemon` builds all of it from the config through `serve.build_server` and the feature
  installers, so greylisting, the walk check and whatever comes next apply here unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
import logging
import os
import socket
import time
import types
from collections.abc import Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from mxguard import __version__
from mxguard.config import Config, ConfigError
from mxguard.events import EventLog
from mxguard.policy.build import Extension, PolicyParts, build_engine
from mxguard.policy.checks.recipients import Callout
from mxguard.policy.engine import Pending, PolicyEngine
from mxguard.policy.facts import DnsListAnswer, Facts, IPAddress, Stage
from mxguard.policy.verdict import ACCEPT, Action, Verdict
from mxguard.policyd import protocol, workers
from mxguard.policyd.guard import NOTES, ObservedState, guard_engine
from mxguard.policyd.mapping import (
    EARLIER,
    SESSION_STAGES,
    STAGES,
    BadRequest,
    Receiver,
    RoleMap,
    number,
    optional_name,
    parse_client,
)
from mxguard.recipients import RecipientDirectory
from mxguard.state.base import StateStore

log = logging.getLogger("mxguard.policyd")

T = TypeVar("T")

#: features that belong to an MTA, not beside one: Postfix has its own queue, so the backup's
#: spool, forwarder and spool-full gate would only tempfail mail that Postfix can take
SERVE_ONLY_FEATURES = frozenset({"mxguard.queue.feature"})

#: requests one connection may queue before we stop reading it (Postfix sends one at a time)
MAX_PENDING = 64


class DnsLookup(Protocol):
    """What the service needs of `mxguard.dns.DnsListClient` (a fake in tests)."""

    async def lookup(self, ip: Any) -> tuple[DnsListAnswer, ...]: ...


@dataclass
class SessionState:
    """What one SMTP session at Postfix has told us so far (a policy connection sees them in turn)."""

    key: tuple[str, str, str, str]
    session_id: str
    receiver: Receiver
    done: set[Stage] = field(default_factory=set)
    blocked: Verdict | None = None  # a final connect/helo verdict holds for the whole session
    dnsbl: asyncio.Task[tuple[DnsListAnswer, ...]] | None = None
    # one client address per session, so these are asked once (NetworkSet lookups)
    trusted: bool = False
    screened: bool | None = None
    # the current message, tied by Postfix's `instance`
    instance: str | None = None
    recipients: list[str] = field(default_factory=list)
    message_done: set[Stage] = field(default_factory=set)
    message_blocked: Verdict | None = None
    prepended: bool = False

    def new_message(self, instance: str) -> None:
        self.instance = instance
        self.recipients = []
        self.message_done = set()
        self.message_blocked = None
        self.prepended = False

    def cancel(self) -> None:
        if self.dnsbl is not None and not self.dnsbl.done():
            self.dnsbl.cancel()


@dataclass
class ConnectionState:
    """Per policy connection: one smtpd process, so one SMTP session at a time."""

    session: SessionState | None = None

    def close(self) -> None:
        if self.session is not None:
            self.session.cancel()
            self.session = None


_ids = itertools.count(1)
_PID = os.getpid()


def _forked() -> None:
    """A worker (workers.py) names its sessions with its own PID."""
    global _ids, _PID
    _ids = itertools.count(1)
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _session_id() -> str:
    """Unique per process and start time, for the event log's `session` field."""
    return f"P{_PID:x}.{int(time.time()):x}.{next(_ids):x}"


class PolicyService:
    """One request in, one action out; the I/O-free part of the server except for the engine."""

    def __init__(
        self,
        cfg: Config,
        engine: PolicyEngine,
        events: EventLog,
        roles: RoleMap | None = None,
        dnsbl: DnsLookup | None = None,
        clock: Callable[[], float] = time.time,
        on_session: Callable[[Any, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.events = events
        self.roles = roles or RoleMap(cfg)
        self.dnsbl = dnsbl
        self.clock = clock
        self.on_session = on_session
        self.prepend = cfg.policyd.prepend_header
        self.hostname = cfg.server.hostname

    def _session(self, conn: ConnectionState, attrs: dict[str, str], ip: IPAddress) -> SessionState:
        key = (
            attrs.get("client_address", ""),
            attrs.get("client_port", ""),
            attrs.get("server_address", ""),
            attrs.get("server_port", ""),
        )
        s = conn.session
        if s is None or s.key != key:
            conn.close()
            receiver = self.roles.lookup(key[2], key[3])
            s = SessionState(key, _session_id(), receiver, trusted=self.engine.is_trusted(ip))
            if self.dnsbl is not None and not s.trusted:
                s.dnsbl = asyncio.ensure_future(self.dnsbl.lookup(ip))
            conn.session = s
            if self.on_session is not None and receiver.settings is not None:
                self.on_session(receiver.settings, "connect")
        instance = attrs.get("instance", "")
        if s.instance != instance:
            s.new_message(instance)
        return s

    async def handle(self, request: protocol.PolicyRequest, conn: ConnectionState) -> bytes:
        """The reply bytes; BadRequest for a request that cannot be judged."""
        attrs = request.attrs
        stage = STAGES.get(attrs.get("protocol_state", "").upper())
        if stage is None:  # VRFY, ETRN: nothing of ours to say
            return protocol.render("DUNNO")
        ip = parse_client(attrs.get("client_address", ""))
        s = self._session(conn, attrs, ip)
        facts = self._facts(stage, attrs, ip, s)
        notes: dict[str, Any] = {}
        token = NOTES.set(notes)
        try:
            verdict, decided_at = await self._decide(facts, s)
        finally:
            NOTES.reset(token)
        prepend = None
        if (
            self.prepend
            and verdict.action is Action.ACCEPT
            and "greylist_passed" in notes
            and stage is not Stage.EOM  # too late to add a header (access(5))
            and not s.prepended
        ):
            s.prepended = True
            prepend = self._greylist_header(notes["greylist_passed"], facts.now)
        action = protocol.action_for(verdict, prepend, facts.recipient or facts.sender)
        if stage is Stage.RCPT and verdict.action is Action.ACCEPT and facts.recipient:
            s.recipients.append(facts.recipient)
        if stage in (Stage.RCPT, Stage.EOM) or verdict.action is not Action.ACCEPT:
            extra: dict[str, Any] = {"frontend": "policyd", "postfix_action": action}
            if decided_at is not stage:
                extra["decided_at"] = decided_at.value
            if "state_error" in notes:
                extra["state_error"] = notes["state_error"]
            if attrs.get("instance"):
                extra["instance"] = attrs["instance"]
            logged = facts if decided_at is stage else facts.at(decided_at)
            # the event log formats it later, with others (events.py): nothing here delays
            # the reply
            self.events.decision(logged, verdict, queue_id=attrs.get("queue_id") or None, **extra)
        return protocol.render(action)

    def _facts(self, stage: Stage, attrs: dict[str, str], ip: IPAddress, s: SessionState) -> Facts:
        recipient = attrs.get("recipient") or None
        if stage is Stage.RCPT:
            recipients = tuple(s.recipients)
        elif stage in (Stage.DATA, Stage.EOM):
            # Postfix names the recipient here only when there is exactly one.
            recipients = tuple(s.recipients) or ((recipient,) if recipient else ())
        else:
            recipients = ()
        extra = {
            k: attrs[k]
            for k in ("sasl_username", "queue_id", "reverse_client_name")
            if attrs.get(k)
        }
        return Facts(
            stage=stage,
            now=self.clock(),
            client_ip=ip,
            mx=s.receiver.info,
            session_id=s.session_id,
            client_name=optional_name(attrs.get("client_name", "")),
            helo=attrs.get("helo_name") or None,
            esmtp=attrs.get("protocol_name", "").upper() == "ESMTP",
            tls=bool(attrs.get("encryption_protocol")),
            # An empty sender is the null sender once MAIL FROM was given, "unknown" before.
            sender=attrs.get("sender", "") if stage not in SESSION_STAGES else None,
            recipient=recipient if stage is not Stage.MAIL else None,
            recipients=recipients,
            size=number(attrs.get("size", "")),
            trusted_peer=s.trusted,
            extra=extra,
        )

    async def _dnsbl_answers(self, s: SessionState) -> tuple[DnsListAnswer, ...] | None:
        if s.dnsbl is None:
            return None
        try:
            return await s.dnsbl
        except Exception as exc:  # "unknown" is an answer; a lookup failure never costs mail
            log.warning("DNSBL lookup failed: %s", exc)
            return None

    async def _decide(self, facts: Facts, s: SessionState) -> tuple[Verdict, Stage]:
        """The verdict and the stage it was reached at, running the stages Postfix skipped."""
        if s.blocked is not None:
            return s.blocked, Stage.CONNECT
        if s.message_blocked is not None and facts.stage is not Stage.MAIL:
            return s.message_blocked, Stage.MAIL
        screened = s.screened
        if screened is None:
            screened = s.screened = self.engine.screened(facts)
        role = facts.mx.role
        for earlier in (*EARLIER[facts.stage], facts.stage):
            per_session = earlier in SESSION_STAGES
            done = s.done if per_session else s.message_done
            if earlier is not facts.stage and earlier in done:
                continue
            if earlier is Stage.HELO and earlier is not facts.stage and not facts.helo:
                continue  # Postfix does not know a HELO yet; judge it when it comes
            done.add(earlier)
            if not self.engine.has_checks(earlier, role, screened):
                continue  # nothing looks at this stage: skip building its facts
            at = self._facts_at(facts, earlier)
            if earlier in (Stage.CONNECT, Stage.RCPT) and s.dnsbl is not None:
                at = at.at(earlier, dnsbl=await self._dnsbl_answers(s))
            decided = self.engine.decide_now(at, screened)
            verdict = decided if isinstance(decided, Verdict) else await _in_a_task(decided)
            if verdict.is_final:
                if per_session:
                    s.blocked = verdict
                elif earlier is Stage.MAIL:
                    s.message_blocked = verdict
                return verdict, earlier
        return ACCEPT, facts.stage

    @staticmethod
    def _facts_at(facts: Facts, stage: Stage) -> Facts:
        if stage is facts.stage:
            return facts
        if stage is Stage.CONNECT:
            return facts.at(stage, helo=None, sender=None, recipient=None, recipients=())
        if stage is Stage.HELO:
            return facts.at(stage, sender=None, recipient=None, recipients=())
        return facts.at(stage, recipient=None, recipients=())  # MAIL

    def _greylist_header(self, delayed: float, now: float) -> str:
        host = f" at {self.hostname}" if self.hostname else ""
        return (
            f"X-Greylist: delayed {int(delayed)} seconds by mxguard-{__version__}{host}; "
            f"{formatdate(now)}"
        )


def build_service(
    cfg: Config,
    state: StateStore,
    recipients: RecipientDirectory,
    events: EventLog,
    extensions: Iterable[Extension] = (),
    dnsbl: DnsLookup | None = None,
    clock: Callable[[], float] = time.time,
    callout: Callout | None = None,
) -> PolicyService:
    """The engine `serve` would build, with each check guarded for state errors."""
    parts = PolicyParts(ObservedState(state), recipients, callout, list(extensions))
    engine = guard_engine(build_engine(cfg, parts), cfg.policyd.on_state_error)
    return PolicyService(cfg, engine, events, RoleMap(cfg), dnsbl, clock)


class PolicyConnection(asyncio.Protocol):
    """One Postfix smtpd process's connection: requests in order, one reply each."""

    def __init__(self, daemon: PolicyDaemon) -> None:
        self.daemon = daemon
        self.service = daemon.service
        self.parser = protocol.PolicyParser()
        self.state = ConnectionState()
        self.pending: collections.deque[protocol.Event] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.worker: asyncio.Task[None] | None = None
        self.closed = False
        self.paused = False
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername") or "unix")
        self.daemon.connections.add(self)

    def data_received(self, data: bytes) -> None:
        events = self.parser.feed(data)
        if not events:
            return
        self.pending.extend(events)
        if self.worker is None:
            self._answer()
        if len(self.pending) > MAX_PENDING and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def eof_received(self) -> bool | None:
        return None  # close once the pending requests are answered (the worker holds the task)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.close()
        self.daemon.connections.discard(self)
        self.daemon.connection_closed()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
            self.state.close()

    def _answer(self) -> None:
        """Answer the pending requests in order, here and now while none has to wait.

        Nearly every decision runs to its end without waiting (the state answers on the
        loop's own SQLite connection), so driving `handle` by hand here saves a task and a
        trip through the loop per request, as the SMTP listener does. The first request that
        does wait (a locked SQLite file, Redis, a DNSBL answer) becomes the one task, which
        finishes it and then comes back here for the rest: replies stay strictly in order.
        Each request runs in its own copy of the context, which the task keeps, so the
        per-request notes (`guard.NOTES`) are set and reset in one context.
        """
        pending = self.pending
        while pending and not self.closed:
            event = pending.popleft()
            if isinstance(event, protocol.ProtocolError):
                log.warning("policyd: %s: %s; closing without a reply", self.peer, event.reason)
                self.close()
                return
            ctx = contextvars.copy_context()
            coro = self.service.handle(event, self.state)
            try:
                waiting = ctx.run(coro.send, None)
            except StopIteration as done:
                self._reply(done.value)
                continue
            except Exception as exc:
                self._failed(exc)
                return
            self.worker = asyncio.get_running_loop().create_task(
                self._finish(coro, waiting), context=ctx
            )
            return

    async def _finish(self, coro: Coroutine[Any, Any, bytes], waiting: Any) -> None:
        """The rest of a request that had to wait, then the requests queued behind it."""
        try:
            reply = await _resume(coro, waiting)
        except Exception as exc:
            self._failed(exc)
            return
        finally:
            self.worker = None
        self._reply(reply)
        self._answer()

    def _reply(self, reply: bytes) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(reply)
        if self.paused and len(self.pending) < MAX_PENDING // 2:
            self.paused = False
            self.transport.resume_reading()

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, BadRequest):
            log.warning("policyd: %s: %s; closing without a reply", self.peer, exc)
        else:
            log.error("policyd: internal error; closing without a reply", exc_info=exc)
        self.close()


async def _in_a_task(pending: Pending) -> Verdict:
    """Finish a decision that has to wait, inside a task.

    `PolicyConnection._answer` drives a request by hand until its first wait, outside any
    task; code under a waiting check (redis-py, aiosmtplib) uses asyncio.timeout(), which
    raises without a current task. Yielding once first hands the rest to the task that
    `_answer` then makes.
    """
    if asyncio.current_task() is None:
        await asyncio.sleep(0)
    return await pending.finish()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> Generator[Any, Any, T]:
    """Go on with a coroutine whose first step already ran and yielded `waiting`.

    Whatever the coroutine yields (the future it waits on) goes up to the task unchanged,
    and what the task sends or throws (a result, a cancellation) goes back down, so the
    coroutine cannot tell that its first step ran outside the task.
    """
    yielded = waiting
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


class PolicyDaemon:
    """The running server: state, engine, the listening socket, housekeeping."""

    def __init__(self, cfg: Config, channel: socket.socket | None = None, index: int = 0) -> None:
        self.cfg = cfg
        # a worker of several (workers.py): connections come from the parent over `channel`
        self.channel = channel
        self.index = index
        self.connections: set[PolicyConnection] = set()
        self.server: asyncio.Server | None = None
        self.unix_path: Path | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.stopping = asyncio.Event()
        self._built: Any = None  # the serve.Server whose parts we use
        self.service: PolicyService

    async def start(self) -> None:
        from mxguard import features
        from mxguard.serve import build_server
        from mxguard.smtp.listener import ConnectionGate, Runtime

        cfg = self.cfg
        server = build_server(cfg)
        self._built = server
        open_fn = getattr(server.state, "open", None)
        if open_fn is not None:
            try:
                await open_fn()
            except Exception as exc:
                raise ConfigError(cfg.source, "state.url", f"cannot open state: {exc}") from None
        for module, attr in features.FEATURES:
            if module in SERVE_ONLY_FEATURES:
                continue
            install = features.optional(module, attr)
            if install is not None:
                install(server)
        dnsbl = self._dnsbl_client()
        self.service = build_service(
            cfg,
            server.state,
            server.recipients,
            server.events,
            server.extensions,
            dnsbl,
            callout=getattr(server, "callout", None),
        )
        # A Runtime like serve's, so features that look for `server.runtime` find one.
        gate = ConnectionGate(cfg.limits.max_connections, cfg.limits.max_connections_per_network)
        runtime = Runtime(cfg, self.service.engine, server.events, gate, dnsbl)
        server.runtime = runtime

        def on_session(mx: Any, event: str) -> None:
            if runtime.on_session is not None:
                runtime.on_session(mx, event)

        self.service.on_session = on_session
        self.service.clock = runtime.clock
        try:
            if self.channel is not None:
                self._adopt()
            else:
                await self._listen()
        except (OSError, ValueError) as exc:
            await self._release()
            raise ConfigError(
                cfg.source, "policyd.listen", f"cannot listen on {cfg.policyd.listen}: {exc}"
            ) from None
        self.tasks.append(asyncio.create_task(self._housekeeping()))
        flush = getattr(server.events, "flush_periodically", None)  # a buffered event log
        if flush is not None:
            self.tasks.append(asyncio.create_task(flush()))

    def _dnsbl_client(self) -> Any:
        from mxguard.serve import dnsbl_client

        return dnsbl_client(self.cfg)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        target = workers.listen_target(self.cfg)
        if isinstance(target, Path):
            self.server = await loop.create_unix_server(
                lambda: PolicyConnection(self), sock=workers.unix_listener(target)
            )
            self.unix_path = target
            return
        host, port = target
        self.server = await loop.create_server(
            lambda: PolicyConnection(self), host, port, reuse_address=True, backlog=512
        )

    def _adopt(self) -> None:
        """Serve the connections the parent hands over (workers.py)."""
        assert self.channel is not None
        channel = self.channel
        channel.setblocking(False)
        loop = asyncio.get_running_loop()

        def take() -> None:
            try:
                msg, fds, _, _ = socket.recv_fds(channel, 64, 32)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg:  # the parent is gone: finish what we have and stop
                loop.remove_reader(channel.fileno())
                self.stopping.set()
            for fd in fds:
                sock = socket.socket(fileno=fd)
                task = loop.create_task(
                    loop.connect_accepted_socket(lambda: PolicyConnection(self), sock)
                )
                task.add_done_callback(_adopted(sock, self))

        loop.add_reader(channel.fileno(), take)

    def connection_closed(self) -> None:
        """Tell the parent, which hands the next connection to the worker with the fewest."""
        if self.channel is not None:
            with contextlib.suppress(OSError):
                self.channel.send(workers.CLOSED)

    def bound(self) -> list[str]:
        """Where we listen, as Postfix's check_policy_service wants it written."""
        if self.server is None:
            return []
        if self.unix_path is not None:
            return [f"unix:{self.unix_path}"]
        return [workers.inet_name(sock.getsockname()) for sock in self.server.sockets]

    async def _housekeeping(self) -> None:
        """Re-read changed recipient files; purge expired state now and then (as `serve` does)."""
        server = self._built
        n = 0
        while True:
            await asyncio.sleep(1.0)
            server.recipients.refresh()
            n += 1
            if n % 300 == 0 and self.index == 0:  # one worker of several purges
                with contextlib.suppress(Exception):
                    await server.state.purge_expired(time.time())

    def reload(self) -> bool:
        return bool(self._built is not None and self._built.recipients.refresh(force=True))

    def reopen_log(self) -> None:
        if self._built is not None:
            self._built.events.reopen()

    async def stop(self) -> None:
        if self.channel is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5.0)
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                self.unix_path.unlink()
        await self._release()

    async def _release(self) -> None:
        server = self._built
        for t in [*self.tasks, *(server.tasks if server is not None else [])]:
            t.cancel()
        for t in [*self.tasks, *(server.tasks if server is not None else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.tasks = []
        if server is None:
            return
        for closer in server.closers:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        await server.target.close()
        await server.state.close()
        server.events.close()
        self._built = None


def _adopted(sock: socket.socket, daemon: PolicyDaemon) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            sock.close()  # Postfix answers 451 4.3.5 and retries
            daemon.connection_closed()  # the parent counted it

    return done


def supervise(cfg: Config, announce: Callable[[str], None] = print) -> int | None:
    """`mxguard policyd` with `[policyd].workers` other than 1: the parent (workers.py);
    None with one worker, which serves in this process (`run_forever`)."""
    workers.check(cfg)
    if workers.worker_count(cfg) == 1:
        return None

    def run_worker(cfg: Config, channel: socket.socket, index: int) -> int:
        from mxguard.cliutil import run_on_loop

        return run_on_loop(cfg, run_forever(cfg, lambda s: None, channel, index))

    return workers.Supervisor(cfg, run_worker, announce).run()


async def run_forever(
    cfg: Config,
    announce: Callable[[str], None] = print,
    channel: socket.socket | None = None,
    index: int = 0,
) -> int:
    """`mxguard policyd`: serve until SIGTERM or SIGINT; SIGHUP re-reads recipients."""
    import signal

    daemon = PolicyDaemon(cfg, channel, index)
    await daemon.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stopping.set)

    def reload() -> None:
        if daemon.reload():
            announce("recipient tables reloaded")

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, daemon.reopen_log)
    announce(
        f"mxguard policyd for {', '.join(cfg.local_domains())}; state {cfg.state.url}; "
        f"events {cfg.log.events}"
    )
    for where in daemon.bound():
        announce(f"policyd listening on {where}")
    if channel is not None:  # a worker: the parent may hand it connections and signals now
        with contextlib.suppress(OSError):
            channel.send(workers.READY)
    await daemon.stopping.wait()
    announce("stopping")
    await daemon.stop()
    return 0
