"""Two hosts, one state: two `mxguard serve` processes sharing one real redis-server.

Host A is the primary on 127.0.0.2, host B the backup on 127.0.0.3 (it forwards to A), each
its own process with its own config, data directory and log, as two machines in two rooms
would be. Clients connect from their own loopback addresses (127.0.0.50, ...), so each test
controls which "network" a client is in.

The outage tests kill the redis-server in the middle of a stream of messages and start it
again: with `on_unavailable = "tempfail"` clients get 451 while it is down, with "local" they
keep being served, and in both cases every message that got a 250 is delivered and each host
logs the outage once and the recovery once.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisTestServer, free_port, requires_redis

pytestmark = [requires_redis, pytest.mark.slow]


MXGUARD = [sys.executable, "-m", "mxguard"]
PRIMARY_IP, BACKUP_IP = "127.0.0.2", "127.0.0.3"
DOMAIN = "example.test"


@dataclass
class Host:
    name: str
    ip: str
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    trap_port: int | None = None  # host B also runs the tier's trap MX

    @property
    def stderr(self) -> str:
        return (self.dir / "stderr.log").read_text(errors="replace")

    def events(self) -> list[dict[str, object]]:
        path = self.dir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def delivered(self, user: str = "alice") -> int:
        new = self.dir / "maildir" / DOMAIN / user / "new"
        return len(list(new.iterdir())) if new.exists() else 0


def reasons_logged(hosts: list[Host], reason: str, at_least: int) -> int:
    """How often `reason` is in the hosts' event logs, waiting for their 0.2 s flush."""
    deadline = time.monotonic() + 10
    while True:
        n = sum(e.get("reason") == reason for h in hosts for e in h.events())
        if n >= at_least or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def _config(host: Host, peer: Host, redis_url: str, extra: str) -> str:
    primary, backup = (host, peer) if host.ip == PRIMARY_IP else (peer, host)
    listen_primary = f'listen = "{primary.ip}:{primary.port}"' if host is primary else ""
    listen_backup = (
        f'listen = "{backup.ip}:{backup.port}"\n'
        f'forward_to = "smtp://{primary.ip}:{primary.port}"\n'
        f'spool = "{host.dir / "spool"}"\n'
        f'source_address = "{backup.ip}"'
        if host is backup
        else ""
    )
    listen_trap = f'listen = "{backup.ip}:{backup.trap_port}"' if host is backup else ""
    return f"""
[[domain]]
name = "{DOMAIN}"
recipients = ["alice@{DOMAIN}", "bob@{DOMAIN}", "postmaster@{DOMAIN}"]

[delivery]
target = "maildir:{host.dir / "maildir"}"

[log]
events = "{host.dir / "events.jsonl"}"

[relay]
trusted_peers = ["{backup.ip}"]

[state]
url = "{redis_url}"
local_fallback = "sqlite:///{host.dir / "fallback.db"}"
key_prefix = "e2e"
{extra}

[[mx]]
host = "mx1.{DOMAIN}"
preference = 10
role = "primary"
{listen_primary}

[[mx]]
host = "mx2.{DOMAIN}"
preference = 20
role = "backup"
{listen_backup}

[[mx]]
host = "mx3.{DOMAIN}"
preference = 30
role = "trap"
{listen_trap}
"""


def _port_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


def _start(host: Host) -> None:
    err = (host.dir / "stderr.log").open("ab")
    host.proc = subprocess.Popen(
        [*MXGUARD, "serve", "--config", str(host.dir / "mxguard.toml"), "--log-level", "info"],
        cwd=host.dir,
        stdout=err,
        stderr=err,
    )
    deadline = time.monotonic() + 30
    while not _port_open(host.ip, host.port):
        if host.proc.poll() is not None or time.monotonic() > deadline:
            host.proc.kill()
            pytest.fail(f"{host.name} did not start:\n{host.stderr}")
        time.sleep(0.05)


def _stop(host: Host) -> None:
    if host.proc is None:
        return
    host.proc.send_signal(signal.SIGTERM)
    try:
        host.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        host.proc.kill()
        host.proc.wait()
    host.proc = None


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[tuple[RedisTestServer, Host, Host, list[str]]]:
    """Yields (redis, primary, backup, extra): fill `extra` with TOML for [state] and after,
    then call `start_tier`."""
    with RedisTestServer() as redis:
        a = Host("primary", PRIMARY_IP, free_port(PRIMARY_IP), tmp_path / "a")
        b = Host("backup", BACKUP_IP, free_port(BACKUP_IP), tmp_path / "b")
        b.trap_port = free_port(BACKUP_IP)
        a.dir.mkdir()
        b.dir.mkdir()
        extra: list[str] = []
        try:
            yield redis, a, b, extra
        finally:
            _stop(b)
            _stop(a)


def start_tier(redis: RedisTestServer, a: Host, b: Host, extra: str) -> None:
    for host, peer in ((a, b), (b, a)):
        (host.dir / "mxguard.toml").write_text(_config(host, peer, redis.url, extra))
    _start(a)
    _start(b)


