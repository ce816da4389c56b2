"""The pure half of `mxguard audit`: what DNS said and what the probes saw, judged.

Nothing here touches the network, so every finding can be tested from plain data, and the
rules read in one place. Roles come from the config or `--role` when given; otherwise they
are inferred (the lowest preference that answers is the primary, a refusing host at either end
of the list is a fake, the rest are backups) and marked as inferred in what is reported,
because the judgement depends on them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mxguard.config import Config
from mxguard.mxplan.findings import (
    REAL_ROLES,
    Finding,
    PublishedHost,
    Severity,
    address_limit_findings,
    sort_findings,
)
from mxguard.mxplan.plan import build_plan
from mxguard.mxplan.probe import ProbeResult
from mxguard.policy.facts import Role

DnsStatus = Literal["mx", "implicit", "null", "nxdomain", "nomail", "error"]


# ---------------------------------------------------------------- DNS facts


@dataclass(frozen=True)
class MxTarget:
    """One MX record and what its target name resolves to."""

    preference: int
    host: str  # lower case, no final dot
    addresses: tuple[str, ...] = ()
    cname: str | None = None  # the alias target, when the MX target is a CNAME
    ip_literal: bool = False
    error: str | None = None  # why there are no addresses (NXDOMAIN, NODATA, a timeout)
    implicit: bool = False  # not an MX record: the domain's own A/AAAA (RFC 5321 5.1)


@dataclass(frozen=True)
class DnsView:
    domain: str
    status: DnsStatus
    targets: tuple[MxTarget, ...] = ()
    error: str | None = None
    null_mixed: bool = False  # "MX 0 ." published next to other MX records
    records: tuple[str, ...] = ()  # the MX records as text, for evidence

    def addresses(self) -> set[str]:
        return {a for t in self.targets for a in t.addresses}


def bare(name: str) -> str:
    """Host names as compared everywhere here: lower case, no final dot."""
    return name.lower().rstrip(".")


def is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- roles


@dataclass(frozen=True)
class RoleOf:
    role: Role
    inferred: bool

    def name(self) -> str:
        return f"{self.role.value} (inferred)" if self.inferred else self.role.value


def hints_from_config(cfg: Config, domain: str) -> dict[str, Role]:
    """Roles by MX host name, when the config serves this domain (else it says nothing)."""
    if bare(domain) not in {bare(d) for d in cfg.local_domains()}:
        return {}
    return {bare(m.host): m.role for m in cfg.mx}


def assign_roles(
    view: DnsView, probes: Sequence[ProbeResult], hints: Mapping[str, Role]
) -> list[RoleOf]:
    """A role for each target in `view.targets`, in that order."""
    by_host: dict[str, list[ProbeResult]] = {}
    for p in probes:
        if p.target.kind == "mx":
            by_host.setdefault(p.target.host, []).append(p)

    def dead(t: MxTarget) -> bool:
        ps = by_host.get(t.host, [])
        return bool(ps) and all(p.connect in ("refused", "timeout") for p in ps)

    alive = [t.preference for t in view.targets if not dead(t) and hints.get(t.host) is None]
    hinted_primary = [t.preference for t in view.targets if hints.get(t.host) is Role.PRIMARY]
    lowest = min(hinted_primary or alive or [t.preference for t in view.targets] or [0])
    highest = max(alive or [lowest])
    seen: set[str] = set()
    out = []
    for t in view.targets:
        hint = hints.get(t.host)
        if hint is not None:
            out.append(RoleOf(hint, False))
        elif t.host in seen:  # the same name again, higher up: seed 002's trap-on-primary
            out.append(RoleOf(Role.TRAP, True))
        elif dead(t) and alive and (t.preference < lowest or t.preference > highest):
            out.append(RoleOf(Role.FAKE, True))
        elif t.preference <= lowest:
            out.append(RoleOf(Role.PRIMARY, True))
        else:
            out.append(RoleOf(Role.BACKUP, True))
        seen.add(t.host)
    return out


# ---------------------------------------------------------------- analysis (pure)


@dataclass(frozen=True)
class AuditInput:
    view: DnsView
    probes: tuple[ProbeResult, ...] = ()
    hints: Mapping[str, Role] = field(default_factory=dict)
    also: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # --also host -> addrs
    config: Config | None = None  # for the plan-versus-DNS comparison
    probed: bool = False


def _ev(p: ProbeResult, *lines: str) -> tuple[str, ...]:
    return tuple(f"{p.target.label} {line}" for line in lines)


def _dialogue(p: ProbeResult) -> tuple[str, ...]:
    return (f"{p.target.label}: " + " | ".join(p.transcript),)


def analyse(data: AuditInput) -> list[Finding]:
    view = data.view
    out: list[Finding] = []
    out += _dns_findings(view)
    if view.status not in ("mx", "implicit"):
        return sort_findings(out)
    roles = assign_roles(view, data.probes, data.hints)
    role_of: dict[str, RoleOf] = {}
    for t, r in zip(view.targets, roles, strict=True):
        role_of.setdefault(t.host, r)  # a name published twice is probed as its first record
    out += _sharing_findings(view, roles)
    out += address_limit_findings(
        [
            PublishedHost(t.host, r.role, t.preference, t.addresses)
            for t, r in zip(view.targets, roles, strict=True)
            if t.addresses
        ]
    )
    if data.config is not None and data.hints:
        out += _config_findings(view, data.config)
    if data.probed:
        out += _probe_findings(view, data.probes, role_of)
        out += _also_findings(view, data.probes, data.also, role_of)
    return sort_findings(out)


def _dns_findings(view: DnsView) -> list[Finding]:
    d = view.domain
    out: list[Finding] = []
    if view.status == "nxdomain":
        out.append(
            Finding(
                "nxdomain",
                Severity.ERROR,
                d,
                f"{d} does not exist in DNS (NXDOMAIN)",
                fix="check the spelling, or publish the zone",
            )
        )
    elif view.status == "error":
        out.append(
            Finding(
                "dns-error",
                Severity.ERROR,
                d,
                view.error or "the MX lookup failed",
                fix="check the nameservers (--nameserver) and try again",
            )
        )
    elif view.status == "null":
        out.append(
            Finding(
                "null-mx",
                Severity.INFO,
                d,
                f"{d} publishes a null MX (RFC 7505): it accepts no mail, and senders "
                "bounce at once instead of retrying",
                evidence=view.records,
            )
        )
    elif view.status == "nomail":
        out.append(
            Finding(
                "no-mail-host",
                Severity.ERROR,
                d,
                f"{d} has neither MX nor A/AAAA records: senders cannot deliver and "
                "retry for days before they bounce",
                fix=f'publish MX records, or "{d}. MX 0 ." if the domain takes no mail',
            )
        )
    elif view.status == "implicit":
        out.append(
            Finding(
                "implicit-mx",
                Severity.WARNING,
                d,
                f"{d} has no MX record: senders fall back to its A/AAAA records "
                "(RFC 5321 5.1), which usually point at a web server",
                fix="publish MX records for the hosts that take mail",
                evidence=tuple(f"{d} A/AAAA {a}" for a in view.targets[0].addresses),
            )
        )
    if view.null_mixed:
        out.append(
            Finding(
                "null-mx-mixed",
                Severity.ERROR,
                d,
                "a null MX (MX 0 .) is published beside other MX records; RFC 7505 says "
                "it must be the only one, and senders treat the mix differently",
                fix="remove either the null MX or the other MX records",
                evidence=view.records,
            )
        )
    for t in view.targets:
        if t.implicit:
            continue
        if t.ip_literal:
            out.append(
                Finding(
                    "mx-ip-literal",
                    Severity.ERROR,
                    t.host,
                    f"the MX target {t.host} is an IP address; an MX names a host, and "
                    "senders look up A records for the name '" + t.host + "' and fail",
                    fix=f"publish a host name with an A record for {t.host}",
                    evidence=view.records,
                )
            )
            continue
        if t.cname:
            out.append(
                Finding(
                    "mx-cname",
                    Severity.WARNING,
                    t.host,
                    f"the MX target {t.host} is an alias (CNAME to {t.cname}); RFC 2181 "
                    "10.3 forbids it and some senders refuse or loop",
                    fix=f"point the MX at {t.cname} directly",
                    evidence=(f"{t.host}. CNAME {t.cname}.",),
                )
            )
        if not t.addresses:
            out.append(
                Finding(
                    "mx-no-address",
                    Severity.ERROR,
                    t.host,
                    f"the MX target {t.host} has no address: {t.error}",
                    fix=f"publish A/AAAA records for {t.host} or remove its MX record",
                    evidence=view.records,
                )
            )
    return out


def _sharing_findings(view: DnsView, roles: Sequence[Any]) -> list[Finding]:
    out: list[Finding] = []
    pairs = list(zip(view.targets, roles, strict=True))
    for i, (t, r) in enumerate(pairs):
        for o, ro in pairs[:i]:
            shared = sorted(set(t.addresses) & set(o.addresses))
            if not shared:
                continue
            ev = (
                f"{o.preference} {o.host}: {', '.join(o.addresses)}",
                f"{t.preference} {t.host}: {', '.join(t.addresses)}",
            )
            trap = next((x for x in ((t, r), (o, ro)) if x[1].role is Role.TRAP), None)
            real = next((x for x in ((o, ro), (t, r)) if x[1].role in REAL_ROLES), None)
            if trap is not None and real is not None:
                out.append(
                    Finding(
                        "trap-shares-primary-address"
                        if real[1].role is Role.PRIMARY
                        else "trap-shares-address",
                        Severity.WARNING if trap[1].inferred else Severity.ERROR,
                        trap[0].host,
                        f"the trap record {trap[0].host} ({trap[0].preference}) has the "
                        f"address of the {real[1].role.value} {real[0].host} "
                        f"({', '.join(shared)}): bots that go for the highest MX reach the "
                        "real server, and nothing can tell them from real senders",
                        fix="give every trap an address of its own (docs/sources.md, seed 002)",
                        evidence=ev,
                    )
                )
            elif r.role in REAL_ROLES and ro.role in REAL_ROLES:
                out.append(
                    Finding(
                        "shared-address",
                        Severity.WARNING,
                        t.host,
                        f"{t.host} ({r.name()}) has the same address as {o.host} "
                        f"({ro.name()}): {', '.join(shared)}. It adds no redundancy, and if "
                        "that address is the real server behind a filtering primary, spam "
                        "walks around the filter (docs/sources.md, seed 001)",
                        fix="run the secondary on its own machine, or remove its record",
                        evidence=ev,
                    )
                )
    return out


def _config_findings(view: DnsView, cfg: Config) -> list[Finding]:
    """Where DNS and `mxguard plan` disagree: the config is meant to be the source of truth."""
    out: list[Finding] = []
    plan = build_plan(cfg)
    planned = {h.host: h for h in plan.hosts}
    published = {t.host: t for t in view.targets}
    for host, h in planned.items():
        t = published.get(host)
        if not h.published:
            if t is not None:
                out.append(
                    Finding(
                        "retired-published",
                        Severity.ERROR,
                        host,
                        f"{host} is retired in the config but still published as MX "
                        f"{t.preference}: senders that follow the rules reach a host that "
                        "blocklists everyone",
                        fix=f"remove the MX record for {host}",
                    )
                )
            continue
        if t is None:
            out.append(
                Finding(
                    "config-mismatch",
                    Severity.WARNING,
                    host,
                    f"the config's {h.role.value} {host} is not published as MX of {view.domain}",
                    fix="publish the records `mxguard plan` prints",
                )
            )
            continue
        if t.preference != h.preference:
            out.append(
                Finding(
                    "config-mismatch",
                    Severity.WARNING,
                    host,
                    f"{host} is published at preference {t.preference}, the config says "
                    f"{h.preference}",
                    fix="publish the records `mxguard plan` prints",
                )
            )
        if h.addresses and set(h.addresses) != set(t.addresses):
            out.append(
                Finding(
                    "config-mismatch",
                    Severity.WARNING,
                    host,
                    f"{host} resolves to {', '.join(t.addresses) or 'nothing'}, the "
                    f"config says {', '.join(h.addresses)}",
                    fix="publish the records `mxguard plan` prints",
                )
            )
    for host, t in published.items():
        if host not in planned:
            out.append(
                Finding(
                    "config-mismatch",
                    Severity.WARNING,
                    host,
                    f"MX {t.preference} {host} is published but not in the config, so "
                    "mxguard does not guard it",
                    fix="add it as an [[mx]] or remove it",
                )
            )
    return out


def _reference(probes: Sequence[ProbeResult], role_of: Mapping[str, RoleOf]) -> ProbeResult | None:
    """The primary's answers that every other real address is compared with."""
    for p in probes:
        r = role_of.get(p.target.host)
        asked = p.rcpt_postmaster is not None or p.rcpt_unknown is not None
        if p.target.kind == "mx" and r is not None and r.role is Role.PRIMARY and asked:
            return p
    return None


