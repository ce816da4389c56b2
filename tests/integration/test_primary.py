"""The primary MX role over real sockets: delivery, refusals, limits, smuggling, TLS, targets."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import socket
import ssl
import subprocess
from pathlib import Path

import aiosmtplib
import pytest

from tests.helpers.inproc import BASE, free_port, running

MSG = b"From: a@sender.test\r\nTo: alice@example.test\r\nSubject: hi\r\nMessage-ID: <m1@sender.test>\r\n\r\nHello.\r\n"


def smtp_session(port: int) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("client.sender.test")
    return s


async def raw_dialogue(port: int, chunks: list[bytes], wait: float = 0.3) -> bytes:
    """Send raw bytes (for what smtplib refuses to send) and collect every reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.02)
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), wait)
            if not data:
                break
            got += data
    except TimeoutError:
        pass
    writer.close()
    return got


async def test_delivers_into_maildir_with_received_header(tmp_path: Path) -> None:
    async with running(tmp_path) as srv:

        def send() -> dict[str, tuple[int, bytes]]:
            with smtp_session(srv.port()) as s:
                return s.sendmail("a@sender.test", ["alice@example.test"], MSG)

        refused = await asyncio.to_thread(send)
        assert refused == {}
        files = srv.maildir_files()
        assert len(files) == 1
        body = files[0].read_bytes()
        assert body.startswith(b"Received: from client.sender.test ([127.0.0.1])")
        assert body.endswith(MSG)
        events = srv.events()
        eom = [e for e in events if e["stage"] == "eom"]
        assert eom[0]["reason"] == "delivered" and eom[0]["msgid"] == "<m1@sender.test>"


async def test_aiosmtplib_client_and_two_recipients(tmp_path: Path) -> None:
    async with running(tmp_path) as srv:
        errors, reply = await aiosmtplib.send(
            MSG,
            sender="a@sender.test",
            recipients=["alice@example.test", "BOB@Example.TEST"],
            hostname="127.0.0.1",
            port=srv.port(),
            start_tls=False,
        )
        assert errors == {} and "Ok: queued as" in reply
        assert len(srv.maildir_files("alice@example.test")) == 1
        assert len(srv.maildir_files("bob@example.test")) == 1


async def test_unknown_user_550_511(tmp_path: Path) -> None:
    async with running(tmp_path) as srv:

        def probe() -> tuple[int, bytes]:
            with smtp_session(srv.port()) as s:
                s.mail("a@sender.test")
                return s.rcpt("nobody@example.test")

        code, text = await asyncio.to_thread(probe)
        assert code == 550 and text.startswith(b"5.1.1")
        assert srv.maildir_files() == []


RELAY_MATRIX = [
    "victim@elsewhere.invalid",
    "victim%elsewhere.invalid@example.test",  # percent hack
    "elsewhere.invalid!victim@example.test",  # bang path
    '"victim@elsewhere.invalid"@example.test',  # quoted local part with @
    "@example.test:victim@elsewhere.invalid",  # source route
    "@example.test,@x.test:alice@example.test",  # source route ending in a local address
    "alice@[127.0.0.1]",  # address literal
    "alice@example.test.",  # trailing dot
    "victim@elsewhere.invalid@example.test",  # two @
    "alice@EXAMPLE.test.elsewhere.invalid",  # suffix trick
]


@pytest.mark.parametrize("rcpt", RELAY_MATRIX)
async def test_relay_denied_for_tricky_addresses(tmp_path: Path, rcpt: str) -> None:
    # A catch-all must not make routing syntax local either.
    base = BASE.replace('recipients = ["alice', 'recipients = ["@example.test", "alice')
    async with running(tmp_path, base=base) as srv:
        out = await raw_dialogue(
            srv.port(),
            [
                b"EHLO c.test\r\n",
                b"MAIL FROM:<a@sender.test>\r\n",
                f"RCPT TO:<{rcpt}>\r\n".encode(),
            ],
        )
        last = out.strip().splitlines()[-1]
        assert last[:1] == b"5", (rcpt, out)
        assert not last.startswith(b"250")


async def test_relay_networks_may_send_to_remote_domains(tmp_path: Path) -> None:
    async with running(tmp_path, '[relay]\nnetworks = ["127.0.0.0/8"]\n') as srv:
        out = await raw_dialogue(
            srv.port(),
            [
                b"EHLO c.test\r\n",
                b"MAIL FROM:<a@x.test>\r\n",
                b"RCPT TO:<v@elsewhere.invalid>\r\n",
                b"RCPT TO:<v%elsewhere.invalid@example.test>\r\n",
            ],
        )
        lines = out.splitlines()
        assert lines[-2].startswith(b"250 2.1.5")  # remote domain from a relay network
        assert lines[-1].startswith(b"554 5.7.1")  # routing syntax: never


