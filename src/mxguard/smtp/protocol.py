"""A sans-I/O SMTP server engine: bytes in, events out; replies in, bytes out.

Why our own engine: an MX screener lives in the phases aiosmtpd gives no hook for (before the
banner, connection caps, per-phase timeouts, PIPELINING). Keeping the protocol free of sockets,
asyncio and clocks lets the listener, the simulator and the tests drive the very same code, and
lets hypothesis prove that the way bytes are chunked on the wire never changes what happens.

Usage, h11-style::

    engine = ServerEngine(EngineConfig(hostname="mx.example.test"))
    engine.greet(Reply(220, "", "mx.example.test ESMTP"))
    engine.receive_data(chunk)
    while (event := engine.next_event()) is not None:
        if isinstance(event, NEEDS_REPLY):
            engine.send(decide(event))
    transport.write(engine.data_to_send())

Rules the engine keeps so the adapter does not have to:

* One event needing a reply at a time. While it is pending, no further buffered input is
  parsed, so pipelined commands are answered strictly in order and a later command can never
  observe a state the application has not yet decided.
* Protocol errors are answered by the engine itself and reported as ``ProtocolError``.
* DATA ends only on ``<CRLF>.<CRLF>`` (SMTP smuggling defence); bare CR/LF are rejected or
  normalised, never treated as line ends that could close the message.
* Memory per session is bounded: an oversize body is counted, not stored.

Choices worth knowing (each one deliberate):

* Bare LF / bare CR in a command: ``500 5.5.2`` in reject mode. Normalise mode accepts a bare
  LF as a command terminator but still refuses a bare CR inside a command (treating it as a line
  end would turn one line into two commands).
* Bare LF / bare CR in a body: reject mode refuses the whole message at end of data
  (``550 5.5.2``); normalise mode turns every bare LF *and* every bare CR into CRLF, then
  removes dot-stuffing from every line (as Postfix does), and reports
  ``bare_lf_normalized=True``. Either way only ``<CRLF>.<CRLF>`` ends DATA.
* Dot-unstuffing follows RFC 5321 4.5.2: the leading "." of every body line is removed
  (so ``..x`` -> ``.x`` and a stray ``.x`` -> ``x``).
* Message size is the number of body bytes on the wire (dot-stuffed, before normalisation),
  which is what a client's ``SIZE=`` declares; over the limit the body is no longer stored.
* A line of the body longer than ``max_text_line`` octets including its CRLF is refused.
* Checks at end of data run in this order: too_big, bare_lf, bare_cr, line_too_long.
* ``max_errors`` counts the engine's own error replies (``ProtocolError``), including refused
  bodies but not ``452 4.5.3`` (too many recipients is a normal ESMTP flow); the
  application's own 4xx/5xx replies are not counted.
* Any 421 the application sends (to any event) closes the session: ``wants_close``.
* EOF: complete commands and messages already buffered are still processed (as Postfix does);
  whatever is incomplete, a partial message above all, is dropped, then ``wants_close``.
* A refused HELO/EHLO leaves the client un-greeted (``helo_name`` is None).

The adapter must stop reading from the socket while ``pending`` is set and ``buffered_bytes``
is large (flow control), and should bound what it feeds before ``greet()``; the engine keeps
everything it is given, except the body of an oversize message, which it counts and drops.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from mxguard.memo import Memo
from mxguard.smtp.address import AddressSyntaxError, parse_path

__all__ = [
    "NEEDS_REPLY",
    "Closed",
    "DataCommand",
    "EngineConfig",
    "Event",
    "Helo",
    "LocalProtocolError",
    "MailFrom",
    "MessageReceived",
    "MessageRejected",
    "Noop",
    "ProtocolError",
    "Quit",
    "RcptTo",
    "Reply",
    "Reset",
    "ServerEngine",
    "StartTLS",
    "Vrfy",
]

# RFC 5321 4.5.3.1.4/4.5.3.1.6 let MAIL and RCPT grow by the length of their extension
# parameters; 512 more octets covers every parameter we advertise with room to spare.
PARAM_ALLOWANCE = 512


class LocalProtocolError(RuntimeError):
    """The application drove the engine wrongly (a bug in our code, never the peer's fault)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply; ``text`` lines become a multi-line reply."""

    code: int
    status: str
    text: str
    # the wire form, made on first use: most replies are constants sent again and again
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._render()
            object.__setattr__(self, "_wire", wire)
        return wire

    def _render(self) -> bytes:
        # CR is dropped from the text so an application-supplied string (a policy message, a
        # downstream server's reply passed back) can never inject an extra reply line.
        text = self.text
        if "\n" not in text and "\r" not in text:  # the common case, kept cheap
            if self.status:
                return f"{self.code} {self.status} {text}\r\n".encode()
            return (f"{self.code} {text}".rstrip(" ") + "\r\n").encode()
        prefix = f"{self.status} " if self.status else ""
        lines = text.replace("\r", "").split("\n")
        last = len(lines) - 1
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}".rstrip(" "))
        out.append("")
        return "\r\n".join(out).encode("utf-8")


