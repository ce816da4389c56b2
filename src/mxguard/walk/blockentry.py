"""The blocklist's entry and its stored JSON.

Why a module of its own: `walk/blocklist.py` is compiled by mypyc (setup.py), and compiled
code turns an int in a float-typed place into a float before any `type(x) is float` could see
it; whether an entry's text parses back to an equal entry is a question about the very
objects a caller gave, so it is asked here, in a module that stays interpreted.
"""

from __future__ import annotations

import json
import json.encoder
from dataclasses import dataclass, fields
from math import isfinite

from mxguard.memo import Memo
from mxguard.slotinit import fill_slots


@fill_slots
@dataclass(frozen=True, slots=True)
class BlockEntry:
    network: str
    reason: str  # "trap", "retired" or "manual"
    at: float
    until: float
    by: str  # the MX host that caught it, or "cli"
    client: str = ""  # the address that was seen
    note: str = ""  # why, in words: what the walk check knew, or the operator's text

    def to_json(self) -> str:
        """What json.dumps(asdict(self), separators=(",", ":"), sort_keys=True) gives.

        Written out for the usual types (a bot at the trap renews its entry on every contact,
        and the generic encoder took most of the renewal's time); anything else goes through
        the encoder itself.
        """
        at, until = self.at, self.until
        texts = (self.by, self.client, self.network, self.note, self.reason)
        if (
            type(at) is float
            and type(until) is float
            and isfinite(at)
            and isfinite(until)
            and all(type(t) is str for t in texts)
        ):
            by, client, network, note, reason = map(_quote, texts)
            return (
                f'{{"at":{at!r},"by":{by},"client":{client},"network":{network},'
                f'"note":{note},"reason":{reason},"until":{until!r}}}'
            )
        return _encode_sorted(
            {
                "network": self.network,
                "reason": self.reason,
                "at": self.at,
                "until": self.until,
                "by": self.by,
                "client": self.client,
                "note": self.note,
            }
        )

    @classmethod
    def from_json(cls, value: str) -> BlockEntry | None:
        entry = _parsed.get(value)
        if entry is not None:
            return entry
        try:
            data = json.loads(value)
            entry = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, KeyError):
            return None
        return _parsed.remember(value, entry)

    def round_trips(self) -> bool:
        """Whether parsing `self.to_json()` gives back an equal entry with the same field types
        (the cases `to_json` writes itself; the rest go through the generic encoder)."""
        at, until = self.at, self.until
        return (
            type(at) is float
            and type(until) is float
            and isfinite(at)
            and isfinite(until)
            and type(self.network) is str
            and type(self.reason) is str
            and type(self.by) is str
            and type(self.client) is str
            and type(self.note) is str
        )


_encode_sorted = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
#: how that encoder writes a string (it escapes to ASCII by default)
_quote = json.encoder.encode_basestring_ascii
#: parsed entries by stored value: the blocklist check reads a listed client's entry at every
#: RCPT, and a renewal reads the old one back
_parsed: Memo[str, BlockEntry] = Memo(1 << 12)

# to_json lists every field by name: fail at import if a field is added without it.
assert [f.name for f in fields(BlockEntry)] == [
    "network",
    "reason",
    "at",
    "until",
    "by",
    "client",
    "note",
], "update BlockEntry.to_json for the new field"


def remember_parsed(value: str, entry: BlockEntry) -> None:
    """Let the next read of `value` take `entry` without parsing (it parses to an equal one)."""
    _parsed.remember(value, entry)
