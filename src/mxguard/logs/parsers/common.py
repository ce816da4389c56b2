"""Small byte-level helpers shared by the MTA parsers.

Parsers work on ``bytes`` because real logs carry raw non-UTF-8 bytes (PREGREET
payloads, binary garbage after BARE NEWLINE); only the few fields that end up in an
event are decoded, with replacement, so a bad byte can never stop a run.
"""

from __future__ import annotations

from mxguard.logs.model import GREYLIST, OTHER, RATE, RELAY, SCREEN, SPAM, UNKNOWN

# Returned by a handler for a line it was meant to understand but did not.
UNPARSED = object()


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def between(msg: bytes, start: bytes, end: bytes) -> bytes | None:
    """The bytes after the first ``start`` up to the next ``end`` (None if absent)."""
    i = msg.find(start)
    if i < 0:
        return None
    i += len(start)
    j = msg.find(end, i)
    if j < 0:
        return msg[i:]
    return msg[i:j]


def bracket_ip(token: bytes) -> str | None:
    """``name[1.2.3.4]``, ``[1.2.3.4]:25`` or ``[IPv6:2001:db8::1]`` -> the address."""
    i = token.rfind(b"[")
    if i < 0:
        return None
    j = token.find(b"]", i)
    if j < 0:
        return None
    ip = token[i + 1 : j]
    if ip[:5] == b"IPv6:":
        ip = ip[5:]
    return ip.decode("ascii", "replace") if ip else None


def client_of(msg: bytes, marker: bytes = b" from ") -> tuple[str | None, str | None]:
    """``... from name[ip]: ...`` -> (ip, name)."""
    i = msg.find(marker)
    if i < 0:
        return None, None
    i += len(marker)
    j = msg.find(b"]", i)
    if j < 0:
        return None, None
    tok = msg[i : j + 1]
    k = tok.find(b"[")
    name = tok[:k].decode("utf-8", "replace") if k > 0 else None
    return bracket_ip(tok), name


def angle(msg: bytes, key: bytes) -> str | None:
    """Value of ``key<...>`` such as ``from=<a@b>``; empty sender stays ``''``."""
    i = msg.find(key)
    if i < 0:
        return None
    i += len(key)
    j = msg.find(b">", i)
    if j < 0:
        return None
    return msg[i:j].decode("utf-8", "replace").lower()


_GREY = (b"greylist", b"grey-list", b"graylist", b"try again later, greylisted")
_SCREEN = (
    b"blocked using",
    b"black list",
    b"blacklist",
    b"blocklist",
    b"dnsbl",
    b" rbl",
    b"rbl:",
    b"listed at",
    b"is listed in",
    b"listed by",
    b"spamhaus",
    b"pre-greeting",
)
_UNKNOWN = (
    b"user unknown",
    b"unknown user",
    b"undeliverable address",
    b"unrouteable address",
    b"no such user",
    b"unknown recipient",
    b"recipient unknown",
    b"mailbox unavailable",
    b"does not exist here",
    b"invalid recipient",
)
_RELAY = (
    b"relay access denied",
    b"relaying denied",
    b"relay not permitted",
    b"relaying temporarily denied",
)
_RATE = (
    b"rate limit",
    b"ratelimit",
    b"too many connections",
    b"too many open connections",
    b"concurrency limit",
    b"too many recipients",
    b"too many messages",
)
_SPAM = (b"spam", b"virus", b"malware", b"infected", b"local_scan", b"content rejected")


#: most specific first (see classify)
_CLASSES = (
    (_GREY, GREYLIST),
    (_SCREEN, SCREEN),
    (_UNKNOWN, UNKNOWN),
    (_RELAY, RELAY),
    (_RATE, RATE),
    (_SPAM, SPAM),
)


def classify(reason: bytes, default: str = OTHER) -> str:
    """Map a rejection's reply text to a report column.

    Order matters: a greylisting milter's text can mention spam, and a DNSBL text
    can mention users; the more specific class is tried first.
    """
    t = reason.lower()
    for words, kind in _CLASSES:
        for w in words:
            if w in t:
                return kind
    return default