@dataclass(frozen=True)
class EngineConfig:
    """Limits and advertised extensions; see docs/configuration.md for the user-facing names."""

    hostname: str = "localhost"
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 100
    max_command_line: int = 512
    max_text_line: int = 8192
    max_errors: int = 10
    bare_lf: Literal["reject", "normalize"] = "reject"
    starttls: bool = False
    smtputf8: bool = True
    pipelining: bool = True
    chunking: bool = False


# --- events -----------------------------------------------------------------------------------
# Frozen so an event can be logged or queued without fear of later mutation; don't subclass.


@dataclass(frozen=True, slots=True)
class Helo:
    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class RcptTo:
    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class DataCommand:
    pass


@dataclass(frozen=True, slots=True)
class MessageReceived:
    data: bytes
    bare_lf_normalized: bool


@dataclass(frozen=True, slots=True)
class MessageRejected:
    reason: str


@dataclass(frozen=True, slots=True)
class StartTLS:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    arg: str


@dataclass(frozen=True, slots=True)
class Reset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class ProtocolError:
    reply: Reply
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


Event: TypeAlias = (
    Helo
    | MailFrom
    | RcptTo
    | DataCommand
    | MessageReceived
    | MessageRejected
    | StartTLS
    | Vrfy
    | Reset
    | Noop
    | Quit
    | ProtocolError
    | Closed
)

#: Events the application must answer with exactly one ``send(reply)``.
NEEDS_REPLY = (Helo, MailFrom, RcptTo, DataCommand, MessageReceived, StartTLS)

# --- fixed replies ----------------------------------------------------------------------------

_ehlo_replies: Memo[tuple[str, str], Reply] = Memo(64)


def _ehlo_reply(greeting: str, extensions: str) -> Reply:
    """The EHLO answer, one object per greeting and extension list, so its bytes are made once."""
    reply = _ehlo_replies.get((greeting, extensions))
    if reply is None:
        reply = Reply(250, "", f"{greeting}\n{extensions}")
        _ehlo_replies.remember((greeting, extensions), reply)
    return reply


R_OK = Reply(250, "2.0.0", "OK")
R_BYE = Reply(221, "2.0.0", "Bye")
R_VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
R_HELP = Reply(214, "2.0.0", "See RFC 5321")
R_UNKNOWN = Reply(500, "5.5.2", "Command unrecognized")
R_TOO_LONG = Reply(500, "5.5.2", "Line too long")
R_BARE_LF = Reply(500, "5.5.2", "Bare <LF> received")
R_BARE_CR = Reply(500, "5.5.2", "Bare <CR> received")
R_BAD_UTF8 = Reply(500, "5.5.2", "Invalid characters in command")
R_NOT_IMPL = Reply(502, "5.5.1", "Command not implemented")
R_NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
R_NESTED = Reply(503, "5.5.1", "Nested MAIL command")
R_NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
R_NO_SERVICE = Reply(503, "5.5.1", "No SMTP service here, only QUIT")
R_TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
R_TLS_IN_TX = Reply(503, "5.5.1", "STARTTLS not allowed during a mail transaction")
R_NO_RCPTS = Reply(554, "5.5.1", "No valid recipients")
R_SYNTAX_HELO = Reply(501, "5.5.4", "Syntax: HELO/EHLO hostname")
R_SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
R_SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
R_SYNTAX_NOARG = Reply(501, "5.5.4", "Syntax error, no parameters allowed")
R_SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY address")
R_SYNTAX_PARAM = Reply(501, "5.5.4", "Syntax error in parameters")
R_BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
R_BAD_RCPT = Reply(501, "5.1.3", "Bad recipient address syntax")
R_BAD_BODY = Reply(501, "5.5.4", "Unsupported BODY type")
R_UNSUPPORTED = Reply(555, "5.5.4", "Unsupported parameter")
R_NEED_UTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
R_SIZE = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
R_TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
R_DATA_BARE_LF = Reply(550, "5.5.2", "Bare <LF> received")
R_DATA_BARE_CR = Reply(550, "5.5.2", "Bare <CR> received")
R_DATA_TOO_LONG = Reply(500, "5.5.2", "Line too long (see RFC 5321 4.5.3.1.6)")
R_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors")
R_NON_SMTP = Reply(421, "4.7.0", "Non-SMTP command, closing connection")

