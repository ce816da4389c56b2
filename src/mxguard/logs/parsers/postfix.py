"""Postfix daemons other than postscreen: smtpd, cleanup, qmgr, delivery agents.

Postfix spreads one message over many lines joined by the queue ID, so these
handlers emit small queue events (client, message-id, sender, delivery, removal) and
leave the joining to the analysis.  Handlers receive the service path between the
instance name and the daemon (``amavis`` in ``postfix/amavis/smtp``) because that is
how a content-filter hop is told from a real delivery.
"""

from __future__ import annotations

from mxguard.logs.model import (
    OP_CONN,
    OP_DELIVER,
    OP_QCLIENT,
    OP_QDONE,
    OP_QFROM,
    OP_QLOCAL,
    OP_QMSGID,
    OP_REJECT,
    OP_STAT,
    RATE,
    SPAM,
)
from mxguard.logs.parsers.common import UNPARSED, angle, bracket_ip, classify, client_of, text

_LOOPBACK = ("127.0.0.1", "::1")
_FILTER_WORDS = (b"amavis", b"filter", b"spam", b"clamav", b"dkim", b"scan")


def _qid(msg: bytes) -> tuple[bytes, bytes] | None:
    """Split ``QID: rest`` (queue IDs are alphanumeric; NOQUEUE counts as one)."""
    i = msg.find(b": ")
    if i <= 0 or i > 20:
        return None
    q = msg[:i].strip()
    if not q.isalnum():
        return None
    return q, msg[i + 2 :]


def reject_event(qid: bytes | None, rest: bytes, milter: bool) -> tuple[object, ...]:
    """``reject: RCPT from name[ip]: 550 5.1.1 <r>: text; from=<s> to=<r> ...``."""
    ip, _name = client_of(rest)
    j = rest.find(b"]: ")
    reply = rest[j + 3 :] if j >= 0 else rest
    semi = reply.find(b"; from=")
    reason = reply if semi < 0 else reply[:semi]
    kind = classify(reason, SPAM if milter else "other")
    if milter and kind == "other":
        kind = SPAM
    return (OP_REJECT, kind, ip, angle(rest, b"from=<"), angle(rest, b"to=<"), 1, None)


def smtpd(service: bytes, msg: bytes) -> object:
    h = msg[:4]
    if h == b"conn":
        if msg.startswith(b"connect from "):
            ip = bracket_ip(msg[13:])
            if ip is None or ip in _LOOPBACK:
                return None
            return (OP_CONN, ip, "smtpd")
        return None
    if h in (
        b"disc",
        b"Anon",
        b"lost",
        b"Trus",
        b"Untr",
        b"Veri",
        b"time",
        b"too ",
        b"impr",
        b"SSL_",
        b"erro",
        b"fata",
        b"pani",
        b"sett",
        b"stat",
    ):
        return None
    if h == b"warn":
        if b"limit exceeded" in msg:
            ip, _ = client_of(msg)
            return (OP_REJECT, RATE, ip, None, None, 1, None)
        return None
    if h == b"NOQU":
        rest = msg[9:]
        if rest.startswith(b"reject: "):
            return reject_event(None, rest[8:], False)
        if rest.startswith(b"milter-reject: "):
            return reject_event(None, rest[15:], True)
        if rest.startswith(b"proxy-reject: "):
            return reject_event(None, rest[14:], True)
        if rest.startswith(b"reject_warning: "):
            return (OP_STAT, "reject_warning", 1)
        if rest.startswith((b"filter: ", b"redirect: ", b"hold: ", b"discard: ", b"lost ")):
            return None
        return UNPARSED
    split = _qid(msg)
    if split is None:
        return UNPARSED
    qid, rest = split
    if rest.startswith(b"client="):
        ip = bracket_ip(rest[7 : rest.find(b"]") + 1 if b"]" in rest else len(rest)])
        k = rest.find(b"[")
        name = text(rest[7:k]) if k > 7 else None
        local = b"sasl_username=" in rest
        return (OP_QCLIENT, qid, ip, name, local)
    if rest.startswith(b"reject: "):
        return reject_event(qid, rest[8:], False)
    if rest.startswith(b"milter-reject: "):
        return reject_event(qid, rest[15:], True)
    if rest.startswith(b"proxy-reject: "):
        return reject_event(qid, rest[14:], True)
    if rest.startswith(b"reject_warning: "):
        return (OP_STAT, "reject_warning", 1)
    if rest.startswith(
        (b"filter: ", b"redirect: ", b"hold: ", b"discard: ", b"milter-", b"warning: ")
    ):
        return None
    return UNPARSED


