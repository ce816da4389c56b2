"""What `mxguard simulate` prints: tables per layout, a comparison, JSON, and an SVG plot.

The SVG is written by hand (a few dozen elements) because matplotlib is not a dependency
and a scatter plot of one point per layout does not need one. PNG would need a rasteriser;
the CLI says so instead of adding one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from rich.console import Console
from rich.table import Table

from mxguard.sim.run import GroupResult, LayoutResult
from mxguard.sim.scenario import Scenario


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: a reported delay is one that happened)."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[k]


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GB"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


@dataclasses.dataclass
class Summary:
    """One layout in one line: the trade-off the seeds argue about."""

    layout: str
    title: str
    good: int
    good_delivered: int
    good_late: int
    good_lost_queueing: int
    good_lost_other: int
    good_held: int
    spam: int
    spam_stopped: int
    spam_accepted: int
    spam_in_mailbox: int
    backscatter: int
    sessions_by_mx: dict[str, int]
    queue_peak: int

    @property
    def spam_stopped_pct(self) -> float:
        return 100.0 * self.spam_stopped / self.spam if self.spam else 0.0

    @property
    def good_hurt_pct(self) -> float:
        hurt = self.good_late + self.good_lost_queueing + self.good_lost_other
        return 100.0 * hurt / self.good if self.good else 0.0


def summarize(r: LayoutResult) -> Summary:
    good = [g for g in r.groups.values() if not g.spam]
    spam = [g for g in r.groups.values() if g.spam]
    return Summary(
        r.layout,
        r.title,
        sum(g.attempted for g in good),
        sum(g.delivered for g in good),
        sum(g.late for g in good),
        sum(g.lost for g in good if g.queueing),
        sum(g.lost for g in good if not g.queueing),
        sum(g.held for g in good),
        sum(g.attempted for g in spam),
        sum(g.stopped_before_data for g in spam),
        sum(g.accepted for g in spam),
        sum(g.reached_mailbox for g in spam),
        sum(g.backscatter for g in r.groups.values()),
        {f"{m.role}:{m.host}": m.sessions for m in r.mx},
        r.queue_peak,
    )


def _group_row(g: GroupResult) -> list[str]:
    if g.spam:
        return [
            g.behaviour,
            "spam",
            str(g.attempted),
            "-",
            "-",
            "-",
            "-",
            f"{g.stopped_before_data} ({_pct(g.stopped_before_data, g.attempted)})",
            str(g.accepted),
            str(g.reached_mailbox),
            str(g.backscatter),
        ]
    p = [human_duration(percentile(g.delays, q)) for q in (50, 95, 99)]
    lost = str(g.lost) + ("" if g.queueing else " (no queue)")
    if g.held or g.in_flight:
        lost += f" +{g.held} held +{g.in_flight} queued"
    return [
        g.behaviour,
        "good",
        str(g.attempted),
        str(g.delivered),
        str(g.late),
        "/".join(p),
        lost,
        "-",
        "-",
        "-",
        str(g.backscatter),
    ]


def layout_tables(r: LayoutResult, scenario: Scenario) -> list[Table]:
    senders = Table(
        title=f"{r.layout}: {r.title}",
        title_justify="left",
        caption=f"late = delivered more than {human_duration(scenario.late_after)} after "
        "sending; delays are of the late messages (p50/p95/p99)\n"
        "lost (no queue) = a sender with no queue (in-app mailers, devices) tries the first MX "
        "once and never again: any refusal there, even a temporary one (a busy primary), loses "
        "its message "
        "(docs/simulate.md)",
        caption_justify="left",
    )
    for name in ("sender", "kind", "attempted", "delivered", "late", "late p50/p95/p99",
                 "lost", "spam stopped before DATA", "spam accepted", "spam in mailbox",
                 "backscatter"):  # fmt: skip
        senders.add_column(name, justify="left" if name in ("sender", "kind") else "right")
    for g in r.groups.values():
        senders.add_row(*_group_row(g))
    load = Table(title=f"{r.layout}: load on each MX", title_justify="left")
    for name in ("MX", "role", "pref", "connections", "sessions", "refused", "at cap",
                 "bytes", "250 after DATA", "refusals by reason"):  # fmt: skip
        load.add_column(
            name, justify="left" if name in ("MX", "role", "refusals by reason") else "right"
        )
    for m in r.mx:
        reasons = ", ".join(
            f"{k} {v}" for k, v in sorted(m.reasons.items(), key=lambda kv: -kv[1])[:4]
        )
        load.add_row(
            m.host,
            m.role,
            "-" if m.preference is None else str(m.preference),
            str(m.connections),
            str(m.sessions),
            str(m.refused + m.timeouts),
            str(m.capacity),
            human_bytes(m.bytes),
            str(m.accepted) + (f" ({m.forwarded_in} fwd)" if m.forwarded_in else ""),
            reasons or "-",
        )
    return [senders, load]


def compare_table(results: Sequence[LayoutResult]) -> Table:
    t = Table(title="layouts compared on the same senders", title_justify="left")
    for name in ("layout", "good delivered", "late", "lost: queueing MTAs", "lost: no queue",
                 "spam stopped before DATA", "spam in mailbox", "backscatter",
                 "sessions primary/backup/trap", "backup queue peak"):  # fmt: skip
        t.add_column(name, justify="left" if name == "layout" else "right")
    for r in results:
        s = summarize(r)
        by_role: dict[str, int] = {}
        for m in r.mx:
            by_role[m.role] = by_role.get(m.role, 0) + m.sessions
        sessions = "/".join(str(by_role.get(role, 0)) for role in ("primary", "backup", "trap"))
        t.add_row(
            s.layout,
            f"{s.good_delivered}/{s.good}",
            str(s.good_late),
            str(s.good_lost_queueing),
            str(s.good_lost_other),
            f"{s.spam_stopped} ({s.spam_stopped_pct:.1f}%)",
            str(s.spam_in_mailbox),
            str(s.backscatter),
            sessions,
            str(s.queue_peak),
        )
    return t


#: the feature modules (what `--format json` lists) as the table names them
FEATURE_NAMES = {
    "mxguard.greylist_feature": "greylisting",
    "mxguard.queue.feature": "the backup's queue",
    "mxguard.walk.feature": "the walk check and the trap-fed blocklist",
    "mxguard.ops.feature": "metrics",
}


def print_report(
    console: Console, scenario: Scenario, results: Sequence[LayoutResult], compare: bool
) -> None:
    total_contacts = sum(r.contacts for r in results)
    wall = sum(r.wall for r in results)
    console.print(
        f"[bold]{scenario.name}[/] ({scenario.source}), seed {scenario.seed}, "
        f"{human_duration(scenario.duration)} of traffic"
    )
    if results:
        r0 = results[0]
        console.print(f"checks (as named in the event log): {', '.join(r0.checks)}")
        named = [FEATURE_NAMES.get(f, f) for f in r0.features]
        console.print(f"features simulated: {', '.join(named) or 'none'}")
    for r in results:
        for table in layout_tables(r, scenario):
            console.print(table)
    if compare and len(results) > 1:
        console.print(compare_table(results))
    rate = total_contacts / wall if wall else 0.0
    console.print(
        f"[dim]{total_contacts} sender contacts simulated in {wall:.1f}s of CPU ({rate:,.0f}/s)[/]"
    )


def to_json(scenario: Scenario, results: Sequence[LayoutResult]) -> dict[str, Any]:
    layouts = []
    for r in results:
        d = dataclasses.asdict(r)
        for g in d["groups"].values():
            delays = g.pop("delays")
            g["late_delay_p50"] = percentile(delays, 50)
            g["late_delay_p95"] = percentile(delays, 95)
            g["late_delay_p99"] = percentile(delays, 99)
        d["summary"] = dataclasses.asdict(summarize(r))
        d.pop("wall")  # machine-dependent: kept out so that two runs compare equal
        layouts.append(d)
    return {
        "scenario": {
            "name": scenario.name,
            "source": scenario.source,
            "seed": scenario.seed,
            "duration": scenario.duration,
            "late_after": scenario.late_after,
        },
        "layouts": layouts,
    }


def svg_plot(results: Sequence[LayoutResult], title: str) -> str:
    """Spam stopped before DATA (up) against good mail late or lost (right), one dot a layout."""
    width, height, left, right, top, bottom = 720, 460, 70, 200, 50, 60
    pw, ph = width - left - right, height - top - bottom
    points = [summarize(r) for r in results]
    xmax = max([p.good_hurt_pct for p in points] + [1.0]) * 1.15
    ymax = 100.0

    def x(v: float) -> float:
        return left + pw * v / xmax

    def y(v: float) -> float:
        return top + ph * (1 - v / ymax)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
    ]
    for i in range(6):
        yv = ymax * i / 5
        out.append(f'<line x1="{left - 4}" y1="{y(yv):.1f}" x2="{left + pw}" y2="{y(yv):.1f}" '
                   f'stroke="#ddd"/>')  # fmt: skip
        out.append(f'<text x="{left - 8}" y="{y(yv) + 4:.1f}" text-anchor="end">{yv:.0f}%</text>')
        xv = xmax * i / 5
        out.append(f'<text x="{x(xv):.1f}" y="{top + ph + 18}" text-anchor="middle">'
                   f"{xv:.1f}%</text>")  # fmt: skip
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle">'
        "good mail delivered late or lost</text>"
    )
    out.append(
        f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "spam stopped before DATA</text>"
    )
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
               "#17becf", "#7f7f7f"]  # fmt: skip
    for i, p in enumerate(points):
        c = colours[i % len(colours)]
        cx, cy = x(p.good_hurt_pct), y(p.spam_stopped_pct)
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{c}"/>')
        out.append(f'<text x="{cx + 9:.1f}" y="{cy - 6:.1f}" fill="{c}">{escape(p.layout)}</text>')
        ly = top + 16 * i
        out.append(f'<circle cx="{left + pw + 20}" cy="{ly + 6}" r="5" fill="{c}"/>')
        out.append(
            f'<text x="{left + pw + 30}" y="{ly + 10}">{escape(p.layout)}: '
            f"{p.spam_stopped_pct:.0f}% / {p.good_hurt_pct:.1f}%</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
