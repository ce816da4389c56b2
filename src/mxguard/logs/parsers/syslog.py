"""Syslog framing: timestamp, host, program; then dispatch on the program name.

Handles classic (``Mmm dd hh:mm:ss``, with optional microseconds as Postfix's own
``maillog_file`` writes them) and RFC 3339 stamps line by line, so files that mix the
two work; priority tags (``<mail.info>``), a missing ``:`` after ``[pid]``, Solaris
``[ID n facility]`` tags and host-only prefixes are tolerated.  Program names are
resolved once and cached: ``postfix-mx/submission/smtpd`` is the Postfix ``smtpd``
daemon of instance ``postfix-mx`` with service ``submission``.
"""

from __future__ import annotations

from mxguard.logs import timeparse
from mxguard.logs.parsers import exim, filters, postfix, postgrey, postscreen, sendmail

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into workers

if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[bytes, bytes], object]
    Resolved = tuple[Handler | None, bytes, str]

_POSTFIX: dict[bytes, Handler] = {
    b"smtpd": postfix.smtpd,
    b"cleanup": postfix.cleanup,
    b"qmgr": postfix.qmgr,
    b"nqmgr": postfix.qmgr,
    b"smtp": postfix.delivery,
    b"lmtp": postfix.delivery,
    b"pipe": postfix.delivery,
    b"local": postfix.delivery,
    b"virtual": postfix.delivery,
    b"error": postfix.delivery,
    b"retry": postfix.delivery,
    b"discard": postfix.delivery,
    b"pickup": postfix.pickup,
    b"bounce": postfix.bounce,
    b"postscreen": postscreen.postscreen,
    b"anvil": postfix.anvil,
}
_POSTFIX_QUIET = (
    b"dnsblog",
    b"tlsproxy",
    b"master",
    b"postfix-script",
    b"postsuper",
    b"scache",
    b"verify",
    b"trivial-rewrite",
    b"proxymap",
    b"tlsmgr",
    b"postlogd",
    b"sendmail",
    b"postdrop",
    b"flush",
    b"showq",
    b"oqmgr",
    b"spawn",
    b"policyd-spf",
    b"postmap",
    b"postconf",
    b"postmulti",
    b"postqueue",
)
_OTHERS: dict[bytes, Handler] = {
    b"amavis": filters.amavis,
    b"amavisd": filters.amavis,
    b"amavisd-new": filters.amavis,
    b"postgrey": postgrey.postgrey,
    b"exim": exim.exim_syslog,
    b"exim4": exim.exim_syslog,
    b"sendmail": sendmail.sendmail,
    b"sm-mta": sendmail.sendmail,
    b"sm-msp-queue": sendmail.sendmail,
    b"sm-acceptingconnections": sendmail.sendmail,
    b"sm-mta-rx": sendmail.sendmail,
    b"spamd": filters.spamd,
    b"opendkim": postfix.ignore,
    b"opendmarc": postfix.ignore,
    b"dovecot": postfix.ignore,
    b"policyd-spf": postfix.ignore,
}

# name -> (handler or None, service path, printable program name)
_cache: dict[bytes, Resolved] = {}


def resolve(name: bytes) -> Resolved:
    hit = _cache.get(name)
    if hit is not None:
        return hit
    parts = name.split(b"/")
    family = parts[0].lower()
    daemon = parts[-1].lower()
    service = b"/".join(parts[1:-1])
    label = name.decode("utf-8", "replace")
    handler: Handler | None
    if family.startswith(b"postfix") and len(parts) > 1:
        handler = _POSTFIX.get(daemon)
        if handler is None and daemon in _POSTFIX_QUIET:
            handler = postfix.ignore
    else:
        handler = _OTHERS.get(family)
        service = b""
    res = (handler, service, label)
    if len(_cache) < 10_000:
        _cache[name] = res
    return res


def program_token(tok: bytes) -> bytes | None:
    """``postfix/smtpd[123]:`` or ``postfix/smtpd[123]`` or ``sm-mta:`` -> the name."""
    if tok[-1:] == b":":
        tok = tok[:-1]
    i = tok.find(b"[")
    if i > 0:
        if tok[-1:] != b"]":
            return None
        return tok[:i]
    if i == 0 or not tok:
        return None
    return tok


# full program token (with pid) -> resolved; pids repeat, so this saves re-parsing
_token_cache: dict[bytes, Resolved | None] = {}


def resolve_token(tok: bytes) -> Resolved | None:
    hit = _token_cache.get(tok, False)
    if hit is not False:
        return hit  # type: ignore[return-value]
    name = program_token(tok)
    res = resolve(name) if name is not None else None
    if len(_token_cache) > 20_000:
        _token_cache.clear()
    _token_cache[tok] = res
    return res


RFC3339 = 1
BSD = 2


def stamp(fmt: int, raw: object) -> float | None:
    """Parse the raw stamp kept by :func:`split_line` (done only for lines that count)."""
    if fmt == RFC3339:
        return timeparse.rfc3339(raw)  # type: ignore[arg-type]  # fmt says raw is bytes
    if fmt == BSD:
        m: bytes
        d: bytes
        c: bytes
        m, d, c = raw  # type: ignore[misc]  # fmt says raw is split_line's (month, day, clock)
        return timeparse.bsd(m, d, c)
    return None


def split_line(line: bytes) -> tuple[int, object, bytes | None, Resolved | None, bytes] | None:
    """-> (stamp format, raw stamp, host, resolved program, message), None if not syslog.

    The stamp is returned raw: most lines are dropped before their time matters.
    """
    c0 = line[:1]
    if c0.isdigit():
        if line[10:11] != b"T":
            return None
        parts = line.split(b" ", 3)
        if len(parts) < 4:
            return None
        res = resolve_token(parts[2])
        if res is None:
            return None
        msg = parts[3]
        if msg[:4] == b"[ID " and b"] " in msg[:40]:
            msg = msg[msg.find(b"] ") + 2 :]
        return RFC3339, parts[0], parts[1], res, msg
    parts = line.split(None, 5)
    if len(parts) < 5:
        return None
    if parts[0] in timeparse.MONTHS and parts[2][2:3] == b":":
        fmt = BSD
        raw: object = (parts[0], parts[1], parts[2])
        host: bytes | None
        host = parts[3]
        if host[:1] == b"<" and host[-1:] == b">":
            parts = line.split(None, 6)
            if len(parts) < 7:
                return None
            host = parts[4]
            tok, msg = parts[5], parts[6]
        elif len(parts) < 6:
            if parts[4] == b"last" or parts[3] == b"last":
                return fmt, raw, None, LAST, line
            return None
        else:
            tok, msg = parts[4], parts[5]
            if tok == b"last":
                return fmt, raw, host, LAST, msg
            if parts[3][-1:] == b":" and b"[" in parts[3]:
                host, tok, msg = None, parts[3], line.split(None, 4)[4]
    else:
        # host-only prefix: "mail.example.com exim[42]: 2021-07-17 23:20:49 ..."
        parts = line.split(b" ", 2)
        if len(parts) < 3 or b"[" not in parts[1] or c0 == b"#":
            return None
        fmt, raw, host, tok, msg = 0, None, parts[0], parts[1], parts[2]
    res = resolve_token(tok)
    if res is None:
        return None
    if msg[:4] == b"[ID " and b"] " in msg[:40]:
        msg = msg[msg.find(b"] ") + 2 :]
    return fmt, raw, host, res, msg


LAST: Resolved = (None, b"last", "syslog")
