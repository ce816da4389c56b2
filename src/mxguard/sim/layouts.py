"""Layout variants for `--compare`: the same domain and policy, different MX records.

Each variant is a real mxguard `Config` derived from the one given (so its checks, limits and
greylist timings carry over), except `classic`: the seeds' status quo, a backup with no checks
that takes mail for every address of the domain. That backup is simulated as such
(`SimMx.accept_all`), not by switching mxguard's own checks off, so nothing in mxguard has a
weak mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mxguard.config import Config, MxSettings
from mxguard.policy.facts import Role


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    config: Config
    classic_backup: bool = False  # the backup accepts everything and checks nothing


#: name -> (title, what it adds)
LAYOUTS: dict[str, str] = {
    "config": "the config as given",
    "single": "primary only",
    "classic": "classic accept-all backup (no checks)",
    "mxguard": "mxguard backup (same policy, recipients checked)",
    "greylist": "mxguard backup + greylisting on the backup",
    "nolisting": "mxguard backup + fake MX in front (nolisting)",
    "trap": "mxguard backup + trap MX at the highest preference",
    "recommended": "mxguard backup + greylisting on the backup + trap MX",
    "all": "mxguard backup + greylisting + fake MX in front + trap MX",
}


def _domain_name(cfg: Config) -> str:
    return cfg.domain[0].name.lower().rstrip(".")


def _parts(cfg: Config) -> tuple[MxSettings, MxSettings, list[MxSettings]]:
    """The primary, a backup (the config's first, or one made up), and retired addresses."""
    primaries = cfg.mx_by_role(Role.PRIMARY)
    if not primaries:
        raise ValueError("the config has no primary [[mx]]")
    primary = primaries[0]
    backups = cfg.mx_by_role(Role.BACKUP)
    if backups:
        backup = backups[0]
    else:
        pref = (primary.preference or 10) + 10
        backup = MxSettings(
            host=f"backup.{_domain_name(cfg)}",
            role=Role.BACKUP,
            preference=pref,
            listen="127.0.0.1:0",
            forward_to=primary.host,
            source_address="127.0.0.2",
        )
    return primary, backup, cfg.mx_by_role(Role.RETIRED)


def _trusting(cfg: Config, backup: MxSettings) -> tuple[str, ...]:
    """The primary trusts its own backup's forwarding address (as the default config does)."""
    peers = list(cfg.relay.trusted_peers)
    if backup.source_address:
        net = backup.source_address + ("/128" if ":" in backup.source_address else "/32")
        if net not in peers and backup.source_address not in peers:
            peers.append(net)
    return tuple(peers)


def _variant(
    cfg: Config,
    mx: list[MxSettings],
    greylist_backup: bool,
    backup: MxSettings | None,
) -> Config:
    roles = tuple(r for r in cfg.greylist.roles if r != "backup")
    if greylist_backup:
        roles += ("backup",)
    relay = cfg.relay
    if backup is not None:
        relay = dataclasses.replace(relay, trusted_peers=_trusting(cfg, backup))
    return dataclasses.replace(
        cfg,
        mx=tuple(mx),
        greylist=dataclasses.replace(cfg.greylist, roles=roles),
        relay=relay,
    )


def make_layout(cfg: Config, name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r} (one of {', '.join(LAYOUTS)})")
    title = LAYOUTS[name]
    if name == "config":
        return Layout(name, title, cfg)
    primary, backup, retired = _parts(cfg)
    domain = _domain_name(cfg)
    top = max((m.preference or 0) for m in (primary, backup))
    fake = MxSettings(
        host=f"fake0.{domain}",
        role=Role.FAKE,
        preference=max(0, (primary.preference or 10) - 10),
        address="127.0.0.9",
        accept_risk=True,
    )
    traps = cfg.mx_by_role(Role.TRAP)
    trap = (
        traps[0]
        if traps
        else MxSettings(
            host=f"trap.{domain}", role=Role.TRAP, preference=top + 10, listen="127.0.0.1:0"
        )
    )
    if name == "single":
        return Layout(name, title, _variant(cfg, [primary, *retired], False, None))
    with_fake = name in ("nolisting", "all")
    with_trap = name in ("trap", "recommended", "all")
    greylist = name in ("greylist", "recommended", "all")
    mx = [fake] if with_fake else []
    mx += [primary, backup]
    if with_trap:
        mx.append(trap)
    mx += retired
    return Layout(
        name,
        title,
        _variant(cfg, mx, greylist and name != "classic", backup),
        classic_backup=name == "classic",
    )
