"""The durable queue on a real backup process: outages, backoff, holds, DSNs, a full spool.

Greylisting is off here (the queue is the subject); mail goes to known users. The stand-in
primary is a recording aiosmtpd that the tests stop and start on the same port.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.servers import (
    MxguardProcess,
    RecordingSmtpServer,
    TierPorts,
    free_port,
    tier_config,
    wait_for,
)

MXGUARD = str(Path(sys.executable).with_name("mxguard"))


def body(msgid: str, size: int = 0) -> bytes:
    return (
        f"Message-ID: <{msgid}>\r\nSubject: q\r\n\r\n".encode()
        + (b"x" * 78 + b"\r\n") * (size // 80)
        + b"end\r\n"
    )


def deliver(
    port: int, rcpts: list[str], msgid: str, sender: str = "a@sender.test", size: int = 0
) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        return s.sendmail(sender, rcpts, body(msgid, size))


def queue_cli(proc: MxguardProcess, *args: str) -> Any:
    out = subprocess.run(
        [MXGUARD, "queue", "-c", str(proc.config_path), *args],
        cwd=proc.workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout) if "--json" in args else out.stdout


def backup_only(tmp: Path, primary_port: int, queue: str, extra: str = "") -> MxguardProcess:
    ports = TierPorts(free_port(), free_port())
    cfg = tier_config(
        tmp,
        ports,
        primary=False,
        forward_to=f"smtp://127.0.0.1:{primary_port}",
        queue=queue,
        extra=extra,
    )
    return MxguardProcess(tmp, cfg)


def backup_port(proc: MxguardProcess) -> int:
    return proc.listens()[0][1]


def test_primary_down_queue_holds_backs_off_and_drains(tmp_path: Path) -> None:
    primary = RecordingSmtpServer()  # not started: the primary is down
    proc = backup_only(tmp_path, primary.port, 'retry_min = "1s"\nretry_max = "2s"').start()
    try:
        ids = [f"down{i}@sender.test" for i in range(5)]
        for msgid in ids:
            deliver(backup_port(proc), ["alice@example.test", "bob@example.test"], msgid)
        assert wait_for(
            lambda: all(m["attempts"] >= 2 for m in queue_cli(proc, "list", "--json")), 15
        )
        listed = queue_cli(proc, "list", "--json")
        assert len(listed) == 5 and {m["state"] for m in listed} == {"queued"}
        for m in listed:
            # backoff respected: ~1s, ~2s, 2s...: never more than one try a second
            assert m["attempts"] <= 6, m
            assert m["unreachable"] is True
            assert "4.4.1" in m["last_error"]
        primary.start()
        assert wait_for(lambda: len(primary.messages) == 5, 15), queue_cli(proc, "list")
        assert sorted(primary.ids()) == sorted(f"<{i}>" for i in ids)
        for m in primary.messages:
            assert m.sender == "a@sender.test"
            assert m.recipients == ["alice@example.test", "bob@example.test"]
        assert wait_for(lambda: queue_cli(proc, "stats", "--json")["queued"] == 0, 5)
        assert queue_cli(proc, "stats", "--json")["delivered"] == 5
    finally:
        proc.stop()
        primary.stop()


def test_permanent_refusal_holds_that_recipient_only_and_dsn_is_off(tmp_path: Path) -> None:
    primary = RecordingSmtpServer().start()
    primary.rcpt_replies["bob@example.test"] = "550 5.1.1 <bob@example.test>: gone"
    proc = backup_only(tmp_path, primary.port, 'retry_min = "1s"').start()
    try:
        deliver(backup_port(proc), ["alice@example.test", "bob@example.test"], "held1@s")
        assert wait_for(lambda: queue_cli(proc, "stats", "--json")["held"] == 1, 10)
        (m,) = queue_cli(proc, "list", "--json")
        states = {r["rcpt"]: r["state"] for r in m["recipients"]}
        assert states == {"alice@example.test": "sent", "bob@example.test": "held"}
        assert "5.1.1" in m["recipients"][1]["reply"]
        assert [x.recipients for x in primary.messages] == [["alice@example.test"]]
        assert "held" in proc.output()
        # no DSN: only the one forwarded message ever reached the primary
        assert not wait_for(lambda: len(primary.messages) > 1, 1.5)
        # a person fixes the primary and retries: the held recipient gets its chance
        del primary.rcpt_replies["bob@example.test"]
        assert "1 message(s) due now" in queue_cli(proc, "retry", m["id"][:10])
        assert wait_for(lambda: len(primary.messages) == 2, 10)
        assert primary.messages[1].recipients == ["bob@example.test"]
    finally:
        proc.stop()
        primary.stop()


def test_dsn_when_enabled_follows_rfc3464_and_never_goes_to_null_sender(tmp_path: Path) -> None:
    primary = RecordingSmtpServer().start()
    primary.rcpt_replies["bob@example.test"] = "550 5.1.1 <bob@example.test>: gone"
    proc = backup_only(tmp_path, primary.port, 'retry_min = "1s"\ndsn = true').start()
    try:
        deliver(backup_port(proc), ["bob@example.test"], "nb@s", sender="")
        deliver(backup_port(proc), ["bob@example.test"], "dsn1@s", sender="someone@sender.test")
        assert wait_for(lambda: len(primary.messages) == 1, 10)
        assert not wait_for(lambda: len(primary.messages) > 1, 1.5)
        (dsn,) = primary.messages
        assert dsn.sender == "" and dsn.recipients == ["someone@sender.test"]
        assert b"multipart/report; report-type=delivery-status" in dsn.data
        assert b"Final-Recipient: rfc822; bob@example.test" in dsn.data
        assert b"Action: failed" in dsn.data and b"Status: 5.1.1" in dsn.data
        assert b"Message-ID: <dsn1@s>" in dsn.data  # the original headers, not the body
        assert queue_cli(proc, "stats", "--json")["held"] == 2
    finally:
        proc.stop()
        primary.stop()


def test_spool_full_gets_452_and_recovers(tmp_path: Path) -> None:
    primary = RecordingSmtpServer()
    proc = backup_only(
        tmp_path, primary.port, 'retry_min = "1s"\nretry_max = "1s"\nmax_spool_bytes = "3k"'
    ).start()
    port = backup_port(proc)
    try:
        accepted, refused = [], []
        for i in range(6):
            try:
                deliver(port, ["alice@example.test"], f"full{i}@s", size=1000)
                accepted.append(f"<full{i}@s>")
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                assert exc.smtp_code == 452 and b"4.3.1" in exc.smtp_error
                refused.append(i)
        assert accepted and refused, (accepted, refused)
        assert queue_cli(proc, "stats", "--json")["bytes"] <= 3 * 1024
        primary.start()
        assert wait_for(lambda: sorted(primary.ids()) == sorted(accepted), 15)
        assert wait_for(lambda: queue_cli(proc, "stats", "--json")["queued"] == 0, 5)
        deliver(port, ["alice@example.test"], "after@s", size=1000)  # room again
        assert wait_for(lambda: "<after@s>" in primary.ids(), 10)
    finally:
        proc.stop()
        primary.stop()
