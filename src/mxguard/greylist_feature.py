"""Wire greylisting into `serve`: one `GreylistCheck` from `[greylist]`, on the roles it names.

An empty `roles` list means greylisting is off. The check is a screen, so allowlisted clients
and our own trusted peers (a backup forwarding to the primary) are never greylisted.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mxguard.config import Config, ConfigError, GreylistSettings
from mxguard.levels import StoredLevel
from mxguard.policy.checks.base import Check
from mxguard.policy.checks.greylist import TRIPLET_PREFIX, GreylistCheck
from mxguard.policy.facts import Role
from mxguard.state.base import StateStore

if TYPE_CHECKING:
    from mxguard.serve import Server


def greylist_roles(cfg: Config) -> frozenset[Role]:
    """The roles from `[greylist].roles`, as a ConfigError naming the bad entry if one is wrong."""
    roles = set()
    for i, name in enumerate(cfg.greylist.roles):
        try:
            role = Role(name)
        except ValueError:
            raise ConfigError(
                cfg.source,
                f"greylist.roles[{i}]",
                f"{name!r} is not a role (primary, backup, trap, retired)",
            ) from None
        if role is Role.FAKE:
            raise ConfigError(cfg.source, f"greylist.roles[{i}]", "a fake MX is never listened on")
        roles.add(role)
    return frozenset(roles)


def make_check(cfg: Config, state: StateStore) -> GreylistCheck | None:
    """The configured check, or None when no role greylists."""
    roles = greylist_roles(cfg)
    if not roles:
        return None
    g: GreylistSettings = cfg.greylist
    try:
        return GreylistCheck(
            state,
            roles,
            g.delay,
            g.retry_window,
            g.pass_ttl,
            g.auto_allow_after,
            g.ipv4_prefix,
            g.ipv6_prefix,
            g.allow_networks,
            g.allow_sender_domains,
        )
    except ValueError as exc:
        raise ConfigError(cfg.source, "greylist", str(exc)) from None


def install(server: Server) -> None:
    if make_check(server.config, server.state) is None:
        return  # validates the section even when it is off

    def extension(cfg: Config, state: StateStore) -> tuple[list[Check], list[Check]]:
        check = make_check(cfg, state)
        return [], [check] if check is not None else []

    server.extensions.append(extension)
    server.gauges["greylist_entries"] = StoredLevel(
        "greylist_entries", lambda: server.state.count(TRIPLET_PREFIX.rstrip(":"), time.time())
    )
