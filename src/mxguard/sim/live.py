"""`mxguard simulate --live`: the default tier on loopback, real SMTP senders, a seed-000 table.

A newcomer's tour in one command. It starts the configured tier in this process (the same
`build_server`/`start` as `serve`, with its files in a temporary directory), drives a short
scripted mix of real SMTP clients at it over loopback sockets (aiosmtplib), takes the primary
down for the middle third of the run so that good senders walk to the backup, then stops
the tier and reads its JSON event log back with `mxguard report`.

Two timings are shortened so that half a minute shows a whole story: greylisting waits
10 s instead of minutes, and the backup retries forwarding after 5 s. Every client address
is on loopback (127.0.1.x for good senders, 127.0.66.x for bots); 127.0.0.2 stays the
backup's forwarding address, which the primary trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import socket
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import aiosmtplib

from mxguard.config import Config, MxSettings, effective_toml, load_config, parse_hostport
from mxguard.policy.facts import Role

GREYLIST_DELAY = 10.0
RETRY_AFTER = 12.0  # the good senders' retry interval, just past the greylist delay


@dataclass
class Tally:
    attempted: int = 0
    delivered: int = 0
    deferred: int = 0
    given_up: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def note(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.bind((host, 0))  # the usual port is taken (a running `serve`?): any free one
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def live_config(cfg: Config, tmp: Path) -> tuple[Config, dict[str, socket.socket]]:
    """The config with its files under `tmp`, its listeners on sockets bound now, and the
    demo's short timings."""
    socks: dict[str, socket.socket] = {}
    mx: list[MxSettings] = []
    for m in cfg.mx:
        if m.listen and m.role is not Role.FAKE:
            host, port = parse_hostport(m.listen)
            if host not in ("127.0.0.1", "::1") and not host.startswith("127."):
                host = "127.0.0.1"  # the tour stays on loopback whatever the config says
            sock = _bind(host.strip("[]"), port)
            bound = sock.getsockname()[1]
            socks[m.host] = sock
            listen = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
            spool = str(tmp / f"spool-{m.host}") if m.role is Role.BACKUP else m.spool
            mx.append(dataclasses.replace(m, listen=listen, spool=spool))
        else:
            mx.append(m)
    new = dataclasses.replace(
        cfg,
        mx=tuple(mx),
        state=dataclasses.replace(
            cfg.state,
            url=f"sqlite:///{tmp / 'state.db'}",
            local_fallback=f"sqlite:///{tmp / 'fallback.db'}",
        ),
        log=dataclasses.replace(cfg.log, events=str(tmp / "events.jsonl")),
        delivery=dataclasses.replace(cfg.delivery, target=f"maildir:{tmp / 'maildir'}"),
        greylist=dataclasses.replace(cfg.greylist, delay=GREYLIST_DELAY),
        queue=dataclasses.replace(cfg.queue, retry_min=5.0, retry_max=10.0),
    )
    return new, socks


async def smtp_try(
    host: str, port: int, source: str, sender: str, rcpts: list[str], body: bytes
) -> str:
    """One session; the outcome as a sender sees it: refused, banner4/5, rcpt4/5, data4/5, ok."""
    client = aiosmtplib.SMTP(hostname=host, port=port, source_address=(source, 0), timeout=10,
                             local_hostname="client.example", start_tls=False)  # fmt: skip
    try:
        await client.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        return "banner5" if exc.code >= 500 else "banner4"
    except (OSError, aiosmtplib.SMTPException):
        return "refused"
    try:
        await client.ehlo()
        await client.mail(sender)
        accepted = 0
        worst = 0
        for r in rcpts:
            try:
                await client.rcpt(r)
                accepted += 1
            except aiosmtplib.SMTPRecipientRefused as exc:
                worst = max(worst, exc.code)
        if not accepted:
            return "rcpt5" if worst >= 500 else "rcpt4"
        try:
            await client.data(body)
        except aiosmtplib.SMTPResponseException as exc:
            return "data5" if exc.code >= 500 else "data4"
        return "ok" if not worst else ("ok+rcpt5" if worst >= 500 else "ok+rcpt4")
    except aiosmtplib.SMTPServerDisconnected:
        return "banner4"
    except aiosmtplib.SMTPResponseException as exc:
        return "rcpt5" if exc.code >= 500 else "rcpt4"
    finally:
        with contextlib.suppress(Exception):
            await client.quit()
        client.close()


