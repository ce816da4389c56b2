"""DATA handling: the terminator, dot-unstuffing, smuggling payloads, limits, STARTTLS, EOF."""

from __future__ import annotations

from typing import Any

import pytest
from smtp_driver import default_answer, drain, final_lines, run

from mxguard.smtp.protocol import (
    DataCommand,
    EngineConfig,
    Event,
    Helo,
    MailFrom,
    MessageReceived,
    MessageRejected,
    Noop,
    ProtocolError,
    RcptTo,
    Reply,
    ServerEngine,
    StartTLS,
)

START = b"EHLO c.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n"


def messages(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, MessageReceived | MessageRejected)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"hello\r\n.\r\n", b"hello\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"..x\r\n...\r\na\r\n..\r\n.\r\n", b".x\r\n..\r\na\r\n.\r\n"),
        (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n"),  # RFC 5321 4.5.2: any leading dot goes
        (b"no final newline.\r\n.\r\n", b"no final newline.\r\n"),
        (b"a\r\n\r\n\r\n.\r\n", b"a\r\n\r\n\r\n"),
        (b"x.\r\n.\r\n", b"x.\r\n"),
        ("8bit é\r\n.\r\n".encode(), "8bit é\r\n".encode()),
    ],
)
def test_body_and_unstuffing(body: bytes, expected: bytes) -> None:
    events, out, engine = run([START + body + b"NOOP\r\n"])
    assert messages(events) == [MessageReceived(expected, False)]
    assert events[-1] == Noop()
    assert final_lines(out)[-2:] == ["250 2.0.0 Queued", "250 2.0.0 OK"]
    assert not engine.in_data


SMUGGLE_TAIL = (
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled\r\n"
)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"\n.\n", "bare_lf"), (b"\r\n.\n", "bare_lf"), (b"\n.\r\n", "bare_lf"),
     (b"\r.\r", "bare_cr")],
)  # fmt: skip
@pytest.mark.parametrize("chunked", [False, True])
def test_smuggling_reject_mode(payload: bytes, reason: str, chunked: bool) -> None:
    data = START + b"Subject: one\r\n\r\nbody" + payload + SMUGGLE_TAIL + b".\r\nNOOP\r\n"
    chunks = [data[i : i + 1] for i in range(len(data))] if chunked else [data]
    events, out, _ = run(chunks)
    assert messages(events) == [MessageRejected(reason)]
    assert not any(isinstance(e, MailFrom) and e.address.startswith("evil") for e in events)
    assert [type(e) for e in events[-3:]] == [MessageRejected, ProtocolError, Noop]
    assert final_lines(out)[-2:] == [f"550 5.5.2 Bare <{reason[-2:].upper()}> received",
                                     "250 2.0.0 OK"]  # fmt: skip


