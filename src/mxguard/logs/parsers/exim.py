"""Exim mainlog (plain or wrapped in syslog) and rejectlog.

Exim logs an arrival (``<=``), one line per delivered address (``=>``, ``->``) and a
``Completed``; rejections carry no message ID.  A rejectlog repeats the mainlog's
rejections (plus header dumps), so rejections carry a dedup key built from their time
and text: the analysis drops the second copy when both files are given.
"""

from __future__ import annotations

from mxguard.logs import timeparse
from mxguard.logs.model import (
    OP_DELIVER,
    OP_QCLIENT,
    OP_QDONE,
    OP_QFROM,
    OP_QMSGID,
    OP_REJECT,
    OP_STAT,
    RATE,
    SPAM,
)
from mxguard.logs.parsers.common import UNPARSED, bracket_ip, classify, text


def is_stamp(line: bytes) -> bool:
    return len(line) >= 19 and line[4:5] == b"-" and line[10:11] == b" " and line[13:14] == b":"


def split_stamp(line: bytes) -> tuple[float | None, bytes]:
    """``YYYY-MM-DD hh:mm:ss[.fff] [+zzzz] [[pid]] rest`` -> (epoch, rest)."""
    date = line[:10]
    sp = line.find(b" ", 11)
    if sp < 0:
        return None, b""
    clock = line[11:sp]
    rest = line[sp + 1 :]
    zone = b""
    if rest[:1] in (b"+", b"-") and rest[1:5].isdigit() and rest[5:6] in (b" ", b""):
        zone = rest[:5]
        rest = rest[6:]
    if rest[:1] == b"[":
        k = rest.find(b"] ")
        if 0 < k < 12 and rest[1:k].isdigit():
            rest = rest[k + 2 :]
    return timeparse.exim(date, clock, zone), rest


def _msgid(tok: bytes) -> bool:
    # 1jmFYj-00039V-QX (16 chars) or, since Exim 4.97, 10HmaX-000000005vi-0000 (23).
    n = len(tok)
    return (n == 16 and tok[6:7] == b"-" and tok[13:14] == b"-") or (
        n == 23 and tok[6:7] == b"-" and tok[18:19] == b"-"
    )


def _host_ip(rest: bytes) -> str | None:
    i = rest.find(b"H=")
    if i < 0:
        return None
    j = rest.find(b"]", i)
    if j < 0:
        return None
    return bracket_ip(rest[i : j + 1])


def _addr(tok: bytes) -> str:
    return text(tok.strip(b"<>:")).lower()


def body(rest: bytes) -> object:
    """One mainlog/rejectlog line after the timestamp."""
    sp = rest.find(b" ")
    first = rest[:sp] if sp > 0 else rest
    if _msgid(first):
        mid = first
        tail = rest[sp + 1 :]
        flag = tail[:3]
        if flag == b"<= ":
            parts = tail.split(b" ", 2)
            sender = parts[1] if len(parts) > 1 else b""
            ip = _host_ip(tail)
            if ip is None:
                # U=/P=local: generated here (bounces, cron), not received from a client.
                return [(OP_STAT, "arrived", 1), (OP_QCLIENT, mid, None, None, True)]
            msgid = None
            k = tail.find(b" id=")
            if k >= 0:
                e = tail.find(b" ", k + 4)
                msgid = text(tail[k + 4 : e if e > 0 else len(tail)])
            return [
                (OP_STAT, "arrived", 1),
                (OP_QCLIENT, mid, ip, None, False),
                (OP_QFROM, mid, "" if sender == b"<>" else _addr(sender)),
                (OP_QMSGID, mid, msgid) if msgid else None,
            ]
        if flag in (b"=> ", b"-> "):
            rcpt = tail[3 : tail.find(b" ", 3)] if tail.find(b" ", 3) > 0 else tail[3:]
            return [
                (
                    OP_STAT,
                    "delivered_primary_address" if flag == b"=> " else "delivered_additional",
                    1,
                ),
                (OP_DELIVER, mid, _addr(rcpt), True, None, 1),
            ]
        if flag == b"== ":
            return (OP_STAT, "deferred", 1)
        if flag == b"** ":
            return (OP_STAT, "bounced", 1)
        if tail.startswith(b"Completed"):
            return [(OP_STAT, "completed", 1), (OP_QDONE, mid)]
        if b"rejected" in tail:
            return _reject(tail, rest)
        if tail.startswith((b"SA: Action: perm", b"SA: Action: tempor")):
            return None  # the "rejected by local_scan()" line that follows is counted
        return None
    if b"rejected" in rest or b"refused" in rest:
        return _reject(rest, rest)
    if rest.startswith(b"SMTP connection from") or rest.startswith(b"Connection from"):
        return _conn(rest)
    return None


def _conn(rest: bytes) -> object:
    if b"too many connections" in rest or b"refused" in rest:
        return (OP_REJECT, RATE, bracket_ip(rest[: rest.find(b"]") + 1]), None, None, 1, None)
    return None


def _reject(tail: bytes, whole: bytes) -> object:
    ip = _host_ip(tail)
    sender = None
    f = tail.find(b"F=")
    if f >= 0:
        e = tail.find(b" ", f)
        sender = _addr(tail[f + 2 : e if e > 0 else len(tail)])
    rcpt = None
    r = tail.find(b"rejected RCPT ")
    if r >= 0:
        e = tail.find(b":", r + 14)
        rcpt = _addr(tail[r + 14 : e if e > 0 else len(tail)])
    k = tail.find(b"rejected")
    reason = tail[k:]
    if b"local_scan()" in reason or b"after DATA" in reason:
        kind = classify(reason, SPAM) if b"after DATA" in reason else SPAM
    elif b"ratelimit" in reason.lower():
        kind = RATE
    else:
        kind = classify(reason)
    return (OP_REJECT, kind, ip, sender, rcpt, 1, whole)


def mainlog_line(line: bytes) -> tuple[float | None, object]:
    ts, rest = split_stamp(line)
    if not rest:
        return ts, UNPARSED
    return ts, body(rest)


def exim_syslog(service: bytes, msg: bytes) -> object:
    """``exim[pid]: [YYYY-MM-DD hh:mm:ss] rest`` - the wrapped form."""
    if is_stamp(msg):
        _ts, msg = split_stamp(msg)
    return body(msg)
