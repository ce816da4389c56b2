"""The seed study's excess estimate: how much of a rejection kind on the backup MX
goes beyond what the primary's ratio to delivered mail predicts.

    expected_backup = delivered_backup * kind_primary / delivered_primary
    excess          = kind_backup - expected_backup
    share           = excess / (kind_primary + kind_backup)

``share`` is the part of all such rejections (both servers) that the backup gets
"extra"; the seed reads it as the share of spam aimed at the secondary on purpose.
"""

from __future__ import annotations

FORMULA = (
    "excess = kind_backup - delivered_backup * kind_primary / delivered_primary; "
    "share = excess / (kind_primary + kind_backup)"
)


def estimate(
    kind_primary: int,
    delivered_primary: int,
    kind_backup: int,
    delivered_backup: int,
    min_count: int,
) -> dict[str, object]:
    inputs = {
        "kind_primary": kind_primary,
        "delivered_primary": delivered_primary,
        "kind_backup": kind_backup,
        "delivered_backup": delivered_backup,
    }
    out: dict[str, object] = {
        "inputs": inputs,
        "expected_backup": None,
        "excess": None,
        "share": None,
    }
    warnings: list[str] = []
    if delivered_primary == 0:
        warnings.append("no deliveries on the primary: its ratio is undefined")
    else:
        expected = delivered_backup * kind_primary / delivered_primary
        excess = kind_backup - expected
        total = kind_primary + kind_backup
        out["expected_backup"] = round(expected, 3)
        out["excess"] = round(excess, 3)
        out["share"] = round(excess / total, 4) if total else None
    small = [k for k, v in inputs.items() if v < min_count]
    if small:
        warnings.append(
            f"counts below {min_count} ({', '.join(small)}): too small to mean anything"
        )
    out["warnings"] = warnings
    return out
