"""``mxguard report`` as a user runs it: a subprocess, real files, exit codes, and the
HTML page as headless Chromium renders it."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

PRIMARY_LOG = """\
Jan  5 10:00:00 mx1 postfix/smtpd[1]: connect from a.example.org[192.0.2.1]
Jan  5 10:00:00 mx1 postfix/smtpd[1]: Q1: client=a.example.org[192.0.2.1]
Jan  5 10:00:01 mx1 postfix/cleanup[2]: Q1: message-id=<one@example.org>
Jan  5 10:00:01 mx1 postfix/qmgr[3]: Q1: from=<s@example.org>, size=100, nrcpt=1 (queue active)
Jan  5 10:00:02 mx1 postfix/lmtp[4]: Q1: to=<u@example.test>, relay=mail.example.test[private/dovecot-lmtp], delay=1, dsn=2.0.0, status=sent (250 2.0.0 <u@example.test> Saved)
Jan  5 10:00:02 mx1 postfix/qmgr[3]: Q1: removed
Jan  5 10:05:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from b.example.org[192.0.2.2]: 550 5.1.1 <x@example.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<z@example.org> to=<x@example.test> proto=ESMTP helo=<b>
Jan  5 10:06:00 mx1 mystery[9]: something we do not know
"""
BACKUP_LOG = """\
Jan  5 10:00:30 mx2 postfix/smtpd[1]: connect from b.example.org[192.0.2.2]
Jan  5 10:00:31 mx2 postfix/smtpd[1]: NOQUEUE: reject: RCPT from b.example.org[192.0.2.2]: 550 5.1.1 <y@example.test>: Recipient address rejected: User unknown in relay recipient table; from=<z@example.org> to=<y@example.test> proto=ESMTP helo=<b>
"""


def mxguard(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mxguard.report_cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path]:
    p = tmp_path / "mx1.log"
    p.write_text(PRIMARY_LOG)
    b = tmp_path / "mx2.log.gz"
    b.write_bytes(gzip.compress(BACKUP_LOG.encode()))
    return p, b


def test_table_with_roles_from_labels(logs: tuple[Path, Path]) -> None:
    p, b = logs
    res = mxguard(f"primary={p}", f"backup={b}")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "mail per MX server" in out and "unknown user" in out
    assert "excess on the backup" in out
    assert "too small to mean anything" in out
    assert "1 not understood" in out
    # counts read as prose, never as a Python dict
    assert "messages at several MX (window 3600s): by Message-ID 0 of 1; by sender" in out
    assert "{" not in out


def test_json_and_csv_from_plain_list_and_config(logs: tuple[Path, Path], tmp_path: Path) -> None:
    p, b = logs
    cfg = tmp_path / "mxguard.toml"
    cfg.write_text(
        '[[mx]]\nhost = "mx1.example.test"\nrole = "primary"\npreference = 10\n'
        '[[mx]]\nhost = "mx2.example.test"\nrole = "backup"\npreference = 20\n'
        "[other]\nignored = true\n"
    )
    res = mxguard(str(p), str(b), "--config", str(cfg), "--format", "json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    rows = {r["server"]: r for r in rep["servers"]}
    assert rows["mx1"]["role"] == "primary" and rows["mx1"]["preference"] == 10
    assert rows["mx2"]["role"] == "backup"
    assert rows["mx1"]["counts"]["delivered"] == 1
    assert rows["mx2"]["counts"]["unknown"] == 1
    assert rep["multi_mx_clients"]["seen_at_several_mx"] == 1
    assert rep["multi_mx_clients"]["first_contacted"] == {"mx2": 1}
    assert rep["unparsed"] == {"mystery": 1}
    res = mxguard(str(p), str(b), "--config", str(cfg), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(res.stdout.decode())))
    assert [r["server"] for r in table] == ["mx1", "mx2"]
    assert table[1]["unknown"] == "1"


def test_stdin_and_show_unparsed(logs: tuple[Path, Path]) -> None:
    p, _ = logs
    res = mxguard("-", "--show-unparsed", stdin=p.read_bytes())
    assert res.returncode == 0, res.stderr
    assert "something we do not know" in res.stdout.decode()


def test_local_networks_option(logs: tuple[Path, Path]) -> None:
    p, _ = logs
    res = mxguard(f"primary={p}", "--local-networks", "192.0.2.0/31", "--format", "json")
    row = json.loads(res.stdout)["servers"][0]
    assert row["counts"]["delivered"] == 0
    assert row["excluded_local"] == {"delivered": 1}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["/nonexistent/mail.log"], "/nonexistent/mail.log: no such file"),
        (["x.log", "--config", "/nonexistent.toml"], "/nonexistent.toml: no such file"),
        (["-", "--local-networks", "10.0.0.0/33"], "is not a network"),
        ([], "no input files"),
    ],
)
def test_input_errors_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    res = mxguard(*args, stdin=b"")
    err = res.stderr.decode()
    assert res.returncode == 2
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_option_is_a_usage_error() -> None:
    res = mxguard("--format", "pdf", "x")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr.decode()


def test_binary_garbage_does_not_crash(tmp_path: Path) -> None:
    """Counted and skipped; with nothing recognised, the report still comes out, and a
    warning and exit status 1 say the input was likely the wrong file."""
    junk = tmp_path / "junk.log"
    junk.write_bytes(os.urandom(200_000).replace(b"\x00", b"\n"))
    res = mxguard(str(junk), "--format", "json")
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout)["files"][0]["corrupt"] > 0
    assert f"warning: {junk}: none of its" in res.stderr.decode()
    assert "Traceback" not in res.stderr.decode()


def test_a_file_that_is_no_mail_log_exits_1(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    other = tmp_path / "passwd"
    other.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n")
    res = mxguard(str(other))
    assert res.returncode == 1
    assert f"warning: {other}: none of its 2 lines looked like a mail log" in res.stderr.decode()
    res = mxguard(str(logs[0]), str(other))  # one good file does not hide the other
    assert res.returncode == 1
    assert mxguard(str(logs[0])).returncode == 0


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian chromium for the HTML render test"
)
def test_html_report_renders_table_and_charts_in_chromium(
    logs: tuple[Path, Path], tmp_path: Path
) -> None:
    p, b = logs
    page = tmp_path / "report.html"
    res = mxguard(f"primary={p}", f"backup={b}", "--format", "html", "-o", str(page))
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
    profile = tempfile.mkdtemp(prefix="mxguard-chromium-")
    try:
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=90,
            check=True,
        ).stdout.decode()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert '<table id="servers">' in dom
    assert dom.count("<tr>") >= 3  # header + two servers
    assert '<svg id="ratio-chart"' in dom and dom.count('class="bar"') == 6
    assert dom.count('class="timeline-chart"') == 2
    assert "<polyline" in dom
