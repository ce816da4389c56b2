"""``mxguard report``: per-MX mail-log analysis (issue 7, seed 000's study).

Exit status: 0 on success, 2 on a usage or input problem (one line on stderr, no
traceback).  The command object is ``report``; the main ``mxguard`` group registers
it, and ``python -m mxguard.report_cli`` runs it alone.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass

import click

from mxguard.logs import timeparse
from mxguard.logs.analysis import Analysis, FileInfo, Options
from mxguard.logs.inputs import InputError, Source
from mxguard.logs.model import ROLES
from mxguard.logs.pipeline import default_jobs, run

_LABEL = re.compile(r"^(?P<a>[A-Za-z0-9._-]+)(?::(?P<b>[A-Za-z0-9._-]+))?=(?P<path>.+)$")


class ReportError(Exception):
    """Shown as ``error: <message>`` and exit status 2."""


@dataclass
class MxEntry:
    host: str
    role: str | None
    preference: int | None


def load_config(path: str) -> list[MxEntry]:
    """Read only ``[[mx]]`` tables (host, role, preference) from an mxguard config."""
    import tomllib  # here, not at the top: most runs have no config, and it costs ~9 ms

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ReportError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ReportError(f"{path}: {e.strerror or e}") from None
    entries = []
    mx = data.get("mx", [])
    if not isinstance(mx, list):
        raise ReportError(f"{path}: 'mx' must be an array of tables ([[mx]])")
    for i, t in enumerate(mx):
        if not isinstance(t, dict) or not isinstance(t.get("host"), str):
            raise ReportError(f"{path}: [[mx]] entry {i + 1} has no host")
        role = t.get("role")
        if role is not None and role not in ROLES:
            raise ReportError(f"{path}: [[mx]] {t['host']}: unknown role {role!r}")
        pref = t.get("preference")
        entries.append(MxEntry(t["host"], role, pref if isinstance(pref, int) else None))
    return entries


def parse_networks(values: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for v in values:
        for part in v.replace(" ", ",").split(","):
            if not part:
                continue
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ReportError(f"--local-networks: {part!r} is not a network") from None
    return nets


def plan_inputs(args: tuple[str, ...], config: list[MxEntry]) -> list[FileInfo]:
    files: list[FileInfo] = []
    by_role: dict[str, list[str]] = {}
    for e in config:
        if e.role:
            by_role.setdefault(e.role, []).append(e.host)
    for arg in args:
        m = _LABEL.match(arg)
        if arg == "-" or os.path.exists(arg) or m is None:
            files.append(FileInfo(path=arg, default_name=_default_name(arg)))
            continue
        a, b, path = m.group("a"), m.group("b"), m.group("path")
        if a in ROLES:
            role = a
            name = b or (by_role[a][0] if len(by_role.get(a, [])) == 1 else a)
        else:
            role, name = None, a if b is None else f"{a}:{b}"
        files.append(FileInfo(path=path, label=name, role=role, default_name=name))
    if not files:
        raise ReportError("no input files (give FILE, ROLE=FILE or - for stdin)")
    if sum(1 for f in files if f.path == "-") > 1:
        raise ReportError("stdin (-) can be given only once")
    return files


def _default_name(path: str) -> str:
    if path == "-":
        return "stdin"
    base = os.path.basename(path)
    stem = re.sub(r"(\.(gz|bz2|xz|lzma))?$", "", base)
    stem = re.sub(r"[.-]\d+$", "", stem)
    if stem in ("mainlog", "rejectlog", "paniclog"):
        # Exim logs carry no host name; the directory names the server
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
    return stem


@click.command(name="report")
@click.argument("inputs", nargs=-1, metavar="[ROLE[:NAME]=]FILE...")
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="mxguard config; [[mx]] host/role/preference give roles.",
)
@click.option(
    "--primary",
    multiple=True,
    metavar="HOST",
    help="Server (syslog host or NAME) with role primary.",
)
@click.option("--backup", multiple=True, metavar="HOST", help="Server with role backup.")
@click.option("--trap", multiple=True, metavar="HOST", help="Server with role trap.")
@click.option("--retired", multiple=True, metavar="HOST", help="Server with role retired.")
@click.option(
    "--peer",
    multiple=True,
    metavar="HOST|IP",
    help="Address or name our MX hosts relay from (counted once, on the relaying MX).",
)
@click.option(
    "--local-networks",
    multiple=True,
    metavar="CIDR[,CIDR]",
    help="Clients whose traffic is local and left out of the ratios.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "html"]),
    default="table",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report here instead of stdout.",
)
@click.option(
    "--show-unparsed", is_flag=True, help="List lines not understood, by program, with samples."
)
@click.option(
    "--window",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds within which the same client or message at several MX counts as one.",
)
@click.option(
    "--min-count",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Below this, the excess estimate warns that counts are too small.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    help="Parser processes (0: one per core for large inputs).",
)
@click.option(
    "--year",
    type=click.IntRange(1970, 9999),
    help="Year of classic syslog stamps (they carry none).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: on a terminal, for large inputs).",
)
def report(
    inputs: tuple[str, ...],
    config_path: str | None,
    primary: tuple[str, ...],
    backup: tuple[str, ...],
    trap: tuple[str, ...],
    retired: tuple[str, ...],
    peer: tuple[str, ...],
    local_networks: tuple[str, ...],
    fmt: str,
    output: str | None,
    show_unparsed: bool,
    window: float,
    min_count: int,
    jobs: int,
    year: int | None,
    progress: bool | None,
) -> None:
    """Per-MX mail-log analysis: delivered mail and each kind of rejection per server.

    Inputs are Postfix (syslog or maillog_file), Exim, Sendmail or mxguard JSON logs,
    plain or .gz/.bz2/.xz, or - for stdin.  Prefix a file with its server's role
    (primary=FILE, backup:mx2=FILE) or let the syslog host field name the server.
    """
    try:
        result = _run(
            inputs,
            config_path,
            primary,
            backup,
            trap,
            retired,
            peer,
            local_networks,
            window,
            min_count,
            jobs,
            year,
            progress,
        )
    except (ReportError, InputError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    _emit(result, fmt, output, show_unparsed)
    unread = [
        f
        for f in result["files"]  # type: ignore[attr-defined]
        if f["lines"] and f["lines"] == f["corrupt"] + f["not_understood"]
    ]
    for f in unread:
        click.echo(
            f"warning: {f['path']}: none of its {f['lines']} lines looked like a mail log "
            "(Postfix, Exim, Sendmail, mxguard's event log)",
            err=True,
        )
    if unread:
        sys.exit(1)


def _run(
    inputs: tuple[str, ...],
    config_path: str | None,
    primary: tuple[str, ...],
    backup: tuple[str, ...],
    trap: tuple[str, ...],
    retired: tuple[str, ...],
    peer: tuple[str, ...],
    local_networks: tuple[str, ...],
    window: float,
    min_count: int,
    jobs: int,
    year: int | None,
    progress: bool | None,
) -> dict[str, object]:
    config = load_config(config_path) if config_path else []
    files = plan_inputs(inputs, config)
    opts = Options(
        local_networks=parse_networks(local_networks), window=window, min_count=min_count
    )
    for e in config:
        if e.role:
            opts.roles[e.host] = e.role
        opts.preferences[e.host] = e.preference
        opts.peers.add(e.host.lower())
        opts.peers.add(e.host.split(".", 1)[0].lower())
    for role, hosts in (
        ("primary", primary),
        ("backup", backup),
        ("trap", trap),
        ("retired", retired),
    ):
        for h in hosts:
            opts.roles[h] = role
            opts.peers.add(h.lower())
    for f in files:
        if f.label:
            opts.peers.add(f.label.lower())
    opts.peers.update(p.lower() for p in peer)
    timeparse.set_reference_year(year)
    sources = []
    try:
        for f in files:
            sources.append(Source(f.path))
        total = sum(s.size for s in sources)
        n_jobs = jobs or default_jobs(total if all(s.path != "-" for s in sources) else 0)
        analysis = Analysis(opts, files)
        show = (
            progress if progress is not None else (sys.stderr.isatty() and total > 32 * 1024 * 1024)
        )
        if show:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                transient=True,
            ) as bar:
                task = bar.add_task("reading logs", total=total or None)
                run(analysis, sources, n_jobs, lambda pos: bar.update(task, completed=pos))
        else:
            run(analysis, sources, n_jobs)
    finally:
        for s in sources:
            s.close()
    return analysis.finish()


def _emit(result: dict[str, object], fmt: str, output: str | None, show_unparsed: bool) -> None:
    try:
        out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as e:
        click.echo(f"error: {output}: {e.strerror or e}", err=True)
        sys.exit(2)
    try:
        if fmt == "table":
            from rich.console import Console

            from mxguard.logs.render import table

            width = None if out.isatty() else 220
            table.render(result, Console(file=out, width=width, soft_wrap=False), show_unparsed)
        elif fmt == "json":
            from mxguard.logs.render import json as json_render

            out.write(json_render.render(result))
        elif fmt == "csv":
            from mxguard.logs.render import csv as csv_render

            out.write(csv_render.render(result))
        else:
            from mxguard.logs.render import html

            out.write(html.render(result))
    finally:
        if output:
            out.close()
        else:
            out.flush()


if __name__ == "__main__":
    report()
