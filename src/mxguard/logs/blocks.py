"""Turn a block of raw log bytes into events and tallies; worker processes run this.

A block is a run of whole lines.  The bulk of a busy MX log is connection chatter
(postscreen CONNECT/DISCONNECT, smtpd connect), so those are folded into per-block
tallies here instead of crossing the process boundary one by one; everything that
needs joining across lines (queue IDs, recipients) is passed on as events in order.

The "repeated N times" expansion refers to the previous line of the same host and so
only works within a block; a miss is counted as an unparsed line, never guessed.
"""

from __future__ import annotations

from mxguard.logs import timeparse
from mxguard.logs.model import OP_CONN, OP_DROP, OP_ROLE, OP_TALLY
from mxguard.logs.parsers import exim, mxguard_json, postfix
from mxguard.logs.parsers.common import UNPARSED
from mxguard.logs.parsers.syslog import RFC3339, _token_cache, resolve_token, split_line, stamp

_MISSING = object()

SAMPLES_PER_PROGRAM = 5
Event = tuple[float | None, str | None, tuple[object, ...]]
# A connection's time: epoch seconds (-1.0 if unknown), or an RFC 3339 stamp still raw.
# Only the first and last connection per client and block are ever looked at, so
# converting every connection line's stamp (a third of a busy log) would be wasted.
Stamp = float | bytes
# Programs whose every line is dropped (dnsblog, tlsproxy, anvil: a quarter of a
# postscreen MX's log): skipped before the handler call and its message checks.
_SILENT = frozenset((postfix.ignore, postfix.anvil))
# seconds field of a stamp -> its value, a dict hit being cheaper than isdigit() and int()
_SECONDS = {b"%02d" % i: i for i in range(100)}


class BlockResult:
    """What one block yields; the analysis merges these in input order.

    A plain slotted class: importing dataclasses would cost each worker megabytes.
    """

    __slots__ = (
        "clients",
        "corrupt",
        "corrupt_samples",
        "drops",
        "events",
        "formats",
        "lines",
        "samples",
        "tallies",
        "unparsed",
    )

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lines = 0
        self.corrupt = 0
        self.unparsed: dict[str, int] = {}
        self.samples: dict[str, list[str]] = {}
        self.corrupt_samples: list[str] = []
        self.formats: dict[str, int] = {}
        # (host, name) -> count
        self.tallies: dict[tuple[str | None, str], int] = {}
        # (host, hour epoch) -> screened connections dropped
        self.drops: dict[tuple[str | None, int], int] = {}
        # (host, client) -> [first ts, last ts, connections]
        self.clients: dict[tuple[str | None, str], list[float]] = {}


