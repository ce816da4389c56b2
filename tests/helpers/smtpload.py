"""Scripted SMTP load for the operations tests: bounded, on loopback, every reply recorded.

`Streamer` keeps sending numbered messages from a thread (a few per session) until told to
stop, and remembers which ones got 250 and which errors it saw, so a test can check that a
reload or a shutdown lost nothing that was acknowledged. `send_one` is the single message a
scripted load is made of.
"""

from __future__ import annotations

import hashlib
import smtplib
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

BODY_LINES = 200  # ~10 KB: big enough that a cut write would show


def body_for(msg_id: str) -> str:
    line = hashlib.sha256(msg_id.encode()).hexdigest()
    return "\n".join(f"{i:04d} {line}" for i in range(BODY_LINES)) + f"\nEND {msg_id}\n"


def make_message(msg_id: str, rcpt: str, sender: str = "load@sender.test") -> EmailMessage:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = rcpt
    m["Subject"] = f"load {msg_id}"
    m["Message-ID"] = f"<{msg_id}@load.test>"
    m.set_content(body_for(msg_id))
    return m


def send_one(
    host: str,
    port: int,
    rcpt: str,
    msg_id: str,
    source: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, str]:
    """One session, one message: (code, text) of the first refusal, or (250, "")."""
    try:
        with smtplib.SMTP(
            host, port, timeout=timeout, source_address=(source, 0) if source else None
        ) as s:
            s.send_message(make_message(msg_id, rcpt))
            return 250, ""
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")


@dataclass
class Streamer:
    """Sends `per_session` messages per connection, again and again, until `stop()`."""

    host: str
    port: int
    rcpt: str = "alice@example.test"
    per_session: int = 5
    prefix: str = "s"
    limit: int = 2000  # bounded, whatever happens
    acked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Streamer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and n < self.limit:
            try:
                with smtplib.SMTP(self.host, self.port, timeout=10) as s:
                    for _ in range(self.per_session):
                        n += 1
                        msg_id = f"{self.prefix}{n:05d}"
                        s.send_message(make_message(msg_id, self.rcpt))
                        self.acked.append(msg_id)  # send_message returned: we heard 250
                        if self._stop.is_set():
                            break
            except (OSError, smtplib.SMTPException) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(20)


def maildir_messages(root: Path, rcpt: str = "alice@example.test") -> dict[str, bytes]:
    """Message-ID (without <@load.test>) -> file content, for every delivered message."""
    local, domain = rcpt.split("@")
    out = {}
    for path in (root / domain / local / "new").glob("*"):
        data = path.read_bytes()
        for line in data.split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                out[line.split(b"<", 1)[1].split(b"@", 1)[0].decode()] = data
                break
    return out


def complete(msg_id: str, data: bytes) -> bool:
    """The whole body arrived: every line, in order, up to the END marker."""
    text = data.replace(b"\r\n", b"\n").decode(errors="replace")
    return body_for(msg_id) in text
