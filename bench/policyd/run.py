"""mxguard policyd (SQLite state) against Debian's postgrey: one request sequence, one run.

The sequence is what a greylisting policy server sees: first sights of new triplets (defer),
early retries (defer), retries after the delay (pass, the first one with a PREPEND), and
repeats of passed triplets (pass). It is sent twice per server and connection count, phase 1,
a pause longer than the delay, then phase 2; only the two phases are timed. Each triplet keeps
to one connection, so its order is the same for both servers and their decisions must match.

    .venv/bin/python bench/policyd/run.py            # N=20000, 1 and 8 connections
    .venv/bin/python bench/policyd/run.py --n 4000 --connections 1

Traffic stays on 127.0.0.1; the addresses inside the requests are only data.
"""

from __future__ import annotations

import argparse
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

POSTGREY = "/usr/sbin/postgrey"
#: `[policyd].workers` for mxguard (`--workers`)
WORKERS = 1
RECIPIENTS = [f"{name}@example.test" for name in ("alice", "bob", "carol", "dave", "erin")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def letters(n: int) -> str:
    """Digits would be folded by postgrey (user1@ == user2@), so senders differ in letters."""
    out = ""
    n += 26 * 26
    while n:
        n, r = divmod(n, 26)
        out += chr(ord("a") + r)
    return out


@dataclass(frozen=True)
class Request:
    triplet: int
    phase: int

    def encode(self) -> bytes:
        t = self.triplet
        return (
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
            f"client_address=10.{(t >> 8) & 255}.{t & 255}.7\nclient_name=unknown\n"
            f"client_port={20000 + t % 30000}\nhelo_name=mail.{letters(t)}.example\n"
            f"sender={letters(t)}@{letters(t // 7)}.example\n"
            f"recipient={RECIPIENTS[t % len(RECIPIENTS)]}\n"
            f"instance={t:x}.{self.phase}\nserver_address=127.0.0.1\nserver_port=25\n"
            "queue_id=\nsize=0\nrecipient_count=0\n\n"
        ).encode()


def sequence(n: int, seed: int = 5) -> tuple[list[Request], list[Request]]:
    """Phase 1: 70 % new triplets, 30 % early retries. Phase 2: 45 % first retries after the
    delay, 25 % repeats of passed ones, 30 % new."""
    rng = random.Random(seed)
    half = n // 2
    phase1: list[Request] = []
    seen: list[int] = []
    next_id = 0
    for _ in range(half):
        if seen and rng.random() < 0.30:
            # an early retry, a few requests later: well inside the delay at any speed
            phase1.append(Request(rng.choice(seen[-20:]), 1))
        else:
            seen.append(next_id)
            phase1.append(Request(next_id, 1))
            next_id += 1
    waiting = seen[:]
    rng.shuffle(waiting)
    passed: list[int] = []
    phase2: list[Request] = []
    for _ in range(n - half):
        r = rng.random()
        if r < 0.45 and waiting:
            t = waiting.pop()
            passed.append(t)
        elif r < 0.70 and passed:
            t = rng.choice(passed)
        else:
            t = next_id
            next_id += 1
        phase2.append(Request(t, 2))
    return phase1, phase2


def is_defer(action: str) -> bool:
    return action.upper().startswith(("DEFER", "450", "451", "4"))


def drive(port: int, requests: list[Request], connections: int) -> tuple[float, list[str]]:
    """Send `requests` over `connections` persistent connections; one outstanding each.

    A plain selector loop over blocking sockets (recv only when readable), so the client
    costs a few microseconds per request and the figure measures the server, not asyncio.
    """
    lanes: list[list[int]] = [[] for _ in range(connections)]
    for i, req in enumerate(requests):
        lanes[req.triplet % connections].append(i)
    answers = [""] * len(requests)
    payload = [r.encode() for r in requests]
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    # per connection: [indexes, next position, unparsed reply bytes]
    todo: dict[int, list] = {}
    for indexes in lanes:
        if not indexes:
            continue
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
        todo[sock.fileno()] = [indexes, 0, b""]
        sel.register(sock, selectors.EVENT_READ, sock)
    start = time.perf_counter()
    try:
        for sock in socks:
            sock.sendall(payload[todo[sock.fileno()][0][0]])
        left = len(todo)
        while left:
            ready = sel.select(timeout=30.0)
            if not ready:
                raise RuntimeError("no reply for 30 s")
            for key, _ in ready:
                sock = key.data
                lane = todo[sock.fileno()]
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("server closed the connection")
                buf = lane[2] + data
                while b"\n\n" in buf:
                    reply, buf = buf.split(b"\n\n", 1)
                    indexes, pos = lane[0], lane[1]
                    answers[indexes[pos]] = reply.decode().strip().removeprefix("action=")
                    pos += 1
                    lane[1] = pos
                    if pos < len(indexes):
                        sock.sendall(payload[indexes[pos]])
                    else:
                        sel.unregister(sock)
                        left -= 1
                lane[2] = buf
        return time.perf_counter() - start, answers
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_postgrey(tmp: Path, delay: int) -> tuple[subprocess.Popen[bytes], int]:
    dbdir = tmp / "postgrey"
    dbdir.mkdir()
    shutil.chown(dbdir, "postgrey", "postgrey")  # it drops to user postgrey when run as root
    port = free_port()
    proc = subprocess.Popen(
        [POSTGREY, f"--inet=127.0.0.1:{port}", f"--dbdir={dbdir}", f"--delay={delay}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc, port


def start_mxguard(tmp: Path, delay: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp / "mxguard.toml"
    config.write_text(
        f"""
[[domain]]
name = "example.test"
recipients = {RECIPIENTS!r}

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"
level = "warning"

[greylist]
roles = ["primary"]
delay = {delay}

[policyd]
listen = "127.0.0.1:{port}"
workers = {WORKERS}

[[mx]]
host = "mx.example.test"
role = "primary"
preference = 10
listen = "127.0.0.1:25"
""".replace("'", '"')
    )
    mxguard = Path(sys.executable).parent / "mxguard"
    proc = subprocess.Popen(
        [str(mxguard), "policyd", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of one process, all its threads (/proc/PID/stat), and of its
    live children (mxguard's workers).

    Other benchmarks share this machine, so wall-clock rates swing; the server's own CPU per
    request is the steadier figure."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(cpu_seconds(int(child)) for child in children)


def run_one(name: str, n: int, connections: int, delay: int) -> tuple[float, float, list[str]]:
    """(wall seconds, server CPU seconds, answers) for the two timed phases."""
    tmp = Path(tempfile.mkdtemp(prefix=f"mxg-bench-policyd-{name}-"))
    os.chmod(tmp, 0o755)
    starter = start_postgrey if name == "postgrey" else start_mxguard
    proc, port = starter(tmp, delay)
    try:
        phase1, phase2 = sequence(n)
        c0 = cpu_seconds(proc.pid)
        t1, a1 = drive(port, phase1, connections)
        c1 = cpu_seconds(proc.pid)
        time.sleep(delay + 1.5)
        c2 = cpu_seconds(proc.pid)
        t2, a2 = drive(port, phase2, connections)
        c3 = cpu_seconds(proc.pid)
        return t1 + t2, (c1 - c0) + (c3 - c2), a1 + a2
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--connections", default="1,8")
    ap.add_argument("--delay", type=int, default=3, help="greylist delay, seconds (both servers)")
    ap.add_argument(
        "--workers", type=int, default=1, help="mxguard's [policyd].workers (0: one per CPU)"
    )
    args = ap.parse_args()
    global WORKERS
    WORKERS = args.workers
    if not os.path.exists(POSTGREY):
        print("postgrey is not installed (apt-get install postgrey)", file=sys.stderr)
        return 2
    print(
        f"N={args.n} requests, greylist delay {args.delay}s, SQLite state for mxguard, "
        f"{args.workers or os.cpu_count()} worker(s)"
    )
    print("(us/req: the server process's own CPU, user + system, per request)")
    print(f"{'conns':>5} {'postgrey req/s':>15} {'mxguard req/s':>14} {'ratio':>6} "
          f"{'pg us/req':>10} {'mx us/req':>10} {'defer':>6} {'pass':>6} {'mismatch':>8}")  # fmt: skip
    worst = 0
    for c in (int(x) for x in args.connections.split(",")):
        pg_time, pg_cpu, pg = run_one("postgrey", args.n, c, args.delay)
        mx_time, mx_cpu, mx = run_one("mxguard", args.n, c, args.delay)
        pg_rate, mx_rate = args.n / pg_time, args.n / mx_time
        mismatch = [
            i for i, (a, b) in enumerate(zip(pg, mx, strict=True)) if is_defer(a) != is_defer(b)
        ]
        defers = sum(is_defer(a) for a in mx)
        print(f"{c:>5} {pg_rate:>15,.0f} {mx_rate:>14,.0f} {mx_rate / pg_rate:>5.1f}x "
              f"{pg_cpu / args.n * 1e6:>10,.0f} {mx_cpu / args.n * 1e6:>10,.0f} "
              f"{defers:>6} {args.n - defers:>6} {len(mismatch):>8}")  # fmt: skip
        for i in mismatch[:5]:
            print(f"      #{i}: postgrey {pg[i]!r} / mxguard {mx[i]!r}")
        worst = max(worst, 1 if mismatch else 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