def parse_block(data: bytes, keep_samples: bool = True) -> BlockResult:
    res = BlockResult()
    raw_events: list[tuple[float | None, bytes | None, tuple[object, ...]]] = []
    append = raw_events.append
    unparsed = res.unparsed
    tallies: dict[tuple[bytes | None, str], int] = {}
    drops: dict[tuple[bytes | None, int], int] = {}
    clients: dict[tuple[bytes | None, str], list[Stamp]] = {}
    tok_cache = _token_cache
    fast_minutes = timeparse._fast_cache
    seconds = _SECONDS
    silent = _SILENT
    conn_names = _CONN_NAMES
    n_json = n_exim = 0
    last_by_host: dict[bytes | None, list[tuple[object, ...]]] = {}
    seen_roles: set[tuple[object, object]] = set()
    corrupt = 0
    blank = 0  # whitespace-only lines: neither counted nor corrupt
    ev: object
    hb: bytes | None
    # Rare features, looked for once per block (a scan in C) instead of on every line.
    has_cr = b"\r" in data
    has_repeats = b"message repeated " in data
    has_solaris_ids = b"[ID " in data
    lines = data.split(b"\n")
    for line in lines:
        if not line:
            continue
        if line[10:11] == b"T":
            # RFC 3339 syslog, the common case on current systems: inlined for speed
            try:
                raw, hb, tok, msg = line.split(b" ", 3)
            except ValueError:  # fewer than four fields
                sp = None
            else:
                # a miss is rare (new pid) and resolve_token caches invalid tokens too
                resolved = tok_cache.get(tok) or resolve_token(tok)
                if resolved is None:
                    sp = None
                else:
                    fmt = RFC3339
                    if has_solaris_ids and msg[:4] == b"[ID " and b"] " in msg[:40]:
                        msg = msg[msg.find(b"] ") + 2 :]
                    sp = True
        else:
            c0 = line[:1]
            if c0 == b"{":
                n_json += 1
                ts, jhost, ev = mxguard_json.parse(line)
                hb = jhost.encode() if jhost is not None else None
                prog = "mxguard-json"
                sp = False
            elif c0.isdigit() and line[10:11] == b" " and exim.is_stamp(line):
                n_exim += 1
                ts, ev = exim.mainlog_line(line.rstrip(b"\r"))
                hb = None
                prog = "exim"
                sp = False
            else:
                full = split_line(line)
                if full is None:
                    sp = None
                else:
                    # split_line's raw stamp is bytes, a tuple or None as fmt says; it is
                    # only used as bytes below where fmt == RFC3339
                    fmt, raw, hb, resolved, msg = full  # type: ignore[assignment]
                    sp = True
        if sp:
            handler, service, prog = resolved  # type: ignore[misc]
            if handler in silent:
                continue
            if handler is None:
                ev = UNPARSED
                if service == b"last":
                    prev = last_by_host.get(hb)
                    count = _repeat_count(msg)
                    if prev is not None and count is not None:
                        ts = stamp(fmt, raw)
                        for _ in range(count):
                            for e in prev:
                                append((ts, hb, e))
                        continue
            else:
                if has_cr and msg[-1:] == b"\r":
                    msg = msg[:-1]
                if has_repeats and msg[:17] == b"message repeated " and b": [" in msg:
                    count = _repeat_count(msg) or 1
                    ev = handler(service, msg[msg.find(b": [") + 3 :].rstrip(b"]").strip())
                    if ev is not None and ev is not UNPARSED:
                        ev = (ev if isinstance(ev, list) else [ev]) * count
                else:
                    ev = handler(service, msg)
                if ev is None:
                    continue
                if ev is UNPARSED:
                    ts = None
                else:
                    op = ev[0] if type(ev) is tuple else -1
                    if op == OP_TALLY:
                        key = (hb, ev[1])  # type: ignore[index]
                        tallies[key] = tallies.get(key, 0) + 1
                        continue
                    if op == OP_CONN and fmt == RFC3339:
                        # inlined _conn, keeping the stamp raw (see Stamp)
                        src = ev[2]  # type: ignore[index]
                        key = (hb, conn_names.get(src) or "connections_" + str(src))
                        tallies[key] = tallies.get(key, 0) + 1
                        ip = ev[1]  # type: ignore[index]
                        if isinstance(ip, str):
                            ck = (hb, ip)
                            c = clients.get(ck)
                            if c is None:
                                clients[ck] = [raw, raw, 1.0]
                            else:
                                c[1] = raw
                                c[2] += 1  # type: ignore[operator]
                        continue
                    if fmt == RFC3339:
                        # the minute cache of timeparse.rfc3339, inlined: most lines hit it
                        base = fast_minutes.get(raw[:16] + raw[-6:])
                        sec = seconds.get(raw[17:19]) if base is not None else None
                        ts = base + sec if sec is not None else stamp(fmt, raw)  # type: ignore[operator]
                    else:
                        ts = stamp(fmt, raw)
                    if ts is None and fmt == 0 and exim.is_stamp(msg):
                        ts = exim.split_stamp(msg)[0]
                    if op == OP_CONN:
                        _conn(clients, tallies, hb, ev, ts)  # type: ignore[arg-type]
                        continue
                    if op == OP_DROP:
                        hour = int(ts // 3600 * 3600) if ts is not None else -1
                        dk = (hb, hour)
                        drops[dk] = drops.get(dk, 0) + 1
                        continue
        elif sp is None:
            if line.strip():
                corrupt += 1
                if keep_samples and len(res.corrupt_samples) < SAMPLES_PER_PROGRAM:
                    res.corrupt_samples.append(line[:300].decode("utf-8", "replace"))
            else:
                blank += 1
            continue
        if ev is None:
            continue
        if ev is UNPARSED:
            unparsed[prog] = unparsed.get(prog, 0) + 1
            if keep_samples:
                s = res.samples.setdefault(prog, [])
                if len(s) < SAMPLES_PER_PROGRAM:
                    s.append(line[:300].decode("utf-8", "replace"))
            continue
        if isinstance(ev, list):
            kept = []
            for e in ev:
                if e is None:
                    continue
                op = e[0]
                if op == OP_ROLE:
                    key2 = (hb, e[1])
                    if key2 in seen_roles:
                        continue
                    seen_roles.add(key2)
                elif op == OP_CONN:
                    _conn(clients, tallies, hb, e, ts)
                    continue
                elif op == OP_TALLY:
                    key = (hb, e[1])
                    tallies[key] = tallies.get(key, 0) + 1
                    continue
                append((ts, hb, e))
                kept.append(e)
            last_by_host[hb] = kept
        else:
            append((ts, hb, ev))  # type: ignore[arg-type]
            last_by_host[hb] = [ev]  # type: ignore[list-item]
    names: dict[bytes | None, str | None] = {None: None}

    def name(h: bytes | None) -> str | None:
        s = names.get(h, _MISSING)
        if s is _MISSING:
            s = names[h] = h.decode("utf-8", "replace")  # type: ignore[union-attr]
        return s  # type: ignore[return-value]

    res.events = [(ts, name(h), e) for ts, h, e in raw_events]
    res.tallies = {(name(h), k): v for (h, k), v in tallies.items()}
    res.drops = {(name(h), k): v for (h, k), v in drops.items()}
    res.clients = {
        (name(h), k): [_epoch(v[0]), _epoch(v[1]), v[2]]  # type: ignore[list-item]
        for (h, k), v in clients.items()
    }
    # Every non-empty line is syslog, exim, json, corrupt or blank: the line counts
    # follow from the others rather than being counted in the loop.
    res.lines = len(lines) - lines.count(b"") - blank
    n_sys = res.lines - n_json - n_exim - corrupt
    res.corrupt = corrupt
    res.formats = {k: v for k, v in (("syslog", n_sys), ("exim", n_exim), ("json", n_json)) if v}
    return res


_CONN_NAMES: dict[object, str] = {
    "postscreen": "connections_postscreen",
    "smtpd": "connections_smtpd",
}


def _epoch(stamp: Stamp) -> float:
    if type(stamp) is bytes:
        ts = timeparse.rfc3339(stamp)
        return ts if ts is not None else -1.0
    return stamp  # type: ignore[return-value]


def _conn(
    clients: dict[tuple[bytes | None, str], list[Stamp]],
    tallies: dict[tuple[bytes | None, str], int],
    host: bytes | None,
    ev: tuple[object, ...],
    ts: float | None,
) -> None:
    key = (host, _CONN_NAMES.get(ev[2]) or "connections_" + str(ev[2]))
    tallies[key] = tallies.get(key, 0) + 1
    ip = ev[1]
    if not isinstance(ip, str):
        return
    ck = (host, ip)
    t = ts if ts is not None else -1.0
    c = clients.get(ck)
    if c is None:
        clients[ck] = [t, t, 1.0]
    else:
        c[1] = t
        c[2] += 1  # type: ignore[operator]  # the count slot is always a float


def _repeat_count(msg: bytes) -> int | None:
    for tok in msg.split(b" ", 4):
        if tok.isdigit():
            return min(int(tok), 100_000)
    return None
