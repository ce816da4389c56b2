"""State backends behind one interface; `open_state` picks one from a URL."""

from __future__ import annotations

from urllib.parse import urlparse

from mxguard.state.base import StateStore, StateUnavailable


def open_state(url: str, key_prefix: str = "mxg") -> StateStore:
    """Build the backend named by `url`: memory://, sqlite:///path, redis://...

    `key_prefix` separates deployments that share one Redis; local backends ignore it.
    """
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        from mxguard.state.memory import MemoryState

        return MemoryState()
    if parsed.scheme == "sqlite":
        from mxguard.state.sqlite import SqliteState

        # As SQLAlchemy reads it: sqlite:///rel/path is relative, sqlite:////abs/path absolute.
        if not url.startswith("sqlite:///"):
            raise ValueError("a sqlite URL has three slashes: sqlite:///relative or sqlite:////abs")
        return SqliteState(url[len("sqlite:///") :] or ":memory:")
    if parsed.scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        from mxguard.state.redis import RedisState

        return RedisState(url, key_prefix)
    raise ValueError(
        f"unknown state URL scheme {parsed.scheme!r} (use sqlite:///, redis://, memory://)"
    )


__all__ = ["StateStore", "StateUnavailable", "open_state"]
