"""Where the shared log corpus is, and a helper to run the report on it in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mxguard.report_cli import report

REPO = Path(__file__).resolve().parents[3]
CORPUS = Path(
    os.environ.get("MXGUARD_CORPUS", REPO / ".." / "shared" / "corpus" / "logs")
).resolve()

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(),
    reason=f"log corpus not found at {CORPUS} (set MXGUARD_CORPUS)",
)


def run_json(*args: str, exit_codes: tuple[int, ...] = (0,)) -> dict:  # type: ignore[type-arg]
    res = CliRunner().invoke(
        report, [*args, "--format", "json", "--jobs", "1"], catch_exceptions=False
    )
    assert res.exit_code in exit_codes, res.output
    rep: dict = json.loads(res.stdout)  # type: ignore[type-arg]
    rep["exit_code"] = res.exit_code
    return rep


def by_server(rep: dict) -> dict:  # type: ignore[type-arg]
    return {r["server"]: r for r in rep["servers"]}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}
