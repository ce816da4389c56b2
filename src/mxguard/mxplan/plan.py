"""`mxguard plan`: the DNS records an `[[mx]]` layout needs, and what is wrong with the layout.

The config that `mxguard serve` runs is the single source of truth, so the zone records are
derived from it rather than written by hand next to it: a trap that shares the primary's
address, or a fake that points at a listener, is a mistake in the config and is caught here,
before it is published. This module is pure (config in, records and findings out); reading
recipient files is left to the caller through `lookup`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass

from mxguard.config import Config, MxSettings, parse_hostport
from mxguard.mxplan.findings import (
    REAL_ROLES,
    Finding,
    PublishedHost,
    Severity,
    address_limit_findings,
    sort_findings,
)
from mxguard.policy.facts import Role

#: (local, domain) -> True known, False unknown, None cannot tell (callout, unread file)
Lookup = Callable[[str, str], bool | None]

DEFAULT_TTL = 3600
_ROLE_NOTE_RETIRED = (
    "retired: keep out of DNS; mxguard still listens there and blocklists the clients that "
    "come (they use an old address from a spam list)"
)

_ROLE_NOTES = {
    Role.PRIMARY: "primary: takes the mail and delivers it",
    Role.BACKUP: "backup: same policy as the primary; queues while the primary is down",
    Role.TRAP: (
        "trap: tempfails every recipient; a client that skipped the healthy lower MX hosts "
        "is blocklisted"
    ),
    Role.FAKE: "fake (nolisting): {address} must refuse port 25 so senders move on at once",
}


@dataclass(frozen=True)
class HostRecord:
    """One `[[mx]]` entry as DNS sees it."""

    host: str
    role: Role
    preference: int | None  # None: retired, not in DNS
    addresses: tuple[str, ...]
    comment: str

    @property
    def published(self) -> bool:
        return self.role is not Role.RETIRED and self.preference is not None


@dataclass(frozen=True)
class Plan:
    source: str
    domains: tuple[str, ...]
    hosts: tuple[HostRecord, ...]  # published ones in preference order, then retired ones
    findings: tuple[Finding, ...]
    ttl: int = DEFAULT_TTL

    @property
    def published(self) -> list[HostRecord]:
        return [h for h in self.hosts if h.published]


def _ip(text: str) -> str:
    """The address part of "IP", "IP:PORT" or "[v6]:PORT", normalised."""
    host, _port = parse_hostport(text)
    return str(ipaddress.ip_address(host))


def published_addresses(mx: MxSettings) -> tuple[str, ...]:
    """What goes into the host's A/AAAA records.

    `address` says it outright (needed behind NAT or a load balancer); without it the listen
    IP is what senders must reach. A wildcard listen says nothing about which address is
    public, so it yields nothing. `addresses` adds more (typically the AAAA beside the A).
    """
    out: list[str] = []
    if mx.address:
        out.append(_ip(mx.address))
    elif mx.listen:
        ip = _ip(mx.listen)
        if not ipaddress.ip_address(ip).is_unspecified:
            out.append(ip)
    out += [str(ipaddress.ip_address(a)) for a in mx.addresses]
    return tuple(dict.fromkeys(out))


def _listen_ips(cfg: Config) -> set[str]:
    return {_ip(m.listen) for m in cfg.mx if m.listen}


def _bare(host: str) -> str:
    return host.lower().rstrip(".")


def build_plan(cfg: Config, lookup: Lookup | None = None) -> Plan:
    """Records and findings for every domain the config serves (they share the MX tier)."""
    findings: list[Finding] = []
    published = [m for m in cfg.mx if m.role is not Role.RETIRED]
    numbered = [m.preference for m in published if m.preference is not None]
    behind_all = (max(numbered) + 10) if numbered else 10
    records: list[HostRecord] = []
    for m in cfg.mx:
        addresses = published_addresses(m)
        pref = m.preference
        if m.role is Role.FAKE and pref is None:
            pref = behind_all
            findings.append(
                Finding(
                    "fake-no-preference",
                    Severity.INFO,
                    m.host,
                    f"the fake MX has no preference; the plan puts it behind every other "
                    f"record, at {pref}",
                    fix=f"set preference for {m.host} in the config to choose its place",
                )
            )
        if m.role is Role.RETIRED:
            comment = _ROLE_NOTE_RETIRED
            pref = None
        else:
            comment = _ROLE_NOTES[m.role].format(address=", ".join(addresses) or "-")
            if m.role is Role.FAKE and m.accept_risk and _in_front(m, cfg):
                comment += "; in front by choice (accept_risk)"
        records.append(HostRecord(_bare(m.host), m.role, pref, addresses, comment))
    published_records = sorted(
        (r for r in records if r.published), key=lambda r: (r.preference or 0, r.host)
    )
    retired = [r for r in records if not r.published]
    findings += _layout_findings(cfg, records)
    findings += _policy_findings(cfg)
    findings += _postmaster_findings(cfg, lookup)
    findings += address_limit_findings(
        [
            PublishedHost(r.host, r.role, r.preference or 0, r.addresses)
            for r in published_records
            if r.addresses
        ]
    )
    return Plan(
        source=cfg.source,
        domains=tuple(_bare(d) for d in cfg.local_domains()),
        hosts=tuple(published_records + retired),
        findings=tuple(sort_findings(findings)),
    )


def _in_front(fake: MxSettings, cfg: Config) -> bool:
    """A fake that every sender meets first: at or below the lowest real preference."""
    real = [m.preference for m in cfg.mx if m.role in REAL_ROLES and m.preference is not None]
    return fake.preference is not None and bool(real) and fake.preference <= min(real)


def _layout_findings(cfg: Config, records: list[HostRecord]) -> list[Finding]:
    out: list[Finding] = []
    by_role: dict[Role, list[HostRecord]] = {}
    for r in records:
        by_role.setdefault(r.role, []).append(r)
    primaries = by_role.get(Role.PRIMARY, [])
    backups = by_role.get(Role.BACKUP, [])
    real = primaries + backups

    if not primaries:
        out.append(
            Finding(
                "no-primary",
                Severity.ERROR,
                cfg.source,
                "no [[mx]] has role primary: nothing takes the mail",
                fix='add an [[mx]] with role = "primary"',
            )
        )
    if len(real) == 1:
        out.append(
            Finding(
                "single-real-mx",
                Severity.WARNING,
                real[0].host,
                f"{real[0].host} is the only MX that takes mail: while it is down every "
                "sender queues (fine for hours), and traps and fakes see only the senders "
                "that break the rules",
                fix="add a backup (role = backup) on another machine, or accept the risk",
            )
        )
    for r in records:
        if r.published and not r.addresses:
            out.append(
                Finding(
                    "no-address",
                    Severity.ERROR,
                    r.host,
                    f"no address to publish for {r.host}: it has no address and its listen "
                    "is missing or a wildcard",
                    fix=f"set address (and addresses for the AAAA) on the [[mx]] of {r.host}",
                )
            )
        for a in r.addresses:
            ip = ipaddress.ip_address(a)
            if r.published and (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                out.append(
                    Finding(
                        "unroutable-address",
                        Severity.WARNING,
                        r.host,
                        f"{r.host} would be published as {a}, which no sender can reach",
                        fix="set address to the public address senders connect to",
                    )
                )

    # traps and backups that share an address with a host that takes mail
    for r in records:
        if not r.published or r.role not in (Role.TRAP, Role.BACKUP):
            continue
        for other in real:
            # a pair of backups is reported once, on the later one
            later_backup = other.role is Role.BACKUP and records.index(other) > records.index(r)
            if other is r or (r.role is Role.BACKUP and later_backup):
                continue
            shared = sorted(set(r.addresses) & set(other.addresses))
            if not shared:
                continue
            if r.role is Role.TRAP:
                out.append(
                    Finding(
                        "trap-shares-primary-address"
                        if other.role is Role.PRIMARY
                        else "trap-shares-address",
                        Severity.ERROR,
                        r.host,
                        f"the trap {r.host} has the address of the {other.role} {other.host} "
                        f"({', '.join(shared)}): a client sent to the trap reaches the real "
                        "server, and the trap can never tell the two apart",
                        fix="give every trap an address of its own (docs/sources.md, seed 002)",
                        evidence=(
                            f"{r.host}: {', '.join(r.addresses)}",
                            f"{other.host}: {', '.join(other.addresses)}",
                        ),
                    )
                )
            else:
                out.append(
                    Finding(
                        "shared-address",
                        Severity.WARNING,
                        r.host,
                        f"the backup {r.host} has the address of {other.host} "
                        f"({', '.join(shared)}): it adds no redundancy, and one server "
                        "answers for two preferences",
                        fix="run the backup on another machine, or drop its record",
                    )
                )

    listen_ips = _listen_ips(cfg)
    wildcard = any(ipaddress.ip_address(ip).is_unspecified for ip in listen_ips)
    answering = {a: r.host for r in records if r.role is not Role.FAKE for a in r.addresses}
    for r in by_role.get(Role.FAKE, []):
        hits = sorted(a for a in r.addresses if a in listen_ips or a in answering)
        if hits:
            names = ", ".join(sorted({answering[a] for a in hits if a in answering}))
            out.append(
                Finding(
                    "fake-answers",
                    Severity.ERROR,
                    r.host,
                    f"the fake MX {r.host} points at {', '.join(hits)}, where mxguard "
                    f"listens{' (' + names + ')' if names else ''}: a fake must refuse the "
                    "connection, or every sender talks to a real server there",
                    fix="point the fake at an address with nothing on port 25 (a refused "
                    "connection, not dropped packets)",
                )
            )
        elif wildcard:
            out.append(
                Finding(
                    "fake-unverified",
                    Severity.INFO,
                    r.host,
                    "mxguard listens on a wildcard address, so the plan cannot tell whether "
                    f"{', '.join(r.addresses)} is one of this machine's addresses",
                    fix="check that the fake's address refuses port 25 (mxguard audit --probe)",
                )
            )
        if _in_front(_mx(cfg, r.host), cfg):
            m = _mx(cfg, r.host)
            out.append(
                Finding(
                    "fake-in-front",
                    Severity.INFO if m.accept_risk else Severity.ERROR,
                    r.host,
                    f"the fake {r.host} at preference {r.preference} comes before every real "
                    "MX: each delivery pays one refused connection, and senders that never "
                    "try the next MX (some in-app and embedded mailers) lose mail",
                    fix=""
                    if m.accept_risk
                    else (
                        "move the fake behind the real hosts, or set accept_risk = true on "
                        "its [[mx]] to say the trade-off is wanted (docs/sources.md, seed 003)"
                    ),
                )
            )

    for r in by_role.get(Role.TRAP, []):
        after = [
            o
            for o in real
            if o.preference is not None and r.preference is not None and o.preference > r.preference
        ]
        if not after:
            continue
        first_primary = any(o.role is Role.PRIMARY for o in after)
        out.append(
            Finding(
                "trap-order",
                Severity.ERROR if first_primary else Severity.WARNING,
                r.host,
                f"the trap {r.host} ({r.preference}) comes before "
                f"{', '.join(o.host for o in after)}: senders that follow the rules "
                "meet the trap before the hosts that take their mail"
                + (", and the walk check blocklists them" if first_primary else ""),
                fix="give traps the highest preference numbers",
            )
        )
    return out


def _mx(cfg: Config, host: str) -> MxSettings:
    found = cfg.mx_by_host(host)
    assert found is not None
    return found


def _policy_findings(cfg: Config) -> list[Finding]:
    """Where one config still makes the backup answer differently from the primary.

    mxguard runs one policy on every role, so drift can only come from the settings that are
    per role: greylisting roles, a per-MX greet pause, per-MX TLS, and recipient handling that
    means something else on a host that queues (accept-all must bounce later there).
    """
    out: list[Finding] = []
    backups = cfg.mx_by_role(Role.BACKUP)
    primaries = cfg.mx_by_role(Role.PRIMARY)
    if not backups or not primaries:
        return out
    primary = primaries[0]
    for i, d in enumerate(cfg.domain):
        if d.recipients_source == "accept-all":
            out.append(
                Finding(
                    "backup-accept-all",
                    Severity.ERROR,
                    f"domain[{i}] {d.name}",
                    f"{d.name} accepts any recipient, and the backup "
                    f"{', '.join(b.host for b in backups)} queues what it accepts: mail for "
                    "unknown users is bounced later to forged senders (backscatter), the back "
                    "door spammers look for on secondaries (seeds 001, 004)",
                    fix='use recipients_source = "table" or "callout" so unknown users are '
                    "refused at RCPT",
                )
            )
    greylisted = set(cfg.greylist.roles)
    if "primary" in greylisted:
        missing = [b.host for b in backups if "backup" not in greylisted]
        if missing:
            out.append(
                Finding(
                    "greylist-drift",
                    Severity.WARNING,
                    ", ".join(missing),
                    "the primary greylists and the backup does not: a spammer that is "
                    "greylisted on the primary walks to the backup and gets in",
                    fix='add "backup" to [greylist].roles',
                )
            )
    elif "backup" in greylisted:
        out.append(
            Finding(
                "greylist-backup-only",
                Severity.INFO,
                ", ".join(b.host for b in backups),
                "greylisting on the backup only (docs/sources.md, seed 000): spam aimed at the backup waits, "
                "and legitimate mail, which reaches the primary, is never delayed",
                fix="",
            )
        )
    if cfg.early_talker.action != "ignore":
        pause = (
            primary.greet_pause
            if primary.greet_pause is not None
            else (cfg.early_talker.greet_pause)
        )
        for b in backups:
            bp = b.greet_pause if b.greet_pause is not None else cfg.early_talker.greet_pause
            if bp < pause:
                out.append(
                    Finding(
                        "greet-pause-drift",
                        Severity.WARNING,
                        b.host,
                        f"the backup {b.host} pauses {bp:g}s before its banner, the primary "
                        f"{pause:g}s: early talkers that the primary catches pass the backup",
                        fix=f"set greet_pause on {b.host} to at least {pause:g}s",
                    )
                )
    primary_tls = primary.tls_cert is not None or cfg.tls.cert is not None
    for b in backups:
        if primary_tls and b.tls_cert is None and cfg.tls.cert is None:
            out.append(
                Finding(
                    "tls-drift",
                    Severity.WARNING,
                    b.host,
                    f"the primary offers STARTTLS and the backup {b.host} does not: mail that "
                    "falls back to the backup travels in clear",
                    fix=f"set tls_cert and tls_key on {b.host} (or [tls] for every MX)",
                )
            )
    return out


def _table_lookup(cfg: Config) -> Lookup:
    """Without the caller's directory: what the config text alone says (files unread)."""

    def lookup(local: str, domain: str) -> bool | None:
        for d in cfg.domain:
            if _bare(d.name) != domain:
                continue
            if d.recipients_source == "accept-all":
                return True
            for r in d.recipients:
                rl, _, _ = r.rpartition("@")
                if rl == "" or rl.lower() == local:
                    return True
            if d.recipients_file or d.recipients_source == "callout":
                return None
            return False
        return False

    return lookup


