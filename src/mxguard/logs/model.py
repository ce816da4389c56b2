"""Vocabulary shared by the parsers and the analysis.

Parsers run in worker processes and hand their results back through a pipe, so an
event is a plain tuple whose first item is one of the ``OP_*`` integers below; plain
tuples pickle several times faster than dataclasses, and the log can hold millions.
Each parser yields ``(ts, host, event)`` where ``ts`` is epoch seconds (or ``None``)
and ``host`` the syslog host field (or ``None`` when the format has none).
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into workers

if TYPE_CHECKING:
    from typing import Final

# --- event opcodes --------------------------------------------------------------
# (OP_CONN, client, source) - a client connected (source: smtpd, postscreen, ...)
OP_CONN: Final = 0
# (OP_REJECT, kind, client, sender, rcpt, count, dedup_key)
OP_REJECT: Final = 1
# (OP_QCLIENT, qid, client, client_name, local) - a message entered the queue
OP_QCLIENT: Final = 5
# (OP_QMSGID, qid, msgid)
OP_QMSGID: Final = 6
# (OP_QFROM, qid, sender)
OP_QFROM: Final = 7
# (OP_DELIVER, qid, rcpt, final, next_qid, count) - final False: content-filter hop
OP_DELIVER: Final = 8
# (OP_QDONE, qid) - the message left the queue; forget it
OP_QDONE: Final = 9
# (OP_DIRECT, kind, client, sender, rcpt, msgid, count) - a self-contained outcome
OP_DIRECT: Final = 10
# (OP_STAT, name, count) - a side counter shown per server
OP_STAT: Final = 11
# (OP_REPEAT, n) - syslog "last message repeated n times"
OP_REPEAT: Final = 12
# (OP_CONTENT, kind, qid, client, sender, count) - after-queue content verdict
OP_CONTENT: Final = 13
# (OP_QLOCAL, qid) - the message was made on this host (pickup, bounce, forward)
OP_QLOCAL: Final = 14
# (OP_ROLE, role, preference) - the host states its own role (mxguard JSON)
OP_ROLE: Final = 15
# (OP_FORWARDED, qid, msgid, count) - a backup relayed a message to another MX
OP_FORWARDED: Final = 16
# Worker-local ops: folded into per-block tallies instead of being sent to the
# analysis one by one, because they are the bulk of a busy log.
# (OP_TALLY, name) - count one occurrence of a side counter
OP_TALLY: Final = 17
# (OP_DROP, client) - a screened connection closed without passing (postscreen)
OP_DROP: Final = 18

# --- report columns ---------------------------------------------------------------
DELIVERED: Final = "delivered"
SPAM: Final = "spam"
RATE: Final = "rate"
UNKNOWN: Final = "unknown"
GREYLIST: Final = "greylist"
SCREEN: Final = "screen"
RELAY: Final = "relay"
WALK: Final = "walk"
OTHER: Final = "other"

REJECT_KINDS: Final = (SPAM, RATE, UNKNOWN, GREYLIST, SCREEN, RELAY, WALK, OTHER)
KINDS: Final = (DELIVERED, *REJECT_KINDS)

TITLES: Final = {
    DELIVERED: "delivered",
    SPAM: "spam rejected",
    RATE: "rate limited",
    UNKNOWN: "unknown user",
    GREYLIST: "greylisted",
    SCREEN: "DNSBL/screen",
    RELAY: "relay denied",
    WALK: "walk/trap",
    OTHER: "other",
}

# What one count means in each column; the analysis prints these next to the table
# because the units differ and a ratio of unlike units is easy to misread.
UNITS: Final = {
    DELIVERED: "recipient (final delivery)",
    SPAM: "message (content verdict)",
    RATE: "event (limit hit)",
    UNKNOWN: "recipient",
    GREYLIST: "recipient attempt",
    SCREEN: "recipient (DNSBL reject) or connection (screen drop)",
    RELAY: "recipient",
    WALK: "event",
    OTHER: "event",
}

# Ratios the seed study compares between servers.
RATIO_KINDS: Final = (SPAM, UNKNOWN, RATE)

ROLES: Final = ("primary", "backup", "trap", "retired")
