"""Where the primary puts accepted mail, before it answers 250: a Maildir, or an SMTP/LMTP server.

Each target answers per recipient, so a downstream 5xx for one recipient reaches that
recipient's sender as a 5xx, and a target that is down turns into a 451 for the client (who
will retry): nothing is ever acknowledged that is not safely stored downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib

from mxguard.batching import BatchWorker
from mxguard.config import parse_hostport
from mxguard.durable import fsync_dir, write_synced
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.address import split_address


@dataclass
class DeliveryResult:
    accepted: list[str] = field(default_factory=list)
    #: recipient -> (code, status, text), 4xx
    temp_failed: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    #: recipient -> (code, status, text), 5xx
    perm_failed: dict[str, tuple[int, str, str]] = field(default_factory=dict)

    def fail_all(self, recipients: list[str], reply: tuple[int, str, str]) -> DeliveryResult:
        target = self.perm_failed if reply[0] >= 500 else self.temp_failed
        for r in recipients:
            target[r] = reply
        return self


class Target(ABC):
    description: str

    @abstractmethod
    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult: ...

    def deliver_now(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult | NotNow:
        """`deliver`, for a target that can finish without waiting; NOT_NOW otherwise (and
        nothing was done)."""
        return NOT_NOW

    async def close(self) -> None:
        return None


def _split_reply(text: str) -> tuple[str, str]:
    """Pull an enhanced status code off the front of a reply text, if it has one."""
    head, _, rest = text.partition(" ")
    if head.count(".") == 2 and head.replace(".", "").isdigit():
        return head, rest
    return "", text


class DiscardTarget(Target):
    """Accepts and forgets: only for benchmarks and tests of the engine alone."""

    description = "discard"

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult:
        return DeliveryResult(accepted=list(recipients))

    def deliver_now(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult:
        return DeliveryResult(accepted=list(recipients))


class MaildirTarget(Target):
    """ROOT/<domain>/<local>/{tmp,new,cur}, written the Maildir way with fsync before the 250.

    Messages that arrive together are written as a batch on one thread: every file written
    and fsync'd, then renamed into new/, then each new/ directory fsync'd once. One journal
    commit then covers many messages, and each still is on disk before its client hears 250.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.description = f"maildir:{self.root}"
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._seq = 0
        self._made: set[Path] = set()
        self._worker: BatchWorker[tuple[list[str], bytes]] | None = None

    def _mailbox(self, rcpt: str) -> Path:
        parts = split_address(rcpt) or (rcpt, "unknown")
        local = parts[0].lower().strip('"').replace("/", "_").replace("\x00", "_") or "_"
        domain = parts[1].lower().replace("/", "_") or "_"
        if local in (".", ".."):
            local = "_" + local
        return self.root / domain / local

    def _ensure(self, box: Path) -> None:
        if box not in self._made:
            for sub in ("tmp", "new", "cur"):
                (box / sub).mkdir(parents=True, exist_ok=True)
            self._made.add(box)

    def _name(self) -> str:
        self._seq += 1
        now = time.time()
        return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{self._seq}.{self._host}"

    def _write_batch(self, jobs: list[tuple[list[str], bytes]]) -> list[object]:
        results: list[object] = []
        renames: list[list[tuple[Path, Path]]] = []
        for recipients, data in jobs:
            moves: list[tuple[Path, Path]] = []
            try:
                first: Path | None = None
                for rcpt in dict.fromkeys(recipients):  # one copy per distinct mailbox
                    box = self._mailbox(rcpt)
                    self._ensure(box)
                    name = self._name()
                    tmp = box / "tmp" / name
                    if first is None:
                        write_synced(tmp, data)
                        first = tmp
                    else:
                        os.link(first, tmp)  # same inode, already synced
                    moves.append((tmp, box / "new" / name))
                results.append(None)
            except OSError as exc:
                for tmp, _ in moves:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                moves = []
                results.append(exc)
            renames.append(moves)
        dirs: set[Path] = set()
        for i, moves in enumerate(renames):
            try:
                for tmp, new in moves:
                    os.rename(tmp, new)
                    dirs.add(new.parent)
            except OSError as exc:
                results[i] = exc
        for d in dirs:
            try:
                fsync_dir(d)
            except OSError as exc:  # the rename may not be durable: fail whoever used d
                for i, moves in enumerate(renames):
                    if any(new.parent == d for _, new in moves):
                        results[i] = exc
        return results

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult:
        if self._worker is None:
            self._worker = BatchWorker("mxguard-maildir", self._write_batch)
        error = await self._worker.submit((recipients, data))
        if error is not None:
            return DeliveryResult().fail_all(
                recipients, (451, "4.3.0", f"Local delivery failed: {error.strerror or error}")
            )
        return DeliveryResult(accepted=list(recipients))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def _mail_options(sender: str, recipients: list[str], data: bytes) -> list[str]:
    opts = []
    if any(b > 127 for b in data[:65536]) or not data.isascii():
        opts.append("BODY=8BITMIME")
    if not (sender.isascii() and all(r.isascii() for r in recipients)):
        opts.append("SMTPUTF8")
    return opts


class SmtpTarget(Target):
    def __init__(self, host: str, port: int, timeout: float, helo: str) -> None:
        self.host, self.port, self.timeout, self.helo = host, port, timeout, helo
        self.description = f"smtp://{host}:{port}"

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult:
        return await smtp_send(
            self.host, self.port, sender, recipients, data, self.timeout, self.helo
        )


