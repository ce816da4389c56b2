"""`[policyd].workers`: several processes behind one socket, over real sockets and signals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.policyd.test_policyd_daemon import CONFIG, mxguard, request, tmp

__all__ = ["tmp"]  # the fixture, used by name


def start(
    tmp: Path, workers: int, listen: str = "127.0.0.1:0", extra: str = ""
) -> tuple[subprocess.Popen[str], str]:
    config = tmp / "mxguard.toml"
    text = CONFIG.format(tmp=tmp, listen=listen).replace(
        f'listen = "{listen}"', f'listen = "{listen}"\nworkers = {workers}'
    )
    config.write_text(text + extra)
    proc = mxguard("policyd", "--config", str(config))
    assert proc.stdout is not None
    first = proc.stdout.readline()
    said = f"{workers} workers" if workers != 1 else "mxguard policyd for"
    if said not in first:
        proc.kill()  # else reading its stderr would wait for ever
        pytest.fail(f"{first!r} {proc.communicate(timeout=15)}")
    where = proc.stdout.readline().strip().removeprefix("policyd listening on ")
    return proc, where


@pytest.fixture
def two(tmp: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc, where = start(tmp, 2)
    m = re.fullmatch(r"inet:127\.0\.0\.1:(\d+)", where)
    assert m, where
    yield proc, int(m.group(1))
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=15)


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def ask(port: int, **kw: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request(**kw))
        return s.recv(200)


def sessions_by_worker(tmp: Path, proc: subprocess.Popen[str]) -> set[str]:
    """The PIDs in the event log's session ids (each worker names its own)."""
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    lines = (tmp / "events.jsonl").read_text().splitlines()
    return {json.loads(line)["session"].split(".")[0] for line in lines}


def test_connections_spread_over_the_workers_and_all_are_answered(
    tmp: Path, two: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = two
    workers = children(proc.pid)
    assert len(workers) == 2
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        for i, s in enumerate(socks):
            # the backup greylists: every worker reads and writes the one state
            s.sendall(request(server_port="2602", client_address=f"198.51.100.{i + 1}"))
        replies = [s.recv(200) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert all(r.startswith(b"action=DEFER_IF_PERMIT 4.7.1") for r in replies), replies
    # open together, the four went two and two: both workers answered, each as itself
    assert sessions_by_worker(tmp, proc) == {f"P{pid:x}" for pid in workers}
    assert proc.returncode == 0


def test_a_worker_that_dies_is_started_again(
    tmp: Path, two: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = two
    first = children(proc.pid)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # bounded: the parent restarts it within seconds
        now = children(proc.pid)
        if len(now) == 2 and first[0] not in now:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no new worker: {children(proc.pid)}")
    for _ in range(4):  # whichever worker takes it, every connection is answered
        assert ask(port) == b"action=DUNNO\n\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "was killed by SIGKILL; starting it again" in err  # the parent said what happened


def test_sighup_and_sigusr1_leave_every_worker_running(tmp: Path) -> None:
    proc, where = start(tmp, 2)
    port = int(where.rsplit(":", 1)[1])
    try:
        assert ask(port, recipient="dave@example.test").startswith(b"action=550")
        workers = children(proc.pid)
        # forwarded, and handled (reload, reopen the event log), never the default: death
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert children(proc.pid) == workers
        assert ask(port) == b"action=DUNNO\n\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopping" in out and "Traceback" not in err


def test_unix_socket_with_workers(tmp: Path) -> None:
    path = tmp / "policy.sock"
    proc, where = start(tmp, 2, listen=str(path))
    try:
        assert where == f"unix:{path}"
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(path))
                s.sendall(request())
                assert s.recv(100) == b"action=DUNNO\n\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not path.exists()  # removed at the end


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ('\n[metrics]\nlisten = "127.0.0.1:0"\n', "metrics"),
        ("", "memory://"),  # each worker would keep its own greylist
    ],
)
def test_what_workers_cannot_share_is_a_config_error(tmp: Path, extra: str, why: str) -> None:
    config = tmp / "mxguard.toml"
    text = CONFIG.format(tmp=tmp, listen="127.0.0.1:0").replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nworkers = 2'
    )
    if why == "memory://":
        text = text.replace(f'url = "sqlite:///{tmp}/state.db"', 'url = "memory://"')
    config.write_text(text + extra)
    for command in ("policyd", "check-config"):  # check-config says what policyd refuses
        proc = mxguard(command, "--config", str(config))
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2, (command, err)
        assert len(err.strip().splitlines()) == 1 and "policyd.workers" in err, err
        assert why in err


