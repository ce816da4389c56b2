"""The MX tier on a virtual clock: each host's health over time, and one SMTP session as facts.

A simulated session asks the policy engine what the SMTP listener would ask, stage by stage
(CONNECT, HELO, MAIL, one RCPT per recipient, DATA, EOM; see `smtp/listener.py`), with the
same short cuts: a stage that no check looks at is answered without building facts, and the
DNSBL answers ride on the facts of the configured DNSBL stage only. What a role does with an
accepted message is the role's sink, as in `serve`: the primary delivers before its 250, a
backup queues (the runner's store-and-forward), a trap or a retired address tempfails.

Not modelled: the time a session takes for the sender's next step (a contact is one instant;
only connect and greeting timeouts move the sender's clock), TLS, PIPELINING, message content.
A session does occupy its host for `session_seconds` so that connection caps can fill up.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Any

from mxguard.config import Config, MxSettings
from mxguard.dns import parse_list_site
from mxguard.policy.engine import Pending, PolicyEngine
from mxguard.policy.facts import DnsListAnswer, Facts, MxInfo, Role, Stage
from mxguard.policy.verdict import Action, Verdict
from mxguard.sim.decisions import DecisionSink
from mxguard.sim.loop import run_sync
from mxguard.sim.model import (
    BANNER_4XX,
    BANNER_5XX,
    REFUSED,
    SESSION,
    SILENT,
    TIMEOUT,
    Contact,
    MxStats,
    SimMessage,
)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

#: what the listener logs when its connection cap turns a client away
CAPACITY = Verdict(Action.DISCONNECT, 421, "4.3.2", "Too many connections", "capacity")
DELIVERED = Verdict(Action.ACCEPT, 250, "2.0.0", "Ok", "delivered")
QUEUED = Verdict(Action.ACCEPT, 250, "2.0.0", "Ok", "queued")
#: what the never-accepting sink of a trap or retired address answers (smtp/roles.py)
TRAP_SINK = Verdict(Action.TEMPFAIL, 451, "4.3.2", "Try again later", "trap")

_ACCEPT = Action.ACCEPT
_CONNECT, _HELO, _MAIL, _RCPT, _DATA, _EOM = (
    Stage.CONNECT,
    Stage.HELO,
    Stage.MAIL,
    Stage.RCPT,
    Stage.DATA,
    Stage.EOM,
)


@dataclass(frozen=True)
class Condition:
    """A period in which a host is not its healthy self.

    kind "down": every connection fails as `mode` says (refuse: RST; drop: the SYN is lost and
    the sender waits out its connect timeout; silent: TCP accepted, no banner). kind "busy":
    a `fraction` of connections meet the connection cap (421), as when the primary is over
    its limit from traffic the scenario does not model one by one (seed 000's comment).
    """

    start: float
    end: float
    kind: str = "down"
    mode: str = "refuse"
    fraction: float = 1.0


class SimMx:
    """One published (or retired) MX address and its state over time."""

    __slots__ = (
        "accept_all",
        "active",
        "conditions",
        "host",
        "info",
        "max_connections",
        "needs",
        "preference",
        "published",
        "role",
        "settings",
        "stats",
    )

    def __init__(
        self,
        settings: MxSettings,
        accept_all: bool = False,
        max_connections: int = 500,
    ) -> None:
        self.settings = settings
        self.info = MxInfo(settings.host, settings.role, settings.preference)
        self.host = settings.host
        self.role = settings.role
        self.preference = settings.preference
        # a retired address is not in DNS: only senders that cached it find it (seed 001)
        self.published = settings.role is not Role.RETIRED
        self.accept_all = accept_all
        self.conditions: list[Condition] = []
        self.max_connections = max_connections
        self.active: list[float] = []  # end times of the sessions in progress (a heap)
        self.stats = MxStats(settings.host, settings.role.value, settings.preference)
        self.needs: dict[bool, tuple[bool, bool, bool, bool, bool]] = {}

    def condition_at(self, now: float) -> Condition | None:
        for c in self.conditions:
            if c.start <= now < c.end:
                return c
        return None

    def __repr__(self) -> str:
        return f"SimMx({self.host}, {self.role.value}, {self.preference})"


class Tier:
    """Every MX of one layout, sharing one policy engine and one state (as mxguard does)."""

    def __init__(
        self,
        cfg: Config,
        engine: PolicyEngine,
        mxs: list[SimMx],
        rng: Random,
        session_seconds: float = 2.0,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.mxs = mxs
        self.rng = rng
        self.session_seconds = session_seconds
        self.records = sorted(
            (m for m in mxs if m.published),
            key=lambda m: m.preference if m.preference is not None else 65536,
        )
        #: whether two records share a preference (`senders.in_order` shuffles those): with
        #: none, the order is the records' own at every attempt
        self.ties = any(a.preference == b.preference for a, b in itertools.pairwise(self.records))
        self.by_host = {m.host: m for m in mxs}
        primaries = [m for m in mxs if m.role is Role.PRIMARY]
        if not primaries:
            raise ValueError("the layout has no primary MX")
        self.primary = primaries[0]
        self.backups = [m for m in self.records if m.role is Role.BACKUP]
        self.retired = [m for m in mxs if m.role is Role.RETIRED]
        self.traps = [m for m in mxs if m.role is Role.TRAP]
        self._ids = itertools.count(1)
        self._decide_now = engine.decide_now
        #: client -> (trusted peer, screened): fixed for a run, and two set lookups each
        self._screening: dict[IP, tuple[bool, bool]] = {}
        self.dnsbl_stage = _CONNECT if cfg.dnsbl.stage == "connect" else _RCPT
        sites = [parse_list_site(s) for s in cfg.dnsbl.sites]
        self._dnsbl_hit = tuple(_listing_answer(s) for s in sites) if sites else None
        self._dnsbl_clean = tuple(DnsListAnswer(s.zone) for s in sites) if sites else None
        #: what the role sinks do with an accepted message: set by the runner
        self.deliver: Callable[[SimMx, SimMessage, list[str], float, bool], list[str]] = _no_sink
        self.queue: Callable[[SimMx, SimMessage, list[str], IP, float], None] = _no_queue
        #: liveness bookkeeping, as `Runtime.on_session` in the listener (mx, event): for
        #: each session, and for a client turned away at the connection cap
        self.on_session: Callable[[MxSettings, str], None] | None = None
        self.on_capacity: Callable[[MxSettings, str], None] | None = None
        #: who hears of each decision, when a feature listens to the event log (the walk
        #: check's sightings do; `sim/decisions.py`); None skips the events nobody reads
        self.events: DecisionSink | None = None

    # ------------------------------------------------------------ one contact

    def contact(
        self,
        mx: SimMx,
        ip: IP,
        msg: SimMessage,
        rcpts: list[str],
        now: float,
        helo: str = "client.example",
        forwarded: bool = False,
    ) -> Contact:
        """Connect to `mx` at `now` and try to hand over `msg` for `rcpts`."""
        st = mx.stats
        st.connections += 1
        if mx.role is Role.FAKE:
            st.refused += 1
            return Contact(REFUSED)
        if mx.conditions:
            cond = mx.condition_at(now)
            if cond is not None:
                if cond.kind == "down":
                    if cond.mode == "drop":
                        st.timeouts += 1
                        return Contact(TIMEOUT)
                    if cond.mode == "silent":
                        return Contact(SILENT)
                    st.refused += 1
                    return Contact(REFUSED)
                if cond.kind == "busy" and self.rng.random() < cond.fraction:
                    return self._at_capacity(mx, ip, now)
        active = mx.active
        while active and active[0] <= now:
            heapq.heappop(active)
        if len(active) >= mx.max_connections:
            return self._at_capacity(mx, ip, now)
        heapq.heappush(active, now + self.session_seconds)
        st.sessions += 1
        if msg.spam:
            st.spam_sessions += 1
        if mx.accept_all:
            return self._accept_all(mx, ip, msg, rcpts, now)
        return self._session(mx, ip, msg, rcpts, now, helo, forwarded)

    def _at_capacity(self, mx: SimMx, ip: IP, now: float) -> Contact:
        """The listener's ConnectionGate: 421 before any policy, logged as `capacity`."""
        st = mx.stats
        st.capacity += 1
        st.reasons["capacity"] = st.reasons.get("capacity", 0) + 1
        if self.events is not None:
            facts = Facts(_CONNECT, now, ip, mx.info, f"S{next(self._ids):X}",
                          trusted_peer=self.engine.is_trusted(ip))  # fmt: skip
            self.events(facts, CAPACITY)
        if self.on_capacity is not None:
            self.on_capacity(mx.settings, "capacity")
        return Contact(BANNER_4XX, 421)

    def _accept_all(
        self, mx: SimMx, ip: IP, msg: SimMessage, rcpts: list[str], now: float
    ) -> Contact:
        """The status-quo backup of the seeds: no checks, every recipient of the domain taken."""
        mx.stats.bytes += msg.size
        mx.stats.accepted += 1
        self.queue(mx, msg, list(rcpts), ip, now)
        return Contact(SESSION, 250, list(rcpts), [], [], True)

    def _needs(self, mx: SimMx, screened: bool) -> tuple[bool, bool, bool, bool, bool]:
        needs = mx.needs.get(screened)
        if needs is None:
            has = self.engine.has_checks
            role = mx.role
            needs = (
                has(_CONNECT, role, screened) or (screened and self.dnsbl_stage is _CONNECT),
                has(_HELO, role, screened),
                has(_MAIL, role, screened),
                has(_DATA, role, screened),
                has(_EOM, role, screened),
            )
            mx.needs[screened] = needs
        return needs

    def _decide(self, facts: Facts, screened: bool) -> Verdict:
        """As the listener decides: at once when every check can answer so, else the rest
        of the decision run to its end (it never really waits on memory state)."""
        v = self._decide_now(facts, screened)
        if isinstance(v, Pending):
            return run_sync(v.finish())
        return v

    def _refused(self, mx: SimMx, v: Verdict) -> None:
        reasons = mx.stats.reasons
        reasons[v.reason] = reasons.get(v.reason, 0) + 1

    def _session(
        self,
        mx: SimMx,
        ip: IP,
        msg: SimMessage,
        rcpts: list[str],
        now: float,
        helo: str,
        forwarded: bool,
    ) -> Contact:
        engine = self.engine
        decide = self._decide
        decide_now = self._decide_now  # `decide` inline at connect and RCPT, the busiest
        info = mx.info
        ev = self.events
        sid = f"S{next(self._ids):X}"
        extra: dict[str, str] = {}
        facts: Facts | None = None
        known = self._screening.get(ip)
        if known is None:
            trusted = engine.is_trusted(ip)
            facts = Facts(_CONNECT, now, ip, info, sid, None, None, False, False, None, None,
                          (), None, None, None, trusted, extra)  # fmt: skip
            known = self._screening[ip] = (trusted, engine.screened(facts))
        trusted, screened = known
        n_connect, n_helo, n_mail, n_data, n_eom = self._needs(mx, screened)
        dnsbl = None
        if self._dnsbl_hit is not None and screened:
            dnsbl = self._dnsbl_hit if msg.listed else self._dnsbl_clean
        connect_dnsbl = dnsbl if self.dnsbl_stage is _CONNECT else None
        rcpt_dnsbl = dnsbl if self.dnsbl_stage is _RCPT else None
        if n_connect:
            if connect_dnsbl is not None:
                facts = Facts(_CONNECT, now, ip, info, sid, None, None, False, False, None,
                              None, (), None, connect_dnsbl, None, trusted, extra)  # fmt: skip
            elif facts is None:
                facts = Facts(_CONNECT, now, ip, info, sid, None, None, False, False, None,
                              None, (), None, None, None, trusted, extra)  # fmt: skip
            v = decide_now(facts, screened)
            if isinstance(v, Pending):
                v = run_sync(v.finish())
            if v.action is not _ACCEPT and v.action is not Action.DISCARD:
                self._refused(mx, v)
                if ev is not None:
                    ev(facts, v)
                return Contact(BANNER_5XX if v.code >= 500 else BANNER_4XX, v.code)
        if self.on_session is not None:
            self.on_session(mx.settings, "connect")
        sender = msg.sender
        if n_helo:
            f = Facts(_HELO, now, ip, info, sid, None, helo, True, False, None, None, (),
                      None, None, None, trusted, extra)  # fmt: skip
            v = decide(f, screened)
            if v.action is not _ACCEPT:
                self._refused(mx, v)
                if ev is not None:
                    ev(f, v)
                # refused before the session counts for Postfix (past EHLO): like a banner
                return Contact(BANNER_5XX if v.code >= 500 else BANNER_4XX, v.code)
        if n_mail:
            f = Facts(_MAIL, now, ip, info, sid, None, helo, True, False, sender, None, (),
                      msg.size, None, None, trusted, extra)  # fmt: skip
            v = decide(f, screened)
            if v.action is not _ACCEPT:
                self._refused(mx, v)
                if ev is not None:
                    ev(f, v)
                if v.code >= 500:
                    return Contact(SESSION, v.code, [], [], list(rcpts))
                return Contact(SESSION, v.code, [], list(rcpts), [])
        accepted: list[str] = []
        temp: list[str] = []
        perm: list[str] = []
        code = 250
        closed = False
        for rcpt in rcpts:
            if closed:
                temp.append(rcpt)
                continue
            f = Facts(_RCPT, now, ip, info, sid, None, helo, True, False, sender, rcpt,
                      tuple(accepted), None, rcpt_dnsbl, None, trusted, extra)  # fmt: skip
            v = decide_now(f, screened)
            if isinstance(v, Pending):
                v = run_sync(v.finish())
            if ev is not None:
                ev(f, v)
            action = v.action
            if action is _ACCEPT or action is Action.DISCARD:
                accepted.append(rcpt)
                continue
            reasons = mx.stats.reasons  # as _refused, inline: a refusal at most RCPTs
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
            code = v.code
            if action is Action.DISCONNECT:
                closed = True
                temp.append(rcpt)
            elif v.code >= 500:
                perm.append(rcpt)
            else:
                temp.append(rcpt)
        if not accepted or closed:
            return Contact(SESSION, code, [], temp + accepted if closed else temp, perm)
        rtuple = tuple(accepted)
        if n_data:
            f = Facts(_DATA, now, ip, info, sid, None, helo, True, False, sender, None,
                      rtuple, None, None, None, trusted, extra)  # fmt: skip
            v = decide(f, screened)
            if v.action is not _ACCEPT:
                self._refused(mx, v)
                if ev is not None:
                    ev(f, v)
                if v.code >= 500:
                    return Contact(SESSION, v.code, [], temp, perm + accepted)
                return Contact(SESSION, v.code, [], temp + accepted, perm)
        mx.stats.bytes += msg.size
        eom = Facts(_EOM, now, ip, info, sid, None, helo, True, False, sender, None, rtuple,
                    msg.size, None, None, trusted, extra)  # fmt: skip
        if n_eom:
            v = decide(eom, screened)
            if v.action is not _ACCEPT:
                self._refused(mx, v)
                if ev is not None:
                    ev(eom, v, queue_id=sid, rcpt_count=len(rtuple))
                if v.code >= 500:
                    return Contact(SESSION, v.code, [], temp, perm + accepted, True)
                return Contact(SESSION, v.code, [], temp + accepted, perm, True)
        role = mx.role
        if role is Role.PRIMARY:
            refused = self.deliver(mx, msg, accepted, now, forwarded)
            if refused:  # the delivery target refused some (not modelled: never happens)
                perm += refused
                accepted = [r for r in accepted if r not in refused]
        elif role is Role.BACKUP:
            self.queue(mx, msg, accepted, ip, now)
        else:
            # trap and retired: the sink that never accepts (smtp/roles.py)
            self._refused(mx, TRAP_SINK)
            if ev is not None:
                ev(eom, TRAP_SINK, queue_id=sid, rcpt_count=len(rtuple))
            return Contact(SESSION, 451, [], temp + accepted, perm, True)
        if ev is not None:
            ev(eom, DELIVERED if role is Role.PRIMARY else QUEUED,
                        queue_id=sid, rcpt_count=len(rtuple))  # fmt: skip
        mx.stats.accepted += 1
        if forwarded:
            mx.stats.forwarded_in += 1
        return Contact(SESSION, 250, accepted, temp, perm, True)


def _no_sink(*_: Any) -> list[str]:
    return []


def _no_queue(*_: Any) -> None:
    return None


def _listing_answer(site: Any) -> DnsListAnswer:
    """An answer that counts for a blocklist site; an allowlist site answers "not listed"."""
    if site.weight <= 0:
        return DnsListAnswer(site.zone)
    for last in range(2, 12):
        candidate = f"127.0.0.{last}"
        if site.matches([candidate]):
            return DnsListAnswer(site.zone, (candidate,))
    return DnsListAnswer(site.zone, ("127.0.0.2",))
