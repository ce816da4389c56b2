"""The terminal report (rich): the per-server table, then the findings under it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mxguard.logs.model import KINDS
from mxguard.logs.render.common import (
    excess_lines,
    fmt_counts,
    fmt_several,
    fmt_share,
    header,
    server_row,
)


def render(report: dict[str, object], console: Console, show_unparsed: bool = False) -> None:
    titles: dict[str, str] = report["titles"]  # type: ignore[assignment]
    table = Table(title="mail per MX server", header_style="bold")
    for i, h in enumerate(header(titles)):
        table.add_column(h, justify="left" if i < 2 else "right", overflow="fold")
    for r in report["servers"]:  # type: ignore[attr-defined]
        table.add_row(*server_row(r))
    console.print(table)
    units: dict[str, str] = report["units"]  # type: ignore[assignment]
    console.print("units: " + "; ".join(f"{titles[k]} = {units[k]}" for k in KINDS))
    for r in report["servers"]:  # type: ignore[attr-defined]
        extra = []
        if r["excluded_local"]:
            extra.append(f"local traffic excluded ({fmt_counts(r['excluded_local'])})")
        if r["relayed_from_other_mx"]:
            extra.append(f"relayed from another MX (counted there) {r['relayed_from_other_mx']}")
        st = r["stats"]
        for k in ("content_filter_handoffs", "final_deliveries_all_origins", "deferred", "bounced"):
            if st.get(k):
                extra.append(f"{k.replace('_', ' ')} {st[k]}")
        if extra:
            console.print(f"[bold]{r['server']}[/]: " + "; ".join(extra))
    console.print()
    console.print(
        "[bold]excess on the backup (the primary's ratios applied to the backup; docs/report.md)[/]"
    )
    for line in excess_lines(report):
        console.print("  " + line, highlight=False)
    mc: dict[str, object] = report["multi_mx_clients"]  # type: ignore[assignment]
    console.print()
    console.print(
        f"[bold]clients at several MX[/]: {mc['seen_at_several_mx']} of {mc['client_visits']} "
        f"client visits ({fmt_share(mc['share'])}); "
        f"first contacted: {fmt_counts(mc['first_contacted'])}"
    )
    for t in mc["top"][:5]:  # type: ignore[index]
        console.print(
            f"  {t['client']}: {t['connections']} connections at {', '.join(t['servers'])}, first {t['first']}"
        )
    mm: dict[str, object] = report["multi_mx_messages"]  # type: ignore[assignment]
    console.print(
        f"[bold]messages at several MX[/] (window {report['window_seconds']:.0f}s): "
        + fmt_several(mm["seen_at_several_mx"], mm["keys"])
    )
    unparsed: dict[str, int] = report["unparsed"]  # type: ignore[assignment]
    corrupt = sum(f["corrupt"] for f in report["files"])  # type: ignore[attr-defined]
    lines = sum(f["lines"] for f in report["files"])  # type: ignore[attr-defined]
    console.print(
        f"[bold]lines[/]: {lines} read, {sum(unparsed.values())} not understood, {corrupt} corrupt (skipped)"
        + ("" if show_unparsed or not unparsed else " - see --show-unparsed")
    )
    if show_unparsed:
        for prog, n in unparsed.items():
            console.print(f"  {prog}: {n}")
            for s in report["unparsed_samples"].get(prog, []):  # type: ignore[attr-defined]
                console.print(f"    {s}", markup=False, highlight=False)
        for s in report["corrupt_samples"]:  # type: ignore[attr-defined]
            console.print(f"  corrupt: {s}", markup=False, highlight=False)
