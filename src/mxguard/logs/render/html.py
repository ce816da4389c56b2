"""``--format html``: one self-contained page (inline CSS and SVG, no scripts, no
external assets) so it can be mailed or archived and still open years later."""

from __future__ import annotations

from html import escape

from mxguard.logs.model import KINDS, RATIO_KINDS, REJECT_KINDS
from mxguard.logs.render.common import (
    excess_lines,
    fmt_counts,
    fmt_several,
    fmt_share,
    header,
    server_row,
)

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}
th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}
th{background:#eee}
.note{color:#555;font-size:.9em}
svg{background:#fafafa;border:1px solid #ddd;margin:.5em 0}
"""


def render(report: dict[str, object]) -> str:
    titles: dict[str, str] = report["titles"]  # type: ignore[assignment]
    servers: list[dict[str, object]] = report["servers"]  # type: ignore[assignment]
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>mxguard report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Mail per MX server</h1>",
        "<table id='servers'><thead><tr>",
        *(f"<th>{escape(h)}</th>" for h in header(titles)),
        "</tr></thead><tbody>",
    ]
    for r in servers:
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in server_row(r)) + "</tr>")
    out.append("</tbody></table>")
    units: dict[str, str] = report["units"]  # type: ignore[assignment]
    out.append(
        "<p class='note'>units: "
        + "; ".join(f"{escape(titles[k])} = {escape(units[k])}" for k in KINDS)
        + "</p>"
    )
    out.append("<h2>Ratios to delivered mail</h2>")
    out.append(ratio_chart(servers, titles))
    out.append("<h2>Excess on the backup</h2><ul>")
    out.extend(f"<li>{escape(line)}</li>" for line in excess_lines(report))
    out.append("</ul>")
    out.append("<h2>Timeline per server (per hour)</h2>")
    timeline: list[dict[str, object]] = report["timeline"]  # type: ignore[assignment]
    for r in servers:
        name = str(r["server"])
        out.append(f"<h3>{escape(name)}</h3>")
        out.append(timeline_chart(name, [t for t in timeline if t["server"] == name]))
    mc: dict[str, object] = report["multi_mx_clients"]  # type: ignore[assignment]
    mm: dict[str, object] = report["multi_mx_messages"]  # type: ignore[assignment]
    out.append("<h2>Across MX hosts</h2><ul>")
    out.append(
        f"<li>clients at several MX: {mc['seen_at_several_mx']} of {mc['client_visits']} visits "
        f"({escape(fmt_share(mc['share']))}); "
        f"first contacted: {escape(fmt_counts(mc['first_contacted']))}</li>"
    )
    out.append(
        "<li>messages at several MX: "
        f"{escape(fmt_several(mm['seen_at_several_mx'], mm['keys']))}</li></ul>"
    )
    unparsed: dict[str, int] = report["unparsed"]  # type: ignore[assignment]
    out.append(
        "<h2>Lines not understood</h2><table id='unparsed'><tr><th>program</th><th>lines</th></tr>"
    )
    out.extend(f"<tr><td>{escape(p)}</td><td>{n}</td></tr>" for p, n in unparsed.items())
    out.append("</table></body></html>\n")
    return "\n".join(out)


def ratio_chart(servers: list[dict[str, object]], titles: dict[str, str]) -> str:
    w, h, pad = 640, 260, 40
    vals = [
        [float(r["ratios"][k] or 0.0) for k in RATIO_KINDS]  # type: ignore[index]
        for r in servers
    ]
    top = max([v for row in vals for v in row] + [1e-9])
    group = (w - 2 * pad) / max(1, len(servers))
    bar = group / (len(RATIO_KINDS) + 1)
    parts = [
        f"<svg id='ratio-chart' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img'>"
    ]
    parts.append(f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#333'/>")
    for i, (r, row) in enumerate(zip(servers, vals, strict=True)):
        x0 = pad + i * group
        for j, v in enumerate(row):
            bh = (h - 2 * pad) * v / top
            parts.append(
                f"<rect class='bar' x='{x0 + j * bar + bar / 2:.1f}' y='{h - pad - bh:.1f}' width='{bar * 0.9:.1f}' "
                f"height='{bh:.1f}' fill='{PALETTE[j]}'><title>{escape(str(r['server']))} "
                f"{RATIO_KINDS[j]}: {v:.2f}</title></rect>"
            )
        parts.append(
            f"<text x='{x0 + group / 2:.1f}' y='{h - pad + 15}' text-anchor='middle' font-size='12'>"
            f"{escape(str(r['server']))}</text>"
        )
    for j, k in enumerate(RATIO_KINDS):
        parts.append(
            f"<rect x='{pad + j * 170}' y='8' width='10' height='10' fill='{PALETTE[j]}'/>"
            f"<text x='{pad + j * 170 + 14}' y='17' font-size='12'>{escape(titles[k])} : delivered</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def timeline_chart(name: str, rows: list[dict[str, object]]) -> str:
    w, h, pad = 640, 200, 40
    parts = [
        f"<svg class='timeline-chart' data-server='{escape(name)}' xmlns='http://www.w3.org/2000/svg' "
        f"width='{w}' height='{h}' role='img'>"
    ]
    parts.append(f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#333'/>")
    if rows:
        series = {
            "delivered": [int(r["delivered"]) for r in rows],  # type: ignore[call-overload]
            "rejected": [sum(int(r[k]) for k in REJECT_KINDS) for r in rows],  # type: ignore[call-overload]
        }
        top = max([max(v) for v in series.values()] + [1])
        n = len(rows)
        step = (w - 2 * pad) / max(1, n - 1)
        for j, (label, ys) in enumerate(series.items()):
            pts = " ".join(
                f"{pad + i * step:.1f},{h - pad - (h - 2 * pad) * y / top:.1f}"
                for i, y in enumerate(ys)
            )
            parts.append(
                f"<polyline class='series' fill='none' stroke='{PALETTE[j]}' stroke-width='1.5' points='{pts}'/>"
            )
            parts.append(
                f"<text x='{pad + j * 120}' y='15' font-size='12' fill='{PALETTE[j]}'>{label} (max {max(ys)})</text>"
            )
        parts.append(
            f"<text x='{pad}' y='{h - pad + 15}' font-size='11'>{escape(str(rows[0]['hour']))}</text>"
        )
        parts.append(
            f"<text x='{w - pad}' y='{h - pad + 15}' font-size='11' text-anchor='end'>{escape(str(rows[-1]['hour']))}</text>"
        )
    else:
        parts.append(f"<text x='{pad}' y='{h / 2}' font-size='12'>no timed events</text>")
    parts.append("</svg>")
    return "".join(parts)
