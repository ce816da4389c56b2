"""The optional features that plug into `serve`: each adds checks, role sinks or background tasks.

Listing them here, explicitly, keeps start-up readable: one line per feature, in order. A
feature module that is not there yet is skipped; one that is there but broken fails loudly.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxguard.serve import Server

#: (module, function) pairs; the function takes the Server before its listeners start
FEATURES: list[tuple[str, str]] = [
    ("mxguard.greylist_feature", "install"),  # greylisting check (backup issue)
    ("mxguard.queue.feature", "install"),  # backup role: durable queue and forwarder
    ("mxguard.walk.feature", "install"),  # sightings, liveness, walk check, blocklist
    ("mxguard.ops.feature", "install"),  # metrics endpoint, control socket
]


def optional(module: str, attr: str) -> Any | None:
    """Import `module.attr` if the module exists; a module that exists but fails, raises."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:  # its parent package does not exist
        return None
    return getattr(importlib.import_module(module), attr)


def installers() -> list[Callable[[Server], None]]:
    return [f for f in (optional(m, a) for m, a in FEATURES) if f is not None]
