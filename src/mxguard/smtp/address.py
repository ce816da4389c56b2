"""Reverse-path and forward-path syntax for the SMTP engine (RFC 5321 4.1.2).

This module only answers "can this be read unambiguously as one path?". It never decides
whether an address is local, routed or relayable: that is the policy's job
(``mxguard.policy.address``), and the policy must see the address exactly as the client wrote
it, quotes, source route and address literal included, or a routing trick could be hidden by
our own rewriting. So the rules here are deliberately structural (brackets, balanced quotes,
no spaces or control characters outside quotes, something on both sides of the last "@")
rather than a strict RFC 5321 grammar: a stricter grammar would only move refusals of odd but
harmless addresses from the policy's logged reason tags to anonymous 501 replies.
"""

from __future__ import annotations

import re

__all__ = ["AddressSyntaxError", "parse_path"]


class AddressSyntaxError(ValueError):
    """The path cannot be read as one address; the caller answers 501."""


# C0 controls and DEL are never legitimate in an envelope address and are a log-injection
# vector. Outside quotes, space, angle brackets, quotes and backslash would make the extent of
# the address depend on who reads it. Regexes keep these scans at C speed.
_has_control = re.compile(r"[\x00-\x1f\x7f]").search
_bad_unquoted = re.compile(r'[ <>"\\]').search
_bad_domain = re.compile(r'[ <>"\\\[\]]').search
_bad_literal = re.compile(r"[\[\]\\ ]").search
_bad_hop = re.compile(r'[ <>"\\@:]').search


def _find_close(text: str) -> int:
    """Index of the ">" that closes a path starting at text[0] == "<", honouring quotes."""
    if '"' not in text:
        return text.find(">")
    in_quotes = False
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == ">":
            return i
        i += 1
    return -1


def _last_at_outside_quotes(mailbox: str) -> int:
    if not mailbox.startswith('"'):
        if '"' in mailbox:
            raise AddressSyntaxError("quote inside an unquoted local part")
        return mailbox.rfind("@")
    i = 1
    n = len(mailbox)
    while i < n:
        c = mailbox[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            break
        i += 1
    else:
        raise AddressSyntaxError("unbalanced quotes")
    # i is the closing quote; the local part must end right there.
    if i + 1 >= n or mailbox[i + 1] != "@":
        raise AddressSyntaxError("quoted local part not followed by @")
    rest = mailbox[i + 1 :]
    if '"' in rest:
        raise AddressSyntaxError("quote in domain")
    return i + 1 + rest.rfind("@")


def _check_mailbox(mailbox: str, allow_bare_postmaster: bool) -> None:
    if allow_bare_postmaster and mailbox.lower() == "postmaster":
        return  # RFC 5321 4.1.1.3: "<Postmaster>" without a domain must be accepted.
    at = _last_at_outside_quotes(mailbox)
    if at <= 0 or at == len(mailbox) - 1:
        raise AddressSyntaxError("need local@domain")
    local = mailbox[:at]
    domain = mailbox[at + 1 :]
    if not local.startswith('"') and _bad_unquoted(local):
        raise AddressSyntaxError("forbidden character in local part")
    if domain.startswith("["):
        if not domain.endswith("]") or len(domain) < 3:
            raise AddressSyntaxError("bad address literal")
        if _bad_literal(domain, 1, len(domain) - 1):
            raise AddressSyntaxError("bad address literal")
    elif _bad_domain(domain):
        raise AddressSyntaxError("forbidden character in domain")


def _check_route(route: str) -> None:
    # "@a,@b" -- each hop is "@" followed by a domain; kept verbatim for the policy.
    for hop in route.split(","):
        if len(hop) < 2 or hop[0] != "@" or _bad_hop(hop, 1):
            raise AddressSyntaxError("bad source route")


def parse_path(
    text: str, *, allow_null: bool, allow_bare_postmaster: bool = False
) -> tuple[str, str]:
    """Split ``"<path> params..."`` into (address as written, the rest after ">").

    ``text`` is what follows ``FROM:``/``TO:``; leading spaces are tolerated because common
    clients send ``MAIL FROM: <a@b>``. The address comes back without the angle brackets and
    otherwise untouched; the null path ``<>`` comes back as ``""`` when ``allow_null``.
    """
    text = text.lstrip(" ")
    if not text.startswith("<"):
        raise AddressSyntaxError("missing <")
    end = _find_close(text)
    if end < 0:
        raise AddressSyntaxError("missing >")
    path = text[1:end]
    rest = text[end + 1 :]
    if rest and rest[0] != " ":
        raise AddressSyntaxError("garbage after >")
    if not path:
        if allow_null:
            return "", rest
        raise AddressSyntaxError("null path not allowed")
    if _has_control(path):
        raise AddressSyntaxError("control character")
    mailbox = path
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise AddressSyntaxError("source route without ':'")
        _check_route(path[:colon])
        mailbox = path[colon + 1 :]
    _check_mailbox(mailbox, allow_bare_postmaster and mailbox is path)
    return path, rest
