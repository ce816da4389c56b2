"""Where a simulated session's decisions go: through the event log, or to its one reader.

In `serve` every decision becomes an event (a dict, then a JSON line) and each event-log
listener reads the dict. The simulator writes no log file, and the only listener of the
installed features is the walk feature's, which keeps what each MX answered: building a dict
per decision, address as text, only for that listener to take it apart again was most of
the cost of a decision's bookkeeping. So when that listener is the only reader, decisions go
to its `on_decision`, which takes the facts and verdict the event is made of. With any other
listener, or a log file, they go through `EventLog.decision` as in `serve`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mxguard.events import EventLog

#: called as sink(facts, verdict, **extra), as `EventLog.decision` is
DecisionSink = Callable[..., None]


def decision_sink(events: EventLog, walk: Any | None) -> DecisionSink | None:
    """Who hears of each decision; None when no listener does (the simulator writes no file)."""
    if not events.listeners:
        return None
    if (
        walk is not None
        and events.path is None
        and events.listeners == [walk.on_event]
        and hasattr(walk, "on_decision")
    ):
        sink: DecisionSink = walk.on_decision
        return sink
    return events.decision
