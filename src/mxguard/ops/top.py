"""`mxguard top`: what a running mxguard is doing right now, refreshed every second.

It reads the daemon's endpoints (see client.py), found from the same config the daemon
runs with: the control socket when there is one (no TCP port to expose), else
`[metrics].listen`. `--once` prints one frame and exits, for scripts and for the tests.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from mxguard.cliutil import config_option, fail
from mxguard.config import ConfigError, load_config
from mxguard.ops.client import Snapshot, Source, Unreachable, read

OUTCOMES = ("accepted", "tempfailed", "rejected")


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def listeners_table(snap: Snapshot) -> Table:
    t = Table(title="MX listeners", title_justify="left")
    for col in ("MX", "role", "listen"):
        t.add_column(col, no_wrap=True)
    t.add_column("conns", justify="right")
    t.add_column("sess/min", justify="right")
    t.add_column("accepted", justify="right", style="green")
    t.add_column("tempfailed", justify="right", style="yellow")
    t.add_column("rejected", justify="right", style="red")
    for lst in snap.status.get("listeners", []):
        mx = lst["mx"]
        outcome = snap.by("mxguard_decisions_total", "outcome", mx=mx)
        accepted = snap.total("mxguard_decisions_total", mx=mx, stage="eom", outcome="accepted")
        t.add_row(
            mx,
            lst["role"],
            " ".join(lst.get("listen", [])),
            _n(lst.get("connections", 0)),
            _n(lst.get("sessions_last_minute", 0)),
            _n(accepted),
            _n(outcome.get("tempfailed", 0)),
            _n(outcome.get("rejected", 0)),
        )
    return t


def reasons_table(snap: Snapshot, limit: int = 12) -> Table:
    t = Table(title="decisions by reason (all MX)", title_justify="left")
    t.add_column("reason")
    for o in OUTCOMES:
        t.add_column(o, justify="right")
    rows: dict[str, dict[str, float]] = {}
    for labels, value in snap.select("mxguard_decisions_total"):
        row = rows.setdefault(labels.get("reason", ""), {})
        row[labels.get("outcome", "")] = row.get(labels.get("outcome", ""), 0.0) + value
    ranked = sorted(rows.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    for reason, row in ranked[:limit]:
        t.add_row(reason, *(_n(row.get(o, 0)) for o in OUTCOMES))
    return t


def networks_table(snap: Snapshot) -> Table:
    window = int(snap.status.get("refused_window_seconds", 600)) // 60
    t = Table(title=f"top refused client networks ({window} min)", title_justify="left")
    t.add_column("network", no_wrap=True)
    t.add_column("refusals", justify="right")
    for row in snap.status.get("refused_networks", []):
        t.add_row(row["network"], _n(row["count"]))
    return t


def queue_table(snap: Snapshot) -> Table:
    t = Table(title="backup queues", title_justify="left")
    t.add_column("MX", no_wrap=True)
    for col in ("queued", "held", "oldest", "delivered"):
        t.add_column(col, justify="right")
    hosts = sorted({labels.get("mx", "") for labels, _ in snap.select("mxguard_queue_messages")})
    for mx in hosts:
        t.add_row(
            mx,
            _n(snap.total("mxguard_queue_messages", mx=mx, state="queued")),
            _n(snap.total("mxguard_queue_messages", mx=mx, state="held")),
            _age(snap.total("mxguard_queue_oldest_message_seconds", mx=mx)),
            _n(snap.total("mxguard_queue_deliveries_total", mx=mx, outcome="delivered")),
        )
    if not hosts:
        t.add_row("(no backup here)", "-", "-", "-", "-")
    return t


def state_table(snap: Snapshot) -> Table:
    t = Table(title="state and lists", title_justify="left")
    t.add_column("what")
    t.add_column("now", justify="right")

    def gauge(name: str) -> str:
        return _n(snap.total(name)) if snap.has(name) else "-"

    t.add_row("greylist entries", gauge("mxguard_greylist_entries"))
    t.add_row("blocklist entries", gauge("mxguard_blocklist_entries"))
    calls = snap.total("mxguard_state_operation_seconds_count")
    spent = snap.total("mxguard_state_operation_seconds_sum")
    mean = f"{1000 * spent / calls:.2f} ms" if calls else "-"
    t.add_row(f"state calls ({snap.status.get('state', '?')})", _n(calls))
    t.add_row("state mean latency", mean)
    t.add_row("state errors", _n(snap.total("mxguard_state_errors_total")))
    hits = snap.total("mxguard_dnsbl_cache_hits_total")
    misses = snap.total("mxguard_dnsbl_cache_misses_total")
    t.add_row("DNSBL hits / queries", f"{_n(hits)} / {_n(misses)}")
    t.add_row("DNSBL errors", _n(snap.total("mxguard_dnsbl_errors_total")))
    return t


def frame(snap: Snapshot, source: Source) -> RenderableType:
    st = snap.status
    conns = snap.total("mxguard_connections_open")
    limit = snap.total("mxguard_connections_limit")
    header = Text.assemble(
        ("mxguard top", "bold"),
        f"  {st.get('version', '?')}  pid {st.get('pid', '?')}  up {_age(st.get('uptime', 0))}",
        f"  connections {conns:.0f}/{limit:.0f}",
        f"  refused at cap {snap.total('mxguard_connections_refused_total'):.0f}",
        f"\n{source}  config {st.get('config', '?')}  {time.strftime('%H:%M:%S')}  q quits",
    )
    bottom = Table.grid(padding=(0, 2))
    bottom.add_row(networks_table(snap), queue_table(snap), state_table(snap))
    return Group(header, listeners_table(snap), reasons_table(snap), bottom)


def source_for(config_path: str | None, url: str | None, socket_path: str | None) -> Source:
    if socket_path or url:
        return Source(url=url, socket_path=socket_path)
    try:
        m = load_config(config_path).metrics
    except ConfigError as exc:
        fail(str(exc))
    if m.control_socket and os.path.exists(m.control_socket):
        return Source(socket_path=m.control_socket)
    if m.listen:
        host, _, port = m.listen.rpartition(":")
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
        return Source(url=f"http://{host}:{port}")
    fail(
        f"{config_path or 'the built-in config'}: [metrics] has no listen or control_socket; "
        'set [metrics] listen = "127.0.0.1:9325" for the daemon, or give --url or --socket'
    )


def _render(source: Source) -> RenderableType:
    try:
        return frame(read(source), source)
    except Unreachable as exc:
        return Text(f"mxguard top: cannot read {exc} (retrying every second; q quits)")


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys without Enter) when it is a terminal; restored on exit."""
    if not sys.stdin.isatty():
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _live(source: Source, interval: float) -> None:
    from rich.live import Live

    console = Console()
    with (
        _keys() as fd,
        Live(_render(source), console=console, screen=True, auto_refresh=False) as live,
    ):
        next_at = time.monotonic() + interval
        while True:
            wait = max(0.0, next_at - time.monotonic())
            ready: list[Any] = select.select([fd], [], [], wait)[0] if fd is not None else []
            if not ready and fd is None:
                time.sleep(wait)
            if ready and os.read(fd, 1).lower() == b"q":  # type: ignore[arg-type]
                return
            if time.monotonic() >= next_at:
                live.update(_render(source), refresh=True)
                next_at = time.monotonic() + interval


@click.command()
@config_option
@click.option("--url", help="The metrics endpoint, http://HOST:PORT ([metrics].listen).")
@click.option("--socket", "socket_path", help="The control socket ([metrics].control_socket).")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
def top(
    config_path: str | None, url: str | None, socket_path: str | None, once: bool, interval: float
) -> None:
    """A live view of a running mxguard: listeners, decisions, refused networks, queues.

    \b
    Keys: q quits.
    Reads the daemon's metrics endpoint or control socket, never its files.
    When stdout is not a terminal, prints one frame as --once does.
    """
    source = source_for(config_path, url, socket_path)
    if once or not sys.stdout.isatty():  # a live screen in a pipe or file helps nobody
        try:
            snap = read(source)
        except Unreachable as exc:
            fail(f"cannot read {exc}", 1)
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # a file or pipe: wide enough for every column
        console.print(frame(snap, source))
        return
    with contextlib.suppress(KeyboardInterrupt):
        _live(source, max(0.2, interval))