# ---------------------------------------------------------------- a small SMTP client


def smtp_reply(
    host: Host,
    client_ip: str,
    rcpt: str = f"alice@{DOMAIN}",
    sender: str = "someone@sender.test",
    data: bool = True,
    port: int | None = None,
) -> tuple[str, int, str]:
    """One delivery attempt from `client_ip`: (stage reached, last code, last reply text)."""
    s = smtplib.SMTP(timeout=15, source_address=(client_ip, 0))
    try:
        code, text = s.connect(host.ip, port or host.port)
        if code != 220:
            return "connect", code, text.decode()
        s.ehlo("client.sender.test")
        code, text = s.mail(sender)
        if code != 250:
            return "mail", code, text.decode()
        code, text = s.rcpt(rcpt)
        if code != 250 or not data:
            return "rcpt", code, text.decode()
        code, text = s.data(b"Subject: test\r\n\r\nhello\r\n")
        return "data", code, text.decode()
    except smtplib.SMTPConnectError as exc:
        return "connect", exc.smtp_code, str(exc.smtp_error)
    except smtplib.SMTPDataError as exc:  # the DATA command itself refused (not 354)
        return "data", exc.smtp_code, exc.smtp_error.decode(errors="replace")
    except smtplib.SMTPServerDisconnected:
        return "disconnected", 421, ""
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def smtp(host: Host, client_ip: str, **kw: object) -> tuple[str, int]:
    stage, code, _ = smtp_reply(host, client_ip, **kw)  # type: ignore[arg-type]
    return stage, code


# ---------------------------------------------------------------- shared decisions


