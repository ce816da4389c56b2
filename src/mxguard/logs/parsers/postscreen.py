"""Postfix postscreen: verdicts per connection, before any SMTP transaction.

Every connection postscreen does not pass to smtpd ends with ``DISCONNECT``, whether
the client failed a test (PREGREET, HANGUP, DNSBL rank, ...) and was dropped or was
told to go away at RCPT time; so the screen-drop count is the DISCONNECT count, one
per connection, with no session to track.  The individual test results are kept as
side counters.  Both the pre-3.6 wording (WHITELISTED, BLACKLISTED) and the
``respectful_logging`` one (ALLOWLISTED, DENYLISTED) are accepted.
"""

from __future__ import annotations

from mxguard.logs.model import OP_CONN, OP_DROP, OP_REJECT, OP_TALLY, OTHER, RATE
from mxguard.logs.parsers.common import UNPARSED, client_of
from mxguard.logs.parsers.postfix import reject_event

SCREEN_RCPT = "screen_rcpt"

_TALLY = {
    b"PASS": (OP_TALLY, "postscreen_pass"),
    b"PREG": (OP_TALLY, "postscreen_pregreet"),
    b"HANG": (OP_TALLY, "postscreen_hangup"),
    b"COMM": (OP_TALLY, "postscreen_command_limit"),
    b"NON-": (OP_TALLY, "postscreen_non_smtp"),
    b"BARE": (OP_TALLY, "postscreen_bare_newline"),
    b"DNSB": (OP_TALLY, "postscreen_dnsbl_rank"),
    b"BLAC": (OP_TALLY, "postscreen_denylisted"),
    b"DENY": (OP_TALLY, "postscreen_denylisted"),
    b"WHIT": (OP_TALLY, "postscreen_allowlisted"),
    b"ALLO": (OP_TALLY, "postscreen_allowlisted"),
}
_QUIET = (b"cach", b"warn", b"erro", b"fata", b"pani", b"entr", b"leav", b"reje")


def _first_bracket(msg: bytes) -> str | None:
    """The address in the first ``[...]`` of a CONNECT/DISCONNECT line (the hot path)."""
    i = msg.find(b"[")
    if i <= 0:
        return None
    j = msg.find(b"]", i)
    if j < 0:
        return None
    ip = msg[i + 1 : j]
    if ip[:5] == b"IPv6:":
        ip = ip[5:]
    return ip.decode("ascii", "replace") if ip else None


def postscreen(service: bytes, msg: bytes) -> object:
    h = msg[:4]
    if h == b"CONN":
        ip = _first_bracket(msg)
        return (OP_CONN, ip, "postscreen") if ip else UNPARSED
    t = _TALLY.get(h)
    if t is not None:
        return t
    if h == b"DISC":
        return (OP_DROP, _first_bracket(msg))
    if h == b"NOQU":
        rest = msg[9:]
        if rest.startswith(b"reject: RCPT "):
            ev = reject_event(None, rest[8:], False)
            # the connection is counted once by its DISCONNECT; keep the recipient
            # for the several-MX check and as a side counter only.
            return (OP_REJECT, SCREEN_RCPT, *ev[2:])
        if rest.startswith(b"reject: CONNECT "):
            ip, _ = client_of(rest)
            kind = RATE if b"too many connections" in rest else OTHER
            return (OP_REJECT, kind, ip, None, None, 1, None)
        return UNPARSED
    if h in _QUIET:
        return None
    return UNPARSED