def _probe_findings(
    view: DnsView, probes: Sequence[ProbeResult], role_of: Mapping[str, RoleOf]
) -> list[Finding]:
    out: list[Finding] = []
    mx_probes = [p for p in probes if p.target.kind == "mx"]
    real_prefs = [t.preference for t in view.targets if role_of[t.host].role in REAL_ROLES]
    front = min(real_prefs) if real_prefs else None
    pref_of: dict[str, int] = {}
    for t in view.targets:
        pref_of.setdefault(t.host, t.preference)
    for p in mx_probes:
        out += _reachability(p, role_of[p.target.host], pref_of[p.target.host], front)
    if mx_probes and not any(
        p.greeted and role_of[p.target.host].role in REAL_ROLES for p in mx_probes
    ):
        out.append(
            Finding(
                "no-mx-answers",
                Severity.ERROR,
                view.domain,
                f"no MX host of {view.domain} that should take mail answered SMTP",
                fix="check that the primary is up and reachable on port 25",
                evidence=tuple(
                    f"{p.target.label}: {p.connect} {p.error}".strip() for p in mx_probes
                ),
            )
        )
    ref = _reference(mx_probes, role_of)
    for p in mx_probes:
        r = role_of[p.target.host]
        if r.role in REAL_ROLES and p.greeted:
            out += _real_host_findings(p, r, ref)
        accepted = [x for x in (p.rcpt_unknown, p.rcpt_postmaster) if x and x.kind == 2]
        if r.role is Role.TRAP and accepted:
            out.append(
                Finding(
                    "trap-accepts",
                    Severity.INFO,
                    p.target.host,
                    f"the trap {p.target.host} accepted a recipient; the audit never "
                    "sends DATA, so it cannot tell whether the trap tempfails later",
                    fix='mxguard traps tempfail at RCPT (trap_answer = "rcpt")',
                    evidence=_dialogue(p),
                )
            )
    return out


