"""Parsed forms of stored strings, kept so that a value read back again is parsed once.

The walk check stores its records as short strings (a state backend holds strings only) and
reads them back on every contact: the same string comes back many times while a client is
active, and the writer knows its parse before anyone reads it. The records are frozen, so
one object can be shared by every reader. A memo forgets everything when it is full, which
bounds it without the bookkeeping of an LRU; a miss only costs the parse it would have saved.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict with a size bound; `get` stays the C-level dict lookup on the hot path."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: K, value: V) -> V:
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
