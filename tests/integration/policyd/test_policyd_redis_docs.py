"""docs/postfix.md's two-machine setup: two policy servers, one Redis, one greylist.

A triplet first seen through the primary host's policyd passes at the backup host's policyd
after the delay, which only works if they really share the state.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxguard.config import load_config_text
from mxguard.policyd.server import PolicyDaemon
from tests.helpers.redis_server import RedisTestServer, requires_redis

pytestmark = [pytest.mark.redis, requires_redis]

DOCS = Path(__file__).resolve().parents[3] / "docs" / "postfix.md"


def doc_example(name: str) -> str:
    m = re.search(
        rf"<!-- example: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", DOCS.read_text(), re.S
    )
    assert m, f"docs/postfix.md has no example {name!r}"
    return m.group(1)


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the docs example no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mxg-policyd-redis-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def request(port: int) -> bytes:
    return (
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.44\n"
        "client_port=5000\nsender=ann@sender.example\nrecipient=alice@example.test\n"
        f"instance=x.1\nserver_address=127.0.0.1\nserver_port={port}\n\n"
    ).encode()


async def ask(daemon: PolicyDaemon) -> str:
    port = int(daemon.bound()[0].rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(25))
    reply = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    writer.close()
    return reply.decode()


async def test_primary_and_backup_hosts_share_greylisting_through_redis(tmp: Path) -> None:
    recipients = tmp / "recipients.txt"
    recipients.write_text("alice@example.test\n")
    with RedisTestServer() as redis:
        daemons = []
        for name in ("primary-host.toml", "backup-host.toml"):
            text = substitute(
                doc_example(name),
                {
                    "/etc/mxguard/recipients.txt": str(recipients),
                    "redis://192.0.2.5:6379/0": redis.url,
                    'roles = ["backup"]': 'roles = ["primary", "backup"]\ndelay = "1s"',
                    "127.0.0.1:10023": "127.0.0.1:0",
                },
            )
            text += f'\n[log]\nevents = "{tmp}/{name}.events.jsonl"\n'
            daemon = PolicyDaemon(load_config_text(text, name))
            await daemon.start()
            daemons.append(daemon)
        primary, backup = daemons
        try:
            assert (await ask(primary)).startswith("action=DEFER_IF_PERMIT 4.7.1 Greylisted")
            await asyncio.sleep(1.2)
            assert await ask(backup) == "action=DUNNO\n\n"
        finally:
            for d in daemons:
                await d.stop()
