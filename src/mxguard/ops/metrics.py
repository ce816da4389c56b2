"""Prometheus metrics and the status document of a running mxguard.

Counts and timings are recorded as things happen: each event-log line (decisions), each
session's open and close (the listeners' observers), each state and DNSBL call (the timing
wrappers). Levels (open connections, queue depth, blocklist size) are read when scraped,
through a collector, so they are never stale and nothing polls them. Scrapes are answered on
the event loop's own thread (see `ops/http.py`), which is what lets the collector walk
asyncio-owned objects (the session set, the gate) without locks.

Labels are bounded: MX hosts and roles come from the config, stages and reason tags from the
code. Client networks are not labels (a spam run would mint thousands of series); the top
refused networks are in the status document instead.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mxguard import __version__
from mxguard.ops.timing import TimedLookup, unwrap
from mxguard.policy.address import client_network

if TYPE_CHECKING:
    from mxguard.serve import Server
    from mxguard.smtp.listener import Runtime, Session

log = logging.getLogger("mxguard.metrics")

#: session lengths: a bot hangs up in milliseconds, a big message over a slow link takes minutes
SESSION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
#: from connect to a decision: greet pauses and DNSBL waits show up here
DECISION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: one state or DNS call
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

#: series that features publish through `Server.gauges`; declared even before anyone fills
#: them, so dashboards and `mxguard top` find the names on every mxguard
KNOWN_GAUGES: dict[str, str] = {
    "queue_messages": "Messages in a backup's spool, by state (queued, held)",
    "queue_oldest_message_seconds": "Age of the oldest queued message in a backup's spool",
    "queue_bytes": "Bytes in a backup's spool",
    "queue_deliveries_total": "Messages that left a backup's spool, by outcome",
    "greylist_entries": "Greylist triplets in the state store",
    "blocklist_entries": "Client networks on the trap-fed blocklist",
}

_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    """'queue_messages{mx="b.example",state="held"}' -> ("queue_messages", {...})."""
    m = _SERIES.match(series.strip())
    if m is None:
        raise ValueError(f"not a series name: {series!r}")
    labels = {k: v.replace('\\"', '"') for k, v in _LABEL.findall(m.group(2) or "")}
    return m.group(1), labels


def outcome_of(code: Any) -> str:
    """What the client heard, in the three words operators use: accepted, tempfailed, rejected."""
    n = code if isinstance(code, int) else 250
    return "accepted" if n < 400 else "tempfailed" if n < 500 else "rejected"


class SlidingCounts:
    """Counts per key over the last `window` seconds, in slots, with a cap on keys per slot."""

    def __init__(self, window: float, slots: int, max_keys: int = 5000) -> None:
        self.slot = window / slots
        self.slots = slots
        self.max_keys = max_keys
        self._data: collections.deque[tuple[int, collections.Counter[str]]] = collections.deque()

    def add(self, key: str, now: float, n: int = 1) -> None:
        index = int(now // self.slot)
        if not self._data or self._data[-1][0] != index:
            self._data.append((index, collections.Counter()))
        counts = self._data[-1][1]
        if key not in counts and len(counts) >= self.max_keys:
            key = "other"
        counts[key] += n
        self._expire(index)

    def _expire(self, index: int) -> None:
        while self._data and self._data[0][0] <= index - self.slots:
            self._data.popleft()

    def totals(self, now: float) -> collections.Counter[str]:
        self._expire(int(now // self.slot))
        out: collections.Counter[str] = collections.Counter()
        for _, counts in self._data:
            out.update(counts)
        return out


class Metrics:
    """Every metric of one process, on a registry of its own (no global state in tests)."""

    def __init__(self, server: Server, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.clock = clock
        self.started = time.time()
        r = self.registry = CollectorRegistry(auto_describe=True)
        mx_role = ["mx", "role"]
        self.sessions = Counter(
            "mxguard_sessions", "SMTP sessions admitted, by MX", mx_role, registry=r
        )
        self.decisions = Counter(
            "mxguard_decisions",
            "Logged policy decisions (one per event-log line)",
            [*mx_role, "stage", "outcome", "reason"],
            registry=r,
        )
        self.session_seconds = Histogram(
            "mxguard_session_duration_seconds",
            "SMTP session length, connect to close",
            mx_role,
            buckets=SESSION_BUCKETS,
            registry=r,
        )
        self.decision_seconds = Histogram(
            "mxguard_time_to_decision_seconds",
            "Time from connect to each logged decision",
            [*mx_role, "stage"],
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.state_seconds = Histogram(
            "mxguard_state_operation_seconds",
            "State backend call latency, by operation",
            ["op"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.state_errors = Counter(
            "mxguard_state_errors",
            "State backend calls that failed, by operation",
            ["op"],
            registry=r,
        )
        self.dnsbl_seconds = Histogram(
            "mxguard_dnsbl_lookup_seconds",
            "DNSBL lookup of one client (all lists, cache hits included)",
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.reloads = Counter("mxguard_config_reloads", "Configs swapped in by SIGHUP", registry=r)
        Gauge("mxguard_build_info", "The running version", ["version"], registry=r).labels(
            __version__
        ).set(1)
        Gauge("mxguard_start_time_seconds", "When this process started", registry=r).set(
            self.started
        )
        ProcessCollector(registry=r)
        r.register(_Levels(self))
        self.opened: dict[str, float] = {}  # session id -> monotonic open time
        self.recent_sessions = SlidingCounts(60.0, 60)
        self.recent_refused = SlidingCounts(600.0, 60)
        self._runtimes = 0
        self._event_errors = 0

    # ------------------------------------------------------------ hooks

    def attach(self, runtime: Runtime) -> None:
        """A runtime hook: observe its sessions, time its DNSBL client (again after a reload)."""
        if self.on_session not in runtime.observers:
            runtime.observers.append(self.on_session)
        if runtime.dnsbl is not None and not isinstance(runtime.dnsbl, TimedLookup):
            runtime.dnsbl = TimedLookup(runtime.dnsbl, self.dnsbl_seconds)
        self._runtimes += 1
        if self._runtimes > 1:
            self.reloads.inc()

    def on_session(self, session: Session, what: str) -> None:
        mx = session.l.mx
        sid = session.facts.session_id if session.facts is not None else ""
        if what == "open":
            self.sessions.labels(mx.host, mx.role.value).inc()
            self.opened[sid] = session.opened
            self.recent_sessions.add(mx.host, time.time())
        elif what == "close":
            self.opened.pop(sid, None)
            duration = self.clock() - session.opened
            self.session_seconds.labels(mx.host, mx.role.value).observe(duration)

    def on_event(self, event: dict[str, Any]) -> None:
        """An event-log listener; it runs inside the session, so it must never raise."""
        try:
            self._count(event)
        except Exception:
            self._event_errors += 1
            if self._event_errors == 1:
                log.exception("metrics: event not counted (reported once): %r", event)

    def _count(self, event: dict[str, Any]) -> None:
        mx, role, stage = str(event.get("mx")), str(event.get("role")), str(event.get("stage"))
        outcome = outcome_of(event.get("code"))
        self.decisions.labels(mx, role, stage, outcome, str(event.get("reason"))).inc()
        opened = self.opened.get(str(event.get("session")))
        if opened is not None:
            self.decision_seconds.labels(mx, role, stage).observe(self.clock() - opened)
        if outcome != "accepted" and event.get("client"):
            ip = ipaddress.ip_address(str(event["client"]))
            self.recent_refused.add(client_network(ip, 24, 64), time.time())

    # ------------------------------------------------------------ the status document

    def status(self, top: int = 10) -> dict[str, Any]:
        """What `mxguard top` needs beyond the metrics: listeners, recent rates, networks."""
        now = time.time()
        srv = self.server
        rt = srv.runtime
        open_by_mx = collections.Counter(s.l.mx.host for s in list(rt.sessions)) if rt else {}
        per_minute = self.recent_sessions.totals(now)
        listeners = []
        for listener in srv.listeners:
            mx = listener.mx
            listeners.append(
                {
                    "mx": mx.host,
                    "role": mx.role.value,
                    "preference": mx.preference,
                    "listen": [f"{h}:{p}" for h, p in listener.bound()],
                    "connections": open_by_mx.get(mx.host, 0),
                    "sessions_last_minute": per_minute.get(mx.host, 0),
                }
            )
        refused = self.recent_refused.totals(now).most_common(top)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(now - self.started, 1),
            "config": srv.config.source,
            "state": srv.state.kind,
            "listeners": listeners,
            "refused_networks": [{"network": n, "count": c} for n, c in refused],
            "refused_window_seconds": 600,
        }


class _Levels(Collector):
    """Levels read at scrape time: connections, the gate, DNSBL counters, feature gauges."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with the features; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        srv = self.m.server
        rt = srv.runtime
        conns = GaugeMetricFamily(
            "mxguard_connections_open", "Open SMTP connections, by MX", labels=["mx", "role"]
        )
        open_by_mx = collections.Counter(s.l.mx.host for s in list(rt.sessions)) if rt else {}
        for listener in srv.listeners:
            mx = listener.mx
            conns.add_metric([mx.host, mx.role.value], open_by_mx.get(mx.host, 0))
        yield conns
        gate = rt.gate if rt is not None else None
        yield GaugeMetricFamily(
            "mxguard_connections_limit",
            "[limits].max_connections (all MX listeners together)",
            value=gate.max_total if gate else 0,
        )
        yield CounterMetricFamily(
            "mxguard_connections_refused",
            "Connections refused at a connection cap (421 before the banner)",
            value=gate.refused if gate else 0,
        )
        dnsbl = unwrap(rt.dnsbl) if rt is not None else None
        for attr, text in (
            ("cache_hits", "DNSBL answers served from the cache"),
            ("cache_misses", "DNSBL queries sent to a resolver"),
            ("errors", "DNSBL queries that failed (timeout, SERVFAIL, ...)"),
        ):
            value = getattr(dnsbl, attr, 0) if dnsbl is not None else 0
            yield CounterMetricFamily(f"mxguard_dnsbl_{attr}", text, value=value)
        yield from self._feature_gauges(srv.gauges)

    def _feature_gauges(self, gauges: dict[str, Callable[[], float]]) -> Iterator[Metric]:
        families: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {
            name: (text, []) for name, text in KNOWN_GAUGES.items()
        }
        for series, read in list(gauges.items()):
            try:
                name, labels = parse_series(series)
                value = float(read())
            except Exception as exc:  # one broken gauge must not hide the others
                log.warning("metrics: gauge %s: %s", series, exc)
                continue
            name = name.removeprefix("mxguard_")
            text = KNOWN_GAUGES.get(name, f"{name} (published by a feature)")
            families.setdefault(name, (text, []))[1].append((labels, value))
        for name, (text, samples) in families.items():
            keys = sorted({k for labels, _ in samples for k in labels})
            family: GaugeMetricFamily | CounterMetricFamily
            if name.endswith("_total"):
                family = CounterMetricFamily(f"mxguard_{name}", text, labels=keys)
            else:
                family = GaugeMetricFamily(f"mxguard_{name}", text, labels=keys)
            for labels, value in samples:
                family.add_metric([labels.get(k, "") for k in keys], value)
            yield family
