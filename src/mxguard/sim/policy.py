"""Build the policy engine exactly as `serve` does, for a simulated tier.

`serve.start` runs every feature installer (`mxguard.features.FEATURES`) against the
`Server` and then calls `build_engine` with the extensions they registered. The simulator
does the same with a `Server` whose state is a `MemoryState` and whose delivery discards, so
a check another engineer adds through a feature is simulated the day it lands, with no change
here. Two features are left out on purpose, because the simulator plays their part itself:

- the backup queue (`mxguard.queue.feature`): spool directories and a forwarder over real
  SMTP; the simulator's store-and-forward is `sim/backup.py`, with the same backoff formula;
- operations (`mxguard.ops.feature`): a metrics endpoint and control socket, pure I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from mxguard import features
from mxguard.config import Config
from mxguard.delivery import make_target
from mxguard.events import EventLog
from mxguard.policy.build import PolicyParts, build_engine
from mxguard.policy.checks.base import Check
from mxguard.policy.engine import PolicyEngine
from mxguard.recipients import RecipientDirectory
from mxguard.serve import Server
from mxguard.state.memory import MemoryState

#: features whose work the simulator does itself, with why
SKIPPED_FEATURES: dict[str, str] = {
    "mxguard.queue.feature": "the backup queue is simulated (sim/backup.py)",
    "mxguard.ops.feature": "metrics endpoint and control socket: I/O only",
}


def installed_features() -> list[str]:
    """The feature modules that are present and simulated (for the report's header)."""
    return [
        module
        for module, attr in features.FEATURES
        if module not in SKIPPED_FEATURES and features.optional(module, attr) is not None
    ]


def build_sim_server(cfg: Config, valid: Callable[[str], bool | None] | None = None) -> Server:
    """A `Server` with memory state, features installed, nothing listening.

    `valid` answers recipient callouts (for `recipients_source = "callout"` domains) from
    the scenario's ground truth, as the primary would.
    """
    state = MemoryState()
    server = Server(
        cfg,
        state,
        RecipientDirectory(cfg.domain, cfg.source),
        EventLog(None),
        make_target("discard", 1.0, "sim"),
    )
    if valid is not None:

        async def callout(address: str) -> bool | None:
            return valid(address)

        server.callout = callout

    async def install() -> None:
        # Installers may start background tasks (they expect a running loop, as in serve);
        # the simulator has no use for them and stops them at once.
        for module, attr in features.FEATURES:
            if module in SKIPPED_FEATURES:
                continue
            fn = features.optional(module, attr)
            if fn is not None:
                fn(server)
        for task in server.tasks:
            task.cancel()
        if server.tasks:
            await asyncio.gather(*server.tasks, return_exceptions=True)
        server.tasks.clear()

    asyncio.run(install())
    return server


def build_sim_engine(server: Server) -> PolicyEngine:
    cfg = server.config
    return build_engine(
        cfg, PolicyParts(server.state, server.recipients, server.callout, server.extensions)
    )


def find_check(checks: Iterable[Check], name: str) -> Check | None:
    return next((c for c in checks if c.name == name), None)
