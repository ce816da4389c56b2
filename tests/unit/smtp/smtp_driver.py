"""A scripted application around ServerEngine: feeds chunks, answers events, records all."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mxguard.smtp.protocol import (
    DataCommand,
    EngineConfig,
    Event,
    Helo,
    MailFrom,
    MessageReceived,
    RcptTo,
    Reply,
    ServerEngine,
    StartTLS,
)

BANNER = Reply(220, "", "mx.example.test ESMTP")


def default_answer(event: Event) -> Reply:
    """Accept everything except recipients whose local part starts with "bad"."""
    if isinstance(event, Helo):
        return Reply(250, "", "mx.example.test")
    if isinstance(event, MailFrom):
        return Reply(250, "2.1.0", "Sender OK")
    if isinstance(event, RcptTo):
        if event.address.startswith("bad"):
            return Reply(550, "5.1.1", "No such user")
        return Reply(250, "2.1.5", "Recipient OK")
    if isinstance(event, DataCommand):
        return Reply(354, "", "End data with <CR><LF>.<CR><LF>")
    if isinstance(event, MessageReceived):
        return Reply(250, "2.0.0", "Queued")
    if isinstance(event, StartTLS):
        return Reply(220, "2.0.0", "Ready to start TLS")
    raise AssertionError(f"no reply expected for {event!r}")


def drain(
    engine: ServerEngine,
    events: list[Event],
    answer: Callable[[Event], Reply] = default_answer,
) -> None:
    while (event := engine.next_event()) is not None:
        events.append(event)
        if engine.pending is not None:
            assert engine.pending is event
            engine.send(answer(event))


def run(
    chunks: Iterable[bytes],
    config: EngineConfig | None = None,
    answer: Callable[[Event], Reply] = default_answer,
    banner: Reply = BANNER,
    eof: bool = False,
) -> tuple[list[Event], bytes, ServerEngine]:
    """Greet, feed every chunk (draining events after each), and return events and output."""
    engine = ServerEngine(config or EngineConfig(hostname="mx.example.test"))
    engine.greet(banner)
    events: list[Event] = []
    out = bytearray()
    for chunk in chunks:
        engine.receive_data(chunk)
        drain(engine, events, answer)
        out += engine.data_to_send()
    if eof:
        engine.receive_eof()
        drain(engine, events, answer)
    out += engine.data_to_send()
    return events, bytes(out), engine


def replies(out: bytes) -> list[str]:
    """The output split into reply lines (without CRLF), banner included."""
    return out.decode().split("\r\n")[:-1]


def final_lines(out: bytes) -> list[str]:
    """Only the last line of each reply (multi-line EHLO collapsed), banner dropped."""
    return [line for line in replies(out) if len(line) < 4 or line[3] != "-"][1:]
