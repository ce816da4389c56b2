"""Sendmail (sendmail, sm-mta, sm-acceptingconnections, ...).

One ``to=`` line may list several recipients, so deliveries carry a count.  A
``check_relay`` reject is per connection and is either a rate limit or an access/DNSBL
block; the reply text decides which.
"""

from __future__ import annotations

from mxguard.logs.model import (
    GREYLIST,
    OP_DELIVER,
    OP_QCLIENT,
    OP_QFROM,
    OP_QMSGID,
    OP_REJECT,
    OP_STAT,
    SCREEN,
    SPAM,
    UNKNOWN,
)
from mxguard.logs.parsers.common import UNPARSED, angle, bracket_ip, classify, text


def _relay_ip(msg: bytes) -> str | None:
    i = msg.find(b"relay=")
    if i < 0:
        return None
    j = msg.find(b"]", i)
    if j < 0:
        return None
    return bracket_ip(msg[i : j + 1])


def _qid(msg: bytes) -> tuple[bytes | None, bytes]:
    i = msg.find(b": ")
    if 0 < i <= 20 and msg[:i].isalnum():
        return msg[:i], msg[i + 2 :]
    return None, msg


def sendmail(service: bytes, msg: bytes) -> object:
    qid, rest = _qid(msg)
    if rest.startswith(b"ruleset="):
        k = rest.find(b"reject=")
        if k < 0:
            return None
        reply = rest[k + 7 :]
        ip = _relay_ip(rest)
        rcpt = angle(rest, b"arg1=<") if rest.startswith(b"ruleset=check_rcpt") else None
        kind = classify(reply)
        if rest.startswith(b"ruleset=check_relay") and kind == "other":
            kind = SCREEN
        return (OP_REJECT, kind, ip, None, rcpt, 1, None)
    if qid is None:
        if rest.startswith((b"STARTTLS", b"starting", b"alias", b"AUTH", b"error", b"NOQUEUE")):
            return None
        return UNPARSED
    if rest.startswith(b"from="):
        if b"nrcpts=0" in rest:
            return (OP_STAT, "sessions_without_recipients", 1)
        ip = _relay_ip(rest)
        events: list[object] = [
            (OP_QCLIENT, qid, ip, None, ip is None or ip in ("127.0.0.1", "::1")),
            (OP_QFROM, qid, angle(rest, b"from=<") or text(rest[5 : rest.find(b",")]).lower()),
        ]
        m = rest.find(b"msgid=")
        if m >= 0:
            e = rest.find(b",", m)
            events.append((OP_QMSGID, qid, text(rest[m + 6 : e if e > 0 else len(rest)])))
        return events
    if rest.startswith(b"to="):
        st = rest.find(b"stat=")
        if st < 0:
            return UNPARSED
        stat = rest[st + 5 : st + 9]
        if stat == b"Sent":
            e = rest.find(b", ", 3)
            rcpts = rest[3:e] if e > 0 else rest[3:]
            n = rcpts.count(b",") + 1
            first = rcpts.split(b",")[0].strip(b"<>")
            return (OP_DELIVER, qid, text(first).lower(), True, None, n)
        if stat == b"Defe":
            return (OP_STAT, "deferred", 1)
        return (OP_STAT, "bounced", 1)
    if rest.startswith(b"Milter"):
        k = rest.find(b"reject=")
        if k < 0:
            return None
        reply = rest[k + 7 :]
        kind = GREYLIST if b"reylist" in reply else SPAM
        return (OP_REJECT, kind, None, None, None, 1, None)
    if rest.startswith(b"<") and b">... " in rest:
        reason = rest[rest.find(b">... ") + 5 :]
        kind = classify(reason)
        if kind == "other" and b"user" in reason.lower():
            kind = UNKNOWN
        return (OP_REJECT, kind, None, None, angle(rest, b"<"), 1, None)
    if b"pre-greeting traffic" in rest:
        return (OP_REJECT, SCREEN, bracket_ip(rest[: rest.find(b"]") + 1]), None, None, 1, None)
    if b"did not issue" in rest or rest.startswith(
        (
            b"lost input",
            b"timeout",
            b"Authentication",
            b"AUTH",
            b"STARTTLS",
            b"done;",
            b"clone",
            b"SYSERR",
            b"DSN",
            b"return to sender",
            b"sender notify",
            b"[",
        )
    ):
        return None
    if b"[rejected]" in rest or b"possible SMTP attack" in rest:
        return None
    return UNPARSED
