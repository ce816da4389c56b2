"""Greylisting end to end on a real backup process, with delays of seconds from the config.

The backup forwards to a recording aiosmtpd (the stand-in primary), so a pass is proven by the
message arriving there with its envelope intact.
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from tests.helpers.servers import (
    MxguardProcess,
    RecordingSmtpServer,
    TierPorts,
    tier_config,
    wait_for,
)

GREYLIST = """roles = ["backup"]
delay = "1s"
retry_window = "3s"
pass_ttl = "1h"
auto_allow_after = 2
"""


def send(port: int, sender: str, rcpt: str, msgid: str) -> tuple[int, str]:
    """One delivery attempt; returns the RCPT answer (or the end-of-data answer when accepted)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("mta.sender.test")
        s.mail(sender)
        code, text = s.rcpt(rcpt)
        if code != 250:
            return code, text.decode()
        code, text = s.data(f"Message-ID: <{msgid}>\r\nSubject: t\r\n\r\nbody\r\n".encode())
        return code, text.decode()


@pytest.fixture
def backup(tmp_path: Path) -> tuple[MxguardProcess, TierPorts, RecordingSmtpServer]:
    ports = TierPorts.pick()
    primary = RecordingSmtpServer().start()
    cfg = tier_config(
        tmp_path,
        ports,
        primary=False,
        forward_to=f"smtp://127.0.0.1:{primary.port}",
        greylist=GREYLIST,
    )
    proc = MxguardProcess(tmp_path, cfg).start()
    yield proc, ports, primary
    proc.stop()
    primary.stop()


def test_first_sight_tempfails_then_retry_passes_and_is_forwarded(backup) -> None:  # type: ignore[no-untyped-def]
    _, ports, primary = backup
    code, text = send(ports.backup, "a@sender.test", "alice@example.test", "m1@sender.test")
    assert code == 450 and text.startswith("4.7.1 Greylisted, try again in")
    code, _ = send(ports.backup, "a@sender.test", "alice@example.test", "m1@sender.test")
    assert code == 450  # too early: still greylisted, first-seen unchanged
    time.sleep(1.1)
    code, text = send(ports.backup, "a@sender.test", "alice@example.test", "m1@sender.test")
    assert code == 250, text
    assert wait_for(lambda: primary.ids() == ["<m1@sender.test>"], 10)
    got = primary.messages[0]
    assert (got.sender, got.recipients) == ("a@sender.test", ["alice@example.test"])
    assert got.peer == "127.0.0.2"  # forwarded from the backup's own source address
    assert got.data.startswith(b"Received: from mta.sender.test ([127.0.0.1])")
    # the pass is remembered: the next message of the triplet is not delayed
    code, _ = send(ports.backup, "a@sender.test", "alice@example.test", "m2@sender.test")
    assert code == 250


def test_retry_after_the_window_starts_over(backup) -> None:  # type: ignore[no-untyped-def]
    _, ports, _ = backup
    assert send(ports.backup, "late@sender.test", "bob@example.test", "x@s")[0] == 450
    time.sleep(3.3)  # beyond retry_window = 3s
    code, text = send(ports.backup, "late@sender.test", "bob@example.test", "x@s")
    assert code == 450 and "try again in 1 seconds" in text


def test_auto_allow_after_two_passes_from_the_network(backup) -> None:  # type: ignore[no-untyped-def]
    _, ports, primary = backup
    for i in range(2):
        assert send(ports.backup, f"s{i}@sender.test", "alice@example.test", f"a{i}@s")[0] == 450
    time.sleep(1.1)
    for i in range(2):
        assert send(ports.backup, f"s{i}@sender.test", "alice@example.test", f"a{i}@s")[0] == 250
    # a brand-new triplet from the same /24 passes at once now
    assert send(ports.backup, "new@elsewhere.test", "bob@example.test", "a9@s")[0] == 250
    assert wait_for(lambda: len(primary.messages) == 3, 10)


def test_postmaster_and_null_sender(backup) -> None:  # type: ignore[no-untyped-def]
    _, ports, _ = backup
    assert send(ports.backup, "a@sender.test", "postmaster@example.test", "p@s")[0] == 250
    assert send(ports.backup, "", "alice@example.test", "bounce@s")[0] == 450
