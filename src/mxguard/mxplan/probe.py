"""SMTP probes of one domain's MX addresses: what each address answers, never a message.

One session per address, as a careful sender would open it: connect, EHLO, STARTTLS when
offered (checked against the MX name), `MAIL FROM:<>`, `RCPT TO:` a made-up local part and
`postmaster@`, QUIT. DATA is never sent, so a probe cannot deliver anything, and the two RCPT
answers side by side are what tells a backscatter back door from a careful backup.

The TCP connect is done here rather than inside aiosmtplib so that its three outcomes stay
apart: a refused connection (what a fake MX should do), dropped packets (every sender waits
out its connect timeout) and a listener that accepts but never greets (a 300 s wait in
Postfix). Probes are paced per address and bounded in total, because the addresses belong to
someone's production mail servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiosmtplib

ConnectOutcome = Literal["ok", "refused", "timeout", "error", "skipped"]
TlsOutcome = Literal["ok", "invalid", "error"]


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def kind(self) -> int:
        """2, 4 or 5: the digit that decides what a sender does next."""
        return self.code // 100

    def __str__(self) -> str:
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return f"{self.code} {first}".strip()


@dataclass(frozen=True)
class ProbeTarget:
    host: str  # the MX name (TLS is checked against it) or the --also name
    address: str
    port: int
    kind: Literal["mx", "also"] = "mx"

    @property
    def label(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host}[{addr}]:{self.port}"


@dataclass
class ProbeResult:
    """Filled in step by step, so a probe stopped by the time budget still shows how far it got."""

    target: ProbeTarget
    connect: ConnectOutcome = "skipped"
    error: str = ""
    connect_seconds: float | None = None
    banner: Reply | None = None
    silent: bool = False  # connected, but no banner within the timeout
    ehlo: Reply | None = None
    starttls: bool | None = None  # offered in the EHLO reply
    tls: TlsOutcome | None = None
    tls_error: str = ""
    mail: Reply | None = None
    unknown_rcpt: str = ""
    rcpt_unknown: Reply | None = None
    rcpt_postmaster: Reply | None = None
    transcript: list[str] = field(default_factory=list)

    @property
    def greeted(self) -> bool:
        return self.banner is not None

    def as_dict(self) -> dict[str, Any]:
        def reply(r: Reply | None) -> dict[str, Any] | None:
            return None if r is None else {"code": r.code, "text": r.text}

        return {
            "host": self.target.host,
            "address": self.target.address,
            "port": self.target.port,
            "kind": self.target.kind,
            "connect": self.connect,
            "error": self.error,
            "connect_seconds": self.connect_seconds,
            "banner": reply(self.banner),
            "silent": self.silent,
            "ehlo": reply(self.ehlo),
            "starttls": self.starttls,
            "tls": self.tls,
            "tls_error": self.tls_error,
            "mail": reply(self.mail),
            "unknown_recipient": self.unknown_rcpt,
            "rcpt_unknown": reply(self.rcpt_unknown),
            "rcpt_postmaster": reply(self.rcpt_postmaster),
            "transcript": list(self.transcript),
        }


@dataclass(frozen=True)
class ProbeOptions:
    port: int = 25
    port_map: Mapping[str, int] = field(default_factory=dict)  # address -> port (tests)
    timeout: float = 10.0  # connect, banner and each command
    helo: str = "localhost"
    cafile: str | None = None  # trust anchors for the STARTTLS check; default: the system's
    min_interval: float = 1.0  # seconds between two connections to one address
    max_time: float = 120.0  # for the whole probe run
    concurrency: int = 8

    def port_for(self, address: str) -> int:
        return self.port_map.get(address, self.port)


class _Pacer:
    """At most one connection at a time per address, and `interval` seconds between them."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            last = self._last.get(address)
            if last is not None:
                wait = last + self.interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._last[address] = loop.time()
            yield


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    # check_hostname and CERT_REQUIRED are the defaults: the point is to check the MX name
    return ssl.create_default_context(cafile=cafile)


async def _open_socket(
    target: ProbeTarget, timeout: float, result: ProbeResult
) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (target.address, target.port)), timeout)
    except TimeoutError:
        result.connect, result.error = "timeout", f"no answer to the connect within {timeout:g}s"
    except ConnectionRefusedError:
        result.connect, result.error = "refused", "connection refused"
    except OSError as exc:
        result.connect, result.error = "error", exc.strerror or str(exc)
    else:
        result.connect = "ok"
        result.connect_seconds = round(time.monotonic() - started, 4)
        return sock
    finally:
        if result.connect != "ok":
            sock.close()
        result.transcript.append(f"connect {target.address}:{target.port}: {result.connect}")
    return None


