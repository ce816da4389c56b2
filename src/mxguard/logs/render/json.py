"""``--format json``: the report dict as it is, for scripts."""

from __future__ import annotations

import json


def render(report: dict[str, object]) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"
