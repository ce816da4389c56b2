"""mxguard's own JSON event log: one object per line, already classified.

The reason tag decides the column; the mapping is written down in docs/report.md.
"""

from __future__ import annotations

from mxguard.logs.model import (
    DELIVERED,
    GREYLIST,
    OP_CONN,
    OP_DIRECT,
    OP_FORWARDED,
    OP_ROLE,
    OP_STAT,
    OTHER,
    RATE,
    RELAY,
    SCREEN,
    SPAM,
    UNKNOWN,
    WALK,
)
from mxguard.logs.parsers.common import UNPARSED

REASON_KIND: dict[str, str] = {
    "spam": SPAM,
    "rate_limit": RATE,
    "unknown_recipient": UNKNOWN,
    "greylisted": GREYLIST,
    "dnsbl": SCREEN,
    "pregreet": SCREEN,
    "blocklisted": SCREEN,
    "relay_denied": RELAY,
    "mx_walk": WALK,
    "trap": WALK,
    "too_big": OTHER,
}
_REFUSALS = ("tempfail", "reject", "discard", "disconnect")

#: sessions already counted as a client's contact: `serve` logs decisions (RCPT, end of
#: message, refusals), not accepted connections, so a session's first event stands for its
#: connection. Bounded; a session met again after a clear (or in another worker's byte
#: range) counts twice, which moves a connection count by one and no client's MX set.
_SESSIONS_SEEN: dict[str, None] = {}
_SESSIONS_MAX = 65536


def _first_of_session(obj: dict[str, object]) -> bool | None:
    """Whether this event opens its session here; None for an event without a session."""
    session = obj.get("session")
    if not isinstance(session, str) or not session:
        return None
    if session in _SESSIONS_SEEN:
        return False
    if len(_SESSIONS_SEEN) >= _SESSIONS_MAX:
        _SESSIONS_SEEN.clear()
    _SESSIONS_SEEN[session] = None
    return True


def parse(line: bytes) -> tuple[float | None, str | None, object]:
    """One JSON line -> (ts, mx host, event or list of events)."""
    import json  # only when a JSON line shows up: keeps parser workers small

    try:
        obj = json.loads(line)
    except ValueError:
        return None, None, UNPARSED
    if not isinstance(obj, dict) or "mx" not in obj or "action" not in obj:
        return None, None, UNPARSED
    ts = obj.get("ts")
    ts = float(ts) if isinstance(ts, int | float) else None
    mx = obj.get("mx")
    host = str(mx) if mx is not None else None
    role = obj.get("role")
    client = obj.get("client")
    client = str(client) if client else None
    stage = obj.get("stage")
    action = obj.get("action")
    reason = obj.get("reason") or ""
    role_ev = (OP_ROLE, str(role), obj.get("preference")) if role else None
    first = _first_of_session(obj) if stage != "forward" and client is not None else None
    conn_ev = (OP_CONN, client, "mxguard") if first else None
    ev: object
    if stage == "forward":
        ev = (OP_FORWARDED, obj.get("queue_id"), obj.get("msgid"), 1)
    elif stage == "connect" and action == "accept":
        # with a session, its first event (maybe this one) has counted the connection
        ev = (OP_CONN, client, "mxguard") if first is None else None
    elif action == "accept":
        if stage == "eom" and reason in ("delivered", "queued", "ok"):
            ev = (
                OP_DIRECT,
                DELIVERED,
                client,
                _low(obj.get("sender")),
                _low(obj.get("recipient")),
                obj.get("msgid"),
                1,
            )
        else:
            ev = None
    elif action in _REFUSALS:
        kind = REASON_KIND.get(reason, OTHER)
        ev = (
            OP_DIRECT,
            kind,
            client,
            _low(obj.get("sender")),
            _low(obj.get("recipient")),
            obj.get("msgid"),
            1,
        )
    else:
        ev = (OP_STAT, "json_unknown_action", 1)
    return ts, host, [role_ev, conn_ev, ev]


def _low(v: object) -> str | None:
    return str(v).lower() if v is not None else None
