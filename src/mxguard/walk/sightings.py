"""Sightings: which MX hosts of the tier a client contacted lately, and what it was told.

A real sender reaches a backup or a trap only after every lower-preference host failed it in
the same attempt, moments earlier (docs/walk.md). So the one fact a backup or a trap needs is
"did this client touch a lower MX within the window?", asked of the shared state because the
lower MX may be another machine. One small hash per client network (``seen:<network>``)
answers it in one read: a field per MX host with the contact, and a second field per host
with the latest outcome. Two fields instead of one because the contact is written at connect
by the policy and the outcome later from the event stream; separate fields never overwrite
each other's news. The hash expires `window` after its latest write, so it stays bounded by
the number of MX hosts and costs nothing for clients that went away.
"""

from __future__ import annotations

from collections.abc import Mapping

from mxguard.memo import Memo
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.address import client_network
from mxguard.policy.facts import IPAddress, MxInfo
from mxguard.state.base import StateStore
from mxguard.walk.ledger import (
    Ledger,
    SightRecord,
    ledger_of,
    live_sighting,
    sighting_for_write,
)
from mxguard.walk.records import (
    OUTCOME_SUFFIX,
    SIGHT_PREFIX,
    Contact,
    Outcome,
    Walk,
    decode_contacts,
    exact_contact,
    exact_outcome,
    float_times,
    merge_outcomes,
    parsed_contacts,
    parsed_outcomes,
    record_contact,
    record_contacts,
    record_walk,
    sighting_key,
)

__all__ = [
    "OUTCOME_SUFFIX",
    "SIGHT_PREFIX",
    "Contact",
    "Outcome",
    "Sightings",
    "Walk",
    "decode_contacts",
    "merge_outcomes",
    "sighting_key",
]


