"""`mxguard plan` and `mxguard audit`: the click commands, kept thin over plan.py and audit.py.

Exit codes follow the rest of mxguard: 0 nothing at or above the threshold, 1 a finding that
is, 2 bad usage or bad config. `plan` fails on errors only, since warnings there are trade-offs
an operator may have chosen; `audit` takes the threshold from `--fail-on` for cron and CI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from mxguard.cliutil import config_option, fail, table_console
from mxguard.config import ConfigError, load_config, parse_hostport
from mxguard.mxplan.findings import Severity, fails
from mxguard.policy.facts import Role

_SEVERITIES = ["info", "warning", "error"]


@click.command()
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["bind", "json"]),
    default="bind",
    show_default=True,
    help="bind: zone-file text on stdout, findings on stderr; json: one document with both.",
)
def plan(config_path: str | None, fmt: str) -> None:
    """Print the MX and A/AAAA records the [[mx]] layout needs, and what is wrong with it.

    Exits 1 when a finding is an error (say, a trap on the primary's address), 0 otherwise.
    """
    from mxguard.mxplan.plan import build_plan, render_bind, render_json
    from mxguard.recipients import RecipientDirectory

    try:
        cfg = load_config(config_path)
        directory = RecipientDirectory(cfg.domain, cfg.source)
    except ConfigError as exc:
        fail(str(exc))
        return
    result = build_plan(cfg, directory.lookup)
    if fmt == "json":
        click.echo(render_json(result), nl=False)
    else:
        click.echo(render_bind(result), nl=False)
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        styles = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
        for f in result.findings:
            err.print(
                f"[{styles[f.severity]}]{f.severity.label}[/] {f.code}: "
                + escape(f"{f.subject}: {f.message}" + (f"\n  fix: {f.fix}" if f.fix else "")),
                markup=True,
            )
    sys.exit(1 if fails(result.findings, Severity.ERROR) else 0)


def _pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        key, sep, val = v.rpartition("=")
        if not sep or not key or not val:
            raise click.BadParameter(f"{v!r}: expected {what}")
        out.append((key.strip(), val.strip()))
    return out


@click.command()
@click.argument("domain")
@click.option("--probe", is_flag=True, help="Also talk SMTP to every MX address (never DATA).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--fail-on",
    type=click.Choice(_SEVERITIES),
    default="error",
    show_default=True,
    help="Exit 1 when a finding of this severity or worse is found.",
)
@click.option(
    "--also",
    multiple=True,
    metavar="HOST",
    help="A host that must not take mail directly (the real server behind a "
    "filter); probed with --probe. Repeatable.",
)
@click.option(
    "--nameserver",
    multiple=True,
    metavar="IP[:PORT]",
    help="Ask these nameservers instead of resolv.conf. Repeatable.",
)
@click.option(
    "--port",
    default=25,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="SMTP port to probe.",
)
@click.option(
    "--port-map",
    multiple=True,
    metavar="ADDR=PORT",
    help="Probe this address on another port (test tiers on loopback). Repeatable.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds for a DNS query, a connect, the banner and each command.",
)
@click.option(
    "--max-time",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds for all probes together; the rest are reported as stopped.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between two connections to one address.",
)
@click.option("--helo", default=None, help="EHLO name (default: this host's FQDN).")
@click.option(
    "--tls-cafile",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="CA bundle for the STARTTLS check (default: the system's).",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="HOST=ROLE",
    help="Say what an MX host is (primary, backup, trap, fake, retired) instead of "
    "letting the audit infer it. Repeatable.",
)
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="An mxguard config serving DOMAIN: roles come from its [[mx]] entries and "
    "DNS is compared with `mxguard plan`.",
)
def audit(
    domain: str,
    probe: bool,
    fmt: str,
    fail_on: str,
    also: tuple[str, ...],
    nameserver: tuple[str, ...],
    port: int,
    port_map: tuple[str, ...],
    timeout: float,
    max_time: float,
    interval: float,
    helo: str | None,
    tls_cafile: str | None,
    roles: tuple[str, ...],
    config_path: str | None,
) -> None:
    """Check DOMAIN's MX records in DNS and, with --probe, how every MX address answers.

    \b
    mxguard audit example.org
    mxguard audit example.org --probe --also mail-internal.example.org --fail-on warning
    """
    from mxguard.dns import make_resolver
    from mxguard.mxplan.audit import render_json, render_text
    from mxguard.mxplan.probe import ProbeOptions

    try:
        mapping: dict[str, int] = {}
        for addr, p in _pairs(port_map, "ADDR=PORT"):
            host, _ = parse_hostport(f"[{addr}]" if ":" in addr else addr)
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise click.BadParameter(f"{p!r} is not a port", param_hint="--port-map")
            mapping[str(ipaddress.ip_address(host))] = int(p)
        hints: dict[str, Role] = {}
        for host, r in _pairs(roles, "HOST=ROLE"):
            try:
                hints[host.lower().rstrip(".")] = Role(r.lower())
            except ValueError:
                raise click.BadParameter(f"{r!r} is not a role", param_hint="--role") from None
        resolver = make_resolver(list(nameserver) or None, timeout)
    except (ValueError, click.BadParameter) as exc:
        fail(str(exc.format_message() if isinstance(exc, click.BadParameter) else exc))
        return
    cfg = None
    if config_path is not None:
        try:
            cfg = load_config(config_path)
        except ConfigError as exc:
            fail(str(exc))
            return
    opts = ProbeOptions(
        port=port,
        port_map=mapping,
        timeout=timeout,
        helo=helo or socket.getfqdn() or "localhost",
        cafile=tls_cafile,
        min_interval=interval,
        max_time=max_time,
    )
    console = Console(stderr=True, highlight=False)
    report = asyncio.run(
        _run(domain, resolver, probe, opts, hints, also, cfg, console if fmt == "text" else None)
    )
    if fmt == "json":
        click.echo(render_json(report), nl=False)
    else:
        out = table_console()
        out.soft_wrap = True  # long finding lines stay whole; tables still fit the width
        for part in render_text(report):
            out.print(part)
    sys.exit(1 if fails(report.findings, Severity.parse(fail_on)) else 0)


async def _run(
    domain: str,
    resolver: Any,
    probe: bool,
    opts: Any,
    hints: dict[str, Role],
    also: tuple[str, ...],
    cfg: Any,
    console: Console | None,
) -> Any:
    """Run the audit, with a progress bar on a terminal: a slow fake costs a full timeout."""
    from mxguard.mxplan.audit import audit_domain

    if console is None or not console.is_terminal or not probe:
        return await audit_domain(
            domain, resolver, probe=probe, options=opts, hints=hints, also=also, config=cfg
        )
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"probing {domain}", total=None)

        def started(n: int) -> None:
            progress.update(task, total=n)

        def done(result: Any) -> None:
            progress.update(task, advance=1, description=f"probed {result.target.label}")

        return await audit_domain(
            domain,
            resolver,
            probe=probe,
            options=opts,
            hints=hints,
            also=also,
            config=cfg,
            on_targets=started,
            on_probe=done,
        )
