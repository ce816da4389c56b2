"""SIGHUP and SIGTERM on a real `mxguard serve` process, under a bounded streaming load.

What the operator is promised: a reload loses nothing and shows clients no error; a bad
config on reload is refused in one log line while the old one keeps serving; a stop lets open
transactions finish, answers the rest 421, and every message that got 250 is delivered whole.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.helpers.opstier import OpsPorts, ops_config
from tests.helpers.servers import MxguardProcess, wait_for
from tests.helpers.smtpload import Streamer, complete, maildir_messages, send_one

pytestmark = pytest.mark.slow


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _hup(mx: MxguardProcess, text: str, count: int, marker: str = "config reloaded") -> None:
    mx.config_path.write_text(text)
    os.kill(mx.pid, signal.SIGHUP)
    assert wait_for(lambda: mx.output().count(marker) >= count, 10), mx.output()


def test_reload_under_load_loses_nothing(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    base = ops_config(tmp_path, ports)
    with MxguardProcess(tmp_path, base) as mx:
        assert send_one("127.0.0.1", ports.primary, "carol@example.test", "before")[0] == 550
        streamers = [
            Streamer("127.0.0.1", ports.primary, prefix=f"p{i}-", per_session=4).start()
            for i in range(3)
        ]
        try:
            for s in streamers:
                s.wait_for(10)
            for n in range(1, 6):  # five reloads while the clients keep sending
                people = ("alice@example.test", "bob@example.test", "carol@example.test")
                _hup(mx, ops_config(tmp_path, ports, recipients=people), n)
                time.sleep(0.2)
            before = [len(s.acked) for s in streamers]
            for s, b in zip(streamers, before, strict=True):
                s.wait_for(b + 5)
        finally:
            for s in streamers:
                s.stop()
        # the new table is in force, and the old sessions never noticed
        assert send_one("127.0.0.1", ports.primary, "carol@example.test", "after")[0] == 250
        assert all(not s.errors for s in streamers), [s.errors for s in streamers]
        acked = [m for s in streamers for m in s.acked]
        assert len(acked) >= 45
        assert wait_for(lambda: set(acked) <= set(maildir_messages(tmp_path / "maildir")), 10)
        delivered = maildir_messages(tmp_path / "maildir")
        assert all(complete(m, delivered[m]) for m in acked)


def test_reload_says_when_a_listen_address_needs_a_restart(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    with MxguardProcess(tmp_path, ops_config(tmp_path, ports)) as mx:
        moved = ops_config(tmp_path, ports, trap_listen=f"127.0.0.3:{ports.trap + 1}")
        _hup(mx, moved, 1)
        assert wait_for(lambda: "restart needed to apply: mx trap.example.test" in mx.output())
        # still served where it was, and nothing listens at the new address yet
        assert send_one("127.0.0.3", ports.trap, "bob@example.test", "t1")[0] == 451
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.3", ports.trap + 1), timeout=1).close()


def test_broken_config_on_reload_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path,
) -> None:
    ports = OpsPorts.pick()
    good = ops_config(tmp_path, ports)
    with MxguardProcess(tmp_path, good) as mx:
        streamer = Streamer("127.0.0.1", ports.primary, per_session=3).start()
        try:
            streamer.wait_for(5)
            broken = good + "\n[limits]\nmax_recipients = 0\n"
            _hup(mx, broken, 1, marker="config not reloaded")
            _hup(mx, "this is [not toml", 2, marker="config not reloaded")
            before = len(streamer.acked)
            streamer.wait_for(before + 5)
        finally:
            streamer.stop()
        lines = [x for x in mx.output().splitlines() if "config not reloaded" in x]
        assert len(lines) == 2  # one line per refused reload
        assert "limits.max_recipients: must be at least 1" in lines[0]
        assert "not valid TOML" in lines[1]
        assert "config reloaded" not in mx.output()
        assert not streamer.errors
        # the old policy is the one in force
        assert send_one("127.0.0.1", ports.primary, "alice@example.test", "ok")[0] == 250
        assert send_one("127.0.0.1", ports.primary, "nobody@example.test", "no")[0] == 550
        _hup(mx, good, 1)  # and a good file is taken again
        assert mx.running()


def test_sigterm_under_load_delivers_every_acknowledged_message(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    cfg = ops_config(tmp_path, ports, server='shutdown_grace = "10s"')
    mx = MxguardProcess(tmp_path, cfg).start()
    streamers = [
        Streamer("127.0.0.1", ports.primary, prefix=f"t{i}-", per_session=5).start()
        for i in range(4)
    ]
    # a client in the middle of a transaction when the stop comes: it may finish
    slow = socket.create_connection(("127.0.0.1", ports.primary), timeout=10)
    idle = socket.create_connection(("127.0.0.1", ports.primary), timeout=10)
    try:
        for sock in (slow, idle):
            assert _reply(sock).startswith(b"220")
            sock.sendall(b"EHLO slow.test\r\n")
            assert _reply(sock).startswith(b"250")
        slow.sendall(b"MAIL FROM:<a@sender.test>\r\n")
        assert _reply(slow).startswith(b"250")
        slow.sendall(b"RCPT TO:<bob@example.test>\r\n")
        assert _reply(slow).startswith(b"250")
        for s in streamers:
            s.wait_for(10)
        os.kill(mx.pid, signal.SIGTERM)
        # the idle session hears 421 at once; new connections are refused
        assert _reply(idle).startswith(b"421 4.3.2")
        assert wait_for(lambda: "stopping" in mx.output(), 5)
        time.sleep(0.5)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", ports.primary), timeout=1).close()
        slow.sendall(b"DATA\r\n")
        assert _reply(slow).startswith(b"354")
        slow.sendall(b"Message-ID: <slow@load.test>\r\nSubject: slow\r\n\r\nfinished late\r\n.\r\n")
        assert _reply(slow).startswith(b"250")
        assert mx.proc is not None
        assert mx.proc.wait(15) == 0
    finally:
        for s in streamers:
            s.stop()
        slow.close()
        idle.close()
        mx.stop()
    assert "stopped" in mx.output()
    acked = [m for s in streamers for m in s.acked]
    assert len(acked) >= 40
    delivered = maildir_messages(tmp_path / "maildir")
    assert set(acked) <= set(delivered)
    # nothing half-written: every file in new/ is a whole message (extra ones are those
    # whose 250 the client did not read before the 421; it will send them again)
    assert all(complete(m, data) for m, data in delivered.items())
    bob = maildir_messages(tmp_path / "maildir", "bob@example.test")
    assert b"finished late" in bob["slow"]
    for s in streamers:  # refusals are temporary: the clients will come back
        for err in s.errors:
            gone = ("SMTPServerDisconnected", "ConnectionRefusedError", "ConnectionResetError")
            assert "421" in err or err.startswith(gone), err


def test_sigterm_cuts_a_stuck_session_at_the_deadline(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    cfg = ops_config(tmp_path, ports, server='shutdown_grace = "1s"')
    mx = MxguardProcess(tmp_path, cfg).start()
    stuck = socket.create_connection(("127.0.0.1", ports.primary), timeout=10)
    try:
        assert _reply(stuck).startswith(b"220")
        stuck.sendall(b"EHLO stuck.test\r\nMAIL FROM:<a@sender.test>\r\n")
        _reply(stuck)
        stuck.sendall(b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
        time.sleep(0.3)
        stuck.recv(4096)
        stuck.sendall(b"Subject: half\r\n\r\nhalf a body")  # and then nothing
        started = time.monotonic()
        os.kill(mx.pid, signal.SIGTERM)
        data = b""
        while b"421" not in data:
            chunk = stuck.recv(4096)
            if not chunk:
                break
            data += chunk
        assert b"421 4.3.2" in data
        assert mx.proc is not None
        assert mx.proc.wait(15) == 0
        assert time.monotonic() - started < 8
    finally:
        stuck.close()
        mx.stop()
    assert not maildir_messages(tmp_path / "maildir", "bob@example.test")
