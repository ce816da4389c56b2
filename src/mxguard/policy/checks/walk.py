"""The walk check: did this client walk the MX records in order, as every real MTA does?

Measured with a real Postfix 3.7 (docs/walk.md): each delivery attempt starts
at the lowest preference and moves up only after the host below refused, timed out, or
answered 4xx, moments earlier. So a client at a backup or a trap that was not seen at any
lower MX within `[walk].window`, while every lower MX was up and answering, jumped there
(seeds 001-003); one that was seen there, whatever it was told, is walking. The table:

    role     seen lower   lower MX            answer                         blocklist
    backup   yes          any                 normal policy (greylisting)    no
    backup   no           one not healthy     normal policy                  no
    backup   no           all healthy         450 4.7.1 (or greylisting)     no
    trap     yes / no     any / not healthy   451 4.3.2 at RCPT (or 421)     no
    trap     no           all healthy         451 4.3.2 at RCPT (or 421)     yes
    retired  -            -                   451 4.3.2 at RCPT (or 421)     yes

The judgement is made once, at connect, from what the state knew at that moment, and kept
with the contact: a bot that hits the trap first and the primary a moment later must not be
excused by the contact that came after. Two checks share it:

- `WalkGate` records the contact on every role and gives the trap's and the retired
  address's answer. It runs before the relay and recipient gates (`runs_first`), because a
  trap answers every client alike: a 5xx there would end a real sender's walk, and a 550 for
  unknown users would make the trap a recipient oracle for dictionary attacks. It exempts
  our trusted peers and `[access].allow` itself, since gates run for everyone.
- `BackupWalkCheck` is a screen at the backup's RCPT (after relay and recipient checks, so
  those answers stay the primary's), skipped for allowlisted clients and trusted peers.

Neither check reads the clock: time is `facts.now`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from mxguard.memo import Memo
from mxguard.policy.checks.base import ALL_ROLES, NOT_NOW, Check, NotNow
from mxguard.policy.facts import Facts, IPAddress, MxInfo, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Verdict, disconnect, tempfail
from mxguard.state.base import complete_now
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.blocklist import Blocklist
from mxguard.walk.health import Health, MxHealth
from mxguard.walk.sightings import Contact, Sightings, Walk

#: roles whose listeners answer and can be walked through (a fake never answers, a retired
#: address is not in DNS)
WALKABLE = frozenset({Role.PRIMARY, Role.BACKUP, Role.TRAP})
JUDGED = frozenset({Role.BACKUP, Role.TRAP})
TRAP_ROLES = frozenset({Role.TRAP, Role.RETIRED})

TRAP_TEXT = "Service temporarily unavailable, try again later"
WALK_TEXT = "Try again later; deliver to the lowest-preference MX first"


@dataclass(frozen=True, slots=True)
class TierMx:
    host: str
    role: Role
    preference: int | None


class Tier:
    """The tier as the config lists it, for "which hosts are below this one?"."""

    def __init__(self, mxs: Iterable[TierMx]) -> None:
        self.mxs = list(mxs)
        #: answers by preference: asked at every contact, and the tier only changes with a
        #: reload, which builds a new Tier
        self._lower: dict[int, tuple[TierMx, ...]] = {}
        self._hosts: dict[int, tuple[str, ...]] = {}

    def lower(self, mx: MxInfo) -> list[TierMx]:
        if mx.preference is None:
            return []
        known = self._lower.get(mx.preference)
        if known is None:
            known = self._lower[mx.preference] = tuple(
                m
                for m in self.mxs
                if m.role in WALKABLE and m.preference is not None and m.preference < mx.preference
            )
        return list(known)

    def lower_hosts(self, mx: MxInfo) -> tuple[str, ...]:
        """The names of `lower(mx)`, in its order (kept, as `lower` is)."""
        if mx.preference is None:
            return ()
        hosts = self._hosts.get(mx.preference)
        if hosts is None:
            hosts = self._hosts[mx.preference] = tuple(m.host for m in self.lower(mx))
        return hosts


def seen_lower(
    contacts: Mapping[str, Contact],
    lower: Sequence[TierMx],
    own_preference: int | None,
    hosts: Collection[str] | None = None,
) -> list[Contact]:
    """The contacts that show a walk: at a host below this one, any outcome (`hosts`: the
    names of `lower`, when the caller has them)."""
    if hosts is None:
        hosts = {m.host for m in lower}
    return [
        c
        for c in contacts.values()
        if c.host in hosts
        or (
            c.preference is not None
            and own_preference is not None
            and c.preference < own_preference
        )
    ]


def classify(
    role: Role,
    own_preference: int | None,
    contacts: Mapping[str, Contact],
    lower: Sequence[TierMx],
    health: Mapping[str, MxHealth],
    walked: bool | None = None,
    lower_healthy: bool | None = None,
) -> Walk:
    """The decision table's left half: how this client came here (pure).

    `walked`: what `seen_lower` says, and `lower_healthy`: whether `health` says every
    lower host is healthy, when the caller already asked.
    """
    if role is Role.RETIRED:
        return Walk.RETIRED
    if role not in JUDGED or not lower:
        return Walk.NOT_JUDGED
    if seen_lower(contacts, lower, own_preference) if walked is None else walked:
        return Walk.WALKED
    if lower_healthy is None:
        lower_healthy = all(m.host in health and health[m.host].healthy for m in lower)
    if not lower_healthy:
        return Walk.LOWER_UNHEALTHY
    return Walk.SKIPPED


def blocklists(role: Role, walk: Walk) -> bool:
    """The decision table's last column."""
    return walk is Walk.RETIRED or (role is Role.TRAP and walk is Walk.SKIPPED)


