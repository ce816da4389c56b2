"""The report as plain data (dicts, lists, numbers): what every renderer consumes,
and exactly what ``--format json`` prints."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mxguard.logs.excess import FORMULA, estimate
from mxguard.logs.model import DELIVERED, KINDS, RATIO_KINDS, REJECT_KINDS, TITLES, UNITS

if TYPE_CHECKING:
    from typing import TypedDict

    from mxguard.logs.analysis import Analysis

    class ServerRow(TypedDict):
        """One entry of the report's ``servers`` list."""

        server: str
        role: str
        preference: int | None
        hosts: list[str]
        counts: dict[str, int]
        rejected_total: int
        ratios: dict[str, float | None]
        excluded_local: dict[str, int]
        relayed_from_other_mx: int
        first_seen: str | None
        last_seen: str | None
        stats: dict[str, int]


ROLE_ORDER = {"primary": 0, "backup": 1, "trap": 2, "retired": 3, "unknown": 4}
EXCESS_KINDS = ("spam", "unknown", "rate", "greylist", "screen")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def build_report(a: Analysis) -> dict[str, object]:
    servers = sorted(
        a.servers.values(),
        key=lambda s: (
            ROLE_ORDER.get(s.role, 9),
            s.preference if s.preference is not None else 1 << 30,
            s.name,
        ),
    )
    rows: list[ServerRow] = []
    for s in servers:
        counts = {k: int(s.counts[k]) for k in KINDS}
        d = counts[DELIVERED]
        rows.append(
            {
                "server": s.name,
                "role": s.role,
                "preference": s.preference,
                "hosts": sorted(s.hosts),
                "counts": counts,
                "rejected_total": sum(counts[k] for k in REJECT_KINDS),
                "ratios": {k: ratio(counts[k], d) for k in RATIO_KINDS},
                "excluded_local": {k: int(v) for k, v in s.local.items() if v},
                "relayed_from_other_mx": s.peer_relayed,
                "first_seen": iso(s.first_ts),
                "last_seen": iso(s.last_ts),
                "stats": dict(sorted((k, int(v)) for k, v in s.stats.items() if v)),
            }
        )
    excess = _excess(a, rows)
    timeline = []
    for s in servers:
        for hour in sorted(s.timeline):
            c = s.timeline[hour]
            timeline.append(
                {
                    "hour": iso(hour),
                    "server": s.name,
                    **{k: int(c[k]) for k in KINDS},
                }
            )
    top = sorted(a.top_clients, reverse=True)[:20]
    visits = a.client_visits
    return {
        "units": {k: UNITS[k] for k in KINDS},
        "titles": dict(TITLES),
        "window_seconds": a.o.window,
        "servers": rows,
        "excess": excess,
        "multi_mx_clients": {
            "client_visits": visits,
            "seen_at_several_mx": a.multi_clients,
            "share": ratio(a.multi_clients, visits),
            "first_contacted": dict(a.first_contact.most_common()),
            "top": [
                {"client": ip, "connections": n, "servers": srv, "first": first}
                for n, ip, srv, first in top
            ],
        },
        "multi_mx_messages": {
            "keys": dict(a.msg_keys),
            "seen_at_several_mx": dict(a.msg_multi),
            "by_servers": dict(a.msg_multi_by_servers.most_common(20)),
        },
        "timeline": timeline,
        "unparsed": dict(a.unparsed.most_common()),
        "unparsed_samples": a.samples,
        "corrupt_samples": a.corrupt_samples,
        "files": [
            {
                "path": f.path,
                "server": f.label,
                "lines": f.lines,
                "corrupt": f.corrupt,
                "not_understood": f.unparsed,
                "formats": dict(f.formats),
            }
            for f in a.files
        ],
    }


def _excess(a: Analysis, rows: list[ServerRow]) -> dict[str, object]:
    prim = [r for r in rows if r["role"] == "primary"]
    back = [r for r in rows if r["role"] == "backup"]
    out: dict[str, object] = {
        "formula": FORMULA,
        "primary": [r["server"] for r in prim],
        "backup": [r["server"] for r in back],
        "kinds": {},
        "warnings": [],
    }
    if not prim or not back:
        out["warnings"] = ["needs at least one primary and one backup server (give roles)"]
        return out

    def total(group: list[ServerRow], k: str) -> int:
        return sum(int(r["counts"][k]) for r in group)

    dp, db = total(prim, DELIVERED), total(back, DELIVERED)
    kinds: dict[str, object] = {}
    for k in EXCESS_KINDS:
        kinds[k] = estimate(total(prim, k), dp, total(back, k), db, a.o.min_count)
    spamlike = [k for k in REJECT_KINDS if k != "other"]
    kinds["all_spamlike"] = estimate(
        sum(total(prim, k) for k in spamlike),
        dp,
        sum(total(back, k) for k in spamlike),
        db,
        a.o.min_count,
    )
    out["kinds"] = kinds
    return out
