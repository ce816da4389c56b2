"""A bounded memo for values that are slow to make and asked for again and again.

The walk check's stored records (parsed once, shared by every reader, since they are
frozen), and on the SMTP hot path a client address's text, its DNSBL query name, the EHLO
answer. A memo forgets everything when it is full, which bounds it without the bookkeeping
of an LRU; a miss only costs the work it would have saved.
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
