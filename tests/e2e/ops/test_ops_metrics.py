"""Metrics scraped over HTTP from a running `mxguard serve` agree with its event log, and the
Grafana dashboard uses no metric that mxguard does not export."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mxguard.ops.client import Source, read
from tests.helpers.opstier import (
    LOAD,
    RATELIMIT,
    OpsPorts,
    events,
    ops_config,
    scripted_load,
    settled,
)
from tests.helpers.servers import MxguardProcess, wait_for

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).parents[3] / "contrib" / "grafana" / "mxguard.json"


def outcome(code: int) -> str:
    return "accepted" if code < 400 else "tempfailed" if code < 500 else "rejected"


def test_metrics_match_the_event_log(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    with MxguardProcess(tmp_path, ops_config(tmp_path, ports, extra=RATELIMIT)):
        source = Source(url=ports.metrics_url)
        assert wait_for(lambda: read(source).total("mxguard_sessions_total") == 3)
        before = read(source)  # the start-up probes: one connection to each listener
        scripted_load(ports)
        snap = settled(source, tmp_path)
    log = events(tmp_path)
    keys = ("mx", "role", "stage", "outcome", "reason")
    from_log = collections.Counter(
        (e["mx"], e["role"], e["stage"], outcome(e["code"]), e["reason"]) for e in log
    )
    from_metrics = collections.Counter(
        {
            tuple(labels[k] for k in keys): int(v)
            for labels, v in snap.select("mxguard_decisions_total")
        }
    )
    assert from_metrics == from_log
    # every session of the load logged a decision, so sessions match too
    sessions = collections.Counter(mx for mx, _ in {(e["mx"], e["session"]) for e in log})
    started = before.by("mxguard_sessions_total", "mx")
    after = snap.by("mxguard_sessions_total", "mx")
    assert {mx: n - started.get(mx, 0) for mx, n in after.items()} == sessions
    assert snap.by("mxguard_session_duration_seconds_count", "mx") == snap.by(
        "mxguard_sessions_total", "mx"
    )
    assert snap.total("mxguard_time_to_decision_seconds_count") == len(log)
    # the load's own numbers, as an operator would read them
    trap = snap.by("mxguard_decisions_total", "outcome", mx="trap.example.test")
    assert trap == {"tempfailed": LOAD["trap"]}
    assert snap.total("mxguard_decisions_total", reason="unknown_recipient") == LOAD["unknown"]
    assert snap.total("mxguard_connections_open") == 0
    assert snap.total("mxguard_queue_messages") == 0
    assert snap.total("mxguard_state_operation_seconds_count") > 0
    assert snap.total("mxguard_state_errors_total") == 0
    refused = {r["network"]: r["count"] for r in snap.status["refused_networks"]}
    assert refused == {"127.9.9.0/24": LOAD["trap"], "127.1.2.0/24": LOAD["unknown"]}


def dashboard_metrics() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if "expr" in t)
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if isinstance(var.get("query"), dict):
            exprs.append(var["query"]["query"])
    assert exprs, "the dashboard has no queries"
    return {name for e in exprs for name in re.findall(r"\b(mxguard_[a-z0-9_]+)", e)}


def test_dashboard_uses_only_exported_metrics(tmp_path: Path) -> None:
    names = dashboard_metrics()
    assert len(names) >= 15
    ports = OpsPorts.pick()
    with MxguardProcess(tmp_path, ops_config(tmp_path, ports, extra=RATELIMIT)):
        scripted_load(ports)
        snap = settled(Source(url=ports.metrics_url), tmp_path)
    exported = {name for name, _, _ in snap.samples}
    declared = snap.families  # families declared with HELP/TYPE, samples or not yet
    missing = []
    for name in sorted(names):
        family = re.sub(r"_(bucket|sum|count|total)$", "", name)
        if name not in exported and family not in declared:
            missing.append(name)
    assert not missing, f"the dashboard uses metrics mxguard does not export: {missing}"