@pytest.mark.parametrize("payload", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r"])
@pytest.mark.parametrize("chunked", [False, True])
def test_smuggling_normalize_mode(payload: bytes, chunked: bool) -> None:
    config = EngineConfig(bare_lf="normalize")
    data = START + b"Subject: one\r\n\r\nbody" + payload + SMUGGLE_TAIL + b".\r\nNOOP\r\n"
    chunks = [data[i : i + 1] for i in range(len(data))] if chunked else [data]
    events, _out, _ = run(chunks, config)
    (msg,) = messages(events)
    assert isinstance(msg, MessageReceived)
    assert msg.bare_lf_normalized
    assert b"MAIL FROM:<evil@attacker.example>\r\n" in msg.data
    assert msg.data.endswith(b"smuggled\r\n")
    # Only CRLF line ends remain, and no CRLF.CRLF that a relay could mistake for the end.
    assert msg.data.count(b"\n") == msg.data.count(b"\r\n")
    assert msg.data.count(b"\r") == msg.data.count(b"\r\n")
    assert events[-1] == Noop()
    assert sum(isinstance(e, MailFrom) for e in events) == 1


def test_normalize_rewrites_each_bare_ending() -> None:
    config = EngineConfig(bare_lf="normalize")
    events, _, _ = run([START + b"a\nb\rc\r\r\nd\r\n.\r\n"], config)
    assert messages(events) == [MessageReceived(b"a\r\nb\r\nc\r\n\r\nd\r\n", True)]


def test_terminator_split_everywhere() -> None:
    body = b"line one\r\n..dot\r\n"
    data = START + body + b".\r\nNOOP\r\n"
    whole, out_whole, _ = run([data])
    for cut in range(len(START), len(data)):
        events, out, _ = run([data[:cut], data[cut:]])
        assert events == whole and out == out_whole, cut


@pytest.mark.parametrize(
    ("overrides", "body", "reason", "reply"),
    [
        ({"max_message_size": 10}, b"12345678\r\n", None, None),
        ({"max_message_size": 10}, b"123456789\r\n", "too_big",
         "552 5.3.4 Message size exceeds fixed maximum message size"),
        ({"max_text_line": 12}, b"x\r\n1234567890\r\n", None, None),
        ({"max_text_line": 12}, b"x\r\n12345678901\r\ny\r\n", "line_too_long",
         "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"),
        ({"max_text_line": 12, "bare_lf": "normalize"}, b"1234567890\nx\r\n", None, None),
    ],
)  # fmt: skip
def test_body_limits(
    overrides: dict[str, Any], body: bytes, reason: str | None, reply: str | None
) -> None:
    events, out, _ = run([START + body + b".\r\nNOOP\r\n"], EngineConfig(**overrides))
    (msg,) = messages(events)
    if reason is None:
        assert isinstance(msg, MessageReceived)
    else:
        assert msg == MessageRejected(reason)
        assert final_lines(out)[-2] == reply
    assert events[-1] == Noop()


def test_oversize_body_memory_is_bounded() -> None:
    limit = 1024 * 1024
    chunk_size = 64 * 1024
    engine = ServerEngine(EngineConfig(max_message_size=limit))
    engine.greet(Reply(220, "", "hi"))
    events: list[Event] = []
    engine.receive_data(START)
    drain(engine, events)
    assert engine.in_data
    chunk = (b"x" * 998 + b"\r\n") * (chunk_size // 1000)
    peak = 0
    total = 0
    while total < 50 * 1024 * 1024:
        engine.receive_data(chunk)
        total += len(chunk)
        drain(engine, events)
        peak = max(peak, engine.buffered_bytes)
        if total > 2 * limit:
            assert engine.buffered_bytes <= 8, engine.buffered_bytes
    assert peak <= limit + chunk_size + 8
    engine.receive_data(b".\r\nNOOP\r\n")
    drain(engine, events)
    assert messages(events) == [MessageRejected("too_big")]
    assert events[-1] == Noop()
    assert engine.buffered_bytes == 0


def test_size_counts_the_whole_body_across_chunks() -> None:
    config = EngineConfig(max_message_size=100)
    body = b"y" * 60 + b"\r\n" + b"z" * 60 + b"\r\n"
    events, _, _ = run([START, body[:30], body[30:90], body[90:], b".\r\n"], config)
    assert messages(events) == [MessageRejected("too_big")]


def test_app_refuses_data() -> None:
    def answer(event: Event) -> Reply:
        if isinstance(event, DataCommand):
            return Reply(451, "4.3.0", "try later")
        return default_answer(event)

    events, out, engine = run([START + b"NOOP\r\n"], answer=answer)
    assert not engine.in_data
    assert events[-1] == Noop()
    assert final_lines(out)[-2:] == ["451 4.3.0 try later", "250 2.0.0 OK"]
    assert engine.recipients == ["r@example.test"]  # the transaction is still open


def test_app_refuses_message() -> None:
    def answer(event: Event) -> Reply:
        if isinstance(event, MessageReceived):
            return Reply(554, "5.7.1", "spam")
        return default_answer(event)

    _, out, engine = run([START + b"x\r\n.\r\n"], answer=answer)
    assert final_lines(out)[-1] == "554 5.7.1 spam"
    assert engine.sender is None


def test_in_data_and_eof_discards_partial_message() -> None:
    engine = ServerEngine(EngineConfig())
    engine.greet(Reply(220, "", "hi"))
    events: list[Event] = []
    engine.receive_data(START + b"partial body\r\n")
    drain(engine, events)
    assert engine.in_data
    engine.receive_eof()
    drain(engine, events)
    assert messages(events) == []
    assert engine.wants_close and not engine.in_data


def test_eof_after_complete_pipelined_message_still_processes_it() -> None:
    events, _, engine = run([START + b"hi\r\n.\r\nQUIT\r\n"], eof=True)
    assert MessageReceived(b"hi\r\n", False) in events
    assert engine.wants_close


def test_eof_with_partial_command() -> None:
    events, _out, engine = run([b"NOOP\r\nNO"], eof=True)
    assert events == [Noop()]
    assert engine.wants_close


def test_starttls_discards_plaintext_behind_it() -> None:
    config = EngineConfig(starttls=True)
    engine = ServerEngine(config)
    engine.greet(Reply(220, "", "hi"))
    events: list[Event] = []
    engine.receive_data(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x>\r\n")
    drain(engine, events)
    assert events == [Helo("c", True), StartTLS()]
    assert engine.data_to_send().endswith(b"220 2.0.0 Ready to start TLS\r\n")
    engine.receive_data(b"RCPT TO:<also-injected@x>\r\n")
    drain(engine, events)
    assert len(events) == 2  # nothing parsed while waiting for the handshake
    engine.tls_started()
    assert engine.tls and engine.helo_name is None and engine.buffered_bytes == 0
    engine.receive_data(b"MAIL FROM:<a@b>\r\nEHLO c\r\nSTARTTLS\r\n")
    drain(engine, events)
    out = engine.data_to_send().decode()
    assert out.startswith("503 5.5.1 Send HELO/EHLO first\r\n")
    assert "STARTTLS\r\n" not in out  # not advertised again
    assert out.endswith("503 5.5.1 TLS already active\r\n")
    assert not any(isinstance(e, MailFrom | RcptTo) for e in events)


def test_starttls_refused_by_app_keeps_plaintext_session() -> None:
    def answer(event: Event) -> Reply:
        if isinstance(event, StartTLS):
            return Reply(454, "4.7.0", "TLS not available")
        return default_answer(event)

    events, _out, engine = run([b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n"], EngineConfig(starttls=True),
                              answer=answer)  # fmt: skip
    assert events[-1] == Noop()
    assert not engine.tls