SMUGGLING = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r"]


@pytest.mark.parametrize("mode", ["reject", "normalize"])
@pytest.mark.parametrize("payload", SMUGGLING)
async def test_smuggling_never_yields_a_second_message(
    tmp_path: Path, payload: bytes, mode: str
) -> None:
    async with running(tmp_path, f'[limits]\nbare_lf = "{mode}"\n') as srv:
        smuggled = (
            b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n"
        )
        body = b"Subject: first\r\n\r\nfirst" + payload + smuggled + b"\r\n.\r\nQUIT\r\n"
        out = await raw_dialogue(
            srv.port(),
            [
                b"EHLO c.test\r\n",
                b"MAIL FROM:<a@sender.test>\r\n",
                b"RCPT TO:<alice@example.test>\r\n",
                b"DATA\r\n",
                body,
            ],
        )
        assert srv.maildir_files("bob@example.test") == []  # no second message, ever
        delivered = srv.maildir_files("alice@example.test")
        if mode == "reject":
            assert b"550 5.5.2" in out and delivered == []
        else:
            assert len(delivered) == 1
            assert b"smuggled" in delivered[0].read_bytes()  # kept inside the one message


async def test_overlong_command_line_and_oversize_message(tmp_path: Path) -> None:
    async with running(tmp_path, '[limits]\nmax_message_size = "2k"\n') as srv:
        out = await raw_dialogue(srv.port(), [b"EHLO c.test\r\n", b"NOOP " + b"x" * 2000 + b"\r\n"])
        assert b"500 5.5.2" in out
        out = await raw_dialogue(
            srv.port(),
            [b"EHLO c.test\r\n", b"MAIL FROM:<a@s.test> SIZE=999999\r\n"],
        )
        assert b"552 5.3.4" in out

        # Without SIZE= the limit is enforced at the end of DATA.
        body = b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\n"
        out = await raw_dialogue(
            srv.port(),
            [
                b"EHLO c.test\r\n",
                b"MAIL FROM:<a@s.test>\r\n",
                b"RCPT TO:<alice@example.test>\r\n",
                b"DATA\r\n",
                body,
            ],
        )
        assert out.strip().splitlines()[-1].startswith(b"552 5.3.4")
        assert srv.maildir_files() == []


async def test_too_many_recipients(tmp_path: Path) -> None:
    base = BASE.replace('recipients = ["alice', 'recipients = ["@example.test", "alice')
    async with running(tmp_path, "[limits]\nmax_recipients = 3\n", base=base) as srv:
        cmds = [b"EHLO c.test\r\n", b"MAIL FROM:<a@s.test>\r\n"]
        cmds += [f"RCPT TO:<u{i}@example.test>\r\n".encode() for i in range(5)]
        out = await raw_dialogue(srv.port(), cmds)
        replies = [x for x in out.splitlines() if x[:3] in (b"250", b"452")][-5:]
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"452", b"452"]
        assert b"452 4.5.3" in out


async def test_silent_client_times_out(tmp_path: Path) -> None:
    async with running(tmp_path, '[limits]\ngreeting_timeout = "1s"\n') as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port())
        banner = await asyncio.wait_for(reader.readline(), 5)
        assert banner.startswith(b"220 ")
        rest = await asyncio.wait_for(reader.read(), 10)  # server must hang up by itself
        assert rest.startswith(b"421 4.4.2")
        writer.close()


async def test_connection_caps(tmp_path: Path) -> None:
    async with running(tmp_path, "[limits]\nmax_connections_per_network = 2\n") as srv:
        conns = []
        for _ in range(2):
            r, w = await asyncio.open_connection("127.0.0.1", srv.port())
            assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"220 ")
            conns.append(w)
        r, w = await asyncio.open_connection("127.0.0.1", srv.port())
        line = await asyncio.wait_for(r.readline(), 5)
        assert line.startswith(b"421 4.3.2")
        w.close()
        for c in conns:
            c.close()
        await asyncio.sleep(0.1)
        r, w = await asyncio.open_connection("127.0.0.1", srv.port())
        assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"220 ")
        w.close()


async def test_early_talker_is_caught_by_the_greet_pause(tmp_path: Path) -> None:
    extra = '[early_talker]\ngreet_pause = "0.5s"\naction = "reject"\n'
    async with running(tmp_path, extra) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port())
        writer.write(b"EHLO bot.test\r\n")  # before the banner
        await asyncio.sleep(0.8)
        writer.write(b"MAIL FROM:<a@s.test>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n")
        out = await asyncio.wait_for(reader.read(), 5)
        assert b"550 5.5.1" in out
        writer.close()
        events = srv.events()
        assert any(e["reason"] == "pregreet" and e["stage"] == "rcpt" for e in events)


