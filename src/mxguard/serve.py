"""`mxguard serve`: build the runtime from the config and run every listener until told to stop.

Start-up problems (a port that cannot be bound, a state file in an unwritable place) are
raised as ConfigError naming the key, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mxguard.config import Config, ConfigError, load_config
from mxguard.delivery import Target, make_target
from mxguard.events import EventLog
from mxguard.policy.build import Extension, PolicyParts, build_engine
from mxguard.policy.checks.recipients import Callout
from mxguard.policy.facts import Role
from mxguard.recipients import RecipientDirectory
from mxguard.smtp.listener import (
    ConnectionGate,
    Listener,
    MessageSink,
    Runtime,
    sweep_timeouts,
)
from mxguard.smtp.roles import DeliverSink, NeverAcceptSink
from mxguard.state.base import StateStore
from mxguard.state.failover import open_configured_state

log = logging.getLogger("mxguard")

#: hooks that later features register: they may add checks, sinks per role and background tasks
RoleSinkFactory = Callable[["Server", Any], MessageSink]


@dataclass
class Server:
    config: Config
    state: StateStore
    recipients: RecipientDirectory
    events: EventLog
    target: Target
    runtime: Runtime | None = None
    listeners: list[Listener] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    extensions: list[Extension] = field(default_factory=list)
    sink_factories: dict[Role, RoleSinkFactory] = field(default_factory=dict)
    closers: list[Callable[[], Any]] = field(default_factory=list)
    #: the recipient callout a feature provides for `recipients_source = "callout"` domains
    callout: Callout | None = None

    def sink_for(self, mx: Any) -> MessageSink:
        factory = self.sink_factories.get(mx.role)
        if factory is not None:
            return factory(self, mx)
        if mx.role is Role.PRIMARY:
            return DeliverSink(self.target)
        return NeverAcceptSink()


def build_server(config: Config) -> Server:
    try:
        state = open_configured_state(config.state)
    except ValueError as exc:
        raise ConfigError(config.source, "state.url", str(exc)) from None
    recipients = RecipientDirectory(config.domain, config.source)
    try:
        events = EventLog(config.log.events)
    except OSError as exc:
        raise ConfigError(config.source, "log.events", f"cannot open: {exc}") from None
    helo = config.server.hostname or (config.mx[0].host if config.mx else "localhost")
    target = make_target(config.delivery.target, config.delivery.timeout, helo)
    return Server(config, state, recipients, events, target)


def _install_features(server: Server) -> None:
    """Let optional features (backup queue, walk check, ...) register themselves."""
    from mxguard import features

    for install in features.installers():
        install(server)


async def start(server: Server, socks: dict[str, Any] | None = None) -> None:
    cfg = server.config
    open_fn = getattr(server.state, "open", None)
    if open_fn is not None:
        try:
            await open_fn()
        except Exception as exc:
            raise ConfigError(cfg.source, "state.url", f"cannot open state: {exc}") from None
    _install_features(server)
    dnsbl = None
    if cfg.dnsbl.sites:
        from mxguard.dns import DnsListClient, make_resolver, parse_list_site

        try:
            resolver = make_resolver(list(cfg.dnsbl.nameservers) or None, cfg.dnsbl.timeout)
        except ValueError as exc:
            raise ConfigError(cfg.source, "dnsbl.nameservers", str(exc)) from None
        dnsbl = DnsListClient(
            resolver, [parse_list_site(s) for s in cfg.dnsbl.sites], timeout=cfg.dnsbl.timeout
        )
    engine = build_engine(
        cfg, PolicyParts(server.state, server.recipients, server.callout, server.extensions)
    )
    gate = ConnectionGate(cfg.limits.max_connections, cfg.limits.max_connections_per_network)
    server.runtime = Runtime(cfg, engine, server.events, gate, dnsbl)
    for mx in cfg.listeners():
        listener = Listener(mx, server.runtime, server.sink_for(mx))
        try:
            await listener.start(sock=(socks or {}).get(mx.host))
        except OSError as exc:
            for started in server.listeners:
                await started.stop()
            reason = errno.errorcode.get(exc.errno or 0, "")
            raise ConfigError(
                cfg.source,
                f"mx[{cfg.mx.index(mx)}].listen",
                f"cannot listen on {mx.listen}: {exc.strerror or exc} {reason}".strip(),
            ) from None
        server.listeners.append(listener)
    server.tasks.append(asyncio.create_task(sweep_timeouts(server.runtime)))
    server.tasks.append(asyncio.create_task(server.events.flush_periodically()))
    server.tasks.append(asyncio.create_task(_housekeeping(server)))


async def _housekeeping(server: Server) -> None:
    """Re-read changed recipient files; purge expired state now and then."""
    n = 0
    while True:
        await asyncio.sleep(1.0)
        server.recipients.refresh()
        n += 1
        if n % 300 == 0:
            with contextlib.suppress(Exception):
                await server.state.purge_expired(server.runtime.clock() if server.runtime else 0)


async def stop(server: Server) -> None:
    for listener in server.listeners:
        await listener.stop()
    if server.runtime is not None:
        for s in list(server.runtime.sessions):
            s.close(b"421 4.3.2 Service shutting down\r\n")
    for t in server.tasks:
        t.cancel()
    for t in server.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    for closer in server.closers:
        result = closer()
        if asyncio.iscoroutine(result):
            await result
    await server.target.close()
    await server.state.close()
    server.events.close()


def describe(server: Server) -> list[str]:
    lines = []
    for listener in server.listeners:
        for host, port in listener.bound():
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            pref = listener.mx.preference
            lines.append(
                f"{listener.mx.role.value:8} {listener.mx.host} (preference "
                f"{pref if pref is not None else '-'}) listening on {shown}"
            )
    return lines


async def serve_forever(config_path: str | None, announce: Callable[[str], None] = print) -> int:
    cfg = load_config(config_path)
    server = build_server(cfg)
    await start(server)
    loop = asyncio.get_running_loop()

    def reload() -> None:
        if server.recipients.refresh(force=True):
            announce("recipient tables reloaded")

    loop.add_signal_handler(signal.SIGTERM, server.stopping.set)
    loop.add_signal_handler(signal.SIGINT, server.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, server.events.reopen)
    domains = ", ".join(cfg.local_domains())
    announce(f"mxguard serving {domains}; state {server.state.kind} ({cfg.state.url})")
    announce(f"delivery: {server.target.description}; events: {cfg.log.events}")
    for line in describe(server):
        announce(line)
    await server.stopping.wait()
    announce("stopping")
    await stop(server)
    return 0