def test_a_state_that_cannot_open_stops_the_parent_with_one_line(tmp: Path) -> None:
    config = tmp / "mxguard.toml"
    text = CONFIG.format(tmp=tmp, listen="127.0.0.1:0").replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nworkers = 2'
    )
    (tmp / "state.db").mkdir()  # a directory where the SQLite file should be
    config.write_text(text)
    proc = mxguard("policyd", "--config", str(config))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "state.url" in err, err


def wait_for_workers(proc: subprocess.Popen[str], n: int, gone: int, seconds: float) -> list[int]:
    """The parent's children once there are `n` of them and `gone` is not one; bounded."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate(timeout=5)
        now = children(proc.pid)
        if len(now) == n and gone not in now:
            return now
        time.sleep(0.1)
    pytest.fail(f"workers now: {children(proc.pid)}")


def test_a_restart_while_the_state_is_locked_waits_and_tries_again(
    tmp: Path, two: tuple[subprocess.Popen[str], int]
) -> None:
    """Once the workers have served, a worker that cannot open the state (another process
    holds SQLite's write lock longer than its 5 s wait) is one more death, not the end of
    policyd: it is started again until it can."""
    proc, port = two
    assert ask(port) == b"action=DUNNO\n\n"  # both are up and serving
    first = children(proc.pid)
    with contextlib.closing(sqlite3.connect(tmp / "state.db")) as other:
        other.execute("BEGIN IMMEDIATE")
        os.kill(first[0], signal.SIGKILL)
        # a quick death: started again after 5 s; its open waits 5 s more, gives up, exits 2
        time.sleep(11.0)
        assert proc.poll() is None
        other.execute("ROLLBACK")
    wait_for_workers(proc, 2, first[0], 20)
    for _ in range(4):
        assert ask(port) == b"action=DUNNO\n\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "exited with 2" in err and "state.url" in err, err


def test_signals_right_after_the_start_kill_no_worker(tmp: Path) -> None:
    """logrotate's SIGUSR1 can come while workers still open their state: ignored until
    their handlers are in place, never the default (death)."""
    proc, where = start(tmp, 2)
    try:
        first = children(proc.pid)
        for _ in range(3):
            proc.send_signal(signal.SIGUSR1)
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        time.sleep(1.0)
        assert children(proc.pid) == first
        assert ask(int(where.rsplit(":", 1)[1])) == b"action=DUNNO\n\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "starting it again" not in err, err


@pytest.mark.parametrize("workers", [1, 2])
def test_a_unix_socket_in_use_is_refused_not_taken(tmp: Path, workers: int) -> None:
    """A second policyd on the path of a running one must not unlink its socket (Postfix
    would lose the running one); a stale socket, with nobody behind it, is replaced."""
    path = tmp / "policy.sock"
    first, _ = start(tmp, 2, listen=str(path))
    try:
        second_dir = tmp / "second"
        second_dir.mkdir()
        config = second_dir / "mxguard.toml"
        config.write_text(
            CONFIG.format(tmp=second_dir, listen=str(path)).replace(
                f'listen = "{path}"', f'listen = "{path}"\nworkers = {workers}'
            )
        )
        second = mxguard("policyd", "--config", str(config))
        _, err = second.communicate(timeout=30)
        assert second.returncode == 2, err
        assert "policyd.listen" in err and "in use" in err, err
        with socket.socket(socket.AF_UNIX) as s:  # the first still answers
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(request())
            assert s.recv(100) == b"action=DUNNO\n\n"
    finally:
        first.kill()  # no clean-up: its socket stays behind, stale
        first.communicate(timeout=15)
        for pid in children_of_gone(first.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert path.exists()
    again, where = start(tmp, workers, listen=str(path))  # the stale one is replaced
    try:
        assert where == f"unix:{path}"
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=20)
    assert again.returncode == 0


def children_of_gone(ppid: int) -> list[int]:
    """Workers left by a parent killed with SIGKILL (re-parented; found by their command)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            stat_fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"mxguard" in cmd and b"policyd" in cmd and int(stat_fields[1]) == 1:
            out.append(int(proc.name))
    return out
