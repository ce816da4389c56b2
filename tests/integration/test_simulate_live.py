"""`mxguard simulate --live`: the default tier on loopback, real SMTP clients, a report."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest


@pytest.mark.slow
def test_live_tour_drives_real_senders_and_prints_the_per_mx_table(tmp_path: Path) -> None:
    # the default tier, on free ports: 2525-2527 may belong to a running `serve` or test
    text = resources.files("mxguard").joinpath("defaults/mxguard.toml").read_text()
    for port in ("2525", "2526", "2527"):
        text = text.replace(f'"127.0.0.1:{port}"', '"127.0.0.1:0"')
    config = tmp_path / "mxguard.toml"
    config.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mxguard",
            "simulate",
            "--live",
            "--seconds",
            "8",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "what the senders saw" in out
    assert "good: postfix-like walker" in out
    assert "mail per MX server" in out  # mxguard report's table of the event log
    assert "mail.example.test" in out and "backup.example.test" in out
    assert "Traceback" not in proc.stderr