def _reachability(p: ProbeResult, r: RoleOf, pref: int, front: int | None) -> list[Finding]:
    host = p.target.host
    if r.role is Role.FAKE:
        in_front = front is not None and pref < front
        if p.connect == "timeout":
            return [
                Finding(
                    "fake-drops",
                    Severity.ERROR if in_front else Severity.WARNING,
                    host,
                    f"the fake MX {host} drops packets instead of refusing: every sender "
                    "that tries it waits out its connect timeout (30 s in Postfix) "
                    "before moving on"
                    + (", on every delivery, since it comes first" if in_front else ""),
                    fix="make the address refuse port 25 (a TCP reset: nothing listening, "
                    "or a firewall REJECT with tcp-reset), not drop",
                    evidence=_ev(p, p.error),
                )
            ]
        if p.connect == "ok":
            what = (
                f"greets with {p.banner}"
                if p.banner
                else "accepts the connection and never greets (senders wait 300 s)"
                if p.silent
                else "accepts the connection"
            )
            return [
                Finding(
                    "fake-answers",
                    Severity.ERROR,
                    host,
                    f"the fake MX {host} {what}: a fake must refuse the connection, or "
                    "bots and real senders alike talk to whatever listens there",
                    fix="point the fake at an address with nothing on port 25",
                    evidence=_dialogue(p),
                )
            ]
        return []
    label = r.name()
    if p.connect == "timeout":
        sev = Severity.WARNING if r.role is Role.TRAP else Severity.ERROR
        return [
            Finding(
                "mx-timeout",
                sev,
                host,
                f"{host} ({label}) does not answer the connect: senders wait for "
                "their connect timeout",
                fix="check the host and its firewall",
                evidence=_ev(p, p.error),
            )
        ]
    if p.connect in ("refused", "error"):
        sev = Severity.ERROR if r.role is Role.PRIMARY else Severity.WARNING
        return [
            Finding(
                "mx-unreachable",
                sev,
                host,
                f"{host} ({label}) refuses connections or cannot be reached",
                fix="start the SMTP server, or remove the record",
                evidence=_ev(p, p.error),
            )
        ]
    if p.silent or (p.connect == "ok" and p.banner is None):
        return [
            Finding(
                "mx-silent",
                Severity.ERROR,
                host,
                f"{host} ({label}) accepts the connection but never greets: senders "
                "hang up to 300 s (Postfix smtp_helo_timeout) before moving on",
                fix="fix or stop the server behind this address",
                evidence=_ev(p, p.error),
            )
        ]
    if p.banner is not None and p.banner.kind != 2 and r.role is not Role.TRAP:
        sev = Severity.ERROR if p.banner.kind == 5 else Severity.WARNING
        return [
            Finding(
                "mx-banner",
                sev,
                host,
                f"{host} ({label}) greets with {p.banner}: senders move to the next "
                "MX" + (" or, like Exim, give up on a 5xx greeting" if p.banner.kind == 5 else ""),
                fix="find out why the server refuses sessions",
                evidence=_dialogue(p),
            )
        ]
    return []


