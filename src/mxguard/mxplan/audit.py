"""`mxguard audit`: a domain's MX layout as DNS publishes it and as its hosts answer.

Three steps, kept apart so the judging can be tested without a network:

1. `collect_dns` asks the resolver (MX, then CNAME, A and AAAA of every target) and returns a
   `DnsView`: facts only, including the difference between NXDOMAIN and NODATA that decides
   between "no such domain" and "use the implicit MX".
2. `mxguard.mxplan.probe` talks SMTP to every address of every MX (and `--also` hosts), and
   to nothing else: the targets come from the DNS answers.
3. `mxguard.mxplan.judge.analyse` (pure) turns the view, the probe results and what is known
   about roles into findings with evidence and a fix.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from mxguard.config import Config
from mxguard.mxplan.findings import Finding, Severity
from mxguard.mxplan.judge import (
    AuditInput,
    DnsStatus,
    DnsView,
    MxTarget,
    RoleOf,
    analyse,
    assign_roles,
    bare,
    hints_from_config,
    is_literal,
)
from mxguard.mxplan.probe import ProbeOptions, ProbeResult, ProbeTarget, probe_all
from mxguard.policy.facts import Role

__all__ = [
    "AuditReport",
    "DnsView",
    "MxTarget",
    "audit_domain",
    "collect_dns",
    "probe_targets",
    "render_json",
    "render_text",
    "resolve_also",
]


# ---------------------------------------------------------------- DNS facts


def _bare(name: str | dns.name.Name) -> str:
    return bare(name.to_text() if isinstance(name, dns.name.Name) else name)


async def _addresses(
    resolver: dns.asyncresolver.Resolver, name: str
) -> tuple[list[str], str | None, str | None]:
    """(A and AAAA addresses, the CNAME target if any, an error when there is nothing)."""
    qname = dns.name.from_text(name)

    async def ask(rdtype: str) -> tuple[list[str], str | None]:
        try:
            answer = await resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return [], "NXDOMAIN"
        except dns.resolver.NoAnswer:
            return [], None
        except dns.exception.DNSException as exc:
            return [], f"{rdtype} lookup failed: {type(exc).__name__}"
        return [r.to_text() for r in answer], None

    (a, a_err), (aaaa, aaaa_err), (cname, _cname_err) = await asyncio.gather(
        ask("A"), ask("AAAA"), ask("CNAME")
    )
    found = [str(ipaddress.ip_address(x)) for x in a + aaaa]
    error = None
    if not found:
        error = a_err or aaaa_err or "no A or AAAA record (NODATA)"
    return found, (_bare(cname[0]) if cname else None), error


async def _target(
    resolver: dns.asyncresolver.Resolver, pref: int, host: str, implicit: bool = False
) -> MxTarget:
    if is_literal(host):
        return MxTarget(pref, host, ip_literal=True, error="an IP address, not a host name")
    found, cname, error = await _addresses(resolver, host)
    return MxTarget(pref, host, tuple(found), cname, error=error, implicit=implicit)


async def collect_dns(domain: str, resolver: dns.asyncresolver.Resolver) -> DnsView:
    domain = _bare(domain)
    try:
        answer = await resolver.resolve(dns.name.from_text(domain), "MX", search=False)
    except dns.resolver.NXDOMAIN:
        return DnsView(domain, "nxdomain", error=f"{domain} does not exist (NXDOMAIN)")
    except dns.resolver.NoAnswer:
        implicit = await _target(resolver, 0, domain, implicit=True)
        status: DnsStatus = "implicit" if implicit.addresses else "nomail"
        return DnsView(domain, status, (implicit,) if implicit.addresses else ())
    except dns.exception.DNSException as exc:
        return DnsView(domain, "error", error=f"MX lookup failed: {type(exc).__name__}: {exc}")
    records = sorted(((r.preference, _bare(r.exchange)) for r in answer), key=lambda r: r)
    texts = tuple(f"{domain}. MX {p} {h or ''}." for p, h in records)
    real = [(p, h) for p, h in records if h]
    if not real:
        return DnsView(domain, "null", records=texts)
    targets = await asyncio.gather(*(_target(resolver, p, h) for p, h in real))
    return DnsView(
        domain, "mx", tuple(targets), null_mixed=len(real) != len(records), records=texts
    )


async def resolve_also(resolver: dns.asyncresolver.Resolver, host: str) -> tuple[str, ...]:
    """The addresses of an `--also` host: itself when it is an address."""
    if is_literal(host):
        return (str(ipaddress.ip_address(host.strip("[]"))),)
    found, _cname, _error = await _addresses(resolver, _bare(host))
    return tuple(found)


# ---------------------------------------------------------------- orchestration


@dataclass
class AuditReport:
    domain: str
    view: DnsView
    roles: list[RoleOf]
    probes: list[ProbeResult]
    findings: list[Finding]
    probed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "dns": {
                "status": self.view.status,
                "error": self.view.error,
                "records": list(self.view.records),
                "mx": [
                    {
                        "preference": t.preference,
                        "host": t.host,
                        "role": r.role.value,
                        "role_inferred": r.inferred,
                        "addresses": list(t.addresses),
                        "cname": t.cname,
                        "ip_literal": t.ip_literal,
                        "implicit": t.implicit,
                        "error": t.error,
                    }
                    for t, r in zip(self.view.targets, self.roles, strict=True)
                ],
            },
            "probed": self.probed,
            "probes": [p.as_dict() for p in self.probes],
            "findings": [f.as_dict() for f in self.findings],
        }


def probe_targets(
    view: DnsView, also: Mapping[str, tuple[str, ...]], opts: ProbeOptions
) -> list[ProbeTarget]:
    """Every (MX name, address) of the domain, then the --also addresses: nothing else."""
    out: list[ProbeTarget] = []
    for t in view.targets:
        for a in t.addresses:
            target = ProbeTarget(t.host, a, opts.port_for(a), "mx")
            if target not in out:  # a name published at two preferences is asked once
                out.append(target)
    for host, addrs in also.items():
        for a in addrs:
            out.append(ProbeTarget(_bare(host), a, opts.port_for(a), "also"))
    return out


async def audit_domain(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    *,
    probe: bool = False,
    options: ProbeOptions | None = None,
    hints: Mapping[str, Role] | None = None,
    also: Sequence[str] = (),
    config: Config | None = None,
    on_targets: Callable[[int], None] | None = None,
    on_probe: Callable[[ProbeResult], None] | None = None,
) -> AuditReport:
    opts = options or ProbeOptions()
    domain = _bare(domain)
    hints = dict(hints or {})
    if config is not None:
        hints = {**hints_from_config(config, domain), **hints}
    view = await collect_dns(domain, resolver)
    also_addrs = {h: await resolve_also(resolver, h) for h in also}
    probes: list[ProbeResult] = []
    if probe and view.status in ("mx", "implicit"):
        targets = probe_targets(view, also_addrs, opts)
        if on_targets is not None:
            on_targets(len(targets))
        probes = await probe_all(targets, domain, opts, on_probe)
    serves = config is not None and bool(hints_from_config(config, domain))
    findings = analyse(
        AuditInput(view, tuple(probes), hints, also_addrs, config if serves else None, probe)
    )
    roles = assign_roles(view, probes, hints) if view.targets else []
    return AuditReport(domain, view, roles, probes, findings, probe)


# ---------------------------------------------------------------- rendering


def render_json(report: AuditReport) -> str:
    return json.dumps(report.as_dict(), indent=2) + "\n"


_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render_text(report: AuditReport) -> list[Any]:
    """Rich renderables: the MX table, the probe table, then the findings."""
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    v = report.view
    head = Text(f"{report.domain}: ", style="bold")
    head.append(
        {
            "mx": "MX records",
            "implicit": "no MX, implicit MX (A/AAAA of the domain)",
            "null": "null MX (accepts no mail)",
            "nxdomain": "NXDOMAIN",
            "nomail": "no MX and no address",
            "error": v.error or "DNS error",
        }[v.status]
    )
    parts.append(head)
    if v.targets:
        table = Table(show_edge=False, pad_edge=False)
        for col in ("pref", "host", "role", "addresses", "note"):
            table.add_column(col, overflow="fold")
        for t, r in zip(v.targets, report.roles, strict=True):
            note = (
                "IP literal" if t.ip_literal else f"CNAME {t.cname}" if t.cname else t.error or ""
            )
            table.add_row(str(t.preference), t.host, r.name(), " ".join(t.addresses), note)
        parts.append(table)
    if report.probes:
        table = Table(show_edge=False, pad_edge=False, title="SMTP probes", title_justify="left")
        for col in (
            "target",
            "connect",
            "banner",
            "TLS",
            "MAIL <>",
            "RCPT unknown",
            "RCPT postmaster",
        ):
            table.add_column(col, overflow="fold")
        for p in report.probes:
            tls = "-" if p.starttls is None else "no" if not p.starttls else p.tls or "offered"
            table.add_row(
                p.target.label + (" (--also)" if p.target.kind == "also" else ""),
                p.connect + (" silent" if p.silent else ""),
                _code(p.banner),
                tls,
                _code(p.mail),
                _code(p.rcpt_unknown),
                _code(p.rcpt_postmaster),
            )
        parts.append(table)
    if not report.findings:
        parts.append(Text("no findings", style="green"))
    for f in report.findings:
        line = Text()
        line.append(f"{f.severity.label:7}", style=_SEVERITY_STYLE[f.severity])
        line.append(f" {f.code} ", style="bold")
        line.append(f"{f.subject}: {f.message}")
        parts.append(line)
        for e in f.evidence:
            parts.append(Text(f"          evidence: {e}", style="dim"))
        if f.fix:
            parts.append(Text(f"          fix: {f.fix}"))
    return parts


def _code(reply: Any) -> str:
    return "-" if reply is None else str(reply.code)