def trap_reason(role: Role, walk: Walk | None) -> str:
    if walk is not None and blocklists(role, walk):
        return f"{role.value}_blocklisted"
    return role.value


def trap_verdict(role: Role, walk: Walk | None, stage: Stage) -> Verdict:
    """Always a tempfail, never a 5xx: a 5xx greeting makes Exim fail the whole message, and
    qmail does not fall back after a 4xx greeting, hence RCPT by default."""
    key = (role, walk, stage)
    verdict = _trap_verdicts.get(key)
    if verdict is None:
        # a handful of answers, given to every client at the trap: made once each
        reason = trap_reason(role, walk)
        if stage is Stage.CONNECT:
            verdict = disconnect(reason, TRAP_TEXT, 421, "4.3.2")
        else:
            verdict = tempfail(reason, TRAP_TEXT, 451, "4.3.2")
        _trap_verdicts[key] = verdict
    return verdict


_trap_verdicts: dict[tuple[Role, Walk | None, Stage], Verdict] = {}


def why_blocked(role: Role, walk: Walk, lower: Sequence[TierMx]) -> str:
    if walk is Walk.RETIRED:
        return "contacted a retired address (not in DNS)"
    hosts = ", ".join(f"{m.host} ({m.preference})" for m in lower)
    return f"reached the trap without trying {hosts}, all healthy"