class Driver:
    def __init__(self, cfg: Config, seconds: float, seed: int) -> None:
        self.cfg = cfg
        self.seconds = seconds
        self.rng = Random(seed)
        self.records = sorted(
            (m for m in cfg.mx if m.role is not Role.RETIRED),
            key=lambda m: m.preference if m.preference is not None else 65536,
        )
        domain = cfg.domain[0]
        self.domain = domain.name
        self.valid = [r for r in domain.recipients if not r.startswith("postmaster")] or [
            f"postmaster@{domain.name}"
        ]
        self.tallies: dict[str, Tally] = {}
        self.ids = itertools.count(1)
        self.end = 0.0
        self.pending: set[asyncio.Task[None]] = set()

    def addr(self, mx: MxSettings) -> tuple[str, int] | None:
        if not mx.listen or mx.role is Role.FAKE:
            return None
        host, port = parse_hostport(mx.listen)
        return host.strip("[]"), port

    def body(self, sender: str, rcpt: str) -> bytes:
        n = next(self.ids)
        return (
            f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: mxguard live demo {n}\r\n"
            f"Message-ID: <demo{n}.{int(time.time())}@client.example>\r\n\r\nHello.\r\n"
        ).encode()

    def tally(self, name: str) -> Tally:
        return self.tallies.setdefault(name, Tally())

    async def good_mta(self, n: int) -> None:
        """Postfix-like: MX order, next MX after refused / 4xx banner / 4xx RCPT, two
        sessions per attempt, retry after RETRY_AFTER until the run ends."""
        t = self.tally("good: postfix-like walker")
        t.attempted += 1
        source = f"127.0.1.{1 + n % 200}"
        sender = f"alice{n}@good{n % 7}.example"
        rcpt = self.rng.choice(self.valid)
        body = self.body(sender, rcpt)
        while True:
            sessions = 0
            for mx in self.records:
                where = self.addr(mx)
                outcome = (
                    "refused"
                    if where is None
                    else await smtp_try(*where, source, sender, [rcpt], body)
                )
                t.note(f"{mx.role.value}:{outcome}")
                if outcome.startswith("ok"):
                    t.delivered += 1
                    return
                if outcome in ("rcpt5", "data5"):
                    t.given_up += 1
                    return
                if outcome not in ("refused", "banner4", "banner5"):
                    sessions += 1
                if sessions >= 2:
                    break
            if time.monotonic() + RETRY_AFTER > self.end:
                t.deferred += 1
                return
            await asyncio.sleep(RETRY_AFTER)

    async def bot(self, name: str, mx: MxSettings | None, n: int, unknown: bool) -> None:
        t = self.tally(name)
        t.attempted += 1
        if mx is None or self.addr(mx) is None:
            t.note("no such MX")
            return
        source = f"127.0.66.{1 + n % 250}"
        sender = f"x{n}@forged.example"
        rcpt = f"nobody{n}@{self.domain}" if unknown else self.rng.choice(self.valid)
        host, port = self.addr(mx)  # type: ignore[misc]
        outcome = await smtp_try(host, port, source, sender, [rcpt], self.body(sender, rcpt))
        t.note(f"{mx.role.value}:{outcome}")
        if outcome.startswith("ok"):
            t.delivered += 1
        else:
            t.given_up += 1

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._guarded(coro))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception as exc:  # one broken client must not end the tour
            self.tally("errors").note(type(exc).__name__)

    async def drive(self, outage: tuple[asyncio.Event, asyncio.Event]) -> None:
        """Arrivals for `seconds`: good mail, and bots of the kinds the seeds describe."""
        start = time.monotonic()
        self.end = start + self.seconds
        backup = next((m for m in self.records if m.role is Role.BACKUP), None)
        highest = next((m for m in reversed(self.records) if m.role is not Role.FAKE), None)
        first = self.records[0] if self.records else None
        retired = next((m for m in self.cfg.mx if m.role is Role.RETIRED), None)
        n = 0
        while time.monotonic() < self.end - 2:
            elapsed = time.monotonic() - start
            if elapsed > self.seconds / 3 and not outage[0].is_set():
                outage[0].set()
            if elapsed > 2 * self.seconds / 3 and not outage[1].is_set():
                outage[1].set()
            n += 1
            pick = self.rng.random()
            if pick < 0.25:
                self.spawn(self.good_mta(n))
            elif pick < 0.45:
                self.spawn(self.bot("spam: bot at the first MX", first, n, self.rng.random() < 0.8))
            elif pick < 0.65:
                self.spawn(self.bot("spam: backup-first bot", backup, n, self.rng.random() < 0.8))
            elif pick < 0.80:
                self.spawn(self.bot("spam: bot at the highest MX", highest, n, True))
            elif pick < 0.90 and retired is not None:
                self.spawn(self.bot("spam: cached old address", retired, n, True))
            else:
                self.spawn(self.bot("spam: dictionary attack", first, n, True))
            await asyncio.sleep(self.rng.uniform(0.1, 0.4))
        outage[0].set()
        outage[1].set()
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)


