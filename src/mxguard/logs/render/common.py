"""Formatting shared by the renderers, so every output states the same numbers."""

from __future__ import annotations

from mxguard.logs.model import KINDS, RATIO_KINDS

COLUMNS = ("server", "role", *KINDS, *(f"ratio {k}:delivered" for k in RATIO_KINDS))


def fmt_ratio(v: object) -> str:
    return "n/a" if v is None else f"{float(v):.2f}"  # type: ignore[arg-type]


def fmt_share(v: object) -> str:
    return "n/a" if v is None else f"{float(v) * 100:.1f}%"  # type: ignore[arg-type]


#: how the message keys of "messages at several MX" read in a sentence
KEY_LABELS = {"sender_recipient": "by sender and recipient", "message_id": "by Message-ID"}


def fmt_counts(counts: object, labels: dict[str, str] | None = None) -> str:
    """{"delivered": 25} as "delivered 25": counts in a line of prose, not a Python repr."""
    if not isinstance(counts, dict) or not counts:
        return "-"
    names = labels or {}
    return ", ".join(f"{names.get(k, str(k).replace('_', ' '))} {v}" for k, v in counts.items())


def fmt_several(seen: object, keys: object) -> str:
    """Messages at several MX per key kind: "by Message-ID 3 of 158; ..." ("none" if no keys)."""
    if not isinstance(keys, dict) or not keys:
        return "no messages to match"
    hits = seen if isinstance(seen, dict) else {}
    return "; ".join(f"{KEY_LABELS.get(k, k)} {hits.get(k, 0)} of {n}" for k, n in keys.items())


def server_row(r: dict[str, object]) -> list[str]:
    counts: dict[str, int] = r["counts"]  # type: ignore[assignment]
    ratios: dict[str, object] = r["ratios"]  # type: ignore[assignment]
    return [
        str(r["server"]),
        str(r["role"]),
        *(str(counts[k]) for k in KINDS),
        *(fmt_ratio(ratios[k]) for k in RATIO_KINDS),
    ]


def header(titles: dict[str, str]) -> list[str]:
    return [
        "server",
        "role",
        *(titles[k] for k in KINDS),
        *(f"ratio {titles[k].split()[0]}:delivered" for k in RATIO_KINDS),
    ]


def excess_lines(report: dict[str, object]) -> list[str]:
    ex: dict[str, object] = report["excess"]  # type: ignore[assignment]
    lines = [f"formula: {ex['formula']}"]
    primary: list[str] = ex["primary"]  # type: ignore[assignment]
    backup: list[str] = ex["backup"]  # type: ignore[assignment]
    lines.append(f"primary: {', '.join(primary) or '-'}; backup: {', '.join(backup) or '-'}")
    for w in ex["warnings"]:  # type: ignore[attr-defined]
        lines.append(f"warning: {w}")
    kinds: dict[str, dict[str, object]] = ex["kinds"]  # type: ignore[assignment]
    for k, e in kinds.items():
        i: dict[str, int] = e["inputs"]  # type: ignore[assignment]
        lines.append(
            f"{k}: primary {i['kind_primary']}/{i['delivered_primary']} delivered, "
            f"backup {i['kind_backup']}/{i['delivered_backup']} delivered; "
            f"expected on backup {e['expected_backup']}, excess {e['excess']}, "
            f"share of all {fmt_share(e['share'])}"
        )
        for w in e["warnings"]:  # type: ignore[attr-defined]
            lines.append(f"  warning: {w}")
    return lines