# Verbs that show an HTTP client (or a proxy probe) talking to the SMTP port; like postscreen's
# non-SMTP command test, these end the session at once instead of costing max_errors replies.
_NON_SMTP_VERBS = frozenset(
    {b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"HOST:", b"USER-AGENT:"}
)
_NOT_IMPLEMENTED = frozenset({b"AUTH", b"ETRN", b"EXPN", b"TURN", b"ATRN", b"BDAT", b"SEND",
                              b"SOML", b"SAML"})  # fmt: skip
# 452 is a normal ESMTP flow (the client retries the rest later), not misbehaviour.
_UNCOUNTED_ERRORS = frozenset({"too_many_recipients"})

# Engine states. Plain ints keep the hot path free of enum attribute lookups.
_S_PREGREET = 0  # greet() not called yet; input is only buffered
_S_COMMAND = 1
_S_DATA = 2
_S_QUIT_ONLY = 3  # after a 554-style greeting: RFC 5321 3.1 allows only QUIT
_S_TLS_WAIT = 4  # STARTTLS answered 220; waiting for tls_started()
_S_CLOSED = 5

_TERMINATOR = b"\r\n.\r\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=64)
def _extensions(config: EngineConfig, tls: bool) -> str:
    """The EHLO keyword lines; cached because every session of a listener shares one config."""
    ext = []
    if config.pipelining:
        ext.append("PIPELINING")
    ext.append(f"SIZE {config.max_message_size}")
    ext.append("8BITMIME")
    ext.append("ENHANCEDSTATUSCODES")
    if config.smtputf8:
        ext.append("SMTPUTF8")
    if config.starttls and not tls:
        ext.append("STARTTLS")
    return "\n".join(ext)


_COMPACT_AT = 65536


