"""The records of the ``seen:`` hashes: how a client came to an MX, its contacts and outcomes.

Each record has its stored text (`encode`/`decode`, what SQLite and Redis keep) and is kept
as the object itself in the memory state's ledger (`walk/ledger.py`); the functions here read
either form with the same rules (`decode_contacts` for text, `record_*` for the ledger).
`walk/sightings.py` reads and writes them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from mxguard.memo import Memo
from mxguard.slotinit import fill_slots
from mxguard.walk.ledger import SightRecord

SIGHT_PREFIX = "seen:"
#: the field of a host's latest outcome is the host's name with this suffix
OUTCOME_SUFFIX = "!o"


class Walk(enum.StrEnum):
    """How a client came to an MX, judged at connect from what was known at that moment."""

    NOT_JUDGED = "-"  # nothing below this MX (a primary), or a trusted or allowlisted client
    WALKED = "walked"  # seen at a lower MX within the window (any outcome)
    LOWER_UNHEALTHY = "lower_unhealthy"  # not seen, but a lower MX was down or at capacity
    SKIPPED = "skipped"  # not seen while every lower MX was healthy: a walk violation
    RETIRED = "retired"  # a retired address: nobody legitimate knows it


@fill_slots
@dataclass(frozen=True, slots=True)
class Outcome:
    """The latest answer an MX gave this client (from the event log's decision)."""

    at: float
    stage: str
    action: str
    code: int
    reason: str

    def encode(self) -> str:
        return f"{self.at!r}|{self.stage}|{self.action}|{self.code}|{self.reason}"

    @classmethod
    def decode(cls, value: str) -> Outcome | None:
        parts = value.split("|", 4)
        if len(parts) != 5:
            return None
        try:
            return cls(float(parts[0]), parts[1], parts[2], int(parts[3]), parts[4])
        except ValueError:
            return None


@fill_slots
@dataclass(frozen=True, slots=True)
class Contact:
    """A client's contacts with one MX host inside the window."""

    host: str
    role: str
    preference: int | None
    first: float
    last: float
    count: int
    walk: Walk
    outcome: Outcome | None = None

    def encode(self) -> str:
        pref = "-" if self.preference is None else str(self.preference)
        return f"{self.role}|{pref}|{self.first!r}|{self.last!r}|{self.count}|{self.walk.value}"

    @classmethod
    def decode(cls, host: str, value: str) -> Contact | None:
        parts = value.split("|")
        if len(parts) != 6:
            return None
        try:
            pref = None if parts[1] == "-" else int(parts[1])
            return cls(
                host,
                parts[0],
                pref,
                float(parts[2]),
                float(parts[3]),
                int(parts[4]),
                Walk(parts[5]),
            )
        except ValueError:
            return None


#: parsed fields by (host, stored value) and by stored value: every contact reads the whole
#: hash back, and most of its fields are the ones this process wrote or read a moment ago
parsed_contacts: Memo[tuple[str, str], Contact] = Memo(1 << 12)
parsed_outcomes: Memo[str, Outcome] = Memo(1 << 12)


def sighting_key(network: str) -> str:
    return SIGHT_PREFIX + network


def _contact(host: str, value: str) -> Contact | None:
    c = parsed_contacts.get((host, value))
    if c is None:
        c = Contact.decode(host, value)
        if c is not None:
            parsed_contacts.remember((host, value), c)
    return c


def _outcome(value: str) -> Outcome | None:
    o = parsed_outcomes.get(value)
    if o is None:
        o = Outcome.decode(value)
        if o is not None:
            parsed_outcomes.remember(value, o)
    return o


def decode_contacts(
    fields: Mapping[str, str], now: float, window: float, outcomes: bool = True
) -> dict[str, Contact]:
    """The contacts still inside the window, each with its latest outcome, by host.

    The hash lives `window` after its latest write, so single fields can be older than that;
    they are dropped here rather than trusted. With `outcomes` false, a contact record keeps
    no outcome (an outcome alone still is a contact): the walk check only asks who was seen
    where, and attaching the outcomes made a new record each.
    """
    contacts: dict[str, Contact] = {}
    found: dict[str, Outcome] = {}
    oldest = now - window
    for name, value in fields.items():
        if name.endswith(OUTCOME_SUFFIX):
            o = _outcome(value)
            if o is not None:
                found[name[: -len(OUTCOME_SUFFIX)]] = o
            continue
        c = _contact(name, value)
        if c is not None and c.last >= oldest:
            contacts[name] = c
    return merge_outcomes(contacts, found, oldest, outcomes)


def merge_outcomes(
    contacts: dict[str, Contact],
    outcomes: Mapping[str, Outcome],
    oldest: float,
    attach: bool = True,
) -> dict[str, Contact]:
    """Give each contact (already inside the window) its host's latest outcome, unless not
    `attach`ed; an outcome without a contact record inside the window is a contact of its
    own."""
    for host, o in outcomes.items():
        c = contacts.get(host)
        if c is not None:
            if not attach:
                continue
            # by position: dataclasses.replace costs several times more
            contacts[host] = Contact(c.host, c.role, c.preference, c.first, c.last, c.count,
                                     c.walk, o)  # fmt: skip
        elif o.at >= oldest:
            # an answer with no contact record: a connection refused over capacity, which
            # never reached the policy; it is still a contact with that MX
            contacts[host] = answered_only(host, o)
    return contacts


def record_contacts(
    rec: SightRecord, now: float, window: float, outcomes: bool = True
) -> dict[str, Contact]:
    """`decode_contacts` for a ledger record (its fields are already what decoding gives)."""
    oldest = now - window
    contacts = {h: c for h, c in rec.contacts.items() if c.last >= oldest}
    for host, fields in rec.outcomes.items():  # as merge_outcomes, making each Outcome here
        c = contacts.get(host)
        if c is not None:
            if outcomes:
                contacts[host] = Contact(c.host, c.role, c.preference, c.first, c.last, c.count,
                                         c.walk, Outcome(*fields))  # fmt: skip
        elif fields[0] >= oldest:
            contacts[host] = answered_only(host, Outcome(*fields))
    return contacts


def record_contact(rec: SightRecord, host: str, now: float, window: float) -> Contact | None:
    """`record_contacts(rec, now, window).get(host)`, looking at that host's fields only."""
    oldest = now - window
    c = rec.contacts.get(host)
    fields = rec.outcomes.get(host)
    if c is not None and c.last >= oldest:
        if fields is None:
            return c
        return Contact(c.host, c.role, c.preference, c.first, c.last, c.count, c.walk,
                       Outcome(*fields))  # fmt: skip
    if fields is not None and fields[0] >= oldest:
        return answered_only(host, Outcome(*fields))
    return None


def record_walk(rec: SightRecord, host: str, now: float, window: float) -> Walk | None:
    """`record_contact(...).walk`, without making the contact."""
    oldest = now - window
    c = rec.contacts.get(host)
    if c is not None and c.last >= oldest:
        return c.walk
    fields = rec.outcomes.get(host)
    return Walk.NOT_JUDGED if fields is not None and fields[0] >= oldest else None


def answered_only(host: str, o: Outcome) -> Contact:
    """The contact an outcome without a contact record stands for (as `merge_outcomes`)."""
    return Contact(host, "?", None, o.at, o.at, 1, Walk.NOT_JUDGED, o)


def exact_outcome(o: Outcome) -> bool:
    """Whether decoding `o`'s stored text gives `o` back (equal, same field types)."""
    return (
        type(o.at) is float
        and type(o.code) is int
        and type(o.stage) is str
        and type(o.action) is str
        and type(o.reason) is str
        and "|" not in o.stage
        and "|" not in o.action
    )


def float_times(c: Contact) -> bool:
    """Whether both times are floats, as decoding gives them. Asked here, not in the caller:
    `walk/sightings.py` is compiled (setup.py), and compiled code turns an int read from a
    float-typed field into a float before a `type()` test could see it."""
    return type(c.first) is float and type(c.last) is float


def exact_contact(c: Contact) -> bool:
    """Whether decoding `c`'s stored text gives `c` back (times as floats, and so on)."""
    return (
        type(c.first) is float
        and type(c.last) is float
        and type(c.role) is str
        and "|" not in c.role
        and (c.preference is None or type(c.preference) is int)
        and type(c.count) is int
        and c.outcome is None
    )