class WalkGate(Check):
    """Records every contact with its walk judgement; answers for traps and retired addresses."""

    name: ClassVar[str] = "walk"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.CONNECT, Stage.RCPT})
    runs_first: ClassVar[bool] = True

    def __init__(
        self,
        tier: Tier,
        sightings: Sightings,
        health: Health,
        blocklist: Blocklist,
        blocklist_ttl: float,
        exempt: NetworkSet,
        trap_answers: Mapping[str, Literal["rcpt", "connect"]],
        record: bool = True,
    ) -> None:
        self.roles = ALL_ROLES
        self.tier = tier
        self.sightings = sightings
        self.health = health
        self.blocklist = blocklist
        self.blocklist_ttl = blocklist_ttl
        self.exempt = exempt
        self.trap_answers = dict(trap_answers)
        self.record = record  # False when no MX of the tier is ever judged: nothing to ask
        self.immediate = all(s.immediate for s in (sightings.state, health.state, blocklist.state))
        #: the blocklist note by (role, walk, preference): it depends on the tier alone
        self._why: dict[tuple[Role, Walk, int | None], str] = {}
        #: client -> in `exempt`: asked at every contact, and the networks never change
        #: (a reload builds a new gate)
        self._exempt: Memo[IPAddress, bool] = Memo(1 << 14)

    def exempted(self, facts: Facts) -> bool:
        if facts.trusted_peer:
            return True
        ip = facts.client_ip
        exempt = self._exempt.get(ip)
        if exempt is None:
            exempt = self._exempt.remember(ip, ip in self.exempt)
        return exempt

    def answer_stage(self, mx: MxInfo) -> Stage:
        return Stage.CONNECT if self.trap_answers.get(mx.host) == "connect" else Stage.RCPT

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        # after connect, only traps and retired addresses have anything to say
        role = facts.mx.role
        connect = facts.stage is Stage.CONNECT
        if not connect and role not in TRAP_ROLES:
            return None
        walk = None
        if self.record and not self.exempted(facts):
            if not self.immediate:
                return NOT_NOW  # sightings to read and write
            # the state never waits: the whole check runs here
            if connect:
                walk = complete_now(self.judge_and_record(facts))
            else:
                known = self.sightings.walk_now(facts.client_ip, facts.mx.host, facts.now)
                if isinstance(known, NotNow):  # an immediate state that stores text
                    return complete_now(self.check(facts))
                walk = known
        # (with nothing to record or read, a tier nobody judges or an exempt client, the
        # answer comes from the role alone)
        if not connect:  # `_answer` at a trap's RCPT, without the call: every bot's RCPT
            return trap_verdict(role, walk, Stage.RCPT)
        return self._answer(facts, role, walk)

    async def check(self, facts: Facts) -> Verdict | None:
        role = facts.mx.role
        if facts.stage is not Stage.CONNECT and role not in TRAP_ROLES:
            return None
        walk = None
        if self.record and not self.exempted(facts):
            ip, host, now = facts.client_ip, facts.mx.host, facts.now
            if facts.stage is Stage.CONNECT:
                walk = await self.judge_and_record(facts)
            else:
                known = self.sightings.walk_now(ip, host, now)
                if isinstance(known, NotNow):
                    known = await self.sightings.walk_of(ip, host, now)
                walk = known
        return self._answer(facts, role, walk)

    def _answer(self, facts: Facts, role: Role, walk: Walk | None) -> Verdict | None:
        """The gate's answer once the walk is known (None: not judged, or not recorded)."""
        if facts.stage is Stage.CONNECT:
            if role in TRAP_ROLES and self.answer_stage(facts.mx) is Stage.CONNECT:
                return trap_verdict(role, walk, Stage.CONNECT)
            return None
        return trap_verdict(role, walk, Stage.RCPT)

    async def judge_and_record(self, facts: Facts) -> Walk:
        # Each step asks the `_now` twin first: over the memory state's ledger it answers
        # at once, with no coroutine of its own (a judgement is several steps, at every
        # contact); over SQLite or Redis it says NOT_NOW and the step is awaited.
        mx = facts.mx
        role = mx.role
        ip, now = facts.client_ip, facts.now
        sightings = self.sightings
        lower = self.tier.lower(mx) if role in JUDGED else []
        contacts: Mapping[str, Contact] = {}
        walked = lower_healthy = None
        if lower:
            # who was seen where is all this asks: outcomes are left off the contacts
            seen = sightings.contacts_now(ip, now, outcomes=False)
            if isinstance(seen, NotNow):
                seen = await sightings.contacts(ip, now, outcomes=False)
            contacts = seen
            previous = contacts.get(mx.host)
            hosts = self.tier.lower_hosts(mx)
            walked = bool(seen_lower(contacts, lower, mx.preference, hosts))
            if not walked:
                healthy = self.health.all_healthy_now(hosts, now)
                if isinstance(healthy, NotNow):
                    healthy = await self.health.all_healthy(hosts, now)
                lower_healthy = healthy
        else:  # nothing below to have walked through: only this host's record matters
            found = sightings.contact_now(ip, mx.host, now)
            if isinstance(found, NotNow):
                found = await sightings.contact(ip, mx.host, now)
            previous = found
        walk = classify(role, mx.preference, contacts, lower, {}, walked, lower_healthy)
        if sightings.record_now(ip, mx, now, walk, previous) is NOT_NOW:
            await sightings.record(ip, mx, now, walk, previous)
        if blocklists(role, walk):
            note = self._why.get((role, walk, mx.preference))
            if note is None:  # the same words for every client this MX catches
                note = self._why[role, walk, mx.preference] = why_blocked(role, walk, lower)
            # (network, reason, at, until, by, client, note), by position: made at every
            # contact a bot makes with the trap; str() of the role is its value
            entry = BlockEntry(self.blocklist.network(ip), str(role), now,
                               now + self.blocklist_ttl, mx.host, str(ip), note)  # fmt: skip
            if self.blocklist.add_now(entry, now) is NOT_NOW:
                await self.blocklist.add(entry, now)
        return walk


class BackupWalkCheck(Check):
    """At a backup's RCPT: a client that skipped a healthy primary is tempfailed.

    With `[walk].backup_action = "greylist"` and greylisting on at the backup, the feature
    leaves this check out and greylisting alone decides: a sender that cannot reach the
    primary at all (a routing problem only it has) then gets through after the delay.
    """

    name: ClassVar[str] = "mx_walk"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.RCPT})

    def __init__(self, sightings: Sightings) -> None:
        self.roles = frozenset({Role.BACKUP})
        self.sightings = sightings

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        walk = self.sightings.walk_now(facts.client_ip, facts.mx.host, facts.now)
        return walk if isinstance(walk, NotNow) else self._verdict(walk)

    async def check(self, facts: Facts) -> Verdict | None:
        return self._verdict(
            await self.sightings.walk_of(facts.client_ip, facts.mx.host, facts.now)
        )

    @staticmethod
    def _verdict(walk: Walk | None) -> Verdict | None:
        if walk is not Walk.SKIPPED:
            return None
        return tempfail("mx_walk", WALK_TEXT, 450, "4.7.1", soft=True)
