"""The walk's records kept as Python objects, for the in-process memory state.

Over SQLite or Redis every sighting, heartbeat and blocklist entry is text in the shared
state, because other processes and hosts read it. The memory state is one process's own
(tests, the simulator, a demo): there, turning each record into text to store it and parsing
it back at the next read was most of the walk check's cost (bench/simulate/README.md). So
`Sightings`, `Health` and `Blocklist` keep their records here instead, as the very objects
the stored path would parse, with the memory state's own expiry rules: an entry whose expiry
is due (``expires <= now``) is gone, and a hash expires `ttl` after its latest write.

One ledger per `MemoryState` object (exactly that class: subclasses in tests override its
operations to fail or wait, and must be asked), so every reader of one state sees one set
of records. `tests/unit/test_walk_ledger.py` runs the same walk bookkeeping over the ledger
and over stored text (memory and SQLite) and expects the same answers.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from mxguard.state.base import StateStore
from mxguard.state.memory import MemoryState

if TYPE_CHECKING:
    from mxguard.walk.blockentry import BlockEntry
    from mxguard.walk.records import Contact

#: an outcome's fields (at, stage, action, code, reason), exactly as decoding its stored text
#: gives them: the ledger makes the `Outcome` only when someone reads it (most are
#: overwritten by the next answer first)
OutcomeFields = tuple[float, str, str, int, str]


class SightRecord:
    """One client network's ``seen:`` hash: contact and outcome fields by host."""

    __slots__ = ("contacts", "expires", "outcomes")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.contacts: dict[str, Contact] = {}
        self.outcomes: dict[str, OutcomeFields] = {}


class Ledger:
    """Every walk record of one memory state, by the key the stored path would use
    (without its prefix)."""

    __slots__ = (
        "__weakref__",
        "answered",
        "blocks",
        "index",
        "index_expires",
        "live",
        "next_block_sweep",
        "next_sweep",
        "seen",
        "sick",
    )

    def __init__(self) -> None:
        #: client network -> its sightings
        self.seen: dict[str, SightRecord] = {}
        #: host -> (up since, last beat, expires)
        self.live: dict[str, tuple[float, float, float]] = {}
        #: host -> (reason, at, expires)
        self.sick: dict[str, tuple[str, float, float]] = {}
        #: host -> (at, expires)
        self.answered: dict[str, tuple[float, float]] = {}
        #: network -> (entry, expires)
        self.blocks: dict[str, tuple[BlockEntry, float]] = {}
        #: the blocklist's index hash: network -> entry, and when the whole hash expires
        self.index: dict[str, BlockEntry] = {}
        self.index_expires = 0.0
        #: sweep expired sightings when `seen` grows past this (the memory state is
        #: purged from outside now and then; the ledger bounds itself)
        self.next_sweep = 4096
        self.next_block_sweep = 4096

    def sweep(self, now: float) -> None:
        """Drop expired sightings: nothing reads them again, and a long run would keep them."""
        seen = self.seen
        for key in [k for k, r in seen.items() if r.expires <= now]:
            del seen[key]
        self.next_sweep = max(4096, 2 * len(seen))

    def sweep_blocks(self, now: float) -> None:
        """Drop expired blocklist entries, as the memory state's purge drops expired keys
        (the index keeps its fields there too, until a listing drops them)."""
        blocks = self.blocks
        for network in [n for n, (_, expires) in blocks.items() if expires <= now]:
            del blocks[network]
        self.next_block_sweep = max(4096, 2 * len(blocks))


_ledgers: weakref.WeakKeyDictionary[Any, Ledger] = weakref.WeakKeyDictionary()


def ledger_of(state: StateStore, objects: bool = True) -> Ledger | None:
    """The ledger of `state` when it is the plain memory state (and `objects` is asked for);
    None means: store text through the state's own operations."""
    if not objects or type(state) is not MemoryState:
        return None
    ledger = _ledgers.get(state)
    if ledger is None:
        ledger = _ledgers[state] = Ledger()
    return ledger


def live_sighting(seen: dict[str, SightRecord], key: str, now: float) -> SightRecord | None:
    """The record of `key` unless it expired (then it is dropped, as the memory state does)."""
    rec = seen.get(key)
    if rec is not None and rec.expires <= now:
        del seen[key]
        return None
    return rec


def sighting_for_write(ledger: Ledger, key: str, now: float, ttl: float) -> SightRecord:
    """The record a write to `key` goes into: the live one, or a fresh one; its expiry moves
    to `now + ttl` (a hash lives `ttl` after its latest write)."""
    seen = ledger.seen
    rec = seen.get(key)
    if rec is None or rec.expires <= now:
        if len(seen) >= ledger.next_sweep:
            ledger.sweep(now)
        rec = seen[key] = SightRecord(now + ttl)
    else:
        rec.expires = now + ttl
    return rec
