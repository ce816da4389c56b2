"""NOT_NOW: the answer of a call that could have answered at once, but would have to wait.

The SMTP listener answers most commands straight from `data_received`; checks and state
backends that can decide without awaiting say so through a `..._now` method, and the rest
return NOT_NOW, which sends the caller down the ordinary async path.
"""

from __future__ import annotations


class NotNow:
    """The answer of a check that cannot decide without waiting (it needs the state)."""

    _instance: NotNow | None = None

    def __new__(cls) -> NotNow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_NOW"


NOT_NOW = NotNow()
