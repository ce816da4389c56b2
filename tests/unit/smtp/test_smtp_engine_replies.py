"""Table tests: every reply the engine gives on its own, and the events around it."""

from __future__ import annotations

from typing import Any

import pytest
from smtp_driver import final_lines, replies, run

from mxguard.smtp.protocol import (
    Closed,
    EngineConfig,
    Helo,
    LocalProtocolError,
    MailFrom,
    MessageReceived,
    Noop,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerEngine,
    Vrfy,
)

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<s@example.org>\r\n"
RCPT = b"RCPT TO:<r@example.test>\r\n"

# (id, config overrides, input, expected final reply lines, expected ProtocolError reasons)
CASES: list[tuple[str, dict[str, Any], bytes, list[str], list[str]]] = [
    ("unknown", {}, b"FOO bar\r\n", ["500 5.5.2 Command unrecognized"], ["unknown_command"]),
    ("empty line", {}, b"\r\n", ["500 5.5.2 Command unrecognized"], ["unknown_command"]),
    ("mail before helo", {}, MAIL, ["503 5.5.1 Send HELO/EHLO first"], ["bad_sequence"]),
    (
        "rcpt before mail",
        {},
        EHLO + RCPT,
        ["250 SMTPUTF8", "503 5.5.1 Need MAIL command"],
        ["bad_sequence"],
    ),
    (
        "data before mail",
        {},
        EHLO + b"DATA\r\n",
        ["250 SMTPUTF8", "503 5.5.1 Need MAIL command"],
        ["bad_sequence"],
    ),
    (
        "data no rcpt",
        {},
        EHLO + MAIL + b"DATA\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "554 5.5.1 No valid recipients"],
        ["no_recipients"],
    ),
    (
        "data all rcpts refused",
        {},
        EHLO + MAIL + b"RCPT TO:<bad@x.test>\r\nDATA\r\n",
        [
            "250 SMTPUTF8",
            "250 2.1.0 Sender OK",
            "550 5.1.1 No such user",
            "554 5.5.1 No valid recipients",
        ],
        ["no_recipients"],
    ),
    (
        "nested mail",
        {},
        EHLO + MAIL + MAIL,
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "503 5.5.1 Nested MAIL command"],
        ["bad_sequence"],
    ),
    (
        "mail syntax",
        {},
        EHLO + b"MAIL TO:<a@b>\r\n",
        ["250 SMTPUTF8", "501 5.5.4 Syntax: MAIL FROM:<address>"],
        ["syntax"],
    ),
    (
        "mail no brackets",
        {},
        EHLO + b"MAIL FROM:a@b\r\n",
        ["250 SMTPUTF8", "501 5.1.7 Bad sender address syntax"],
        ["syntax"],
    ),
    (
        "mail unbalanced quote",
        {},
        EHLO + b'MAIL FROM:<"a@b>\r\n',
        ["250 SMTPUTF8", "501 5.1.7 Bad sender address syntax"],
        ["syntax"],
    ),
    (
        "rcpt syntax",
        {},
        EHLO + MAIL + b"RCPT FROM:<a@b>\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "501 5.5.4 Syntax: RCPT TO:<address>"],
        ["syntax"],
    ),
    (
        "rcpt null",
        {},
        EHLO + MAIL + b"RCPT TO:<>\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "501 5.1.3 Bad recipient address syntax"],
        ["syntax"],
    ),
    (
        "rcpt no brackets",
        {},
        EHLO + MAIL + b"RCPT TO:r@example.test\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "501 5.1.3 Bad recipient address syntax"],
        ["syntax"],
    ),
    (
        "rcpt space outside quotes",
        {},
        EHLO + MAIL + b"RCPT TO:<a b@x.test>\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "501 5.1.3 Bad recipient address syntax"],
        ["syntax"],
    ),
    (
        "rcpt control char",
        {},
        EHLO + MAIL + b"RCPT TO:<a\x01b@x.test>\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "501 5.1.3 Bad recipient address syntax"],
        ["syntax"],
    ),
    (
        "unknown mail param",
        {},
        EHLO + b"MAIL FROM:<a@b> FOO=1\r\n",
        ["250 SMTPUTF8", "555 5.5.4 Unsupported parameter"],
        ["unsupported_param"],
    ),
    (
        "size over limit",
        {"max_message_size": 1000},
        EHLO + b"MAIL FROM:<a@b> SIZE=1001\r\n",
        ["250 SMTPUTF8", "552 5.3.4 Message size exceeds fixed maximum message size"],
        ["too_big"],
    ),
    (
        "size at limit",
        {"max_message_size": 1000},
        EHLO + b"MAIL FROM:<a@b> SIZE=1000\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK"],
        [],
    ),
    (
        "size not a number",
        {},
        EHLO + b"MAIL FROM:<a@b> SIZE=abc\r\n",
        ["250 SMTPUTF8", "501 5.5.4 Syntax error in parameters"],
        ["syntax"],
    ),
    (
        "body binarymime",
        {},
        EHLO + b"MAIL FROM:<a@b> BODY=BINARYMIME\r\n",
        ["250 SMTPUTF8", "501 5.5.4 Unsupported BODY type"],
        ["syntax"],
    ),
    (
        "duplicate param",
        {},
        EHLO + b"MAIL FROM:<a@b> SIZE=1 size=2\r\n",
        ["250 SMTPUTF8", "501 5.5.4 Syntax error in parameters"],
        ["syntax"],
    ),
    (
        "smtputf8 with value",
        {},
        EHLO + b"MAIL FROM:<a@b> SMTPUTF8=yes\r\n",
        ["250 SMTPUTF8", "501 5.5.4 Syntax error in parameters"],
        ["syntax"],
    ),
    (
        "smtputf8 when off",
        {"smtputf8": False},
        EHLO + b"MAIL FROM:<a@b> SMTPUTF8\r\n",
        ["250 ENHANCEDSTATUSCODES", "555 5.5.4 Unsupported parameter"],
        ["unsupported_param"],
    ),
    (
        "params after HELO",
        {},
        b"HELO c\r\nMAIL FROM:<a@b> SIZE=10\r\n",
        ["250 mx.example.test", "555 5.5.4 Unsupported parameter"],
        ["unsupported_param"],
    ),
    (
        "rcpt param",
        {},
        EHLO + MAIL + b"RCPT TO:<r@x.test> NOTIFY=NEVER\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "555 5.5.4 Unsupported parameter"],
        ["unsupported_param"],
    ),
    (
        "utf8 sender without SMTPUTF8",
        {},
        EHLO + "MAIL FROM:<jö@b.test>\r\n".encode(),
        ["250 SMTPUTF8", "553 5.6.7 Non-ASCII address requires SMTPUTF8"],
        ["smtputf8_required"],
    ),
    (
        "utf8 rcpt without SMTPUTF8",
        {},
        EHLO + MAIL + "RCPT TO:<jö@b.test>\r\n".encode(),
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "553 5.6.7 Non-ASCII address requires SMTPUTF8"],
        ["smtputf8_required"],
    ),
    (
        "utf8 with SMTPUTF8",
        {},
        EHLO + "MAIL FROM:<jö@b.test> SMTPUTF8\r\nRCPT TO:<ü@x.test>\r\n".encode(),
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"],
        [],
    ),
    (
        "invalid utf8",
        {},
        EHLO + b"MAIL FROM:<\xff@b>\r\n",
        ["250 SMTPUTF8", "500 5.5.2 Invalid characters in command"],
        ["syntax"],
    ),
    (
        "too many recipients",
        {"max_recipients": 2},
        EHLO + MAIL + RCPT + RCPT + RCPT + b"RCPT TO:<bad@x>\r\n",
        [
            "250 SMTPUTF8",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.1.5 Recipient OK",
            "452 4.5.3 Too many recipients",
            "452 4.5.3 Too many recipients",
        ],
        ["too_many_recipients", "too_many_recipients"],
    ),
    (
        "refused rcpt does not count",
        {"max_recipients": 1},
        EHLO + MAIL + b"RCPT TO:<bad@x>\r\n" + RCPT,
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "550 5.1.1 No such user", "250 2.1.5 Recipient OK"],
        [],
    ),
    (
        "vrfy",
        {},
        b"VRFY alice\r\n",
        ["252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery"],
        [],
    ),
    ("vrfy no arg", {}, b"VRFY\r\n", ["501 5.5.4 Syntax: VRFY address"], ["syntax"]),
    (
        "rset noop",
        {},
        b"RSET\r\nNOOP\r\nnoop anything\r\n",
        ["250 2.0.0 OK", "250 2.0.0 OK", "250 2.0.0 OK"],
        [],
    ),
    (
        "rset with arg",
        {},
        b"RSET x\r\n",
        ["501 5.5.4 Syntax error, no parameters allowed"],
        ["syntax"],
    ),
    ("help", {}, b"HELP\r\n", ["214 2.0.0 See RFC 5321"], []),
    (
        "auth",
        {},
        b"AUTH PLAIN AAAA\r\n",
        ["502 5.5.1 Command not implemented"],
        ["not_implemented"],
    ),
    (
        "etrn",
        {},
        b"ETRN example.test\r\n",
        ["502 5.5.1 Command not implemented"],
        ["not_implemented"],
    ),
    ("expn", {}, b"EXPN list\r\n", ["502 5.5.1 Command not implemented"], ["not_implemented"]),
    ("bdat", {}, b"BDAT 10 LAST\r\n", ["502 5.5.1 Command not implemented"], ["not_implemented"]),
    (
        "starttls off",
        {},
        b"STARTTLS\r\n",
        ["502 5.5.1 Command not implemented"],
        ["not_implemented"],
    ),
    (
        "starttls in transaction",
        {"starttls": True},
        EHLO + MAIL + b"STARTTLS\r\n",
        [
            "250 STARTTLS",
            "250 2.1.0 Sender OK",
            "503 5.5.1 STARTTLS not allowed during a mail transaction",
        ],
        ["bad_sequence"],
    ),
    (
        "starttls with arg",
        {"starttls": True},
        b"STARTTLS now\r\n",
        ["501 5.5.4 Syntax error, no parameters allowed"],
        ["syntax"],
    ),
    ("ehlo no arg", {}, b"EHLO\r\n", ["501 5.5.4 Syntax: HELO/EHLO hostname"], ["syntax"]),
    ("helo blank arg", {}, b"HELO   \r\n", ["501 5.5.4 Syntax: HELO/EHLO hostname"], ["syntax"]),
    (
        "data with arg",
        {},
        EHLO + MAIL + RCPT + b"DATA now\r\n",
        [
            "250 SMTPUTF8",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "501 5.5.4 Syntax error, no parameters allowed",
        ],
        ["syntax"],
    ),
    (
        "line too long",
        {},
        b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n",
        ["500 5.5.2 Line too long", "250 2.0.0 OK"],
        ["line_too_long"],
    ),
    ("line at limit", {}, b"NOOP " + b"x" * 505 + b"\r\n", ["250 2.0.0 OK"], []),
    (
        "huge line",
        {},
        b"x" * 100_000 + b"\r\nNOOP\r\n",
        ["500 5.5.2 Line too long", "250 2.0.0 OK"],
        ["line_too_long"],
    ),
    (
        "mail params use the allowance",
        {},
        EHLO + b"MAIL FROM:<" + b"a" * 600 + b"@b.test> SIZE=10\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK"],
        [],
    ),
    (
        "mail beyond the allowance",
        {},
        EHLO + b"MAIL FROM:<" + b"a" * 1100 + b"@b>\r\nNOOP\r\n",
        ["250 SMTPUTF8", "500 5.5.2 Line too long", "250 2.0.0 OK"],
        ["line_too_long"],
    ),
    (
        "bare lf command",
        {},
        b"NOOP\nNOOP\r\n",
        ["500 5.5.2 Bare <LF> received", "250 2.0.0 OK"],
        ["bare_lf"],
    ),
    (
        "bare lf command normalized",
        {"bare_lf": "normalize"},
        b"NOOP\nNOOP\r\n",
        ["250 2.0.0 OK", "250 2.0.0 OK"],
        [],
    ),
    ("bare cr command", {}, b"NOOP\rQUIT\r\n", ["500 5.5.2 Bare <CR> received"], ["bare_cr"]),
    (
        "bare cr command normalize",
        {"bare_lf": "normalize"},
        b"NOOP\rQUIT\r\n",
        ["500 5.5.2 Bare <CR> received"],
        ["bare_cr"],
    ),
    (
        "http",
        {},
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ["421 4.7.0 Non-SMTP command, closing connection"],
        ["non_smtp"],
    ),
    (
        "http post lowercase",
        {},
        b"post /x HTTP/1.0\n\n",
        ["421 4.7.0 Non-SMTP command, closing connection"],
        ["non_smtp"],
    ),
    (
        "case-insensitive verbs",
        {},
        b"ehlo c\r\nmail from:<a@b> size=10 body=8bitmime\r\nrcpt to:<r@x.test>\r\nrset\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "250 2.0.0 OK"],
        [],
    ),
    (
        "space after colon",
        {},
        EHLO + b"MAIL FROM: <a@b>\r\nRCPT TO: <r@x.test>\r\n",
        ["250 SMTPUTF8", "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"],
        [],
    ),
    (
        "helo resets transaction",
        {},
        EHLO + MAIL + RCPT + EHLO + b"DATA\r\n",
        [
            "250 SMTPUTF8",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 SMTPUTF8",
            "503 5.5.1 Need MAIL command",
        ],
        ["bad_sequence"],
    ),
    (
        "rset resets transaction",
        {},
        EHLO + MAIL + RCPT + b"RSET\r\nDATA\r\n",
        [
            "250 SMTPUTF8",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.0.0 OK",
            "503 5.5.1 Need MAIL command",
        ],
        ["bad_sequence"],
    ),
    ("quit", {}, b"QUIT\r\nNOOP\r\n", ["221 2.0.0 Bye"], []),
]