def cleanup(service: bytes, msg: bytes) -> object:
    split = _qid(msg)
    if split is None:
        if msg.startswith((b"warning:", b"error:", b"fatal:", b"panic:", b"table ", b"dict_")):
            return None
        return UNPARSED
    qid, rest = split
    if rest.startswith(b"message-id="):
        mid = rest[11:].strip()
        return (OP_QMSGID, qid, text(mid)) if mid else None
    if rest.startswith(b"milter-reject: "):
        return reject_event(qid, rest[15:], True)
    if rest.startswith(b"reject: "):
        # header_checks / body_checks: content, one per message.
        ip, _ = client_of(rest)
        return (OP_REJECT, SPAM, ip, angle(rest, b"from=<"), angle(rest, b"to=<"), 1, None)
    if rest.startswith(b"discard: "):
        return (OP_STAT, "discarded", 1)
    if rest.startswith(
        (
            b"resent-message-id=",
            b"replace: ",
            b"prepend: ",
            b"warning: ",
            b"hold: ",
            b"redirect: ",
            b"filter: ",
            b"info: ",
            b"milter-",
            b"bcc: ",
            b"strip: ",
        )
    ):
        return None
    return UNPARSED


def qmgr(service: bytes, msg: bytes) -> object:
    split = _qid(msg)
    if split is None:
        return None if msg.startswith((b"warning:", b"error:", b"fatal:", b"panic:")) else UNPARSED
    qid, rest = split
    if rest == b"removed":
        return (OP_QDONE, qid)
    if rest.startswith(b"from=<"):
        if b"status=expired" in rest:
            return (OP_STAT, "expired", 1)
        return (OP_QFROM, qid, angle(rest, b"from=<"))
    if rest.startswith((b"skipped", b"warning")):
        return None
    return UNPARSED


def _is_filter_hop(service: bytes, relay: bytes, reply: bytes) -> bool:
    s = service.lower()
    for w in _FILTER_WORDS:
        if w in s:
            return True
    if b"queued as" not in reply:
        return False
    ip = bracket_ip(relay)
    return ip in _LOOPBACK or relay.startswith(b"localhost")


def delivery(service: bytes, msg: bytes) -> object:
    """smtp, lmtp, pipe, local, virtual, error, retry, discard agents."""
    split = _qid(msg)
    if split is None:
        if msg.startswith(
            (
                b"warning:",
                b"connect to ",
                b"Trusted",
                b"Untrusted",
                b"Verified",
                b"Anonymous",
                b"error:",
                b"fatal:",
                b"SSL_",
                b"certificate",
                b"server certificate",
            )
        ):
            return None
        return UNPARSED
    qid, rest = split
    if not rest.startswith(b"to=<"):
        if rest.startswith(
            (
                b"host ",
                b"lost connection",
                b"conversation",
                b"enabling PIX",
                b"breaking line",
                b"Server certificate",
                b"warning",
                b"SASL",
            )
        ):
            return None
        return UNPARSED
    st = rest.find(b", status=")
    if st < 0:
        return UNPARSED
    status = rest[st + 9 : st + 13]
    if status == b"sent":
        nxt: bytes | None
        rcpt = angle(rest, b"to=<")
        reply = rest[st + 14 :]
        relay = b""
        r = rest.find(b"relay=")
        if r >= 0:
            relay = rest[r + 6 : rest.find(b",", r)]
        if reply.startswith(b"(forwarded as "):
            nxt = reply[14:].rstrip(b")").strip()
            return (OP_DELIVER, qid, rcpt, True, nxt, 1)
        if _is_filter_hop(service, relay, reply):
            k = reply.rfind(b"queued as ")
            nxt = reply[k + 10 :].rstrip(b")").strip() if k >= 0 else None
            return (OP_DELIVER, qid, rcpt, False, nxt or None, 1)
        return (OP_DELIVER, qid, rcpt, True, None, 1)
    if status == b"defe":
        return (OP_STAT, "deferred", 1)
    if status == b"boun":
        if b" 5.1.1" in rest or b"unknown" in rest.lower():
            return (OP_STAT, "bounced_unknown_user", 1)
        return (OP_STAT, "bounced", 1)
    if status == b"expi":
        return (OP_STAT, "expired", 1)
    return None


def pickup(service: bytes, msg: bytes) -> object:
    split = _qid(msg)
    if split is None:
        return None
    return (OP_QLOCAL, split[0])


def bounce(service: bytes, msg: bytes) -> object:
    split = _qid(msg)
    if split is None:
        return None
    rest = split[1]
    k = rest.find(b"notification: ")
    if k < 0:
        return None
    return (OP_QLOCAL, rest[k + 14 :].strip())


def anvil(service: bytes, msg: bytes) -> object:
    # anvil itself logs only periodic maxima, not rejections; smtpd logs the hits.
    return None


def ignore(service: bytes, msg: bytes) -> object:
    return None