async def _outage(server: object, primary: str, socks: dict[str, socket.socket],
                  events: tuple[asyncio.Event, asyncio.Event], say: object) -> None:  # fmt: skip
    """Stop the primary's listener for the middle third, then start it again on its port."""
    listeners = [x for x in server.listeners if x.mx.host == primary]  # type: ignore[attr-defined]
    if not listeners:
        return
    listener = listeners[0]
    await events[0].wait()
    host, port = listener.bound()[0]
    await listener.stop()
    say(f"  primary {primary} stopped (connections refused)")  # type: ignore[operator]
    await events[1].wait()
    await listener.start(sock=_bind(host, port))
    say(f"  primary {primary} back")  # type: ignore[operator]


async def _live(cfg: Config, tmp: Path, seconds: float, seed: int) -> tuple[Path, Driver]:
    from mxguard.serve import build_server, describe, start, stop

    cfg2, socks = live_config(cfg, tmp)
    (tmp / "mxguard.toml").write_text(effective_toml(cfg2), encoding="utf-8")
    server = build_server(cfg2)
    await start(server, socks)
    for line in describe(server):
        print("  " + line, flush=True)
    driver = Driver(cfg2, seconds, seed)
    events = (asyncio.Event(), asyncio.Event())
    primary = next((m.host for m in cfg2.mx if m.role is Role.PRIMARY), "")
    outage = asyncio.ensure_future(
        _outage(server, primary, socks, events, lambda s: print(s, flush=True))
    )
    try:
        await driver.drive(events)
        await asyncio.wait_for(outage, 10)
        await asyncio.sleep(6)  # let the backup forward what it queued while the primary was away
    finally:
        await stop(server)
    return tmp / "events.jsonl", driver


def run_live(config_path: str | None, seconds: float, seed: int) -> int:
    cfg = load_config(config_path)
    seconds = max(6.0, min(seconds, 600.0))
    print(f"mxguard live tour: {cfg.source}, {seconds:.0f}s of real SMTP on loopback", flush=True)
    with tempfile.TemporaryDirectory(prefix="mxguard-live-") as d:
        tmp = Path(d)
        events, driver = asyncio.run(_live(cfg, tmp, seconds, seed))
        print("\nwhat the senders saw:")
        for name, t in sorted(driver.tallies.items()):
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(t.outcomes.items()))
            print(f"  {name}: {t.attempted} sent, {t.delivered} delivered, "
                  f"{t.deferred} still deferred, {t.given_up} gave up  [{outcomes}]")  # fmt: skip
        print("\nwhat the tier logged (mxguard report on its event log):", flush=True)
        return _report(tmp / "mxguard.toml", events)


def _report(config: Path, events: Path) -> int:
    from mxguard.features import optional

    report = optional("mxguard.report_cli", "report")
    if report is None:
        return _count(events)
    try:
        report.main(
            ["--config", str(config), "--peer", "127.0.0.2", "--no-progress", str(events)],
            standalone_mode=False,
        )
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _count(events: Path) -> int:
    """Without the report module: decisions per MX and reason, counted plainly."""
    import json

    counts: dict[tuple[str, str], int] = {}
    for line in events.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            key = (str(e.get("mx")), f"{e.get('action')}:{e.get('reason')}")
            counts[key] = counts.get(key, 0) + 1
    for (mx, what), n in sorted(counts.items()):
        print(f"  {mx:28} {what:32} {n}")
    return 0
