"""A real Postfix asking a real `mxguard policyd`, wired with the examples of docs/postfix.md.

One private Postfix listens as the primary on one port and as the backup on another (the
docs' one-host master.cf), relays accepted mail to an aiosmtpd sink, and asks the policy
server started from the CLI with the docs' one-host config. Assertions are on what Postfix
said to swaks, on Postfix's own maillog, on the sink, and on mxguard's event log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.helpers.postfix import PostfixInstance, available, free_port

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        not available(), reason="needs Debian's postfix (/usr/sbin/postfix) as root"
    ),
    pytest.mark.skipif(shutil.which("swaks") is None, reason="needs swaks"),
]

DOCS = Path(__file__).resolve().parents[3] / "docs" / "postfix.md"
GREYLIST_DELAY = 2.0


def doc_example(name: str) -> str:
    """The fenced block after `<!-- example: NAME -->` in docs/postfix.md."""
    text = DOCS.read_text()
    m = re.search(rf"<!-- example: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"docs/postfix.md has no example {name!r}"
    return m.group(1)


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the docs example no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def main_cf_settings(block: str) -> dict[str, str]:
    """main.cf syntax: `key = value`, continuation lines start with whitespace."""
    settings: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and key:
            settings[key] += " " + line.strip()
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        settings[key] = value
    return settings


class Sink:
    """An aiosmtpd handler that keeps what Postfix relayed to it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: stored"

    def wait_for(self, needle: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for *_, content in self.messages:
                if needle in content:
                    return content
            time.sleep(0.1)
        raise AssertionError(f"sink never got a message containing {needle!r}")


@dataclass
class Tier:
    postfix: PostfixInstance
    sink: Sink
    events_path: Path
    primary_port: int
    backup_port: int
    policyd: subprocess.Popen[str]

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def wait_event(self, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for e in self.events():
                if all(e.get(k) == v for k, v in match.items()):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no event {match} in {self.events()}")


def swaks(port: int, client: str, to: str, sender: str = "ann@sender.example") -> str:
    result = subprocess.run(
        [
            "swaks",
            "--server", f"127.0.0.1:{port}",
            "--local-interface", client,
            "--from", sender,
            "--to", to,
            "--helo", "mail.sender.example",
            "--header", "Subject: policyd test",
            "--timeout", "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    return result.stdout + result.stderr


def start_policyd(config: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mxguard", "policyd", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on inet:127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise RuntimeError(f"policyd did not start: {err}")


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def tier(request: pytest.FixtureRequest) -> Iterator[Tier]:
    """The whole tier, once with policyd in one process and once with `workers = 2` (every
    smtpd process's connection then goes to one of two processes sharing the state)."""
    # Our own temp dir: pytest prunes old basetemp dirs, and other suites run concurrently here.
    tmp = Path(tempfile.mkdtemp(prefix="mxg-policyd-"))
    primary_port, backup_port = free_port(), free_port()
    recipients = tmp / "recipients.txt"
    recipients.write_text("alice@example.test\nbob@example.test\npostmaster@example.test\n")
    events = tmp / "events.jsonl"
    config = tmp / "mxguard.toml"
    config.write_text(
        substitute(
            doc_example("one-host.toml"),
            {
                "/etc/mxguard/recipients.txt": str(recipients),
                "sqlite:////var/lib/mxguard/state.db": f"sqlite:///{tmp}/state.db",
                "/var/log/mxguard/events.jsonl": str(events),
                'roles = ["backup"]': 'roles = ["primary", "backup"]',
                'delay = "5m"': f'delay = "{GREYLIST_DELAY}s"',
                "198.51.100.0/24": "127.0.0.66/32",
                'listen = "127.0.0.1:10023"': f'listen = "127.0.0.1:0"\nworkers = {request.param}',
                "192.0.2.10:25": f"127.0.0.1:{primary_port}",
                "192.0.2.20:25": f"127.0.0.1:{backup_port}",
            },
        )
    )
    handler = Sink()
    sink = Controller(handler, hostname="127.0.0.1", port=free_port())
    sink.start()
    policyd, policy_port = start_policyd(config)
    if request.param > 1:  # the parent and its workers, not one process
        kids = Path(f"/proc/{policyd.pid}/task/{policyd.pid}/children").read_text().split()
        assert len(kids) == request.param, kids
    settings = main_cf_settings(
        substitute(doc_example("main.cf"), {"127.0.0.1:10023": f"127.0.0.1:{policy_port}"})
    )
    master_lines = substitute(
        doc_example("master.cf"),
        {"192.0.2.10:25": f"127.0.0.1:{primary_port}", "192.0.2.20:25": f"127.0.0.1:{backup_port}"},
    ).splitlines()
    postfix = PostfixInstance(
        smtpd={"primary": primary_port, "backup": backup_port},
        relay_domains=["example.test"],
        relay_to=("127.0.0.1", sink.port),
        extra=settings,
        smtpd_lines=master_lines,
    )
    try:
        postfix.start()
        yield Tier(postfix, handler, events, primary_port, backup_port, policyd)
    finally:
        postfix.cleanup()
        policyd.terminate()  # SIGTERM: the daemon must stop cleanly
        try:
            code = policyd.wait(timeout=15)
        except subprocess.TimeoutExpired:
            policyd.kill()
            raise
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        assert code == 0, policyd.stderr.read() if policyd.stderr else code


def test_first_contact_is_greylisted_then_passes_after_the_delay(tier: Tier) -> None:
    first = swaks(tier.primary_port, "127.0.0.11", "alice@example.test")
    assert "<** 450 4.7.1 <alice@example.test>: Recipient address rejected: Greylisted" in first
    tier.postfix.wait_for_log(
        r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.11\]: 450 4\.7\.1 <alice@example\.test>"
    )
    tier.wait_event(client="127.0.0.11", reason="greylisted", role="primary")

    time.sleep(GREYLIST_DELAY + 0.5)
    second = swaks(tier.primary_port, "127.0.0.11", "alice@example.test")
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as \w+", second), second
    tier.postfix.wait_for_log(r"to=<alice@example\.test>, relay=127\.0\.0\.1.*status=sent")
    content = tier.sink.wait_for(b"Subject: policyd test")
    assert re.search(rb"X-Greylist: delayed [23] seconds by mxguard-", content), content[:400]
    passed = tier.wait_event(client="127.0.0.11", reason="ok", stage="rcpt")
    assert passed["postfix_action"].startswith("PREPEND X-Greylist:")


def test_unknown_recipient_is_refused(tier: Tier) -> None:
    out = swaks(tier.primary_port, "127.0.0.13", "nobody@example.test")
    assert "<** 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown" in out
    tier.postfix.wait_for_log(r"RCPT from unknown\[127\.0\.0\.13\]: 550 5\.1\.1")
    tier.wait_event(client="127.0.0.13", reason="unknown_recipient")


def test_deny_listed_client_is_refused(tier: Tier) -> None:
    out = swaks(tier.primary_port, "127.0.0.66", "alice@example.test")
    assert (
        "<** 554 5.7.1 <alice@example.test>: Recipient address rejected: Service unavailable" in out
    )
    assert "[127.0.0.66] is on the deny list" in out
    tier.wait_event(client="127.0.0.66", reason="denylist")


def test_relay_is_refused_by_postfix_before_the_policy_is_asked(tier: Tier) -> None:
    out = swaks(tier.primary_port, "127.0.0.14", "someone@elsewhere.example")
    assert "<** 554 5.7.1 <someone@elsewhere.example>: Relay access denied" in out
    time.sleep(0.3)
    assert not [e for e in tier.events() if e["client"] == "127.0.0.14"]


def test_backup_address_is_judged_as_the_backup_by_server_port(tier: Tier) -> None:
    """Role mapping today; the walk check below adds what the backup role then does."""
    out = swaks(tier.backup_port, "127.0.0.12", "bob@example.test")
    assert "<** 450 4.7.1" in out
    event = tier.wait_event(client="127.0.0.12", stage="rcpt")
    assert (event["mx"], event["role"], event["preference"]) == ("mx2.example.test", "backup", 20)
    swaks(tier.primary_port, "127.0.0.15", "bob@example.test")
    event = tier.wait_event(client="127.0.0.15", stage="rcpt")
    assert (event["mx"], event["role"]) == ("mx1.example.test", "primary")


def test_backup_role_applies_the_walk_check(tier: Tier) -> None:
    """A client that skips a healthy primary and goes straight to the backup is tempfailed
    for the walk; one that tried the primary first is judged normally (greylisted)."""
    # the primary is seen alive through Postfix's sessions on it
    swaks(tier.primary_port, "127.0.0.21", "alice@example.test")
    walker = swaks(tier.backup_port, "127.0.0.22", "alice@example.test", "wally@walk.example")
    assert "<** 4" in walker
    event = tier.wait_event(client="127.0.0.22", stage="rcpt")
    assert "walk" in event["reason"], event
    swaks(tier.primary_port, "127.0.0.23", "alice@example.test", "polly@walk.example")
    polite = swaks(tier.backup_port, "127.0.0.23", "alice@example.test", "polly@walk.example")
    assert "<** 450 4.7.1" in polite
    # policyd buffers its event log (flushed every 0.2 s): wait for the backup's decision
    last = tier.wait_event(client="127.0.0.23", role="backup", stage="rcpt")
    assert "walk" not in last["reason"], last


def test_policyd_log_has_no_warnings_from_postfix(tier: Tier) -> None:
    """Postfix would log 'warning: problem talking to server' on any protocol mistake."""
    swaks(tier.primary_port, "127.0.0.16", "alice@example.test")
    log = tier.postfix.log()
    assert "problem talking to server" not in log
    assert "policy" not in " ".join(line for line in log.splitlines() if "warning" in line)


if os.environ.get("MXGUARD_POSTFIX_KEEP"):  # debugging aid: keep the maillog
    PostfixInstance.cleanup = PostfixInstance.stop  # type: ignore[method-assign]