def _real_host_findings(p: ProbeResult, r: RoleOf, ref: ProbeResult | None) -> list[Finding]:
    out: list[Finding] = []
    host, label = p.target.host, r.name()
    if p.starttls is False:
        out.append(
            Finding(
                "no-starttls",
                Severity.INFO,
                host,
                f"{host} ({label}) does not offer STARTTLS: mail reaches it in clear",
                fix="configure a certificate (tls_cert/tls_key in mxguard)",
                evidence=_ev(p, "EHLO reply without STARTTLS"),
            )
        )
    if p.tls in ("invalid", "error"):
        out.append(
            Finding(
                "tls-invalid",
                Severity.WARNING,
                host,
                f"{host} ({label}) offers STARTTLS but the certificate is not valid "
                f"for {host}: {p.tls_error}",
                fix=f"install a certificate for {host} from a CA senders trust",
                evidence=_ev(p, f"STARTTLS: {p.tls_error}"),
            )
        )
    if p.mail is not None and p.mail.kind == 5:
        out.append(
            Finding(
                "null-sender-refused",
                Severity.ERROR,
                host,
                f"{host} ({label}) refuses the null sender: bounces and delivery "
                "reports to your users are lost (RFC 5321 4.5.5)",
                fix="accept MAIL FROM:<>",
                evidence=_dialogue(p),
            )
        )
    if p.rcpt_postmaster is not None and p.rcpt_postmaster.kind == 5:
        out.append(
            Finding(
                "postmaster-refused",
                Severity.WARNING,
                host,
                f"{host} ({label}) refuses postmaster@ (RFC 5321 4.5.1 requires it)",
                fix="add postmaster to the recipients",
                evidence=_dialogue(p),
            )
        )
    if p is ref or ref is None:
        if p.rcpt_unknown is not None and p.rcpt_unknown.kind == 2 and r.role is Role.PRIMARY:
            out.append(
                Finding(
                    "accepts-unknown",
                    Severity.WARNING,
                    host,
                    f"{host} ({label}) accepts mail for a made-up recipient: what it "
                    "cannot deliver it must bounce, often to a forged sender "
                    "(backscatter)",
                    fix="refuse unknown recipients at RCPT (recipients_source = "
                    '"table" or "callout")',
                    evidence=_dialogue(p),
                )
            )
        return out
    return out + _drift(p, r, ref)


