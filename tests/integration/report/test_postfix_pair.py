"""A primary+backup pair from two real Postfix instances, checked against the counts
known from the sending side (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_postfix_pair import BACKUP_IP, PORT, POSTFIX, PRIMARY_IP, Instance

from mxguard.report_cli import report

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        not os.path.exists(POSTFIX), reason="needs Debian postfix (/usr/sbin/postfix)"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="private Postfix instances need root"),
]


def _message(sender: str, rcpt: str, subject: str, n: int) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, subject
    m["Message-ID"] = f"<m{n}.{time.time_ns()}@client.test>"
    m.set_content("hello\n")
    return m


def _send(
    server_ip: str, client_ip: str, sender: str, rcpts: list[str], subject: str, n: int
) -> str:
    """One SMTP session; returns 'ok', 'refused' (all RCPTs), 'data' (rejected at
    end of data) or 'connect' (connection refused/closed)."""
    try:
        with smtplib.SMTP(server_ip, PORT, source_address=(client_ip, 0), timeout=20) as s:
            s.ehlo("client.test")
            try:
                s.send_message(_message(sender, rcpts[0], subject, n), sender, rcpts)
            except smtplib.SMTPRecipientsRefused:
                return "refused"
            except smtplib.SMTPDataError:
                return "data"
            return "ok"
    except (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected, ConnectionError):
        return "connect"


def _wait(pred, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def pair():  # type: ignore[no-untyped-def]
    # not under pytest's tmp dir: that is mode 0700 and Postfix's daemons run as postfix
    root = Path(tempfile.mkdtemp(prefix="mxguard-pfpair-"))
    os.chmod(root, 0o755)
    primary = Instance("primary", PRIMARY_IP, root / "primary")
    backup = Instance("backup", BACKUP_IP, root / "backup")
    primary.setup("discard:", [])
    backup.setup(
        f"smtp:[{PRIMARY_IP}]:{PORT}",
        [
            f"smtp_bind_address = {BACKUP_IP}",
            "smtpd_client_connection_rate_limit = 3",
            "anvil_rate_time_unit = 120s",
        ],
    )
    started = []
    try:
        for inst in (primary, backup):
            inst.start()
            started.append(inst)
        outcomes = _traffic()
        assert _wait(lambda: backup.queue_empty() and primary.queue_empty(), 40), (
            "queues did not drain"
        )
        time.sleep(1.0)
    finally:
        for inst in reversed(started):
            inst.stop()
    yield primary, backup, outcomes
    shutil.rmtree(root, ignore_errors=True)


def _traffic() -> dict[str, list[str]]:
    """The scripted mix; the expected counts in the test follow from it."""
    out: dict[str, list[str]] = {"primary": [], "backup": []}
    n = 0

    def send(server: str, client: str, sender: str, rcpts: list[str], subject: str = "hi") -> None:
        nonlocal n
        n += 1
        ip = PRIMARY_IP if server == "primary" else BACKUP_IP
        out[server].append(_send(ip, client, sender, rcpts, subject, n))

    # primary: 5 good, 2 spam, 4 unknown users + 1 relay attempt, 1 greylisted, 1 DNSBL
    for _ in range(5):
        send("primary", "127.0.0.5", "alice@sender.test", ["good@example.test"])
    for _ in range(2):
        send("primary", "127.0.0.6", "spammer@bad.test", ["good@example.test"], "VIAGRA deal")
    send(
        "primary",
        "127.0.0.7",
        "walker@bad.test",
        [
            "u1@example.test",
            "u2@example.test",
            "u3@example.test",
            "u4@example.test",
            "x@other.test",
        ],
    )
    send("primary", "127.0.0.9", "carol@sender.test", ["grey@example.test"])
    send("primary", "127.0.0.66", "listed@bad.test", ["good@example.test"])
    # backup: 2 good (relayed to the primary), 3 spam, 6 unknown users, then a
    # client that opens 5 connections against a limit of 3 per time unit
    for _ in range(2):
        send("backup", "127.0.0.5", "bob@sender.test", ["good@example.test"])
    for _ in range(3):
        send("backup", "127.0.0.6", "spammer@bad.test", ["good@example.test"], "VIAGRA deal")
    send("backup", "127.0.0.7", "walker2@bad.test", [f"b{i}@example.test" for i in range(6)])
    for _ in range(5):
        send("backup", "127.0.0.8", "flood@bad.test", ["good@example.test"])
    return out


def test_client_side_outcomes(pair) -> None:  # type: ignore[no-untyped-def]
    _, _, outcomes = pair
    assert outcomes["primary"] == ["ok"] * 5 + ["data"] * 2 + ["refused"] * 3
    assert outcomes["backup"][:6] == ["ok"] * 2 + ["data"] * 3 + ["refused"]
    assert outcomes["backup"][6:].count("connect") == 2


def _run(args: list[str]) -> dict:  # type: ignore[type-arg]
    res = CliRunner().invoke(report, [*args, "--format", "json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_report_counts_match_the_senders(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    primary, backup, _ = pair
    rep = _run([f"primary={primary.maillog}", f"backup={backup.maillog}", "--peer", BACKUP_IP])
    rows = {r["server"]: r for r in rep["servers"]}
    p, b = rows["primary"]["counts"], rows["backup"]["counts"]
    assert p == {
        "delivered": 5,
        "spam": 2,
        "rate": 0,
        "unknown": 4,
        "greylist": 1,
        "screen": 1,
        "relay": 1,
        "walk": 0,
        "other": 0,
    }
    # 2 from bob plus the 3 connections of the flooding client that got through
    assert b == {
        "delivered": 5,
        "spam": 3,
        "rate": 2,
        "unknown": 6,
        "greylist": 0,
        "screen": 0,
        "relay": 0,
        "walk": 0,
        "other": 0,
    }
    # the backup's messages reached the primary but are counted once, on the backup
    assert rows["primary"]["relayed_from_other_mx"] == 5
    assert rows["primary"]["ratios"]["spam"] == pytest.approx(2 / 5)
    assert rows["backup"]["ratios"]["unknown"] == pytest.approx(6 / 5)
    # clients .5 .6 .7 talked to both; all of them reached the primary first
    mc = rep["multi_mx_clients"]
    assert mc["seen_at_several_mx"] == 3
    assert mc["first_contacted"] == {"primary": 3}
    # the spam run used the same sender and recipient at both MX
    assert rep["multi_mx_messages"]["seen_at_several_mx"] == {"sender_recipient": 1}
    spam = rep["excess"]["kinds"]["spam"]
    assert spam["expected_backup"] == pytest.approx(5 * 2 / 5)
    assert spam["excess"] == pytest.approx(3 - 2)
    assert spam["share"] == pytest.approx(1 / 5)
    assert spam["warnings"], "counts this small must carry a warning"
    assert rep["unparsed"] == {}


def test_plain_file_list_takes_server_from_host_field(pair) -> None:  # type: ignore[no-untyped-def]
    primary, backup, _ = pair
    rep = _run(
        [
            str(primary.maillog),
            str(backup.maillog),
            "--primary",
            "primary.mx.test",
            "--backup",
            "backup.mx.test",
            "--peer",
            BACKUP_IP,
        ]
    )
    rows = {r["server"]: r for r in rep["servers"]}
    # postlogd writes the short host name; the FQDN flags still find their server
    assert set(rows) == {"primary", "backup"}
    assert rows["primary"]["role"] == "primary"
    assert rows["backup"]["role"] == "backup"
    assert rows["primary"]["counts"]["delivered"] == 5
    assert rows["backup"]["counts"]["unknown"] == 6
    assert rep["excess"]["kinds"]["unknown"]["inputs"] == {
        "kind_primary": 4,
        "delivered_primary": 5,
        "kind_backup": 6,
        "delivered_backup": 5,
    }
