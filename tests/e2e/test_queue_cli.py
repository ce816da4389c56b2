"""`mxguard queue` as a user runs it: on a live daemon's spool and on a stopped one."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path

from tests.helpers.servers import (
    MxguardProcess,
    RecordingSmtpServer,
    TierPorts,
    free_port,
    tier_config,
    wait_for,
)

MXGUARD = str(Path(sys.executable).with_name("mxguard"))


def run(proc: MxguardProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MXGUARD, "queue", "-c", str(proc.config_path), *args],
        cwd=proc.workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=check,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def js(proc: MxguardProcess, *args: str) -> object:
    return json.loads(run(proc, *args, "--json").stdout)


def test_queue_commands_live_and_stopped(tmp_path: Path) -> None:
    primary = RecordingSmtpServer()  # down: mail waits in the queue
    ports = TierPorts(free_port(), free_port())
    cfg = tier_config(
        tmp_path,
        ports,
        primary=False,
        forward_to=f"smtp://127.0.0.1:{primary.port}",
        queue='retry_min = "1h"',  # nothing retries by itself during the test
    )
    proc = MxguardProcess(tmp_path, cfg).start()
    try:
        for i in range(3):
            with smtplib.SMTP("127.0.0.1", ports.backup, timeout=10) as s:
                s.sendmail(
                    "a@sender.test",
                    ["alice@example.test"],
                    f"Message-ID: <q{i}@s>\r\n\r\nx\r\n".encode(),
                )
        assert wait_for(lambda: all(m["attempts"] == 1 for m in js(proc, "list")), 10)  # type: ignore[index, union-attr]
        listed = js(proc, "list")
        assert isinstance(listed, list) and len(listed) == 3
        ids = [m["id"] for m in listed]
        table = run(proc, "list").stdout
        assert "3 message(s)" in table and ids[0] in table and "<a@sender.test>" in table
        shown = js(proc, "show", ids[0])
        assert isinstance(shown, dict) and shown["msgid"] == "<q0@s>"
        assert "alice@example.test" in run(proc, "show", ids[0]).stdout
        assert "1 message(s) deleted" in run(proc, "delete", ids[2]).stdout
        stats = js(proc, "stats")
        assert isinstance(stats, dict) and stats["queued"] == 2 and stats["deleted"] == 1
        assert "queued" in run(proc, "stats").stdout
        missing = run(proc, "show", "NOSUCHID", check=False)
        assert missing.returncode == 1 and "no such message" in missing.stderr
        # flush on a live daemon: the forwarder sees next_attempt = now on its next poll
        primary.start()
        assert "2 message(s) due now" in run(proc, "flush").stdout
        assert wait_for(lambda: sorted(primary.ids()) == ["<q0@s>", "<q1@s>"], 10)
        proc.stop()
        # a stopped spool is readable too
        stats = js(proc, "stats")
        assert isinstance(stats, dict) and stats["queued"] == 0 and stats["delivered"] == 2
        assert run(proc, "list").returncode == 0
    finally:
        proc.stop()
        primary.stop()


def test_queue_without_a_spool_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [MXGUARD, "queue", "--spool", str(tmp_path / "nope"), "stats"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no spool here" in out.stderr
