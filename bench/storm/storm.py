"""Spam storm against a backup MX (seed 004: 100,000 messages in two hours, good mail delayed 3 h).

Starts, all on loopback:
- a DNS server (its own process) with a DNSBL zone listing 127.2.0.0/16,
- a primary stand-in (aiosmtpd, its own process) that logs when each Message-ID arrives,
- `mxguard serve` with one backup MX (greylisting, DNSBL, recipient table, durable spool),
then runs SESSIONS SMTP sessions against the backup from many 127.x.y.z source addresses:

  40% bots to unknown recipients        -> 550 at RCPT
  30% bots, first contact, never retry  -> 450 greylisted
  20% bots from DNSBL-listed addresses  -> 554 at RCPT
  10% good mail: first attempt (450), then a retry after the greylist delay (250, spooled)

and prints sessions/s, the backup's peak RSS, the spool's peak bytes, the time to drain the
queue to the primary after the load ends, and the latency of good mail from its first attempt
to its arrival at the primary beyond the greylist delay (p50/p99).

    .venv/bin/python bench/storm/storm.py [--sessions 100000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MXGUARD = str(Path(sys.executable).with_name("mxguard"))
GREYLIST_DELAY = 5.0
USERS = [f"user{i}@example.test" for i in range(200)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


DNS_SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.helpers.dnsserver import DnsTestServer
s = DnsTestServer().start()
s.set_zone("bl.storm.test", "*.2.127 A 127.0.0.2")
print(s.nameserver, flush=True)
while True:
    time.sleep(3600)
"""


@dataclass
class Stats:
    sessions: int = 0
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    first_attempt: dict[str, float] = field(default_factory=dict)
    accepted_good: set[str] = field(default_factory=set)


