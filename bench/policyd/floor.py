"""How fast can a Python greylisting policy server be at all, on this machine?

A floor for issue 5's target (mxguard policyd at 5x postgrey's requests/s): the least a
Python server that keeps greylist triplets in SQLite can do per request, driven by the very
sequence and client of `run.py`, beside postgrey in the same run. It is not mxguard: it
parses only the three attributes it needs, runs no other check, writes no event line and no
metrics, and commits its writes in groups every 5 ms, as mxguard's `greylist_now` does. If
this cannot reach 5x, no policy server in Python with SQLite state can.

    .venv/bin/python bench/policyd/floor.py                # N=20000, 1 and 8 connections
    .venv/bin/python bench/policyd/floor.py --blocking     # a thread per connection instead
    .venv/bin/python bench/policyd/floor.py --serve PORT DB DELAY   # (the server itself)

`--blocking` serves each connection on a thread of its own with blocking sockets: no event
loop between the socket and the answer, the other common shape of a small policy server.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # the driver, the sequence and postgrey's start

DEFER = b"action=DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/\n\n"
PASS = b"action=DUNNO\n\n"


class Floor(asyncio.Protocol):
    """One connection: requests in, one reply each, nothing else."""

    def __init__(self, db: sqlite3.Connection, delay: float, pending: list[tuple]) -> None:
        self.db, self.delay, self.pending = db, delay, pending
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n\n" in self.buf:
            block, self.buf = self.buf.split(b"\n\n", 1)
            self.transport.write(self.answer(block))  # type: ignore[attr-defined]

    def answer(self, block: bytes) -> bytes:
        attrs = dict(line.split(b"=", 1) for line in block.split(b"\n") if b"=" in line)
        net = attrs[b"client_address"].rsplit(b".", 1)[0]
        key = b"/".join((net, attrs[b"sender"].lower(), attrs[b"recipient"].lower())).decode()
        now = time.time()
        row = self.db.execute("SELECT first FROM t WHERE k = ?", (key,)).fetchone()
        first = now if row is None else row[0]
        if not self.pending:
            asyncio.get_running_loop().call_later(0.005, self.flush)
        self.pending.append((key, first, now))
        return PASS if now - first >= self.delay else DEFER

    def flush(self) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", self.pending)
        self.pending.clear()


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, first REAL, last REAL)")
    db.isolation_level = ""  # `with db:` groups a flush into one transaction
    return db


class Blocking:
    """The same answers from threads: one per connection, one lock around the database."""

    def __init__(self, db: sqlite3.Connection, delay: float) -> None:
        self.db, self.delay = db, delay
        self.lock = threading.Lock()
        self.pending: list[tuple] = []
        self.flushed = time.monotonic()

    def serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while data := conn.recv(65536):
                buf += data
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    conn.sendall(self.answer(block))

    def answer(self, block: bytes) -> bytes:
        attrs = dict(line.split(b"=", 1) for line in block.split(b"\n") if b"=" in line)
        net = attrs[b"client_address"].rsplit(b".", 1)[0]
        key = b"/".join((net, attrs[b"sender"].lower(), attrs[b"recipient"].lower())).decode()
        now = time.time()
        with self.lock:
            row = self.db.execute("SELECT first FROM t WHERE k = ?", (key,)).fetchone()
            first = now if row is None else row[0]
            self.pending.append((key, first, now))
            if time.monotonic() - self.flushed >= 0.005:  # the same 5 ms groups
                with self.db:
                    self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", self.pending)
                self.pending.clear()
                self.flushed = time.monotonic()
        return PASS if now - first >= self.delay else DEFER


def serve_blocking(port: int, path: str, delay: float) -> None:
    server = Blocking(open_db(path), delay)
    with socket.create_server(("127.0.0.1", port), backlog=64) as listener:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=server.serve_connection, args=(conn,), daemon=True).start()


async def serve(port: int, path: str, delay: float) -> None:
    db = open_db(path)
    pending: list[tuple] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Floor(db, delay, pending), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


BLOCKING = False


def start_floor(tmp: Path, delay: int) -> tuple[subprocess.Popen[bytes], int]:
    port = bench.free_port()
    serve_flag = "--serve-blocking" if BLOCKING else "--serve"
    proc = subprocess.Popen(
        [sys.executable, __file__, serve_flag, str(port), str(tmp / "floor.db"), str(delay)]
    )
    bench.wait_port(port, proc)
    return proc, port


def run_floor(n: int, connections: int, delay: int) -> tuple[float, float, list[str]]:
    """(wall seconds, server CPU seconds, answers), as `run.run_one` measures them."""
    tmp = Path(tempfile.mkdtemp(prefix="mxg-bench-policyd-floor-"))
    proc, port = start_floor(tmp, delay)
    try:
        phase1, phase2 = bench.sequence(n)
        c0 = bench.cpu_seconds(proc.pid)
        t1, a1 = bench.drive(port, phase1, connections)
        c1 = bench.cpu_seconds(proc.pid)
        time.sleep(delay + 1.5)
        c2 = bench.cpu_seconds(proc.pid)
        t2, a2 = bench.drive(port, phase2, connections)
        c3 = bench.cpu_seconds(proc.pid)
        return t1 + t2, (c1 - c0) + (c3 - c2), a1 + a2
    finally:
        bench.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    global BLOCKING
    if sys.argv[1:2] == ["--serve"]:
        import uvloop

        port, path, delay = int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
        uvloop.run(serve(port, path, delay))
        return 0
    if sys.argv[1:2] == ["--serve-blocking"]:
        serve_blocking(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
        return 0
    BLOCKING = "--blocking" in sys.argv[1:]
    n, delay = 20000, 3
    shape = "a thread per connection" if BLOCKING else "uvloop"
    print(
        f"N={n} requests, greylist delay {delay}s; floor ({shape}): the least a Python server can do"
    )
    print(f"{'conns':>5} {'postgrey req/s':>15} {'floor req/s':>12} {'ratio':>6} "
          f"{'pg us/req':>10} {'floor us/req':>13} {'mismatch':>8}")  # fmt: skip
    for c in (1, 8):
        pg_time, pg_cpu, pg = bench.run_one("postgrey", n, c, delay)
        fl_time, fl_cpu, fl = run_floor(n, c, delay)
        mismatch = sum(bench.is_defer(a) != bench.is_defer(b) for a, b in zip(pg, fl, strict=True))
        print(f"{c:>5} {n / pg_time:>15,.0f} {n / fl_time:>12,.0f} {pg_time / fl_time:>5.1f}x "
              f"{pg_cpu / n * 1e6:>10,.0f} {fl_cpu / n * 1e6:>13,.0f} {mismatch:>8}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