@pytest.mark.parametrize(
    ("overrides", "data", "expected", "reasons"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_auto_replies(
    overrides: dict[str, Any], data: bytes, expected: list[str], reasons: list[str]
) -> None:
    config = EngineConfig(hostname="mx.example.test", **overrides)
    events, out, _ = run([data], config)
    assert final_lines(out) == expected
    assert [e.reason for e in events if isinstance(e, ProtocolError)] == reasons
    for event in events:
        if isinstance(event, ProtocolError):
            assert event.reply.to_bytes().decode().rstrip("\r\n") in replies(out)


def test_ehlo_reply_lists_extensions() -> None:
    config = EngineConfig(hostname="mx.example.test", max_message_size=12345, starttls=True)
    _, out, engine = run([EHLO], config)
    assert replies(out)[1:] == [
        "250-mx.example.test",
        "250-PIPELINING",
        "250-SIZE 12345",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250-SMTPUTF8",
        "250 STARTTLS",
    ]
    assert engine.esmtp and engine.helo_name == "client.example"


def test_helo_reply_is_the_apps_reply() -> None:
    events, out, engine = run([b"HELO client.example\r\n"])
    assert events == [Helo("client.example", False)]
    assert replies(out)[1:] == ["250 mx.example.test"]
    assert not engine.esmtp


def test_refused_helo_leaves_client_ungreeted() -> None:
    def answer(event: object) -> Reply:
        return Reply(550, "5.7.1", "go away")

    _, out, engine = run([EHLO + MAIL], answer=answer)
    assert final_lines(out) == ["550 5.7.1 go away", "503 5.5.1 Send HELO/EHLO first"]
    assert engine.helo_name is None


def test_mail_and_rcpt_events_and_state() -> None:
    data = (
        EHLO
        + b"MAIL FROM:<> BODY=8BITMIME SIZE=100\r\n"
        + b'RCPT TO:<"a b"@x.test>\r\nRCPT TO:<bad@x.test>\r\nRCPT TO:<Postmaster>\r\n'
    )
    events, _, engine = run([data])
    assert events[1] == MailFrom("", {"BODY": "8BITMIME", "SIZE": "100"})
    assert events[2:] == [RcptTo('"a b"@x.test', {}), RcptTo("bad@x.test", {}),
                          RcptTo("Postmaster", {})]  # fmt: skip
    assert engine.sender == ""
    assert engine.recipients == ['"a b"@x.test', "Postmaster"]
    assert engine.mail_params == {"BODY": "8BITMIME", "SIZE": "100"}


@pytest.mark.parametrize(
    "address",
    ['"a b"@x.test', '"a@b"@x.test', "@a.test,@b.test:user@c.test", "user@[1.2.3.4]",
     "user@[IPv6:2001:db8::1]", "a%b@x.test", "a!b@x.test", "user@other@x.test",
     "user.@x.test", "user@x.test.", '"a\\"b"@x.test'],
)  # fmt: skip
def test_addresses_returned_as_given(address: str) -> None:
    events, out, _ = run([EHLO + MAIL + f"RCPT TO:<{address}>\r\n".encode()])
    assert events[-1] == RcptTo(address, {})
    assert final_lines(out)[-1] == "250 2.1.5 Recipient OK"


@pytest.mark.parametrize(
    "path",
    ["a@b", "<a@b", "<a b@x>", '<"a@x>', "<@a.test:>", "<@a.test user@x>", "<user@>", "<@x>",
     "<user>", "<a@b>x", "<user@[1.2.3.4>", '<a"b@x>', "<a@b\"c>"],
)  # fmt: skip
def test_unparseable_recipients(path: str) -> None:
    _, out, _ = run([EHLO + MAIL + f"RCPT TO:{path}\r\n".encode()])
    assert final_lines(out)[-1] == "501 5.1.3 Bad recipient address syntax"


def test_informational_events() -> None:
    events, _, _ = run([b"VRFY alice\r\nRSET\r\nNOOP\r\nHELP\r\nQUIT\r\n"])
    assert events == [Vrfy("alice"), Reset(), Noop(), Quit()]


def test_quit_closes_and_ignores_the_rest() -> None:
    events, out, engine = run([b"QUIT\r\nNOOP\r\n", b"NOOP\r\n"])
    assert events == [Quit()]
    assert engine.wants_close
    assert final_lines(out) == ["221 2.0.0 Bye"]


def test_non_smtp_closes() -> None:
    events, _, engine = run([b"POST / HTTP/1.1\r\n"])
    assert events[-1] == Closed("non_smtp")
    assert engine.wants_close


def test_max_errors() -> None:
    config = EngineConfig(max_errors=3)
    events, out, engine = run([b"A\r\nB\r\nNOOP\r\nC\r\nD\r\n"], config)
    assert final_lines(out) == [
        "500 5.5.2 Command unrecognized",
        "500 5.5.2 Command unrecognized",
        "250 2.0.0 OK",
        "500 5.5.2 Command unrecognized",
        "421 4.7.0 Too many errors",
    ]
    assert events[-1] == Closed("too_many_errors")
    assert engine.wants_close
    assert engine.error_count == 3


def test_too_many_recipients_is_not_counted_as_an_error() -> None:
    config = EngineConfig(max_errors=2, max_recipients=1)
    _, out, engine = run([EHLO + MAIL + RCPT * 5], config)
    assert final_lines(out)[-1] == "452 4.5.3 Too many recipients"
    assert not engine.wants_close


def test_554_greeting_allows_only_quit() -> None:
    events, out, engine = run(
        [b"EHLO c\r\nMAIL FROM:<a@b>\r\nQUIT\r\n"], banner=Reply(554, "5.7.1", "No service")
    )
    assert replies(out) == [
        "554 5.7.1 No service",
        "503 5.5.1 No SMTP service here, only QUIT",
        "503 5.5.1 No SMTP service here, only QUIT",
        "221 2.0.0 Bye",
    ]
    assert events[-1] == Quit()
    assert engine.wants_close


def test_554_greeting_closes_after_max_errors() -> None:
    _, out, engine = run([b"NOOP\r\n" * 20], EngineConfig(max_errors=5),
                         banner=Reply(554, "5.7.1", "No"))  # fmt: skip
    assert final_lines(out)[-1] == "421 4.7.0 Too many errors"
    assert engine.wants_close


def test_421_greeting_closes() -> None:
    engine = ServerEngine(EngineConfig())
    engine.receive_data(b"EHLO x\r\n")
    engine.greet(Reply(421, "4.3.2", "busy"))
    assert engine.wants_close
    assert engine.next_event() is None
    assert engine.data_to_send() == b"421 4.3.2 busy\r\n"


def test_app_421_closes() -> None:
    def answer(event: object) -> Reply:
        return Reply(421, "4.7.0", "bye now")

    events, out, engine = run([EHLO + b"NOOP\r\n"], answer=answer)
    assert engine.wants_close
    assert final_lines(out) == ["421 4.7.0 bye now"]
    assert len(events) == 1


def test_receive_before_greet_is_kept() -> None:
    engine = ServerEngine(EngineConfig())
    engine.receive_data(b"EHLO early\r\n")
    assert engine.next_event() is None
    assert engine.data_to_send() == b""
    engine.greet(Reply(220, "", "hi"))
    assert engine.next_event() == Helo("early", True)


def test_send_without_pending_raises() -> None:
    engine = ServerEngine(EngineConfig())
    engine.greet(Reply(220, "", "hi"))
    with pytest.raises(LocalProtocolError):
        engine.send(Reply(250, "", "x"))
    with pytest.raises(LocalProtocolError):
        engine.greet(Reply(220, "", "again"))
    with pytest.raises(LocalProtocolError):
        engine.tls_started()


def test_chunking_config_refused() -> None:
    with pytest.raises(ValueError, match="CHUNKING"):
        ServerEngine(EngineConfig(chunking=True))


def test_pending_blocks_further_parsing() -> None:
    engine = ServerEngine(EngineConfig())
    engine.greet(Reply(220, "", "hi"))
    engine.data_to_send()
    engine.receive_data(EHLO + b"NOOP\r\nFOO\r\n")
    assert engine.next_event() == Helo("client.example", True)
    assert engine.next_event() is None  # NOOP is not even looked at yet
    assert engine.data_to_send() == b""
    engine.send(Reply(250, "", "mx"))
    assert engine.next_event() == Noop()
    assert isinstance(engine.next_event(), ProtocolError)
    out = engine.data_to_send()
    assert out.startswith(b"250-mx\r\n") and out.endswith(
        b"250 2.0.0 OK\r\n500 5.5.2 Command unrecognized\r\n"
    )


def test_pipelining_order() -> None:
    engine = ServerEngine(EngineConfig(hostname="mx"))
    engine.greet(Reply(220, "", "mx"))
    engine.receive_data(EHLO + MAIL + RCPT + b"RCPT TO:<bad@x>\r\nDATA\r\n")
    seen = []
    while (event := engine.next_event()) is not None:
        seen.append(type(event).__name__)
        assert engine.next_event() is None  # one at a time
        from smtp_driver import default_answer

        engine.send(default_answer(event))
    assert seen == ["Helo", "MailFrom", "RcptTo", "RcptTo", "DataCommand"]
    assert final_lines(engine.data_to_send()) == [
        "250 SMTPUTF8",
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "550 5.1.1 No such user",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert engine.in_data


def test_reply_rendering() -> None:
    assert Reply(250, "2.0.0", "OK").to_bytes() == b"250 2.0.0 OK\r\n"
    assert Reply(220, "", "mx ESMTP").to_bytes() == b"220 mx ESMTP\r\n"
    assert Reply(550, "5.7.1", "a\nb").to_bytes() == b"550-5.7.1 a\r\n550 5.7.1 b\r\n"
    assert Reply(250, "", "").to_bytes() == b"250\r\n"
    # CR in application text cannot forge an extra reply line
    assert Reply(250, "", "x\r\n250 y").to_bytes() == b"250-x\r\n250 250 y\r\n"


def test_message_received_resets_transaction() -> None:
    events, out, engine = run([EHLO + MAIL + RCPT + b"DATA\r\nhi\r\n.\r\nDATA\r\n"])
    assert MessageReceived(b"hi\r\n", False) in events
    assert final_lines(out)[-1] == "503 5.5.1 Need MAIL command"
    assert engine.sender is None and engine.recipients == []


def test_wrong_positive_reply_to_data_or_starttls_raises() -> None:
    engine = ServerEngine(EngineConfig(starttls=True))
    engine.greet(Reply(220, "", "hi"))
    engine.receive_data(b"STARTTLS\r\n")
    engine.next_event()
    with pytest.raises(LocalProtocolError):
        engine.send(Reply(250, "", "no"))
    engine.send(Reply(454, "4.7.0", "not now"))
    assert not engine.tls
