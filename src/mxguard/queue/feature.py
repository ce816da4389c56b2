"""Wire the backup role into `serve`: spool, sink, spool-full gate, forwarder, recipient callout.

Each backup listener gets its own spool directory and forwarder; they share the process's
state store (greylist history for priorities, the callout cache). A backup whose spool cannot
be opened, or whose next hop cannot be named, stops start-up with a ConfigError naming the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, Any

from mxguard.config import Config, ConfigError, MxSettings, parse_hostport
from mxguard.greylist_feature import make_check
from mxguard.policy.checks.base import Check
from mxguard.policy.facts import Role
from mxguard.policy.networks import NetworkSet
from mxguard.queue.callout import RecipientCallout
from mxguard.queue.forwarder import Forwarder, ForwardTarget
from mxguard.queue.sink import BackupSink, SpoolFullCheck
from mxguard.queue.spool import Spool
from mxguard.state.base import StateStore

if TYPE_CHECKING:
    from mxguard.serve import Server

log = logging.getLogger("mxguard.queue")

#: how long `stop` lets deliveries in flight finish before cutting them (a cut one is resent)
STOP_GRACE = 5.0


def _connectable(host: str) -> str:
    """A wildcard listen address is reached through loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def resolve_hop(cfg: Config, spec: str, key: str) -> tuple[str, int]:
    """HOST and PORT for "smtp://HOST:PORT" or the host name of an [[mx]] entry."""
    if spec.startswith("smtp://"):
        try:
            return parse_hostport(spec[len("smtp://") :].rstrip("/"), 25)
        except ValueError as exc:
            raise ConfigError(cfg.source, key, str(exc)) from None
    mx = cfg.mx_by_host(spec)
    if mx is None:
        raise ConfigError(
            cfg.source, key, f"{spec!r} is neither an [[mx]] host nor smtp://HOST:PORT"
        )
    if mx.role not in (Role.PRIMARY, Role.BACKUP):
        raise ConfigError(cfg.source, key, f"{spec} is a {mx.role} MX; it cannot take mail")
    return _hop_of_listen(mx) or (mx.host, 25)  # not listened on here: its name, port 25


def _hop_of_listen(mx: MxSettings) -> tuple[str, int] | None:
    if not mx.listen:
        return None
    host, port = parse_hostport(mx.listen)
    return _connectable(host), port


def default_hop(cfg: Config, mx: MxSettings | None, key: str) -> tuple[str, int]:
    if mx is not None and mx.forward_to:
        return resolve_hop(cfg, mx.forward_to, key)
    primaries = cfg.mx_by_role(Role.PRIMARY)
    if not primaries:
        raise ConfigError(cfg.source, key, "no forward_to and no primary [[mx]] to forward to")
    return resolve_hop(cfg, primaries[0].host, key)


def accept_all_warnings(cfg: Config) -> list[str]:
    return [
        f"{cfg.source}: domain[{i}].recipients_source: accept-all takes mail for any address "
        f"of {d.name}; unknown users then have to be bounced (backscatter) or dropped"
        for i, d in enumerate(cfg.domain)
        if d.recipients_source == "accept-all"
    ]


def _make_callout(server: Server, backups: list[MxSettings]) -> RecipientCallout:
    cfg = server.config
    first = backups[0] if backups else None
    if cfg.callout.target:
        host, port = resolve_hop(cfg, cfg.callout.target, "callout.target")
    else:
        host, port = default_hop(cfg, first, "callout.target")
    for mx in cfg.listeners():
        if mx.role is Role.PRIMARY and (host, port) == _hop_of_listen(mx):
            # The primary here shares this config's [[domain]] table; asking it would make it
            # ask itself, and the backup beside it already knows what it knows.
            raise ConfigError(
                cfg.source,
                "callout.target",
                f"the callout would ask {mx.host}, served by this same process from the same "
                'recipient table; use recipients_source = "table" here',
            )
    helo = cfg.server.hostname or (first.host if first else cfg.mx[0].host)
    return RecipientCallout(
        server.state,
        host,
        port,
        helo,
        cfg.callout.timeout,
        cfg.callout.positive_ttl,
        cfg.callout.negative_ttl,
        source_address=first.source_address if first else None,
        clock=_clock(server),
    )


def _clock(server: Server) -> Any:
    def now() -> float:
        return server.runtime.clock() if server.runtime is not None else time.time()

    return now


def install(server: Server) -> None:
    cfg = server.config
    for warning in accept_all_warnings(cfg):
        log.warning("%s", warning)
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    backups = [m for m in cfg.listeners() if m.role is Role.BACKUP]
    if any(d.recipients_source == "callout" for d in cfg.domain):
        server.callout = _make_callout(server, backups)
    if not backups:
        return
    q = cfg.queue
    greylist = make_check(cfg, server.state)
    allow = NetworkSet(cfg.access.allow)
    spools: dict[str, Spool] = {}
    for mx in backups:
        i = cfg.mx.index(mx)
        root = mx.spool or f"./mxguard-data/spool-{mx.host}"
        spool = Spool(root, q.max_spool_bytes, q.min_free_bytes, clock=_clock(server))
        try:
            for note in spool.open():
                log.warning("spool %s recovery: %s", root, note)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(cfg.source, f"mx[{i}].spool", f"cannot open {root}: {exc}") from None
        host, port = default_hop(cfg, mx, f"mx[{i}].forward_to")
        target = ForwardTarget(
            host, port, cfg.server.hostname or mx.host, cfg.delivery.timeout, mx.source_address
        )
        forwarder = Forwarder(
            spool, target, q.retry_min, q.retry_max, q.max_lifetime, q.concurrency, q.dsn
        )
        spools[mx.host] = spool
        server.tasks.append(asyncio.create_task(forwarder.run(), name=f"forwarder {mx.host}"))
        server.closers.append(_stopper(forwarder, spool))

    def sink(srv: Server, mx: Any) -> BackupSink:
        return BackupSink(spools[mx.host], greylist, allow)

    def gate(cfg: Config, state: StateStore) -> tuple[list[Check], list[Check]]:
        return [SpoolFullCheck(spools)], []

    server.sink_factories[Role.BACKUP] = sink
    server.extensions.append(gate)


def _stopper(forwarder: Forwarder, spool: Spool) -> Any:
    async def stop() -> None:
        if forwarder.inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE):
                    await asyncio.gather(*forwarder.inflight.values(), return_exceptions=True)
        await forwarder.stop()
        await spool.close()

    return stop
