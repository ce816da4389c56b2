"""SMTP throughput, side by side in one run: aiosmtpd (baseline), mxguard's engine alone,
mxguard's primary with every check on, and Postfix relaying to smtp-sink.

    .venv/bin/python bench/smtp_throughput/run.py [--messages 20000] [--concurrency 20]

The load generator is Postfix's smtp-source when installed (one message per connection),
else a bounded aiosmtplib client. Each server runs in its own process; its CPU time is read
from /proc before and after, so "CPU ms per message" is the server's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and its reaped children."""
    total = 0.0
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    todo = [pid]
    while todo:
        p = todo.pop()
        f = stats.get(p)
        if f is None:
            continue
        total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK
        todo += children.get(p, [])
    return total


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    cpu: float
    failed: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / max(1, self.messages)


def load_smtp_source(port: int, n: int, conc: int, size: int, rcpt: str) -> tuple[float, int]:
    start = time.perf_counter()
    res = subprocess.run(
        [
            "smtp-source",
            "-s",
            str(conc),
            "-m",
            str(n),
            "-l",
            str(size),
            "-f",
            "load@sender.test",
            "-t",
            rcpt,
            "-M",
            "client.sender.test",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    elapsed = time.perf_counter() - start
    failed = 0 if res.returncode == 0 else n
    if res.returncode != 0:
        print(res.stderr[-500:], file=sys.stderr)
    return elapsed, failed


async def _load_async(port: int, n: int, conc: int, size: int, rcpt: str) -> int:
    import aiosmtplib

    body = b"Subject: load\r\n\r\n" + (b"x" * 78 + b"\r\n") * (size // 80)
    queue = iter(range(n))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for _ in queue:
            try:
                await aiosmtplib.send(
                    body,
                    sender="load@sender.test",
                    recipients=[rcpt],
                    hostname="127.0.0.1",
                    port=port,
                    start_tls=False,
                    timeout=60,
                )
            except Exception:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    return failed


def load_python(port: int, n: int, conc: int, size: int, rcpt: str) -> tuple[float, int]:
    start = time.perf_counter()
    failed = asyncio.run(_load_async(port, n, conc, size, rcpt))
    return time.perf_counter() - start, failed


def mxguard_config(tmp: Path, port: int, full: bool, dns_port: int | None) -> Path:
    target = f"maildir:{tmp}/maildir" if full else "discard"
    text = f"""
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "postmaster@example.test"]
[delivery]
target = "{target}"
[state]
url = "{"sqlite:///" + str(tmp) + "/state.db" if full else "memory://"}"
[log]
events = "{tmp}/events.jsonl"
level = "warning"
[limits]
max_connections_per_network = 1000
[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "127.0.0.1:{port}"
"""
    if full:
        text += f"""
[access]
deny = ["203.0.113.0/24", "2001:db8:bad::/48"]
[dnsbl]
sites = ["zen.dnsbl.test*2", "list.dnswl.test=127.0.[0..255].[1..3]*-5"]
nameservers = ["127.0.0.1:{dns_port}"]
[ratelimit]
connections_per_minute = 1000000
messages_per_hour = 10000000
[early_talker]
action = "tempfail"
"""
    path = tmp / f"mxguard-{'full' if full else 'engine'}.toml"
    path.write_text(text)
    return path


def start_postfix(port: int, sink_port: int) -> object:
    """A private Postfix (the tests' fixture) relaying example.test to smtp-sink."""
    from tests.helpers.postfix import PostfixInstance

    pf = PostfixInstance(
        smtpd={"mx": port},
        relay_domains=["example.test"],
        relay_to=("127.0.0.1", sink_port),
        extra={
            "default_process_limit": "100",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
        },
    )
    pf.start()
    return pf


def run_case(name: str, port: int, pid: int, args: argparse.Namespace, rcpt: str) -> Result:
    load = (
        load_smtp_source if shutil.which("smtp-source") and not args.python_client else load_python
    )
    load(port, min(200, args.messages), args.concurrency, args.size, rcpt)  # warm up
    cpu0 = tree_cpu(pid)
    elapsed, failed = load(port, args.messages, args.concurrency, args.size, rcpt)
    cpu = tree_cpu(pid) - cpu0
    r = Result(name, args.messages, elapsed, cpu, failed)
    print(
        f"  {name:38} {r.rate:8.0f} msg/s  {r.cpu_ms:6.3f} CPU ms/msg  failed {failed}", flush=True
    )
    return r


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--only", default="a,b,c,d", help="which of a,b,c,d to run")
    ap.add_argument(
        "--python-client", action="store_true", help="use the aiosmtplib load generator"
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    only = set(args.only.split(","))
    py = sys.executable
    results: dict[str, Result] = {}
    gen = "aiosmtplib" if args.python_client or not shutil.which("smtp-source") else "smtp-source"
    print(
        f"{args.messages} messages of {args.size} B, {args.concurrency} concurrent sessions, "
        f"1 message per connection, load generator {gen}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mxg-bench-") as tmpdir:
        tmp = Path(tmpdir)
        os.chmod(tmp, 0o755)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if "a" in only:
                port = free_port()
                p = subprocess.Popen(
                    [py, str(HERE / "aiosmtpd_sink.py"), str(port)], stdout=subprocess.DEVNULL
                )
                procs.append(p)
                wait_port(port, p)
                results["a"] = run_case(
                    "(a) aiosmtpd, accept and discard", port, p.pid, args, "alice@example.test"
                )
                p.terminate()

            def run_mxguard(name: str, full: bool, dns_port: int | None) -> Result:
                port = free_port()
                cfg = mxguard_config(tmp, port, full, dns_port)
                p = subprocess.Popen(
                    [py, "-m", "mxguard", "serve", "-c", str(cfg)],
                    stdout=subprocess.DEVNULL,
                    cwd=tmp,
                )
                procs.append(p)
                wait_port(port, p)
                result = run_case(name, port, p.pid, args, "alice@example.test")
                p.terminate()
                return result

            if "b" in only:
                results["b"] = run_mxguard("(b) mxguard engine, checks off, discard", False, None)
            if "c" in only:
                from tests.helpers.dnsserver import DnsTestServer

                dns = DnsTestServer()
                dns.start()
                dns.set_zone("zen.dnsbl.test", "")
                dns.set_zone("list.dnswl.test", "")
                dns_port = int(dns.nameserver.rsplit(":", 1)[1])
                results["c"] = run_mxguard(
                    "(c) mxguard primary, all checks, Maildir", True, dns_port
                )
                dns.stop()
                delivered = sum(1 for _ in (tmp / "maildir/example.test/alice/new").iterdir())
                print(f"      Maildir holds {delivered} messages (fsync'd before each 250)")
            if "d" in only and shutil.which("postfix") and shutil.which("smtp-sink"):
                sink_port = free_port()
                sink = subprocess.Popen(
                    ["smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{sink_port}", "256"],
                    stdout=subprocess.DEVNULL,
                )
                procs.append(sink)
                wait_port(sink_port, sink)
                port = free_port()
                pf = start_postfix(port, sink_port)
                try:
                    results["d"] = run_case(
                        "(d) Postfix, queue to disk, relay to smtp-sink",
                        port,
                        pf.master_pid(),  # type: ignore[attr-defined]
                        args,
                        "alice@example.test",
                    )
                finally:
                    pf.stop()  # type: ignore[attr-defined]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
    if "a" in results:
        base = results["a"]
        print("ratios to (a) aiosmtpd:")
        for key in ("b", "c", "d"):
            if key in results:
                r = results[key]
                print(
                    f"  ({key}) / (a): {r.rate / base.rate:5.2f}x msg/s, "
                    f"{r.cpu_ms / base.cpu_ms:5.2f}x CPU per message"
                )
    if args.json:
        args.json.write_text(
            json.dumps(
                {k: vars(v) | {"rate": v.rate, "cpu_ms": v.cpu_ms} for k, v in results.items()},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
