"""Levels kept in the state store, as `mxguard top` and Prometheus read them: the greylist's
triplets and the blocklist's networks, counted in the background and served from the count."""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path

import pytest

from mxguard.levels import StoredLevel
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.feature import feature_of
from tests.helpers.inproc import running

GREYLIST = """
[greylist]
roles = ["primary"]
delay = "5m"
"""


async def level(gauge: StoredLevel, want: float) -> None:
    """Read the gauge as a scrape would until the background count shows `want`."""
    gauge.every = 0.0  # recount on every read; a server waits 30 s between counts
    for _ in range(100):
        try:
            if gauge() == want:
                return
        except LookupError:  # not counted yet: the gauge is left out of that scrape
            pass
        await asyncio.sleep(0.02)
    pytest.fail(f"{gauge.name} never read {want}")


def greylisted(port: int, rcpt: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        s.mail("sender@elsewhere.test")
        code, _ = s.rcpt(rcpt)
        return code


async def test_greylist_and_blocklist_sizes_are_published(tmp_path: Path) -> None:
    async with running(tmp_path, GREYLIST) as run:
        gauges = run.server.gauges
        greylist, blocklist = gauges["greylist_entries"], gauges["blocklist_entries"]
        assert isinstance(greylist, StoredLevel) and isinstance(blocklist, StoredLevel)
        await level(greylist, 0)
        await level(blocklist, 0)
        port = run.port()
        for rcpt in ("alice@example.test", "bob@example.test"):
            assert await asyncio.to_thread(greylisted, port, rcpt) == 450
        await level(greylist, 2)  # two triplets, first seen
        bl = feature_of(run.server).blocklist
        now = time.time()
        for net, until in (("192.0.2.1/32", now + 600), ("192.0.2.2/32", now + 1)):
            entry = BlockEntry(net, "trap", now, until, "trap.example.test", net[:-3], "test")
            await bl.add(entry, now)
        await level(blocklist, 2)
        await asyncio.sleep(1.1)  # one entry runs out
        await level(blocklist, 1)


async def test_no_greylist_level_without_greylisting(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        assert "greylist_entries" not in run.server.gauges
        assert "blocklist_entries" in run.server.gauges