def test_rate_counters_are_shared_between_hosts(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    redis, a, b, _ = tier
    start_tier(redis, a, b, "[ratelimit]\nmessages_per_hour = 4\n")
    client = "127.0.0.50"
    results = [smtp(h, client, data=False) for h in (a, b, a, b)]
    assert results == [("rcpt", 250)] * 4
    # the fifth message is over the limit on either host: the count is one for the tier
    assert smtp(a, client, data=False) == ("mail", 450)
    assert smtp(b, client, data=False) == ("mail", 450)
    # another client network is not affected
    assert smtp(b, "127.0.1.50", data=False) == ("rcpt", 250)
    assert reasons_logged([a, b], "rate_limit", 2) == 2


def test_connection_rate_refusal_on_one_host_holds_on_the_other(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    redis, a, b, _ = tier
    start_tier(redis, a, b, "[ratelimit]\nconnections_per_minute = 3\n")
    client = "127.0.0.60"
    assert [smtp(h, client, data=False)[1] for h in (a, b, a)] == [250, 250, 250]
    assert smtp(b, client, data=False) == ("connect", 421)
    assert smtp(a, client, data=False) == ("connect", 421)


def _wait_in(text: str) -> int:
    match = re.search(r"try again in (\d+) seconds", text)
    assert match, text
    return int(match.group(1))


@pytest.mark.skipif(
    importlib.util.find_spec("mxguard.policy.checks.greylist") is None,
    reason="needs mxguard.policy.checks.greylist (the greylist check, another issue)",
)
def test_greylist_pass_on_one_host_counts_on_the_other(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    redis, a, b, _ = tier
    greylist = '[greylist]\nroles = ["primary", "backup"]\ndelay = "3s"\nauto_allow_after = 0\n'
    start_tier(redis, a, b, greylist)
    client, sender = "127.0.0.70", "news@big.sender.test"
    # a sender walks the MX records: greylisted at the primary, then straight to the backup
    stage, code, text = smtp_reply(a, client, sender=sender, data=False)
    # 3 s, or 4 when Redis's clock (which set first-seen) is a hair ahead of the host's
    assert (stage, code) == ("rcpt", 450) and _wait_in(text) in (3, 4), text
    time.sleep(1.2)
    # the backup knows the entry: the wait it announces counts from the primary's first sight
    stage, code, text = smtp_reply(b, client, sender=sender, data=False)
    assert (stage, code) == ("rcpt", 450) and _wait_in(text) == 2, text
    time.sleep(2.0)
    # the retry passes at the backup, and the primary knows the pass
    assert smtp(b, client, sender=sender, data=False) == ("rcpt", 250)
    assert smtp(a, client, sender=sender) == ("data", 250)
    assert reasons_logged([a, b], "greylisted", 2) == 2
    # a client in another /24 with the same sender and recipient starts from scratch
    assert smtp(a, "127.0.1.70", sender=sender, data=False) == ("rcpt", 450)


#: a health window short enough for a test: an MX counts as healthy after 2 s of heartbeats
WALK = '[walk]\nhealth_window = "2s"\nwindow = "60s"\n'
WALK_NEEDS = pytest.mark.skipif(
    importlib.util.find_spec("mxguard.walk") is None,
    reason="needs mxguard.walk (sightings, health, trap and blocklist, another issue)",
)


def _healthy_tier() -> None:
    """Both processes beat into the shared state; a lower MX counts once up for the window."""
    time.sleep(2.6)


@WALK_NEEDS
def test_a_walk_across_both_hosts_is_one_walk(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    redis, a, b, _ = tier
    start_tier(redis, a, b, WALK)
    _healthy_tier()
    # straight to the backup while the primary (another process) is healthy: a skip
    assert smtp(b, "127.0.0.80", data=False) == ("rcpt", 450)
    assert reasons_logged([b], "mx_walk", 1) == 1
    # the primary's sighting, written by host A, excuses the client at host B
    assert smtp(a, "127.0.0.81", data=False) == ("rcpt", 250)
    assert smtp(b, "127.0.0.81", data=False) == ("rcpt", 250)


@WALK_NEEDS
def test_trap_hit_on_one_host_is_refused_on_the_other(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    redis, a, b, _ = tier
    start_tier(redis, a, b, WALK)
    _healthy_tier()
    bot, sender = "127.0.0.90", "walker@sender.test"
    # a bot that goes for the highest MX first: the trap (host B) tempfails and blocklists it
    assert smtp(b, bot, port=b.trap_port, data=False) == ("rcpt", 451)
    assert reasons_logged([b], "trap_blocklisted", 1) == 1
    # host A refuses it from the shared blocklist
    assert smtp(a, bot, sender=sender, data=False) == ("rcpt", 554)
    assert reasons_logged([a], "blocklisted", 1) == 1
    # a real sender that walked primary, backup, then trap is tempfailed there, not blocked
    good = "127.0.0.91"
    assert smtp(a, good, data=False) == ("rcpt", 250)
    assert smtp(b, good, data=False) == ("rcpt", 250)
    assert smtp(b, good, port=b.trap_port, data=False) == ("rcpt", 451)
    assert smtp(a, good) == ("data", 250)


# ---------------------------------------------------------------- Redis outage


class Traffic:
    """Clients sending one message after another to both hosts, in a thread, until stopped."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        # (time the session started, host, stage, code): a session is judged by when it
        # began, since one that began before an outage may end, slowly, after it started
        self.results: list[tuple[float, str, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            host = self.hosts[i % len(self.hosts)]
            began = time.monotonic()
            stage, code = smtp(host, f"127.0.2.{1 + i % 200}")
            self.results.append((began, host.name, stage, code))
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def codes_between(self, start: float, end: float) -> list[int]:
        return [code for t, _, _, code in self.results if start <= t < end]


def _wait_accepts(traffic: Traffic, after: float, n: int = 4, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(c == 250 for c in traffic.codes_between(after, 1e18)) < n:
        assert time.monotonic() < deadline, traffic.results[-10:]
        time.sleep(0.05)


def _wait_delivered(expected: int, hosts: list[Host], timeout: float = 60.0) -> int:
    """Accepted mail ends in the primary's maildir (the backup forwards it there)."""
    deadline = time.monotonic() + timeout
    while True:
        got = sum(h.delivered() for h in hosts)
        if got >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _outage_run(
    tier: tuple[RedisTestServer, Host, Host, list[str]], mode: str
) -> tuple[Traffic, float, float]:
    redis, a, b, _ = tier
    extra = f'on_unavailable = "{mode}"\n\n[ratelimit]\nmessages_per_hour = 100000\n'
    start_tier(redis, a, b, extra)
    with Traffic([a, b]) as traffic:
        _wait_accepts(traffic, 0.0)
        down = time.monotonic()
        redis.kill()
        time.sleep(2.0)
        redis.start()
        up = time.monotonic()
        _wait_accepts(traffic, up + 1.0)
    return traffic, down, up


def _assert_logged_once(host: Host) -> None:
    deadline = time.monotonic() + 20  # the probe backs off to 5 s between tries
    while "is back after" not in host.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    log = host.stderr
    assert log.count("shared state redis unavailable") == 1, log
    assert log.count("shared state redis is back after") == 1, log
    assert "Traceback" not in log, log


def test_redis_outage_with_tempfail(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    traffic, down, up = _outage_run(tier, "tempfail")
    _, a, b, _ = tier
    during = traffic.codes_between(down + 0.2, up)
    assert during and set(during) == {451}, during
    accepted = sum(code == 250 for _, _, _, code in traffic.results)
    assert _wait_delivered(accepted, [a]) == accepted  # nothing accepted is lost
    assert {code for _, _, _, code in traffic.results} <= {250, 451}
    for host in (a, b):
        _assert_logged_once(host)
    assert reasons_logged([a, b], "state_unavailable", 1) >= 1


def test_redis_outage_with_local_fallback(
    tier: tuple[RedisTestServer, Host, Host, list[str]],
) -> None:
    traffic, down, up = _outage_run(tier, "local")
    _, a, b, _ = tier
    during = traffic.codes_between(down, up)
    assert during and set(during) == {250}, during
    assert {code for _, _, _, code in traffic.results} == {250}
    accepted = len(traffic.results)
    assert _wait_delivered(accepted, [a]) == accepted
    for host in (a, b):
        _assert_logged_once(host)