class _Session:
    """One SMTP session over a socket we connected, with every exchange written down."""

    def __init__(self, result: ProbeResult, opts: ProbeOptions) -> None:
        self.result = result
        self.opts = opts
        self.smtp: aiosmtplib.SMTP | None = None

    def note(self, line: str) -> None:
        self.result.transcript.append(line)

    async def greet(self, sock: socket.socket) -> Reply | None:
        """The banner, or None when the server closed or stayed silent."""
        self.smtp = aiosmtplib.SMTP(
            sock=sock, timeout=self.opts.timeout, start_tls=False, local_hostname=self.opts.helo
        )
        try:
            response = await self.smtp.connect()
            banner = Reply(response.code, response.message)
        except aiosmtplib.SMTPConnectResponseError as exc:
            banner = Reply(exc.code, exc.message)
        except aiosmtplib.SMTPConnectTimeoutError:
            self.result.silent = True
            self.result.error = f"connected, but no banner within {self.opts.timeout:g}s"
            self.note("S: (silence)")
            return None
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.result.error = f"closed before the banner: {exc}"
            self.note("S: (closed)")
            return None
        self.note(f"S: {banner}")
        return banner

    async def command(self, line: str) -> Reply | None:
        assert self.smtp is not None
        verb, _, arg = line.partition(" ")
        self.note(f"C: {line}")
        args = (verb.encode(), arg.encode()) if arg else (verb.encode(),)
        try:
            response = await self.smtp.execute_command(*args)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.result.error = f"{verb}: {exc}"
            self.note("S: (closed)")
            return None
        reply = Reply(response.code, response.message)
        self.note(f"S: {reply}")
        return reply

    async def ehlo(self) -> Reply | None:
        assert self.smtp is not None
        self.note(f"C: EHLO {self.opts.helo}")
        try:
            response = await self.smtp.ehlo()
            reply = Reply(response.code, response.message)
        except aiosmtplib.SMTPHeloError as exc:
            reply = Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.result.error = f"EHLO: {exc}"
            self.note("S: (closed)")
            return None
        self.note(f"S: {reply}")
        return reply

    async def starttls(self) -> bool:
        """True when the session continues encrypted; False leaves it unusable or plain."""
        assert self.smtp is not None
        self.note("C: STARTTLS")
        try:
            await self.smtp.starttls(
                server_hostname=self.result.target.host,
                tls_context=_tls_context(self.opts.cafile),
            )
        except ssl.SSLCertVerificationError as exc:
            self.result.tls, self.result.tls_error = "invalid", exc.verify_message or str(exc)
        except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
            # aiosmtplib may wrap the verification error; keep what it says either way
            text = str(exc)
            invalid = "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower()
            self.result.tls = "invalid" if invalid else "error"
            self.result.tls_error = text
        else:
            self.result.tls = "ok"
            self.note("(TLS established)")
            return True
        self.note(f"(TLS failed: {self.result.tls_error})")
        return False

    async def close(self) -> None:
        if self.smtp is None:
            return
        if self.smtp.is_connected:
            self.note("C: QUIT")
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await self.smtp.execute_command(b"QUIT")
        self.smtp.close()
        self.smtp = None


async def probe_one(
    target: ProbeTarget, domain: str, opts: ProbeOptions, pacer: _Pacer, result: ProbeResult
) -> ProbeResult:
    """The full polite dialogue with one address; every outcome lands in `result`."""
    result.unknown_rcpt = f"mxguard-audit-{secrets.token_hex(6)}@{domain}"
    async with pacer.turn(target.address):
        sock = await _open_socket(target, opts.timeout, result)
        if sock is None:
            return result
        session = _Session(result, opts)
        try:
            result.banner = await session.greet(sock)
            if result.banner is None or result.banner.kind != 2:
                return result
            result.ehlo = await session.ehlo()
            if result.ehlo is None or result.ehlo.kind != 2 or session.smtp is None:
                return result
            result.starttls = session.smtp.supports_extension("starttls")
            if not result.starttls or await session.starttls():
                if result.tls == "ok" and await session.ehlo() is None:
                    return result
                await _envelope(session, domain, result)
                return result
            session.smtp.close()  # the failed handshake left nothing to QUIT politely
            session.smtp = None
        finally:
            await session.close()
    # TLS failed and took the session with it: ask the envelope questions in clear, as a
    # sender doing opportunistic TLS would carry on
    async with pacer.turn(target.address):
        sock = await _open_socket(target, opts.timeout, result)
        if sock is None:
            return result
        session = _Session(result, opts)
        try:
            if await session.greet(sock) is None or await session.ehlo() is None:
                return result
            await _envelope(session, domain, result)
        finally:
            await session.close()
    return result


async def _envelope(session: _Session, domain: str, result: ProbeResult) -> None:
    result.mail = await session.command("MAIL FROM:<>")
    if result.mail is None or result.mail.kind != 2:
        return
    result.rcpt_unknown = await session.command(f"RCPT TO:<{result.unknown_rcpt}>")
    if session.smtp is None or not session.smtp.is_connected:
        return
    result.rcpt_postmaster = await session.command(f"RCPT TO:<postmaster@{domain}>")


async def probe_all(
    targets: Sequence[ProbeTarget],
    domain: str,
    opts: ProbeOptions,
    on_done: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe every target once, paced per address, within `opts.max_time` in total.

    Results come back in the order of `targets`; a probe the budget cut short says so in
    its `error` and keeps what it learned.
    """
    pacer = _Pacer(opts.min_interval)
    limit = asyncio.Semaphore(max(1, opts.concurrency))
    results = [ProbeResult(t) for t in targets]

    async def run(target: ProbeTarget, result: ProbeResult) -> None:
        async with limit:
            try:
                await probe_one(target, domain, opts, pacer, result)
            finally:
                if on_done is not None:
                    on_done(result)

    tasks = [asyncio.create_task(run(t, r)) for t, r in zip(targets, results, strict=True)]
    if not tasks:
        return results
    _done, pending = await asyncio.wait(tasks, timeout=opts.max_time)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if task in pending:
            result.error = f"stopped: the audit's time budget ({opts.max_time:g}s) ran out"
        elif not task.cancelled() and task.exception() is not None:
            result.error = f"probe failed: {task.exception()}"
    return results
