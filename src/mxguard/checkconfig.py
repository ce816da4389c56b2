"""Warnings for configs that are valid but risky; `check-config` and `serve` print them."""

from __future__ import annotations

from mxguard.config import Config, parse_hostport
from mxguard.policy.facts import Role


def warnings_for(cfg: Config) -> list[str]:
    out: list[str] = []
    for i, d in enumerate(cfg.domain):
        if d.recipients_source == "accept-all":
            out.append(
                f"{cfg.source}: domain[{i}].recipients_source: accept-all takes mail for any "
                f"address of {d.name}; mail for unknown users then has to be bounced later "
                "(backscatter to forged senders) or dropped. Prefer table or callout."
            )
        if not d.recipients and not d.recipients_file and d.recipients_source == "table":
            out.append(f"{cfg.source}: domain[{i}]: no recipients; every RCPT will be refused")
        elif (
            d.recipients_source == "table"
            and not any(
                r.lower().startswith("postmaster@") or r.startswith("@") for r in d.recipients
            )
            and not d.recipients_file
        ):
            out.append(f"{cfg.source}: domain[{i}]: no postmaster@{d.name} (RFC 5321 4.5.1)")
    listens = {parse_hostport(m.listen)[0] for m in cfg.mx if m.listen}
    for i, m in enumerate(cfg.mx):
        if m.role is Role.FAKE and m.address and parse_hostport(m.address)[0] in listens:
            out.append(
                f"{cfg.source}: mx[{i}].address: the fake MX {m.host} points at "
                f"{m.address}, where mxguard listens; a fake MX must refuse connections"
            )
    return out
