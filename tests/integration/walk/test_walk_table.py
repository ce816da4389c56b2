"""The closing-note run of issue 4 (bench/walk/run.py prints it): its invariants, not its timing.

Good senders: every message delivered, none blocklisted. Bots: nothing delivered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.walklab import SCENARIOS, run_behaviours


@pytest.mark.parametrize("trap_answer", ["rcpt", "connect"])
async def test_scripted_behaviours_table(tmp_path: Path, trap_answer: str) -> None:
    rows = await run_behaviours(tmp_path, trap_answer, clients=2)
    assert [r.name for r in rows] == [s.name for s in SCENARIOS]
    for r in rows:
        assert r.attempted >= 1, r
        if r.good:
            assert r.delivered == r.attempted, r
            assert r.blocklisted == 0, r
            assert r.refused == 0, r
        else:
            assert r.delivered == 0, r
    blocked = {r.name for r in rows if r.blocklisted}
    assert blocked == {
        "bot: straight to highest MX",
        "bot: blasts every MX",
        "bot: retired address",
    }