class Sightings:
    """Reads and writes the ``seen:`` hashes; the network prefix is `[walk]`'s.

    Over the plain memory state the hashes are kept as objects in its ledger
    (`walk/ledger.py`) rather than as text; `objects=False` keeps text there too (tests).
    """

    def __init__(
        self,
        state: StateStore,
        window: float,
        ipv4_prefix: int,
        ipv6_prefix: int,
        *,
        objects: bool = True,
    ) -> None:
        self.state = state
        self.window = window
        self.v4, self.v6 = ipv4_prefix, ipv6_prefix
        self.ledger = ledger_of(state, objects)
        #: client -> its hash's key: every contact reads and writes it several times
        self._keys: Memo[IPAddress, str] = Memo(1 << 14)

    def network(self, ip: IPAddress) -> str:
        return client_network(ip, self.v4, self.v6)

    def key(self, ip: IPAddress) -> str:
        """The hash's key (hot paths ask `self._keys.get(ip) or self.key(ip)`: the memo's
        lookup without a call)."""
        key = self._keys.get(ip)
        if key is None:
            key = self._keys.remember(ip, sighting_key(self.network(ip)))
        return key

    async def contacts(
        self, ip: IPAddress, now: float, outcomes: bool = True
    ) -> dict[str, Contact]:
        """This client's contacts by host (`decode_contacts`; `outcomes` as there)."""
        kept = self.contacts_now(ip, now, outcomes)
        if not isinstance(kept, NotNow):
            return kept
        fields = await self.state.hash_get(self.key(ip), now)
        return decode_contacts(fields, now, self.window, outcomes)

    def contacts_now(
        self, ip: IPAddress, now: float, outcomes: bool = True
    ) -> dict[str, Contact] | NotNow:
        """`contacts` without a coroutine, from the ledger; NOT_NOW over stored text."""
        if self.ledger is None:
            return NOT_NOW
        rec = self._sighting(self.ledger, ip, now)
        return {} if rec is None else record_contacts(rec, now, self.window, outcomes)

    async def contact(self, ip: IPAddress, host: str, now: float) -> Contact | None:
        """`contacts(ip, now).get(host)`, decoding only that host's two fields."""
        if self.ledger is not None:
            return self._kept_contact(self.ledger, ip, host, now)
        return self._own(await self.state.hash_get(self.key(ip), now), host, now)

    def contact_now(self, ip: IPAddress, host: str, now: float) -> Contact | NotNow | None:
        """`contact` without a coroutine, from the ledger; NOT_NOW over stored text."""
        if self.ledger is None:
            return NOT_NOW
        return self._kept_contact(self.ledger, ip, host, now)

    def _sighting(self, ledger: Ledger, ip: IPAddress, now: float) -> SightRecord | None:
        """The client's live record in the ledger, if any."""
        return live_sighting(ledger.seen, self._keys.get(ip) or self.key(ip), now)

    def _kept_contact(self, ledger: Ledger, ip: IPAddress, host: str, now: float) -> Contact | None:
        rec = self._sighting(ledger, ip, now)
        return None if rec is None else record_contact(rec, host, now, self.window)

    def _own(self, fields: Mapping[str, str], host: str, now: float) -> Contact | None:
        own: dict[str, str] = {}
        for name in (host, host + OUTCOME_SUFFIX):
            value = fields.get(name)
            if value is not None:
                own[name] = value
        return decode_contacts(own, now, self.window).get(host) if own else None

    async def walk_of(self, ip: IPAddress, host: str, now: float) -> Walk | None:
        """`contact(ip, host, now).walk`: how the client came to `host` (None: no contact)."""
        if self.ledger is not None:
            return self._kept_walk(self.ledger, ip, host, now)
        contact = await self.contact(ip, host, now)
        return contact.walk if contact is not None else None

    def walk_now(self, ip: IPAddress, host: str, now: float) -> Walk | NotNow | None:
        """`walk_of` without a coroutine, from the ledger; NOT_NOW over stored text."""
        if self.ledger is None:
            return NOT_NOW
        return self._kept_walk(self.ledger, ip, host, now)

    def _kept_walk(self, ledger: Ledger, ip: IPAddress, host: str, now: float) -> Walk | None:
        rec = self._sighting(ledger, ip, now)
        return None if rec is None else record_walk(rec, host, now, self.window)

    def _contact_for(self, mx: MxInfo, now: float, walk: Walk, previous: Contact | None) -> Contact:
        role = str(mx.role)  # its value, without the enum property's cost
        if previous is not None and previous.role != "?":
            return Contact(mx.host, role, mx.preference, previous.first, now,
                           previous.count + 1, walk)  # fmt: skip
        return Contact(mx.host, role, mx.preference, now, now, 1, walk)

    async def record(
        self, ip: IPAddress, mx: MxInfo, now: float, walk: Walk, previous: Contact | None
    ) -> Contact:
        """Note a contact at `mx`; `previous` (read just before) keeps the first time and count."""
        if self.ledger is not None:
            return self._keep_contact(self.ledger, ip, mx, now, walk, previous)
        contact = self._contact_for(mx, now, walk, previous)
        value = contact.encode()
        if float_times(contact):
            # the next read of this client's hash decodes this very value, to an equal
            # Contact (times decode as floats, so an int time would come back changed)
            parsed_contacts.remember((mx.host, value), contact)
        await self.state.hash_put(self.key(ip), mx.host, value, self.window, now)
        return contact

    def record_now(
        self, ip: IPAddress, mx: MxInfo, now: float, walk: Walk, previous: Contact | None
    ) -> Contact | NotNow:
        """`record` without a coroutine, into the ledger; NOT_NOW over stored text."""
        if self.ledger is None:
            return NOT_NOW
        return self._keep_contact(self.ledger, ip, mx, now, walk, previous)

    def _keep_contact(
        self,
        ledger: Ledger,
        ip: IPAddress,
        mx: MxInfo,
        now: float,
        walk: Walk,
        previous: Contact | None,
    ) -> Contact:
        contact = self._contact_for(mx, now, walk, previous)
        kept = contact if exact_contact(contact) else Contact.decode(mx.host, contact.encode())
        rec = sighting_for_write(ledger, self._keys.get(ip) or self.key(ip), now, self.window)
        if kept is None:  # what the stored path would store and never read back
            rec.contacts.pop(mx.host, None)
        else:
            rec.contacts[mx.host] = kept
        return contact

    async def note_outcome(self, ip: IPAddress, host: str, outcome: Outcome, now: float) -> None:
        if self.ledger is not None:
            self._keep_outcome(self.ledger, ip, host, outcome, now)
            return
        await self.state.hash_put(
            self.key(ip),
            host + OUTCOME_SUFFIX,
            self._encode_outcome(outcome),
            self.window,
            now,
        )

    def note_outcome_now(
        self, ip: IPAddress, host: str, outcome: Outcome, now: float
    ) -> NotNow | None:
        """`note_outcome` without a task, when the state can write at once; else NOT_NOW."""
        if self.ledger is not None:
            self._keep_outcome(self.ledger, ip, host, outcome, now)
            return None
        done = self.state.hash_put_now(
            self.key(ip),
            host + OUTCOME_SUFFIX,
            self._encode_outcome(outcome),
            self.window,
            now,
        )
        return NOT_NOW if done is NOT_NOW else None

    def note_answer_now(
        self, ip: IPAddress, host: str, at: float, stage: str, action: str, code: int, reason: str
    ) -> NotNow | None:
        """`note_outcome_now(ip, host, Outcome(at, stage, ...), at)` into the ledger, without
        making the Outcome (the event log's listener writes one per refusal); NOT_NOW over
        stored text, and nothing was written."""
        ledger = self.ledger
        if ledger is None:
            return NOT_NOW
        if (
            type(at) is not float
            or type(code) is not int
            or type(stage) is not str
            or type(action) is not str
            or type(reason) is not str
            or "|" in stage
            or "|" in action
        ):  # not what decoding would give back: the general path says what is kept (compiled,
            # `at` and `code` were made a float and an int on the way in, as decoding makes them)
            self._keep_outcome(ledger, ip, host, Outcome(at, stage, action, code, reason), at)
            return None
        key = self._keys.get(ip) or self.key(ip)
        rec = ledger.seen.get(key)
        if rec is not None and rec.expires > at:  # sighting_for_write's usual case, inline
            rec.expires = at + self.window
        else:
            rec = sighting_for_write(ledger, key, at, self.window)
        rec.outcomes[host] = (at, stage, action, code, reason)
        return None

    def _keep_outcome(
        self, ledger: Ledger, ip: IPAddress, host: str, outcome: Outcome, now: float
    ) -> None:
        kept = outcome if exact_outcome(outcome) else Outcome.decode(outcome.encode())
        rec = sighting_for_write(ledger, self._keys.get(ip) or self.key(ip), now, self.window)
        if kept is None:  # what the stored path would store and never read back
            rec.outcomes.pop(host, None)
        else:
            rec.outcomes[host] = (kept.at, kept.stage, kept.action, kept.code, kept.reason)

    @staticmethod
    def _encode_outcome(outcome: Outcome) -> str:
        value = outcome.encode()
        # it decodes to an equal Outcome unless its words hold the separator or a field has
        # another type than decoding gives
        if exact_outcome(outcome):
            parsed_outcomes.remember(value, outcome)
        return value
