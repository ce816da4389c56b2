"""Formatting shared by the renderers, so every output states the same numbers."""

from __future__ import annotations

from mxguard.logs.model import KINDS, RATIO_KINDS

COLUMNS = ("server", "role", *KINDS, *(f"ratio {k}:delivered" for k in RATIO_KINDS))


def fmt_ratio(v: object) -> str:
    return "n/a" if v is None else f"{float(v):.2f}"  # type: ignore[arg-type]


def fmt_share(v: object) -> str:
    return "n/a" if v is None else f"{float(v) * 100:.1f}%"  # type: ignore[arg-type]


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