async def read_reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def session(
    port: int, src: str, sender: str, rcpt: str, body: bytes | None
) -> tuple[int, int | None]:
    """One SMTP session; returns (RCPT code, end-of-data code or None)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
    try:
        if await read_reply(reader) != 220:
            return 421, None
        writer.write(b"EHLO mta.storm.test\r\n")
        await read_reply(reader)
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        if await read_reply(reader) != 250:
            return 452, None
        writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
        code = await read_reply(reader)
        final = None
        if code == 250 and body is not None:
            writer.write(b"DATA\r\n")
            if await read_reply(reader) == 354:
                writer.write(body + b".\r\n")
                final = await read_reply(reader)
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(ConnectionError):
            await read_reply(reader)
        return code, final
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def load(port: int, sessions: int, concurrency: int, stats: Stats, seed: int) -> float:
    rng = random.Random(seed)
    good_count = sessions // 20  # each good message costs two sessions: 10% of all
    kinds = ["unknown"] * 40 + ["greylist"] * 30 + ["dnsbl"] * 20
    plan: list[str] = []
    for _ in range(sessions - 2 * good_count):
        plan.append(rng.choice(kinds))
    # good first attempts spread evenly through the run (a steady trickle)
    step = max(1, len(plan) // max(1, good_count))
    for i in range(good_count):
        plan.insert(min(len(plan), i * (step + 1)), f"good{i}")
    plan.reverse()
    retries: list[tuple[float, str]] = []  # (due, good id)
    body_of: dict[str, bytes] = {}

    def good_sender(gid: str) -> tuple[str, str, str]:
        n = int(gid[4:])
        return f"127.3.{n % 250}.{1 + n // 250 % 250}", f"news{n}@goodsender.test", USERS[n % 200]

    async def one() -> bool:
        """Run one session if one is due; False when only waiting for good mail's retries."""
        now = time.monotonic()
        if retries and retries[0][0] <= now:
            _, gid = heapq.heappop(retries)
            src, sender, rcpt = good_sender(gid)
            code, final = await session(port, src, sender, rcpt, body_of[gid])
            stats.codes[f"{code}+{final}"] = stats.codes.get(f"{code}+{final}", 0) + 1
            if final == 250:
                stats.accepted_good.add(gid)
            else:
                heapq.heappush(retries, (time.monotonic() + 1.0, gid))  # try again soon
            return True
        if not plan:
            await asyncio.sleep(0.05)
            return False
        kind = plan.pop()
        r = rng.randrange(1 << 24)
        a, b, c = r >> 16 & 255, r >> 8 & 255, r & 255
        if kind == "unknown":
            code, _ = await session(
                port, f"127.1.{a}.{b}", f"x{r}@spam.test", f"nx{r}@example.test", None
            )
        elif kind == "greylist":
            code, _ = await session(port, f"127.4.{a}.{b}", f"y{r}@spam.test", USERS[c % 200], None)
        elif kind == "dnsbl":
            code, _ = await session(port, f"127.2.{a}.{b}", f"z{r}@spam.test", USERS[c % 200], None)
        else:
            gid = kind
            body_of[gid] = (
                f"Message-ID: <{gid}@goodsender.test>\r\nSubject: good\r\n\r\n".encode()
                + b"Hello, this is legitimate mail.\r\n" * 20
            )
            src, sender, rcpt = good_sender(gid)
            stats.first_attempt[gid] = time.time()
            code, final = await session(port, src, sender, rcpt, body_of[gid])
            if final == 250:
                stats.accepted_good.add(gid)
            else:
                heapq.heappush(retries, (time.monotonic() + GREYLIST_DELAY + 0.2, gid))
        stats.codes[str(code)] = stats.codes.get(str(code), 0) + 1
        return True

    async def worker() -> None:
        while plan or retries:
            try:
                if await one():
                    stats.sessions += 1
            except (OSError, ConnectionError, ValueError):
                stats.errors += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - start


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def spool_state(spool: Path) -> tuple[int, int]:
    """(queued messages, bytes) from the spool index, read as `mxguard queue stats` does."""
    try:
        db = sqlite3.connect(f"file:{spool / 'index.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            n, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        finally:
            db.close()
        return int(n), int(size)
    except sqlite3.Error:
        return 0, 0


async def watch_spool(spool: Path, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], spool_state(spool)[1])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mxguard-storm-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dns = subprocess.Popen(
            [sys.executable, "-c", DNS_SERVER.format(root=str(ROOT))], stdout=subprocess.PIPE
        )
        procs.append(dns)
        assert dns.stdout is not None
        nameserver = dns.stdout.readline().decode().strip()
        primary_port, backup_port = free_port(), free_port()
        arrivals = work / "arrivals.log"
        primary = subprocess.Popen(
            [sys.executable, str(HERE / "primary_sink.py"), str(primary_port), str(arrivals)],
            stdout=subprocess.DEVNULL,
        )
        procs.append(primary)
        wait_port(primary_port, primary, "primary")
        users = ", ".join(f'"{u}"' for u in [*USERS, "postmaster@example.test"])
        spool = work / "spool"
        (work / "mxguard.toml").write_text(
            textwrap.dedent(f"""
            [[domain]]
            name = "example.test"
            recipients = [{users}]
            [state]
            url = "sqlite:///{work}/state.db"
            [log]
            events = "{work}/events.jsonl"
            level = "warning"
            [delivery]
            target = "discard"
            [relay]
            trusted_peers = ["127.0.0.2/32"]
            [limits]
            max_connections = 2000
            max_connections_per_network = 50
            [dnsbl]
            sites = ["bl.storm.test"]
            nameservers = ["{nameserver}"]
            timeout = "2s"
            [greylist]
            roles = ["backup"]
            delay = "{GREYLIST_DELAY}s"
            retry_window = "1h"
            auto_allow_after = 0
            [queue]
            retry_min = "1s"
            retry_max = "10s"
            concurrency = 8
            [[mx]]
            host = "mail.example.test"
            preference = 10
            role = "primary"
            [[mx]]
            host = "backup.example.test"
            preference = 20
            role = "backup"
            listen = "127.0.0.1:{backup_port}"
            forward_to = "smtp://127.0.0.1:{primary_port}"
            spool = "{spool}"
            source_address = "127.0.0.2"
            """)
        )
        backup = subprocess.Popen(
            [MXGUARD, "serve", "-c", str(work / "mxguard.toml")],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "serve.log", "wb"),  # noqa: SIM115
        )
        procs.append(backup)
        wait_port(backup_port, backup, "mxguard")

        stats = Stats()
        peak = [0]

        async def run() -> tuple[float, float]:
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_spool(spool, peak, stop))
            duration = await load(backup_port, args.sessions, args.concurrency, stats, args.seed)
            load_end = time.monotonic()
            while spool_state(spool)[0] > 0 and time.monotonic() - load_end < 300:
                await asyncio.sleep(0.1)
            drain = time.monotonic() - load_end
            stop.set()
            await watcher
            return duration, drain

        cpu0, own0 = proc_cpu(backup.pid), time.process_time()
        harness0 = proc_cpu(dns.pid) + proc_cpu(primary.pid)
        duration, drain = asyncio.run(run())
        backup_cpu, own_cpu = proc_cpu(backup.pid) - cpu0, time.process_time() - own0
        harness_cpu = proc_cpu(dns.pid) + proc_cpu(primary.pid) - harness0
        time.sleep(0.5)
        rss = peak_rss(backup.pid)
        arrived: dict[str, float] = {}
        for line in arrivals.read_text().splitlines():
            ts, msgid = line.split(" ", 1)
            arrived.setdefault(msgid.strip("<>").split("@")[0], float(ts))
        lat = [
            arrived[g] - stats.first_attempt[g] - GREYLIST_DELAY
            for g in stats.accepted_good
            if g in arrived
        ]
        lost = [g for g in stats.accepted_good if g not in arrived]
        print(
            f"sessions            {stats.sessions} in {duration:.1f}s ({stats.sessions / duration:.0f}/s), "
            f"client errors {stats.errors}"
        )
        print(f"RCPT answers        {dict(sorted(stats.codes.items()))}")
        print(
            f"CPU per session     backup {1000 * backup_cpu / stats.sessions:.3f} ms, "
            f"load generator {1000 * own_cpu / stats.sessions:.3f} ms, "
            f"DNS server and primary stand-in {1000 * harness_cpu / stats.sessions:.3f} ms"
        )
        print(f"backup peak RSS     {rss / 1024**2:.1f} MiB")
        print(f"spool peak          {peak[0]} bytes")
        print(f"drain after load    {drain:.2f}s")
        print(
            f"good mail           {len(stats.first_attempt)} sent, {len(stats.accepted_good)} accepted, "
            f"{len(lat)} arrived, {len(lost)} lost"
        )
        print(
            f"good latency beyond greylist delay  p50 {pct(lat, 50):.2f}s  p99 {pct(lat, 99):.2f}s"
        )
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("STORM_KEEP") is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