def _kind(reply: Any) -> int | None:
    return None if reply is None else int(reply.kind)


def _drift(p: ProbeResult, r: RoleOf, ref: ProbeResult) -> list[Finding]:
    """How a secondary (or another address of the primary) answers unlike the primary."""
    out: list[Finding] = []
    host, label = p.target.host, r.name()
    ev = _dialogue(ref) + _dialogue(p)
    ru, pu = _kind(ref.rcpt_unknown), _kind(p.rcpt_unknown)
    rp, pp = _kind(ref.rcpt_postmaster), _kind(p.rcpt_postmaster)
    explained = False
    if pu == 2 and ru in (4, 5):
        out.append(
            Finding(
                "backscatter-backdoor",
                Severity.ERROR,
                host,
                f"{host} ({label}) accepts mail for a made-up recipient that the primary "
                f"{ref.target.host} refuses: spammers send to the secondary, which must later bounce "
                "to forged senders (backscatter) or deliver to a catch-all (seeds 001, 004)",
                fix="validate recipients on every MX at RCPT: the same recipient table, or a "
                "callout to the primary",
                evidence=ev,
            )
        )
        explained = True
    elif pu == 2 and ru == 2:
        out.append(
            Finding(
                "accepts-unknown",
                Severity.WARNING,
                host,
                f"{host} ({label}) and the primary both accept a made-up recipient",
                fix="refuse unknown recipients at RCPT",
                evidence=ev,
            )
        )
        explained = True
    if rp == 2 and pp == 4:
        backup = r.role is Role.BACKUP
        out.append(
            Finding(
                "greylist-drift",
                Severity.INFO if backup else Severity.WARNING,
                host,
                f"{host} ({label}) tempfails postmaster@ where the primary accepts it: "
                "greylisting (or a similar tempfail) on this host only"
                + (
                    ". On a backup that is a known layout (docs/sources.md, seed 000): spam aimed at the backup "
                    "waits, real mail reaches the primary"
                    if backup
                    else ": one address of the primary answers unlike the others"
                ),
                fix="" if backup else "give every address of the primary the same policy",
                evidence=ev,
            )
        )
        explained = True
    elif rp == 4 and pp == 2:
        out.append(
            Finding(
                "greylist-drift",
                Severity.WARNING,
                host,
                f"the primary tempfails postmaster@ (greylisting?) and {host} ({label}) accepts "
                "it: a sender that is greylisted on the primary walks to the secondary and gets in",
                fix="greylist on the secondary too, or on neither",
                evidence=ev,
            )
        )
        explained = True
    if p.starttls is False and ref.starttls:
        out.append(
            Finding(
                "tls-drift",
                Severity.WARNING,
                host,
                f"the primary offers STARTTLS and {host} ({label}) does not: mail that falls back "
                "to it travels in clear",
                fix=f"configure a certificate on {host}",
                evidence=ev,
            )
        )
    if not explained:
        pairs = (
            ("banner", ref.banner, p.banner),
            ("MAIL FROM:<>", ref.mail, p.mail),
            ("RCPT unknown", ref.rcpt_unknown, p.rcpt_unknown),
            ("RCPT postmaster", ref.rcpt_postmaster, p.rcpt_postmaster),
        )
        diffs = [f"{what}: primary {a}, {host} {b}" for what, a, b in pairs if _kind(a) != _kind(b)]
        if diffs:
            out.append(
                Finding(
                    "policy-drift",
                    Severity.WARNING,
                    host,
                    f"{host} ({label}) answers the same probes differently from the primary "
                    f"{ref.target.host}: " + "; ".join(diffs),
                    fix="run the same policy on every MX (one mxguard config for the tier)",
                    evidence=ev,
                )
            )
    return out


