"""``--format csv``: the per-server table only, one row per server, for spreadsheets."""

from __future__ import annotations

import csv
import io

from mxguard.logs.model import KINDS, RATIO_KINDS
from mxguard.logs.render.common import server_row


def render(report: dict[str, object]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["server", "role", *KINDS, *(f"ratio_{k}_delivered" for k in RATIO_KINDS)])
    for r in report["servers"]:  # type: ignore[attr-defined]
        w.writerow(server_row(r))
    return buf.getvalue()
