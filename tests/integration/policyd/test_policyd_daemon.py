"""`mxguard policyd` over real sockets: reuse, ordering, silence on bad input, UNIX sockets, CLI."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mxguard.config import load_config_text
from mxguard.policyd.server import PolicyDaemon

CONFIG = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "bob@example.test"]

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"

[greylist]
roles = ["backup"]

[policyd]
listen = "{listen}"

[[mx]]
host = "mx1.example.test"
role = "primary"
preference = 10
listen = "127.0.0.1:2601"

[[mx]]
host = "mx2.example.test"
role = "backup"
preference = 20
listen = "127.0.0.1:2602"
"""


def request(**kw: str) -> bytes:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.7",
        "client_port": "40000",
        "sender": "carol@sender.example",
        "recipient": "alice@example.test",
        "instance": "a.1",
        "server_address": "127.0.0.1",
        "server_port": "2601",
    }
    attrs.update(kw)
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


@pytest.fixture
def tmp() -> Iterator[Path]:
    # Not tmp_path: other suites on this machine prune pytest's base dirs while we run.
    path = Path(tempfile.mkdtemp(prefix="mxg-policyd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def daemon(tmp: Path) -> AsyncIterator[PolicyDaemon]:
    cfg = load_config_text(CONFIG.format(tmp=tmp, listen="127.0.0.1:0"), "t.toml")
    d = PolicyDaemon(cfg)
    await d.start()
    yield d
    await d.stop()


def port_of(d: PolicyDaemon) -> int:
    return int(d.bound()[0].rsplit(":", 1)[1])


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)


async def test_one_connection_many_requests_in_order(daemon: PolicyDaemon) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(daemon))
    for _ in range(3):
        writer.write(request())
        assert await read_reply(reader) == b"action=DUNNO\n\n"
    # several requests in one write, split oddly: one reply each, in order
    burst = request(recipient="nobody@example.test") + request(server_port="2602") + request()
    for i in range(0, len(burst), 7):
        writer.write(burst[i : i + 7])
        await asyncio.sleep(0)
    assert (await read_reply(reader)).startswith(b"action=550 5.1.1")
    assert (await read_reply(reader)).startswith(b"action=DEFER_IF_PERMIT 4.7.1")
    assert await read_reply(reader) == b"action=DUNNO\n\n"
    writer.close()


async def test_no_reply_before_the_empty_line(daemon: PolicyDaemon) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(daemon))
    writer.write(request()[:-1])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), 0.3)
    writer.write(b"\n")
    assert await read_reply(reader) == b"action=DUNNO\n\n"
    writer.close()


@pytest.mark.parametrize(
    "bad",
    [
        b"this is not a policy request\n\n",
        b"request=smtpd_access_policy\nclient_address=not-an-ip\nprotocol_state=RCPT\n\n",
        b"request=smtpd_access_policy\nsender=" + b"x" * 70000,
    ],
    ids=["garbage", "bad-client-address", "oversized"],
)
async def test_malformed_request_gets_no_reply_and_a_close(
    daemon: PolicyDaemon, bad: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(daemon))
    writer.write(request())
    assert await read_reply(reader) == b"action=DUNNO\n\n"  # answered before the bad one
    writer.write(bad)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not a byte said
    writer.close()
    # the server itself is fine
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(daemon))
    writer.write(request())
    assert await read_reply(reader) == b"action=DUNNO\n\n"
    writer.close()


async def test_many_connections_at_once(daemon: PolicyDaemon) -> None:
    async def client(n: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(daemon))
        out = []
        for i in range(20):
            writer.write(request(client_address=f"192.0.2.{n}", instance=f"{n}.{i}"))
            out.append(await read_reply(reader))
        writer.close()
        return out

    results = await asyncio.gather(*(client(n) for n in range(1, 21)))
    assert all(r == b"action=DUNNO\n\n" for replies in results for r in replies)


async def test_unix_socket(tmp: Path) -> None:
    path = tmp / "policy.sock"
    cfg = load_config_text(CONFIG.format(tmp=tmp, listen=str(path)), "t.toml")
    d = PolicyDaemon(cfg)
    await d.start()
    try:
        assert d.bound() == [f"unix:{path}"]
        assert path.stat().st_mode & 0o777 == 0o666  # smtpd runs as another user
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(request(server_port="2602"))
        assert (await read_reply(reader)).startswith(b"action=DEFER_IF_PERMIT")
        writer.close()
    finally:
        await d.stop()
    assert not path.exists()


# ---------------------------------------------------------------- the command


def mxguard(*args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mxguard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_where_it_listens_and_stops_on_signal(tmp: Path, sig: signal.Signals) -> None:
    config = tmp / "mxguard.toml"
    config.write_text(CONFIG.format(tmp=tmp, listen="127.0.0.1:0"))
    proc = mxguard("policyd", "--config", str(config))
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    m = re.search(r"policyd listening on inet:127\.0\.0\.1:(\d+)", lines[1])
    assert m, lines
    import socket

    with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5) as s:
        s.sendall(request())
        assert s.recv(100) == b"action=DUNNO\n\n"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "stopping" in out
    assert "Traceback" not in err


def test_cli_config_error_is_one_line_and_exit_2(tmp: Path) -> None:
    config = tmp / "mxguard.toml"
    text = CONFIG.format(tmp=tmp, listen="127.0.0.1:0")
    config.write_text(text.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nrole = "x"'))
    proc = mxguard("policyd", "--config", str(config))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "policyd.role" in err


def test_cli_listen_conflict_is_a_config_error(tmp: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp / "mxguard.toml"
        config.write_text(CONFIG.format(tmp=tmp, listen=f"127.0.0.1:{port}"))
        proc = mxguard("policyd", "--config", str(config))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    assert "policyd.listen" in err and len(err.strip().splitlines()) == 1, err
