"""The simulator's short cuts change how fast it runs, never what it computes."""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from mxguard.config import Config
from mxguard.events import EventLog
from mxguard.sim import policy as sim_policy
from mxguard.sim.addresses import SimAddress
from mxguard.sim.decisions import decision_sink
from mxguard.sim.layouts import make_layout
from mxguard.sim.loop import fewer_collections
from mxguard.sim.run import run_layouts
from mxguard.sim.scenario import Scenario
from mxguard.state.memory import MemoryState
from mxguard.walk.ledger import ledger_of


def test_sim_addresses_behave_as_plain_ones() -> None:
    plain = ipaddress.IPv4Address("127.0.10.10")
    sim = SimAddress(int(plain))
    assert sim == plain and hash(sim) == hash(plain) and {plain: 1}[sim] == 1
    assert str(sim) == str(plain) and f"[{sim}]" == f"[{plain}]" and repr(sim) == repr(plain)
    assert sim in ipaddress.ip_network("127.0.0.0/8")
    assert pickle.loads(pickle.dumps(sim)) == plain  # layouts run in worker processes


def test_decisions_go_straight_to_the_walk_feature_only_when_it_is_the_only_reader() -> None:
    walk: Any = SimpleNamespace(on_event=lambda e: None, on_decision=lambda f, v, **x: None)
    log = EventLog(None)
    assert decision_sink(log, walk) is None  # nobody listens: no events at all
    log.listeners.append(walk.on_event)
    assert decision_sink(log, walk) is walk.on_decision
    assert decision_sink(log, None) == log.decision
    log.listeners.append(lambda e: None)  # another reader needs the events themselves
    assert decision_sink(log, walk) == log.decision


def test_fewer_collections_puts_the_threshold_back() -> None:
    before = gc.get_threshold()
    try:
        with fewer_collections(10_000):
            assert gc.get_threshold()[0] == max(10_000, before[0])
            raise RuntimeError("a run that fails")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before


def test_the_walk_ledger_gives_the_numbers_stored_text_gives(
    small: Scenario, default_cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the memory state the walk keeps its records as objects (`walk/ledger.py`); with
    the ledger switched off they go through the state as text, as over SQLite or Redis."""
    layouts = [make_layout(default_cfg, name) for name in ("recommended", "all", "trap")]

    def numbers() -> list[dict[str, Any]]:
        out = []
        for result in run_layouts(small, layouts):
            d = dataclasses.asdict(result)
            d.pop("wall")
            out.append(d)
        return out

    class TextMemoryState(MemoryState):
        """A subclass: `ledger_of` keeps objects for the plain memory state only. (Patching
        `ledger_of` would not reach the compiled modules, which call it directly.)"""

    assert ledger_of(MemoryState()) is not None and ledger_of(TextMemoryState()) is None
    with_ledger = numbers()
    monkeypatch.setattr(sim_policy, "MemoryState", TextMemoryState)
    as_text = numbers()
    assert with_ledger == as_text
    assert sum(r["contacts"] for r in with_ledger) > 1000
