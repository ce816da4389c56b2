"""`mxguard serve`: build the runtime from the config and run every listener until told to stop.

Start-up problems (a port that cannot be bound, a state file in an unwritable place) are
raised as ConfigError naming the key, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import time
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

SHUTDOWN_REPLY = b"421 4.3.2 Service shutting down, try again later\r\n"

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
    #: numbers features publish for metrics and `mxguard top` (queue depth, blocklist size):
    #: a Prometheus series name such as 'queue_messages{mx="b.example"}' -> its value now
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)
    #: called with the Runtime once it is built, and again after a reload replaced parts of it
    runtime_hooks: list[Callable[[Runtime], None]] = field(default_factory=list)

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
    engine = build_engine(
        cfg, PolicyParts(server.state, server.recipients, server.callout, server.extensions)
    )
    gate = ConnectionGate(cfg.limits.max_connections, cfg.limits.max_connections_per_network)
    server.runtime = Runtime(cfg, engine, server.events, gate, dnsbl_client(cfg))
    for hook in server.runtime_hooks:
        hook(server.runtime)
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


def dnsbl_client(cfg: Config) -> Any:
    """The DNSBL client for `[dnsbl]`, or None; shared by serve and policyd."""
    if not cfg.dnsbl.sites:
        return None
    from mxguard.dns import DnsListClient, make_resolver, parse_list_site

    try:
        resolver = make_resolver(list(cfg.dnsbl.nameservers) or None, cfg.dnsbl.timeout)
    except ValueError as exc:
        raise ConfigError(cfg.source, "dnsbl.nameservers", str(exc)) from None
    sites = [parse_list_site(s) for s in cfg.dnsbl.sites]
    return DnsListClient(resolver, sites, timeout=cfg.dnsbl.timeout)


#: settings read once at start-up (sockets, files, clients); a reload that changes them says so
_START_ONLY = ("server", "delivery", "state", "log", "limits", "tls", "queue", "callout", "metrics")


def restart_needed(running: Config, new: Config) -> list[str]:
    """What in `new` differs from the running config but only takes effect after a restart."""
    # shutdown_grace is read when the stop comes, so it applies without a restart
    new = dataclasses.replace(
        new, server=dataclasses.replace(new.server, shutdown_grace=running.server.shutdown_grace)
    )
    notes = [f"[{name}]" for name in _START_ONLY if getattr(running, name) != getattr(new, name)]
    if running.dnsbl.stage != new.dnsbl.stage:
        notes.append("dnsbl.stage")
    if not running.greylist.roles and new.greylist.roles:
        notes.append("[greylist] turned on (its feature is installed at start)")
    old_mx = {m.host: m for m in running.listeners()}
    new_mx = {m.host: m for m in new.listeners()}
    for host in sorted(old_mx.keys() | new_mx.keys()):
        if host not in new_mx:
            notes.append(f"mx {host} removed (still listening on {old_mx[host].listen})")
        elif host not in old_mx:
            notes.append(f"mx {host} added (not listening on {new_mx[host].listen} yet)")
        elif old_mx[host].listen != new_mx[host].listen:
            old, now = old_mx[host].listen, new_mx[host].listen
            notes.append(f"mx {host} listen {now} (still listening on {old})")
        elif old_mx[host] != new_mx[host]:
            notes.append(f"mx {host} settings (role, preference, TLS or greet pause)")
    return notes


def reload_config(server: Server, config_path: str | None) -> list[str]:
    """Re-read the config and swap in a new policy; open sessions go on with their sockets.

    Everything is built before anything is swapped, so a bad file (ConfigError, raised) leaves
    the running config in force. Returns what the new file changes that needs a restart.
    """
    assert server.runtime is not None
    rt = server.runtime
    new = load_config(config_path)
    recipients = RecipientDirectory(new.domain, new.source)
    engine = build_engine(
        new, PolicyParts(server.state, recipients, server.callout, server.extensions)
    )
    dnsbl = rt.dnsbl if new.dnsbl == server.config.dnsbl else dnsbl_client(new)
    server.config, server.recipients = new, recipients
    rt.engine, rt.dnsbl = engine, dnsbl
    for hook in server.runtime_hooks:
        hook(rt)
    return restart_needed(rt.config, new)


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


async def drain(server: Server, grace: float, hurry: asyncio.Event | None = None) -> int:
    """Let open sessions finish their transaction for up to `grace` seconds (or until `hurry`).

    A session waiting for its client between transactions is closed at once (no message is
    lost that way: the client has not started one). Returns how many were still busy at the
    deadline; `stop` closes those with 421, and their clients retry later.
    """
    sessions = server.runtime.sessions if server.runtime is not None else set()
    deadline = time.monotonic() + grace
    while sessions and time.monotonic() < deadline and not (hurry and hurry.is_set()):
        for s in [s for s in sessions if s.idle]:
            s.close(SHUTDOWN_REPLY)
        await asyncio.sleep(0.05)
    return len(sessions)


async def stop(server: Server, grace: float = 0.0, hurry: asyncio.Event | None = None) -> None:
    for listener in server.listeners:
        if listener.server is not None:
            listener.server.close()  # stop accepting now; senders try the next MX
    busy = await drain(server, grace, hurry) if grace > 0 else 0
    if busy:
        log.warning("shutdown: %d sessions still busy after %.0fs; closing them", busy, grace)
    if server.runtime is not None:
        cut = list(server.runtime.sessions)
        for s in cut:
            s.close(SHUTDOWN_REPLY)
        # a cut session may be inside a delivery; let it end before the target and state close
        tasks = [s.task for s in cut if s.task is not None and not s.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
    for listener in server.listeners:
        await listener.stop()
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
    """Serve until SIGTERM/SIGINT (a second one skips the grace); SIGHUP reloads the config,
    SIGUSR1 reopens the event log (logrotate)."""
    cfg = load_config(config_path)
    server = build_server(cfg)
    await start(server)
    loop = asyncio.get_running_loop()
    hurry = asyncio.Event()

    def on_hup() -> None:
        try:
            notes = reload_config(server, config_path)
        except ConfigError as exc:
            log.error("config not reloaded, the running one stays in force: %s", exc)
            return
        except Exception as exc:  # a bug in a check's set-up must not take the server down
            log.error("config not reloaded, the running one stays in force: %r", exc)
            return
        announce(f"config reloaded from {server.config.source}")
        for note in notes:
            announce(f"restart needed to apply: {note}")

    def on_stop() -> None:
        (hurry if server.stopping.is_set() else server.stopping).set()

    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, server.events.reopen)
    domains = ", ".join(cfg.local_domains())
    announce(f"mxguard serving {domains}; state {server.state.kind} ({cfg.state.url})")
    announce(f"delivery: {server.target.description}; events: {cfg.log.events}")
    for line in describe(server):
        announce(line)
    await server.stopping.wait()
    grace = server.config.server.shutdown_grace
    announce(f"stopping: open sessions get {grace:g}s to finish")
    await stop(server, grace, hurry)
    announce("stopped")
    return 0
