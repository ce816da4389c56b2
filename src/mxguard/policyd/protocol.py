"""The Postfix policy delegation protocol, sans I/O: bytes in, requests out; verdict in, bytes out.

Postfix keeps one connection per smtpd process and sends one request at a time, so the two
ways to break it are desynchronising the stream (a reply before the empty line, or two replies
for one request: iRedAPD's bug) and choking on odd input. Hence: frame on the empty line first,
decode afterwards (a UTF-8 character may be split across reads), cap what one request may
cost, and turn anything malformed into a `ProtocolError`, after which the adapter must send
nothing and close. Postfix then answers the SMTP client with its own `451 4.3.5` and retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from mxguard.policy.verdict import Action, Verdict

#: Postfix's requests are about 1-2 KiB; anything far larger is not Postfix talking
MAX_REQUEST_BYTES = 64 * 1024
#: Postfix 3.8 sends about 35 attributes
MAX_ATTRIBUTES = 200
#: SMTP replies are at most 512 octets; Postfix adds its own words around our text
MAX_TEXT = 400

REQUEST_TYPE = "smtpd_access_policy"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One complete request: the attributes Postfix sent (later duplicates win)."""

    attrs: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.attrs.get(name, default)


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; the only safe answer is no answer and a closed connection."""

    reason: str


Event = PolicyRequest | ProtocolError


class PolicyParser:
    """Frames the byte stream into requests; after the first error it yields nothing more.

    Only the unfinished line is kept as bytes; finished lines are decoded at once, so one
    request costs O(size) however the stream is chunked.
    """

    def __init__(
        self, max_request: int = MAX_REQUEST_BYTES, max_attributes: int = MAX_ATTRIBUTES
    ) -> None:
        self.max_request = max_request
        self.max_attributes = max_attributes
        self._partial = b""
        self._attrs: dict[str, str] = {}
        self._count = 0
        self._size = 0
        self.failed: ProtocolError | None = None

    @property
    def idle(self) -> bool:
        """True between requests: nothing of a next request has arrived yet."""
        return not self._partial and not self._count

    def feed(self, data: bytes) -> list[Event]:
        if self.failed is not None:
            return []
        if not self._partial and not self._count:
            whole = self._whole(data)
            if whole is not None:
                return [whole]
        return self._feed_lines(data)

    def _whole(self, data: bytes) -> PolicyRequest | None:
        """One complete, well-formed request in one read, parsed in a few C calls; else None.

        This is what Postfix sends nearly always (one request, then it waits), and the line
        loop below costs a Python call per attribute. Anything unusual (CR, NUL, a second
        request or a partial one, a limit reached, a line without a name) returns None and
        goes through `_feed_lines`, which stays the reference. The result is the same: split
        at ASCII bytes before decoding equals decoding and then splitting, because in UTF-8
        (even with surrogateescape for invalid bytes) an ASCII byte never belongs to another
        character.
        """
        end = len(data) - 2
        if (
            end <= 0
            or end + 2 > self.max_request
            or data.find(b"\n\n") != end
            or b"\r" in data
            or b"\0" in data
        ):
            return None
        lines = data[:end].decode("utf-8", "surrogateescape").split("\n")
        if len(lines) > self.max_attributes:
            return None
        try:
            # dict() raises for a line that split into one part (no "=")
            attrs = dict(cast("list[tuple[str, str]]", [line.split("=", 1) for line in lines]))
        except ValueError:  # a line without "=": let the line parser name the error
            return None
        if "" in attrs or attrs.get("request") != REQUEST_TYPE:
            return None  # a line without a name, or not a policy request: the same
        return PolicyRequest(attrs)

    def _feed_lines(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        lines = (self._partial + data).split(b"\n") if self._partial else data.split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._size += len(raw) + 1
            line = raw[:-1] if raw.endswith(b"\r") else raw
            error = self._attribute(line) if line else self._finish(out)
            if error is None and self._size > self.max_request:
                error = f"request larger than {self.max_request} bytes"
            if error is not None:
                return self._fail(out, error)
        if self._size + len(self._partial) > self.max_request:
            return self._fail(out, f"request larger than {self.max_request} bytes")
        return out

    def _attribute(self, line: bytes) -> str | None:
        name, sep, value = line.partition(b"=")
        if not sep or not name:
            return "a line without name=value"
        if b"\0" in line:
            return "NUL in an attribute"
        self._count += 1
        if self._count > self.max_attributes:
            return f"more than {self.max_attributes} attributes"
        self._attrs[name.decode("utf-8", "surrogateescape")] = value.decode(
            "utf-8", "surrogateescape"
        )
        return None

    def _finish(self, out: list[Event]) -> str | None:
        attrs = self._attrs
        if not self._count:
            return "an empty request"
        kind = attrs.get("request")
        if kind != REQUEST_TYPE:
            return f"request={kind!r}, expected {REQUEST_TYPE}" if kind else "no request= attribute"
        out.append(PolicyRequest(attrs))
        self._attrs = {}
        self._count = 0
        self._size = 0
        return None

    def _fail(self, out: list[Event], reason: str) -> list[Event]:
        self.failed = ProtocolError(reason)
        self._partial = b""
        self._attrs = {}
        out.append(self.failed)
        return out


# ---------------------------------------------------------------- verdict -> action


def _clean(text: str) -> str:
    """One line, no NUL, bounded: a newline in a reply would end it and desynchronise Postfix."""
    text = " ".join(text.replace("\0", " ").split())
    return text[:MAX_TEXT]


def postfix_text(text: str, address: str | None) -> str:
    """Our reply text without the words Postfix writes itself.

    Postfix renders a policy reject as "<address>: Recipient address rejected: TEXT"; texts
    made for our own SMTP listener already start that way, and saying it twice reads badly.
    """
    if address:
        head = f"<{address}>: "
        if text.startswith(head):
            text = text[len(head) :]
    for said in ("Recipient address rejected: ", "Sender address rejected: "):
        if text.startswith(said):
            text = text[len(said) :]
    return text


def _numeric(code: int, status: str, text: str) -> str:
    status = f" {status}" if status else ""
    return f"{code}{status} {_clean(text) or 'Policy rejection'}"


def action_for(verdict: Verdict, prepend: str | None = None, address: str | None = None) -> str:
    """The Postfix action for a verdict.

    Accept is DUNNO, never OK: OK would skip every restriction after check_policy_service,
    such as a later reject_rbl_client. Soft tempfails (greylisting, the walk check) are
    DEFER_IF_PERMIT, so a later permanent reject in Postfix's list still wins and the client
    is not told to retry for nothing. Other answers carry our own code and status; Postfix
    puts its "<address>: Recipient address rejected:" in front of the text, so `address` (the
    recipient or sender the request was about) is taken off ours.
    """
    if verdict.action is Action.ACCEPT:
        return f"PREPEND {_clean(prepend)}" if prepend else "DUNNO"
    # the text alone changes; a copy of the verdict (dataclasses.replace) costs more than
    # the rest of this function, on every greylisting deferral
    text = postfix_text(verdict.text, address)
    if verdict.action is Action.DISCARD:
        return f"DISCARD {_clean(text)}".rstrip()
    if verdict.action is Action.TEMPFAIL:
        if verdict.soft:
            status = verdict.status if verdict.status.startswith("4.") else "4.7.1"
            return f"DEFER_IF_PERMIT {status} {_clean(text)}".rstrip()
        code = verdict.code if 400 <= verdict.code < 500 else 450
        status = verdict.status if verdict.status.startswith("4.") else "4.7.1"
        return _numeric(code, status, text)
    if verdict.action is Action.DISCONNECT and verdict.code < 500:
        # Postfix 2.3+: 421 replies and then hangs up, as our SMTP listener would.
        status = verdict.status if verdict.status.startswith("4.") else "4.7.0"
        return _numeric(421, status, text)
    # Rejects, and 5xx disconnects: a plain 5xx. Postfix's 521 also hangs up, but it is not
    # standard SMTP; a deny-list client is refused at every RCPT instead.
    code = verdict.code if 500 <= verdict.code < 600 else 550
    status = verdict.status if verdict.status.startswith("5.") else "5.7.1"
    return _numeric(code, status, text)


def render(action: str) -> bytes:
    """The reply bytes for one request: exactly one `action=` line and the empty line."""
    line = action.replace("\r", " ").replace("\n", " ").replace("\0", " ")
    return b"action=" + line.encode("utf-8", "surrogateescape") + b"\n\n"


def render_verdict(
    verdict: Verdict, prepend: str | None = None, address: str | None = None
) -> bytes:
    return render(action_for(verdict, prepend, address))