def tls_setup(tmp_path: Path) -> tuple[str, ssl.SSLContext]:
    """A self-signed CA and a certificate for the MX: the [tls] config and a client context."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("mail.example.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return f'[tls]\ncert = "{cert_path}"\nkey = "{key_path}"\n', ctx


async def test_starttls_with_self_signed_certificate(tmp_path: Path) -> None:
    extra, ctx = tls_setup(tmp_path)
    async with running(tmp_path, extra) as srv:

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", srv.port(), timeout=10) as s:
                s.ehlo("c.test")
                assert s.has_extn("starttls")
                s.starttls(context=ctx)
                s.ehlo("c.test")
                assert not s.has_extn("starttls")
                s.sendmail("a@s.test", ["alice@example.test"], MSG)

        await asyncio.to_thread(send)
        body = srv.maildir_files()[0].read_bytes()
        assert b"with ESMTPS id" in body


async def test_starttls_discards_pipelined_plaintext(tmp_path: Path) -> None:
    extra, ctx = tls_setup(tmp_path)
    async with running(tmp_path, extra) as srv:

        def attack() -> bytes:
            sock = socket.create_connection(("127.0.0.1", srv.port()), timeout=5)
            f = sock.makefile("rb")
            f.readline()
            # Commands injected after STARTTLS in the same packet (CVE-2011-0411 style).
            sock.sendall(b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<evil@s.test>\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            assert f.readline().startswith(b"220 ")
            tls = ctx.wrap_socket(sock, server_hostname="mail.example.test")
            tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
            reply = tls.recv(1000)
            tls.close()
            return reply

        reply = await asyncio.to_thread(attack)
        assert reply.startswith(b"503"), reply  # the injected MAIL was discarded


@pytest.fixture
def downstream_sink() -> object:
    """A real SMTP server (aiosmtpd) on loopback standing in for the mailbox server."""
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], bytes]] = []

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
            if address.startswith("full@"):
                return "552 5.2.2 Mailbox full"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 2.0.0 Stored"

    handler = Handler()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    handler.port = port  # type: ignore[attr-defined]
    yield handler
    ctl.stop()


async def test_smtp_target_up_delivers(tmp_path: Path, downstream_sink: object) -> None:
    port = downstream_sink.port  # type: ignore[attr-defined]
    base = BASE.replace("maildir:{tmp}/maildir", f"smtp://127.0.0.1:{port}")
    base = base.replace('recipients = ["alice', 'recipients = ["full@example.test", "alice')
    async with running(tmp_path, base=base) as srv:
        errors, _ = await aiosmtplib.send(
            MSG,
            sender="a@s.test",
            recipients=["alice@example.test"],
            hostname="127.0.0.1",
            port=srv.port(),
            start_tls=False,
        )
        assert errors == {}
        msgs = downstream_sink.messages  # type: ignore[attr-defined]
        assert len(msgs) == 1 and msgs[0][1] == ["alice@example.test"]
        assert msgs[0][2].endswith(MSG)
        # A downstream 5xx for the recipient is passed back to the client.
        with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
            await aiosmtplib.send(
                MSG,
                sender="a@s.test",
                recipients=["full@example.test"],
                hostname="127.0.0.1",
                port=srv.port(),
                start_tls=False,
            )
        assert exc.value.code == 552


async def test_smtp_target_down_gives_451_and_loses_nothing(tmp_path: Path) -> None:
    dead = free_port()
    base = BASE.replace("maildir:{tmp}/maildir", f"smtp://127.0.0.1:{dead}")
    async with running(tmp_path, base=base) as srv:
        with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
            await aiosmtplib.send(
                MSG,
                sender="a@s.test",
                recipients=["alice@example.test"],
                hostname="127.0.0.1",
                port=srv.port(),
                start_tls=False,
            )
        assert exc.value.code == 451  # the client keeps the message and retries
        events = srv.events()
        eom = [e for e in events if e["stage"] == "eom"]
        assert eom[-1]["action"] == "tempfail" and eom[-1]["reason"] == "delivery_deferred"


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
async def test_swaks_delivery_and_refusals(tmp_path: Path) -> None:
    async with running(tmp_path) as srv:

        def swaks(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["swaks", "--server", f"127.0.0.1:{srv.port()}", "--from", "a@sender.test", *args],
                capture_output=True,
                text=True,
                timeout=30,
            )

        ok = await asyncio.to_thread(swaks, "--to", "alice@example.test")
        assert ok.returncode == 0, ok.stdout
        unknown = await asyncio.to_thread(swaks, "--to", "nobody@example.test")
        assert "<** 550 5.1.1" in unknown.stdout
        relay = await asyncio.to_thread(swaks, "--to", "victim@elsewhere.invalid")
        assert "<** 554 5.7.1" in relay.stdout and "Relay access denied" in relay.stdout
        assert len(srv.maildir_files()) == 1
