"""`mxguard block` and `mxguard explain` as an operator runs them, against a tier's real state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import senders
from tests.helpers.walklab import lab, tier_text

MXGUARD = [sys.executable, "-m", "mxguard"]


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MXGUARD, *args, "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )


def write_config(tmp: Path) -> Path:
    path = tmp / "mxguard.toml"
    path.write_text(tier_text().replace("{tmp}", str(tmp)))
    return path


def test_block_add_list_remove(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    added = run(
        cfg, "block", "add", "192.0.2.7", "--ttl", "2h", "--reason", "abuse report", "--json"
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["network"] == "192.0.2.7/32"
    listed = run(cfg, "block", "list", "--json")
    entries = json.loads(listed.stdout)
    assert [(e["network"], e["reason"], e["note"]) for e in entries] == [
        ("192.0.2.7/32", "manual", "abuse report")
    ]
    assert entries[0]["until"] - entries[0]["at"] == 7200
    table = run(cfg, "block", "list")
    assert "192.0.2.7/32" in table.stdout and "manual" in table.stdout
    assert run(cfg, "block", "remove", "192.0.2.7").returncode == 0
    assert json.loads(run(cfg, "block", "list", "--json").stdout) == []
    missing = run(cfg, "block", "remove", "192.0.2.7")
    assert missing.returncode == 1 and "was not blocklisted" in missing.stdout


def test_block_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    wide = run(cfg, "block", "add", "192.0.2.0/16")
    assert wide.returncode == 2 and "access" in wide.stderr
    peer = run(cfg, "block", "add", "127.0.0.2")
    assert peer.returncode == 2 and "trusted peer" in peer.stderr
    bad = run(cfg, "explain", "not-an-ip")
    assert bad.returncode == 2 and "not an IP" in bad.stderr


async def test_explain_a_walker_and_a_bot(tmp_path: Path) -> None:
    """What the tier saw, read back by `explain` after the server stopped."""
    async with lab(tmp_path) as the_lab:
        the_lab.clock.now = __import__("time").time()  # explain reads the wall clock
        await the_lab.advance(65)
        await the_lab.stop("mail.example.test")
        await senders.rfc_sender(the_lab.world, "127.1.0.2")
        await the_lab.start("mail.example.test")
        await the_lab.walk.settle()
    cfg = write_config(tmp_path)
    good = run(cfg, "explain", "127.1.0.2", "--json")
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert [s["mx"] for s in report["sightings"]] == ["backup.example.test", "trap.mx.example.test"]
    assert [s["walk"] for s in report["sightings"]] == ["lower_unhealthy", "walked"]
    assert report["sightings"][0]["outcome"]["reason"] == "queued"
    assert report["blocklist"] is None
    assert report["greylist"]["entries"][0]["passed"] is True
    text = run(cfg, "explain", "127.1.0.2")
    assert "backup.example.test" in text.stdout and "not blocklisted" in text.stdout
