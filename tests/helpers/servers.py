"""Real servers for tests, in their own processes or threads, on loopback only.

- `MxguardProcess`: `mxguard serve -c CONFIG` as a subprocess, started in a work directory,
  waited for until every listener accepts, stopped by its PID (SIGTERM, or SIGKILL for crash
  tests), restartable on the same config and ports.
- `RecordingSmtpServer`: an aiosmtpd server in a thread that records what it received, to
  stand in for a primary (or any next hop); it can go down and come back on the same port.
- `tier_config`: a TOML text for a primary + backup tier on free 127.0.0.x ports.

    def test_x(tmp_path):
        ports = TierPorts.pick()
        with RecordingSmtpServer(port=ports.primary) as primary:
            cfg = tier_config(tmp_path, ports, primary=None, forward_to=f"smtp://127.0.0.1:{ports.primary}")
            with MxguardProcess(tmp_path, cfg) as mx:
                ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import Envelope, Session

__all__ = [
    "MxguardProcess",
    "ReceivedMessage",
    "RecordingSmtpServer",
    "TierPorts",
    "free_port",
    "message_id",
    "tier_config",
    "wait_listening",
]

MXGUARD = str(Path(sys.executable).with_name("mxguard"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if can_connect(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.1) -> bool:
    """Poll `predicate()` until true or `timeout`; returns its last truth value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def message_id(data: bytes) -> str | None:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


# ------------------------------------------------------------------ mxguard as a process


@dataclass
class MxguardProcess:
    """`mxguard serve` in `workdir` with `config_text`; relative paths resolve in `workdir`."""

    workdir: Path
    config_text: str
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "mxguard.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"serve-{self.starts}.log"

    def listens(self) -> list[tuple[str, int]]:
        data = tomllib.loads(self.config_text)
        out = []
        for mx in data.get("mx", []):
            if mx.get("listen"):
                host, _, port = mx["listen"].rpartition(":")
                out.append((host.strip("[]"), int(port)))
        return out

    def start(self, timeout: float = 20.0) -> MxguardProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("MXGUARD_CONFIG", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [MXGUARD, "serve", "-c", str(self.config_path)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        for host, port in self.listens():
            while not can_connect(host, port, 0.2):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mxguard exited {self.proc.returncode}:\n{self.output()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"mxguard did not listen on {host}:{port}:\n{self.output()}")
                time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by PID, wait; SIGKILL if it does not go. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL by PID: the crash of crash tests."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def output(self) -> str:
        """Everything the runs so far printed (stdout and stderr), oldest first."""
        parts = []
        for i in range(1, self.starts + 1):
            p = self.workdir / f"serve-{i}.log"
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def __enter__(self) -> MxguardProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ a recording next hop


@dataclass
class ReceivedMessage:
    peer: str
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message_id(self) -> str | None:
        return message_id(self.data)


class _Recorder:
    def __init__(self, owner: RecordingSmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self,
        server: AiosmtpdSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply = self.owner.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: AiosmtpdSMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        sender = envelope.mail_from or ""
        msg = ReceivedMessage(
            str(session.peer[0]), "" if sender == "<>" else sender, list(envelope.rcpt_tos), content
        )
        with self.owner.lock:
            self.owner.messages.append(msg)
        return self.owner.data_reply


class RecordingSmtpServer:
    """aiosmtpd on 127.0.0.1:PORT that keeps every message; `stop()`/`start()` for outages.

    `rcpt_replies` maps a lower-case address to a reply line ("550 5.1.1 no such user") to
    refuse it; `data_reply` answers the end of DATA.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.messages: list[ReceivedMessage] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply = "250 OK"
        self.lock = threading.Lock()
        self._controller: Controller | None = None
        self.connections = 0

    def start(self) -> RecordingSmtpServer:
        self._controller = Controller(
            _Recorder(self), hostname=self.host, port=self.port, ready_timeout=10
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def ids(self) -> list[str | None]:
        with self.lock:
            return [m.message_id for m in self.messages]

    def __enter__(self) -> RecordingSmtpServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------ configs


@dataclass(frozen=True)
class TierPorts:
    primary: int
    backup: int

    @classmethod
    def pick(cls) -> TierPorts:
        return cls(free_port(), free_port())


def tier_config(
    tmp: Path,
    ports: TierPorts,
    *,
    primary: bool = True,
    backup: bool = True,
    forward_to: str | None = None,
    greylist: str | None = None,
    queue: str = "",
    extra: str = "",
    recipients_source: str = "table",
    recipients: tuple[str, ...] = (
        "alice@example.test",
        "bob@example.test",
        "postmaster@example.test",
    ),
    source_address: str = "127.0.0.2",
    delivery: str | None = None,
) -> str:
    """A tier for example.test: primary on ports.primary, backup on ports.backup.

    The backup forwards from `source_address`, which the primary trusts. `greylist` is the
    body of a [greylist] section (None: off); `queue` the body of [queue]; `extra` is appended.
    With primary=False, point `forward_to` at a stand-in (smtp://127.0.0.1:PORT).
    """
    rcpts = ", ".join(f'"{r}"' for r in recipients)
    text = f"""
[[domain]]
name = "example.test"
recipients = [{rcpts}]
recipients_source = "{recipients_source}"

[delivery]
target = "{delivery or f"maildir:{tmp}/maildir"}"

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"

[relay]
trusted_peers = ["{source_address}/32"]

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
"""
    if primary:
        text += f'listen = "127.0.0.1:{ports.primary}"\n'
    if backup:
        fwd = forward_to or "mail.example.test"
        text += f"""
[[mx]]
host = "backup.example.test"
preference = 20
role = "backup"
listen = "127.0.0.1:{ports.backup}"
forward_to = "{fwd}"
spool = "{tmp}/spool"
source_address = "{source_address}"
"""
    if greylist is not None:
        text += f"\n[greylist]\n{greylist}\n"
    text += f"\n[queue]\n{queue}\n"
    return text + extra


@contextlib.contextmanager
def recording_primary(port: int | None = None) -> Iterator[RecordingSmtpServer]:
    server = RecordingSmtpServer(port=port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
