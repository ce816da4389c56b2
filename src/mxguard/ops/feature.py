"""Wire metrics into `serve` and `policyd`: `[metrics].listen` and `[metrics].control_socket`.

Installed after the other features (see features.py), so the state store it wraps for timing
is the one the policy will use, and the gauges other features registered are already there.
Without either key nothing is installed and nothing is measured: no cost for a family domain.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import disable_created_metrics

from mxguard.config import ConfigError, parse_hostport
from mxguard.ops.endpoint import Endpoints, tcp_socket, unix_socket
from mxguard.ops.metrics import Metrics
from mxguard.ops.queuegauges import QueueGauges
from mxguard.ops.timing import TimedState

if TYPE_CHECKING:
    from mxguard.serve import Server

DEFAULT_PORT = 9325


def install(server: Server) -> None:
    cfg = server.config
    settings = cfg.metrics
    if not settings.listen and not settings.control_socket:
        return
    # the *_created series only double what Prometheus stores
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client
    metrics = Metrics(server)
    endpoints = Endpoints(metrics)
    if settings.listen:
        try:
            host, port = parse_hostport(settings.listen, DEFAULT_PORT)
            endpoints.socks.append(tcp_socket(host.strip("[]"), port))
        except (ValueError, OSError) as exc:
            raise ConfigError(cfg.source, "metrics.listen", f"cannot listen: {exc}") from None
    if settings.control_socket:
        path = Path(settings.control_socket)
        try:
            endpoints.socks.append(unix_socket(path))
        except OSError as exc:
            raise ConfigError(cfg.source, "metrics.control_socket", str(exc)) from None
        endpoints.unix_path = path
    server.state = TimedState(server.state, metrics.state_seconds, metrics.state_errors)
    server.events.listeners.append(metrics.on_event)
    server.runtime_hooks.append(metrics.attach)
    queue = QueueGauges(server)
    server.tasks.append(asyncio.create_task(endpoints.run(), name="metrics endpoint"))
    server.tasks.append(asyncio.create_task(queue.run(), name="queue gauges"))
    server.closers.append(endpoints.close)
    server.closers.append(queue.close)
