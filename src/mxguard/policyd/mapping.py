"""From Postfix's attributes to our vocabulary: stages, the MX that received the session, addresses.

Pure functions and one small lookup table, so the rules (which `[[mx]]` a request belongs to,
what an empty `sender` means at which stage) are tested without sockets.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass

from mxguard.clientip import client_ip
from mxguard.config import Config, MxSettings, parse_hostport
from mxguard.policy.facts import IPAddress, MxInfo, Role, Stage

log = logging.getLogger("mxguard.policyd")

#: Postfix's protocol_state -> our stage; VRFY and ETRN are not ours to judge (DUNNO)
STAGES: dict[str, Stage] = {
    "CONNECT": Stage.CONNECT,
    "EHLO": Stage.HELO,
    "HELO": Stage.HELO,
    "MAIL": Stage.MAIL,
    "RCPT": Stage.RCPT,
    "DATA": Stage.DATA,
    "BDAT": Stage.DATA,
    "END-OF-MESSAGE": Stage.EOM,
}

#: the stages before a request's own that the SMTP listener would have decided one by one.
#: With Postfix's default smtpd_delay_reject=yes, the first request of a session comes at RCPT,
#: so these run then ("catch-up"), once per session (connect, helo) or per message (mail).
EARLIER: dict[Stage, tuple[Stage, ...]] = {
    Stage.CONNECT: (),
    Stage.HELO: (Stage.CONNECT,),
    Stage.MAIL: (Stage.CONNECT, Stage.HELO),
    Stage.RCPT: (Stage.CONNECT, Stage.HELO, Stage.MAIL),
    Stage.DATA: (Stage.CONNECT, Stage.HELO, Stage.MAIL),
    Stage.EOM: (Stage.CONNECT, Stage.HELO, Stage.MAIL),
}
SESSION_STAGES = frozenset({Stage.CONNECT, Stage.HELO})

_WILDCARDS = frozenset({"0.0.0.0", "::", "*", ""})


class BadRequest(ValueError):
    """A request we cannot judge (no usable client address): treated like a protocol error."""


@functools.lru_cache(maxsize=4096)
def parse_client(value: str) -> IPAddress:
    """The client's address; Postfix writes IPv6 bare (`2001:db8::1`), maybe with a zone.

    Cached: a client sends one request per recipient and comes back all day. Only answers
    are cached, never the BadRequest.
    """
    text = value.strip()
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        return client_ip(text.split("%", 1)[0])
    except ValueError:
        raise BadRequest(f"client_address {value!r} is not an IP address") from None


def optional_name(value: str) -> str | None:
    """Postfix says `unknown` (or nothing) for a name it does not have."""
    return None if not value or value == "unknown" else value


def number(value: str) -> int | None:
    """A numeric attribute; 0, empty and garbage all mean "not known" in this protocol."""
    return int(value) if value.isdigit() and int(value) > 0 else None


def _norm_host(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass(frozen=True, slots=True)
class Receiver:
    """The `[[mx]]` entry a request was received on, as facts need it."""

    settings: MxSettings | None
    info: MxInfo


class RoleMap:
    """Which `[[mx]]` received the session, from Postfix's server_address and server_port.

    One policyd can serve a Postfix that listens as the primary on one address and as the
    backup on another, so the role is per request, not per daemon. Order: a fixed
    `[policyd].role`; an exact address and port; a wildcard listen (0.0.0.0, ::) on that port;
    the only entry on that address. Unmatched requests (Postfix before 3.2 sends neither
    attribute) go to the single listening entry, else the most preferred primary: treating a
    stranger as the primary never triggers the backup-only walk check on good mail.
    """

    def __init__(self, cfg: Config) -> None:
        self._exact: dict[tuple[str, int], MxSettings] = {}
        self._by_port: dict[int, MxSettings] = {}
        by_host: dict[str, list[MxSettings]] = {}
        entries = [m for m in cfg.mx if m.role is not Role.FAKE]
        for m in entries:
            if not m.listen:
                continue
            host, port = parse_hostport(m.listen)
            host = _norm_host(host.strip("[]"))
            if host in _WILDCARDS:
                self._by_port.setdefault(port, m)
            else:
                self._exact.setdefault((host, port), m)
                by_host.setdefault(host, []).append(m)
        self._by_host = {h: ms[0] for h, ms in by_host.items() if len(ms) == 1}
        self._warned: set[tuple[str, str]] = set()
        self.fixed: Receiver | None = None
        if cfg.policyd.role is not None:
            role = cfg.policyd.role
            same = next((e for e in entries if e.role is role), None)
            self.fixed = (
                self._receiver(same) if same else Receiver(None, MxInfo(cfg.mx[0].host, role))
            )
        listening = [m for m in entries if m.listen]
        primaries = sorted(
            (m for m in entries if m.role is Role.PRIMARY), key=lambda m: m.preference or 0
        )
        fallback = listening[0] if len(listening) == 1 else (primaries or entries or [cfg.mx[0]])[0]
        self.fallback = self._receiver(fallback)
        self._cache: dict[tuple[str, str], Receiver] = {}

    @staticmethod
    def _receiver(m: MxSettings) -> Receiver:
        return Receiver(m, MxInfo(m.host, m.role, m.preference))

    def lookup(self, server_address: str, server_port: str) -> Receiver:
        if self.fixed is not None:
            return self.fixed
        key = (server_address, server_port)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._match(server_address, server_port)
            if len(self._cache) < 4096:
                self._cache[key] = hit
        return hit

    def _match(self, server_address: str, server_port: str) -> Receiver:
        host = _norm_host(server_address) if server_address else ""
        port = int(server_port) if server_port.isdigit() else -1
        m: MxSettings | None = (
            self._exact.get((host, port))
            or self._by_port.get(port)
            or (self._by_host.get(host) if host else None)
        )
        if m is not None:
            return self._receiver(m)
        if (server_address, server_port) not in self._warned:
            self._warned.add((server_address, server_port))
            log.warning(
                "policyd: no [[mx]] listens on %s port %s; judging as %s (%s)",
                server_address or "?",
                server_port or "?",
                self.fallback.info.host,
                self.fallback.info.role.value,
            )
        return self.fallback
