"""Content filters that log on their own: amavis (with SpamAssassin) and spamd.

amavis decides after Postfix already said 250, so a ``Blocked SPAM`` line is the only
place such a rejection shows; it is linked to the Postfix queue ID it names.
``Passed`` verdicts are not counted here: the delivery that follows is.
"""

from __future__ import annotations

from mxguard.logs.model import OP_CONTENT, OP_STAT, OTHER, SPAM
from mxguard.logs.parsers.common import UNPARSED, angle, bracket_ip

_SPAMLIKE = (b"SPAM", b"SPAMMY", b"INFECTED")


def amavis(service: bytes, msg: bytes) -> object:
    i = msg.find(b") ")
    body = msg[i + 2 :] if msg.startswith(b"(") and i > 0 else msg
    if body.startswith((b"Passed ", b"Blocked ")):
        blocked = body[0:1] == b"B"
        parts = body.split(b" ", 2)
        verdict = parts[1] if len(parts) > 1 else b""
        if not blocked:
            return (OP_STAT, "amavis_passed_" + verdict.decode("ascii", "replace").lower(), 1)
        kind = SPAM if verdict in _SPAMLIKE else OTHER
        q = body.find(b"Queue-ID: ")
        qid = body[q + 10 : body.find(b",", q)] if q >= 0 else None
        j = body.find(b"}, ")
        ip = bracket_ip(body[j + 3 : body.find(b"]", j) + 1]) if j >= 0 else None
        return (OP_CONTENT, kind, qid, ip, angle(body, b"<"), 1)
    if body[:1].isupper() or body.startswith(
        (
            b"...",
            b"(!",
            b"extra",
            b"TIMING",
            b"size",
            b"Checking",
            b"mail_via",
            b"ESMTP",
            b"SpamControl",
            b"spam-tag",
            b"truncating",
            b"NOTICE",
            b"starting",
            b"Net::",
            b"lookup",
            b"local delivery",
            b"p00",
            b"Decoder",
            b"Using",
            b"Found",
            b"No ",
            b"Module",
            b"Internal",
            b"logging",
            b"initializing",
            b"AM.PDP",
            b"SA",
            b"bounce",
            b"DSN",
            b"do_",
            b"wbl",
        )
    ):
        return None
    return UNPARSED


def spamd(service: bytes, msg: bytes) -> object:
    if msg.startswith(b"spamd: result: "):
        flag = msg[15:16]
        return (OP_STAT, "spamd_spam" if flag == b"Y" else "spamd_ham", 1)
    return None