class ServerEngine:
    """One SMTP server session's protocol state; see the module docstring for the contract."""

    def __init__(self, config: EngineConfig) -> None:
        if config.chunking:
            raise ValueError("CHUNKING/BDAT is not implemented by the SMTP engine yet")
        self.config = config
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed input in _buf; compacted lazily
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: Event | None = None
        self._state = _S_PREGREET
        self._eof = False
        self._discarding = False  # inside an over-long command line, dropping to its LF
        self._errors = 0
        self._tls = False
        self._helo: str | None = None
        self._esmtp = False
        self._sender: str | None = None
        self._mail_params: dict[str, str | None] = {}
        self._recipients: list[str] = []
        # DATA scanning state
        self._body_start = False  # the next bytes are the first of the body
        self._scan = 0  # where the terminator search resumes
        self._dropped = 0  # body bytes already counted and thrown away (oversize)
        self._too_big = False
        self._hard_line_limit = config.max_command_line + PARAM_ALLOWANCE
        self._normalize = config.bare_lf == "normalize"
        self._ehlo_plain = _extensions(config, tls=False)
        self._ehlo_tls = _extensions(config, tls=True)

    # --- read-only state -----------------------------------------------------------------------

    @property
    def wants_close(self) -> bool:
        return self._state == _S_CLOSED

    @property
    def in_data(self) -> bool:
        return self._state == _S_DATA

    @property
    def pending(self) -> Event | None:
        return self._pending

    @property
    def esmtp(self) -> bool:
        return self._esmtp

    @property
    def helo_name(self) -> str | None:
        return self._helo

    @property
    def sender(self) -> str | None:
        return self._sender

    @property
    def mail_params(self) -> dict[str, str | None]:
        return dict(self._mail_params)

    @property
    def recipients(self) -> list[str]:
        return list(self._recipients)

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def error_count(self) -> int:
        return self._errors

    @property
    def buffered_bytes(self) -> int:
        """Bytes of input held in memory (what flow control and the memory tests watch)."""
        return len(self._buf)

    # --- driving the engine --------------------------------------------------------------------

    def greet(self, reply: Reply) -> None:
        """Send the banner; only a 220 opens the dialogue (RFC 5321 3.1)."""
        if self._state != _S_PREGREET:
            raise LocalProtocolError("greet() called twice")
        self._out += reply.to_bytes()
        if reply.code == 220:
            self._state = _S_COMMAND
        elif reply.code == 421:
            self._close()
        else:
            self._state = _S_QUIT_ONLY

    def receive_data(self, data: bytes) -> None:
        """Buffer input; parsing happens in next_event() so replies can gate it."""
        if self._state == _S_CLOSED or self._eof:
            return
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def receive_eof(self) -> None:
        """The peer closed its side. Complete buffered input is still processed (like
        Postfix); anything incomplete, such as a partial message, is dropped, never delivered."""
        self._eof = True
        if self._state in (_S_PREGREET, _S_TLS_WAIT):
            self._close()

    def next_event(self) -> Event | None:
        """The next event, or None when more input or a reply to ``pending`` is needed."""
        events = self._events
        if events:
            return events.popleft()
        while self._pending is None:
            state = self._state
            if state == _S_DATA:
                progressed = self._step_data()
            elif state in (_S_COMMAND, _S_QUIT_ONLY):
                progressed = self._step_command()
            else:
                return None
            if events:
                return events.popleft()
            if not progressed:
                if self._eof:
                    self._close()
                return None
        return None

    def send(self, reply: Reply) -> None:
        """Answer the pending event."""
        event = self._pending
        if event is None:
            raise LocalProtocolError("send() called but no event is waiting for a reply")
        if not 200 <= reply.code <= 599:
            raise LocalProtocolError(f"not an SMTP reply code: {reply.code}")
        if isinstance(event, DataCommand | StartTLS) and reply.code < 400:
            # Anything but the one positive code would leave client and engine disagreeing on
            # whether the next bytes are a body (or a TLS handshake) or commands.
            wanted = 354 if isinstance(event, DataCommand) else 220
            if reply.code != wanted:
                raise LocalProtocolError(f"{type(event).__name__} needs {wanted} or 4xx/5xx")
        self._pending = None
        ok = reply.code < 400
        if isinstance(event, RcptTo):
            if ok:
                self._recipients.append(event.address)
        elif isinstance(event, MailFrom):
            if ok:
                self._sender = event.address
                self._mail_params = event.params
        elif isinstance(event, DataCommand):
            if reply.code == 354:
                self._state = _S_DATA
                self._body_start = True
                self._scan = self._pos
                self._dropped = 0
                self._too_big = False
        elif isinstance(event, MessageReceived):
            # The transaction ends whatever the answer (RFC 5321 4.1.1.4).
            self._reset_transaction()
        elif isinstance(event, Helo):
            if ok:
                self._helo = event.name
                self._esmtp = event.extended
                if event.extended and reply.code == 250:
                    ext = self._ehlo_tls if self._tls else self._ehlo_plain
                    # RFC 2034: no enhanced status codes in the EHLO response.
                    reply = _ehlo_reply(reply.text, ext)
            else:
                # A refused greeting leaves the client un-greeted, whatever came before.
                self._helo = None
                self._esmtp = False
        elif isinstance(event, StartTLS) and reply.code == 220:
            self._state = _S_TLS_WAIT
        self._out += reply.to_bytes()
        if reply.code == 421:
            self._close()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self) -> None:
        """The handshake finished: forget everything learnt in plaintext (RFC 3207 4.2).

        Bytes a client pipelined behind STARTTLS arrived unprotected and could have been
        injected by a man in the middle (CVE-2024-34083 style), so they are discarded.
        """
        if self._state != _S_TLS_WAIT:
            raise LocalProtocolError("tls_started() without an accepted STARTTLS")
        self._buf.clear()
        self._pos = 0
        self._discarding = False
        self._tls = True
        self._helo = None
        self._esmtp = False
        self._reset_transaction()
        self._state = _S_COMMAND

    # --- internals -----------------------------------------------------------------------------

    def _close(self) -> None:
        self._state = _S_CLOSED
        self._buf.clear()
        self._pos = 0

    def _reset_transaction(self) -> None:
        self._sender = None
        self._mail_params = {}
        self._recipients = []

    def _reply(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _error(self, reply: Reply, reason: str) -> None:
        self._out += reply.to_bytes()
        self._events.append(ProtocolError(reply, reason))
        if reason in _UNCOUNTED_ERRORS or self._state == _S_CLOSED:
            return
        self._errors += 1
        if self._errors >= self.config.max_errors:
            self._fatal(R_TOO_MANY_ERRORS, "too_many_errors")

    def _fatal(self, reply: Reply, reason: str) -> None:
        self._out += reply.to_bytes()
        self._events.append(ProtocolError(reply, reason))
        self._events.append(Closed(reason))
        self._close()

    def _need_reply(self, event: Event) -> None:
        self._pending = event
        self._events.append(event)

    def _consume(self, end: int) -> None:
        self._pos = end
        if end == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif end > _COMPACT_AT:
            del self._buf[:end]
            self._pos = 0

    # --- command stage -------------------------------------------------------------------------

    def _step_command(self) -> bool:
        """Handle at most one command line; False when a whole line is not buffered yet."""
        buf = self._buf
        pos = self._pos
        limit = self._hard_line_limit
        if self._discarding:
            lf = buf.find(b"\n", pos)
            if lf < 0:
                self._consume(len(buf))
                return False
            self._discarding = False
            self._consume(lf + 1)
            return True
        lf = buf.find(b"\n", pos, pos + limit)
        if lf < 0:
            if len(buf) - pos >= limit:
                self._discarding = True
                self._consume(pos + limit)
                self._error(R_TOO_LONG, "line_too_long")
                return True
            return False
        end = lf + 1
        line = bytes(buf[pos:end])
        self._consume(end)
        self._handle_line(line)
        return True

    def _handle_line(self, line: bytes) -> None:
        if line.endswith(b"\r\n"):
            content = line[:-2]
            bare_lf = False
        else:
            content = line[:-1]
            bare_lf = True
        sp = content.find(b" ")
        verb = (content if sp < 0 else content[:sp]).upper()
        if len(line) > self.config.max_command_line and verb not in (b"MAIL", b"RCPT"):
            self._error(R_TOO_LONG, "line_too_long")
            return
        if verb in _NON_SMTP_VERBS:
            self._fatal(R_NON_SMTP, "non_smtp")
            return
        if bare_lf and not self._normalize:
            self._error(R_BARE_LF, "bare_lf")
            return
        if b"\r" in content:
            # A bare CR in a command is never meaningful; refused in both modes because
            # "normalising" it would split one line into two commands.
            self._error(R_BARE_CR, "bare_cr")
            return
        if self._state == _S_QUIT_ONLY and verb != b"QUIT":
            self._error(R_NO_SERVICE, "bad_sequence")
            return
        handler = _DISPATCH.get(verb)
        if handler is None:
            if verb in _NOT_IMPLEMENTED:
                self._error(R_NOT_IMPL, "not_implemented")
            else:
                self._error(R_UNKNOWN, "unknown_command")
            return
        try:
            arg = "" if sp < 0 else content[sp + 1 :].decode("utf-8")
        except UnicodeDecodeError:
            self._error(R_BAD_UTF8, "syntax")
            return
        handler(self, arg)

    def _cmd_ehlo(self, arg: str) -> None:
        self._helo_common(arg, extended=True)

    def _cmd_helo(self, arg: str) -> None:
        self._helo_common(arg, extended=False)

    def _helo_common(self, arg: str, extended: bool) -> None:
        name = arg.strip(" ")
        if not name or _CONTROL.search(name):
            self._error(R_SYNTAX_HELO, "syntax")
            return
        self._reset_transaction()
        self._need_reply(Helo(name, extended))

    def _cmd_mail(self, arg: str) -> None:
        if self._helo is None:
            self._error(R_NEED_HELO, "bad_sequence")
            return
        if self._sender is not None:
            self._error(R_NESTED, "bad_sequence")
            return
        if arg[:5].upper() != "FROM:":
            self._error(R_SYNTAX_MAIL, "syntax")
            return
        try:
            address, rest = parse_path(arg[5:], allow_null=True)
        except AddressSyntaxError:
            self._error(R_BAD_SENDER, "syntax")
            return
        params = self._parse_params(rest, mail=True)
        if params is None:
            return
        if not address.isascii() and "SMTPUTF8" not in params:
            self._error(R_NEED_UTF8, "smtputf8_required")
            return
        self._need_reply(MailFrom(address, params))

    def _cmd_rcpt(self, arg: str) -> None:
        if self._sender is None:
            self._error(R_NEED_MAIL, "bad_sequence")
            return
        if arg[:3].upper() != "TO:":
            self._error(R_SYNTAX_RCPT, "syntax")
            return
        try:
            address, rest = parse_path(arg[3:], allow_null=False, allow_bare_postmaster=True)
        except AddressSyntaxError:
            self._error(R_BAD_RCPT, "syntax")
            return
        params = self._parse_params(rest, mail=False)
        if params is None:
            return
        if not address.isascii() and "SMTPUTF8" not in self._mail_params:
            self._error(R_NEED_UTF8, "smtputf8_required")
            return
        if len(self._recipients) >= self.config.max_recipients:
            self._error(R_TOO_MANY_RCPTS, "too_many_recipients")
            return
        self._need_reply(RcptTo(address, params))

    def _parse_params(self, rest: str, mail: bool) -> dict[str, str | None] | None:
        """ESMTP parameters after the path; None after an error reply was sent."""
        params: dict[str, str | None] = {}
        words = rest.split(" ")
        for word in words:
            if not word:
                continue
            if not self._esmtp:
                # Parameters are an ESMTP feature; a HELO client may not use them.
                self._error(R_UNSUPPORTED, "unsupported_param")
                return None
            key, eq, value = word.partition("=")
            ukey = key.upper()
            if not key or not key.isascii() or not key.replace("-", "").isalnum():
                self._error(R_SYNTAX_PARAM, "syntax")
                return None
            if eq and not value:
                self._error(R_SYNTAX_PARAM, "syntax")
                return None
            if ukey in params:
                self._error(R_SYNTAX_PARAM, "syntax")
                return None
            if not mail:
                self._error(R_UNSUPPORTED, "unsupported_param")
                return None
            if ukey == "SIZE":
                if not value.isdigit() or not value.isascii() or len(value) > 20:
                    self._error(R_SYNTAX_PARAM, "syntax")
                    return None
                if int(value) > self.config.max_message_size:
                    self._error(R_SIZE, "too_big")
                    return None
                params[ukey] = value
            elif ukey == "BODY":
                uvalue = value.upper()
                if uvalue not in ("7BIT", "8BITMIME"):
                    self._error(R_BAD_BODY, "syntax")
                    return None
                params[ukey] = uvalue
            elif ukey == "SMTPUTF8" and self.config.smtputf8:
                if eq:
                    self._error(R_SYNTAX_PARAM, "syntax")
                    return None
                params[ukey] = None
            else:
                self._error(R_UNSUPPORTED, "unsupported_param")
                return None
        return params

    def _cmd_data(self, arg: str) -> None:
        if self._sender is None:
            self._error(R_NEED_MAIL, "bad_sequence")
            return
        if arg.strip(" "):
            self._error(R_SYNTAX_NOARG, "syntax")
            return
        if not self._recipients:
            self._error(R_NO_RCPTS, "no_recipients")
            return
        self._need_reply(DataCommand())

    def _cmd_rset(self, arg: str) -> None:
        if arg.strip(" "):
            self._error(R_SYNTAX_NOARG, "syntax")
            return
        self._reset_transaction()
        self._reply(R_OK)
        self._events.append(Reset())

    def _cmd_noop(self, arg: str) -> None:
        self._reply(R_OK)
        self._events.append(Noop())

    def _cmd_quit(self, arg: str) -> None:
        self._reply(R_BYE)
        self._events.append(Quit())
        self._close()

    def _cmd_vrfy(self, arg: str) -> None:
        arg = arg.strip(" ")
        if not arg:
            self._error(R_SYNTAX_VRFY, "syntax")
            return
        self._reply(R_VRFY)
        self._events.append(Vrfy(arg))

    def _cmd_help(self, arg: str) -> None:
        self._reply(R_HELP)

    def _cmd_starttls(self, arg: str) -> None:
        if not self.config.starttls:
            self._error(R_NOT_IMPL, "not_implemented")
        elif self._tls:
            self._error(R_TLS_ACTIVE, "bad_sequence")
        elif arg.strip(" "):
            self._error(R_SYNTAX_NOARG, "syntax")
        elif self._sender is not None:
            self._error(R_TLS_IN_TX, "bad_sequence")
        else:
            self._need_reply(StartTLS())

    # --- DATA stage ----------------------------------------------------------------------------

    def _step_data(self) -> bool:
        """Look for <CRLF>.<CRLF> with C-speed searches; False when more input is needed.

        The body stays in the input buffer until the terminator is found, so a normal message
        is copied once. The search resumes 4 bytes before the end of what was already scanned,
        which catches a terminator split across chunks without rescanning the whole body.
        """
        buf = self._buf
        pos = self._pos
        if self._body_start:
            # The body starts right after the 354, which ends in CRLF, so a first line of
            # "." is a terminator too: the message is empty.
            head = bytes(buf[pos : pos + 3])
            if head == b".\r\n":
                self._consume(pos + 3)
                self._end_of_data(b"")
                return True
            if len(head) < 3 and b".\r\n".startswith(head):
                return False
            self._body_start = False
            self._scan = pos
        idx = buf.find(_TERMINATOR, self._scan)
        if idx < 0:
            scanned = max(pos, len(buf) - 4)
            self._scan = scanned
            if self._too_big or self._dropped + scanned - pos > self.config.max_message_size:
                # Over the limit: keep counting, stop storing. Only the last 4 bytes are
                # kept, as they may start a terminator completed by the next chunk.
                self._too_big = True
                self._dropped += scanned - pos
                del buf[:scanned]
                self._pos = 0
                self._scan = 0
            return False
        body_end = idx + 2  # the CRLF before "." ends the last body line
        if self._too_big or self._dropped + body_end - pos > self.config.max_message_size:
            self._consume(idx + 5)
            self._end_of_data(None)
            return True
        with memoryview(buf) as view, view[pos:body_end] as body:
            raw = bytes(body)  # one copy, even for a 10 MB body
        self._consume(idx + 5)
        self._end_of_data(raw)
        return True

    def _end_of_data(self, raw: bytes | None) -> None:
        """Judge a complete body (None: it was too big and not kept)."""
        self._state = _S_COMMAND
        if raw is None:
            self._reject_body(R_SIZE, "too_big")
            return
        normalized = False
        n_crlf = raw.count(b"\r\n")
        bare_lf = raw.count(b"\n") != n_crlf
        bare_cr = raw.count(b"\r") != n_crlf
        if bare_lf or bare_cr:
            if not self._normalize:
                if bare_lf:
                    self._reject_body(R_DATA_BARE_LF, "bare_lf")
                else:
                    self._reject_body(R_DATA_BARE_CR, "bare_cr")
                return
            # Normalise mode: every bare LF and every bare CR becomes a line end, so the
            # bytes we queue are the bytes a relay would send (which would normalise them).
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            normalized = True
        max_line = self.config.max_text_line
        if len(raw) > max_line and max(map(len, raw.split(b"\n"))) + 1 > max_line:
            self._reject_body(R_DATA_TOO_LONG, "line_too_long")
            return
        # Dot-unstuffing per RFC 5321 4.5.2: a leading "." of any line is removed.
        if raw[:1] == b".":
            raw = raw[1:]
        if b"\r\n." in raw:
            raw = raw.replace(b"\r\n.", b"\r\n")
        self._need_reply(MessageReceived(raw, normalized))

    def _reject_body(self, reply: Reply, reason: str) -> None:
        self._reset_transaction()
        self._events.append(MessageRejected(reason))
        self._error(reply, reason)


_DISPATCH: dict[bytes, Callable[[ServerEngine, str], None]] = {
    b"EHLO": ServerEngine._cmd_ehlo,
    b"HELO": ServerEngine._cmd_helo,
    b"MAIL": ServerEngine._cmd_mail,
    b"RCPT": ServerEngine._cmd_rcpt,
    b"DATA": ServerEngine._cmd_data,
    b"RSET": ServerEngine._cmd_rset,
    b"NOOP": ServerEngine._cmd_noop,
    b"QUIT": ServerEngine._cmd_quit,
    b"VRFY": ServerEngine._cmd_vrfy,
    b"HELP": ServerEngine._cmd_help,
    b"STARTTLS": ServerEngine._cmd_starttls,
}