async def smtp_send(
    host: str,
    port: int,
    sender: str,
    recipients: list[str],
    data: bytes,
    timeout: float,
    helo: str,
    source_address: tuple[str, int] | None = None,
) -> DeliveryResult:
    """One SMTP transaction with per-recipient results; network trouble is a 4xx for all."""
    result = DeliveryResult()
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        timeout=timeout,
        local_hostname=helo,
        start_tls=False,
        source_address=source_address,
    )
    try:
        async with asyncio.timeout(timeout * 3):
            await client.connect()
            try:
                errors, _ = await client.sendmail(
                    sender, recipients, data, mail_options=_mail_options(sender, recipients, data)
                )
            finally:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
    except aiosmtplib.SMTPRecipientsRefused as exc:
        for refused in exc.recipients:
            status, text = _split_reply(refused.message)
            reply = (refused.code, status, text)
            (result.perm_failed if refused.code >= 500 else result.temp_failed)[
                refused.recipient
            ] = reply
        return result
    except aiosmtplib.SMTPResponseException as exc:
        status, text = _split_reply(exc.message)
        code = exc.code if exc.code >= 400 else 451
        return result.fail_all(recipients, (code, status or f"{code // 100}.0.0", text))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return result.fail_all(
            recipients, (451, "4.4.1", f"Next hop {host}:{port} unavailable: {exc}".strip())
        )
    for r in recipients:
        if r in errors:
            status, text = _split_reply(errors[r].message)
            reply = (errors[r].code, status, text)
            (result.perm_failed if errors[r].code >= 500 else result.temp_failed)[r] = reply
        else:
            result.accepted.append(r)
    return result


class LmtpTarget(Target):
    """LMTP (RFC 2033): one reply per recipient after the body, so failures stay per recipient."""

    def __init__(
        self, host: str | None, port: int | None, path: str | None, timeout: float, helo: str
    ) -> None:
        self.host, self.port, self.path, self.timeout, self.helo = host, port, path, timeout, helo
        self.description = f"lmtp:unix:{path}" if path else f"lmtp://{host}:{port}"

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, queue_id: str
    ) -> DeliveryResult:
        result = DeliveryResult()
        try:
            async with asyncio.timeout(self.timeout):
                if self.path:
                    reader, writer = await asyncio.open_unix_connection(self.path)
                else:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    await self._session(reader, writer, sender, recipients, data, result)
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError, _LmtpError) as exc:
            pending = [
                r for r in recipients if r not in result.perm_failed and r not in result.accepted
            ]
            result.temp_failed.clear()
            result.accepted.clear()
            return result.fail_all(
                pending, (451, "4.4.1", f"LMTP {self.description} unavailable: {exc}")
            )
        return result

    async def _session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sender: str,
        recipients: list[str],
        data: bytes,
        result: DeliveryResult,
    ) -> None:
        async def reply() -> tuple[int, str, str]:
            lines = []
            while True:
                line = await reader.readline()
                if not line:
                    raise _LmtpError("connection closed")
                lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
                if len(line) < 4 or line[3:4] != b"-":
                    break
            code = int(lines[-1][:3])
            status, text = _split_reply(" ".join(x[4:] for x in lines))
            return code, status, text

        def send(cmd: str) -> None:
            writer.write(cmd.encode("utf-8") + b"\r\n")

        if (await reply())[0] != 220:
            raise _LmtpError("no 220 greeting")
        send(f"LHLO {self.helo}")
        if (await reply())[0] != 250:
            raise _LmtpError("LHLO refused")
        send(f"MAIL FROM:<{sender}>")
        code, status, text = await reply()
        if code != 250:
            result.fail_all(recipients, (code, status, text))
            send("QUIT")
            return
        accepted = []
        for r in recipients:
            send(f"RCPT TO:<{r}>")
            code, status, text = await reply()
            if code == 250:
                accepted.append(r)
            else:
                (result.perm_failed if code >= 500 else result.temp_failed)[r] = (
                    code,
                    status,
                    text,
                )
        if accepted:
            send("DATA")
            if (await reply())[0] != 354:
                raise _LmtpError("DATA refused")
            body = b"." + data if data.startswith(b".") else data
            body = body.replace(b"\r\n.", b"\r\n..")
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            writer.write(body + b".\r\n")
            for r in accepted:
                code, status, text = await reply()
                if code == 250:
                    result.accepted.append(r)
                else:
                    (result.perm_failed if code >= 500 else result.temp_failed)[r] = (
                        code,
                        status,
                        text,
                    )
        send("QUIT")
        await writer.drain()


class _LmtpError(Exception):
    pass


def make_target(spec: str, timeout: float, helo: str) -> Target:
    if spec == "discard":
        return DiscardTarget()
    if spec.startswith("maildir:"):
        return MaildirTarget(spec[len("maildir:") :])
    if spec.startswith("lmtp:unix:"):
        return LmtpTarget(None, None, spec[len("lmtp:unix:") :], timeout, helo)
    if spec.startswith("lmtp://"):
        host, port = parse_hostport(spec[len("lmtp://") :].rstrip("/"), 24)
        return LmtpTarget(host, port, None, timeout, helo)
    if spec.startswith("smtp://"):
        host, port = parse_hostport(spec[len("smtp://") :].rstrip("/"), 25)
        return SmtpTarget(host, port, timeout, helo)
    raise ValueError(f"unknown delivery target {spec!r}")