def _postmaster_findings(cfg: Config, lookup: Lookup | None) -> list[Finding]:
    lookup = lookup or _table_lookup(cfg)
    out: list[Finding] = []
    for i, d in enumerate(cfg.domain):
        name = _bare(d.name)
        known = lookup("postmaster", name)
        if known is False:
            out.append(
                Finding(
                    "no-postmaster",
                    Severity.WARNING,
                    name,
                    f"postmaster@{name} is refused: RFC 5321 4.5.1 requires it, and it is "
                    "where other operators report problems with your mail",
                    fix=f'add "postmaster@{name}" to domain[{i}].recipients',
                )
            )
        elif known is None:
            out.append(
                Finding(
                    "postmaster-unverified",
                    Severity.INFO,
                    name,
                    f"whether postmaster@{name} exists is decided at run time (callout)",
                    fix="make sure the primary accepts postmaster@",
                )
            )
    return out


# ---------------------------------------------------------------- rendering


def _rtype(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


def _zone_for(host: str, domains: tuple[str, ...]) -> str | None:
    """The served domain whose zone holds `host`, the deepest one if several do."""
    holders = [d for d in domains if host == d or host.endswith("." + d)]
    return max(holders, key=len) if holders else None


def render_bind(plan: Plan) -> str:
    """Zone-file text: MX records per domain, then A/AAAA records in the zone that holds them.

    Names are absolute so the text can be pasted into any zone file; a parser reading it for
    one origin skips the names outside that zone.
    """
    lines = [
        f"; mxguard plan from {plan.source}: the MX layout that `mxguard serve` runs.",
        "; Generated: change the config and run `mxguard plan` again rather than editing here.",
        f"$TTL {plan.ttl}",
    ]
    width = max((len(h.host) for h in plan.hosts), default=10) + 1
    for domain in plan.domains:
        lines += ["", f"; ---- {domain}: MX records", f"$ORIGIN {domain}."]
        for h in plan.published:
            lines.append(
                f"{domain}.\tIN MX {h.preference:<5} {h.host + '.':<{width}} ; {h.comment}"
            )
        held = [h for h in plan.hosts if h.published and _zone_for(h.host, plan.domains) == domain]
        if held:
            lines.append(f"; ---- {domain}: addresses of the MX hosts")
            lines += _address_lines(held, width)
    outside = [h for h in plan.published if _zone_for(h.host, plan.domains) is None]
    if outside:
        lines += ["", "; ---- MX hosts outside these domains: publish in the zones that hold them"]
        lines += _address_lines(outside, width)
    retired = [h for h in plan.hosts if not h.published]
    if retired:
        lines += ["", f"; ---- {_ROLE_NOTE_RETIRED}"]
        for h in retired:
            lines.append(f"; {h.host} {', '.join(h.addresses) or '-'}")
    return "\n".join(lines) + "\n"


def _address_lines(hosts: list[HostRecord], width: int) -> list[str]:
    out = []
    for h in hosts:
        for a in h.addresses:
            out.append(f"{h.host + '.':<{width}}\tIN {_rtype(a):<4} {a:<15} ; {h.role.value}")
    return out


def plan_dict(plan: Plan) -> dict[str, object]:
    return {
        "source": plan.source,
        "ttl": plan.ttl,
        "domains": [
            {
                "name": d,
                "mx": [
                    {
                        "preference": h.preference,
                        "host": h.host,
                        "role": h.role.value,
                        "comment": h.comment,
                    }
                    for h in plan.published
                ],
            }
            for d in plan.domains
        ],
        "hosts": [
            {
                "host": h.host,
                "role": h.role.value,
                "preference": h.preference,
                "published": h.published,
                "zone": _zone_for(h.host, plan.domains),
                "addresses": [{"type": _rtype(a), "address": a} for a in h.addresses],
            }
            for h in plan.hosts
        ],
        "findings": [f.as_dict() for f in plan.findings],
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_dict(plan), indent=2) + "\n"