def _also_findings(
    view: DnsView,
    probes: Sequence[ProbeResult],
    also: Mapping[str, tuple[str, ...]],
    role_of: Mapping[str, RoleOf],
) -> list[Finding]:
    out: list[Finding] = []
    mx_addrs: dict[str, list[MxTarget]] = {}
    for t in view.targets:
        for a in t.addresses:
            mx_addrs.setdefault(a, []).append(t)
    for host, addrs in also.items():
        if not addrs:
            out.append(
                Finding(
                    "also-no-address",
                    Severity.WARNING,
                    host,
                    f"--also {host} has no address",
                    fix="check the name",
                )
            )
        for a in addrs:
            for t in mx_addrs.get(a, []):
                r = role_of[t.host]
                if r.role is not Role.PRIMARY:
                    out.append(
                        Finding(
                            "also-published",
                            Severity.ERROR,
                            t.host,
                            f"the MX {t.host} ({r.name()}, preference {t.preference}) is {host} "
                            f"({a}), the server behind the filter: spam sent to that MX skips the "
                            "filtering primary (docs/sources.md, seed 001)",
                            fix=f"remove the MX record for {t.host}, or point it at a host that "
                            "filters like the primary",
                            evidence=(f"{t.host} -> {a}", f"--also {host} -> {a}"),
                        )
                    )
    for p in probes:
        if p.target.kind != "also" or p.target.address in mx_addrs:
            continue
        accepts = [x for x in (p.rcpt_postmaster, p.rcpt_unknown) if x is not None and x.kind == 2]
        if accepts:
            out.append(
                Finding(
                    "direct-bypass",
                    Severity.ERROR,
                    p.target.host,
                    f"{p.target.label} is not an MX of {view.domain} but accepts its mail: bots "
                    "that remember the host's name or address deliver around the MX hosts and "
                    "their filters (docs/sources.md, seed 001)",
                    fix="accept port 25 on that host only from your MX hosts (firewall), or refuse "
                    "the domain's recipients there",
                    evidence=_dialogue(p),
                )
            )
        elif p.greeted:
            out.append(
                Finding(
                    "also-answers",
                    Severity.INFO,
                    p.target.host,
                    f"{p.target.label} answers SMTP but refused the probe recipients",
                    fix="a firewall that lets only the MX hosts in is still better",
                    evidence=_dialogue(p),
                )
            )
    return out
