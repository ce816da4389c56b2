"""The pure policy protocol: framing however the bytes arrive, limits, and verdict -> action."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxguard.policy.verdict import ACCEPT, Action, Verdict, discard, disconnect, reject, tempfail
from mxguard.policyd.protocol import (
    PolicyParser,
    PolicyRequest,
    ProtocolError,
    action_for,
    render,
    render_verdict,
)

# What Postfix 3.7 sends at RCPT (captured shape, values made up).
POSTFIX_RCPT = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"protocol_name=ESMTP\n"
    b"client_address=192.0.2.7\n"
    b"client_name=unknown\n"
    b"client_port=41234\n"
    b"reverse_client_name=unknown\n"
    b"server_address=127.0.0.1\n"
    b"server_port=2525\n"
    b"helo_name=mail.sender.example\n"
    b"sender=alice@sender.example\n"
    b"recipient=bob@example.test\n"
    b"recipient_count=0\n"
    b"queue_id=\n"
    b"instance=4a2b.6b03.1c6e5.0\n"
    b"size=0\n"
    b"etrn_domain=\n"
    b"stress=\n"
    b"sasl_method=\n"
    b"ccert_subject=\n"
    b"encryption_protocol=\n"
    b"policy_context=\n"
    b"compatibility_level=3.6\n"
    b"mail_version=3.7.11\n"
    b"\n"
)


def _requests(events: list[object]) -> list[PolicyRequest]:
    assert all(isinstance(e, PolicyRequest) for e in events), events
    return events  # type: ignore[return-value]


def test_one_request_at_the_empty_line_not_before() -> None:
    parser = PolicyParser()
    body = POSTFIX_RCPT[:-1]
    assert parser.feed(body) == []  # every attribute, but no empty line yet: no request
    (req,) = _requests(parser.feed(b"\n"))
    assert req.get("recipient") == "bob@example.test"
    assert req.get("queue_id") == ""
    assert req.get("absent", "x") == "x"
    assert parser.idle


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000])
def test_any_chunking_gives_the_same_requests(size: int) -> None:
    stream = POSTFIX_RCPT * 3
    parser = PolicyParser()
    events: list[object] = []
    for i in range(0, len(stream), size):
        events += parser.feed(stream[i : i + size])
    reqs = _requests(events)
    assert len(reqs) == 3
    assert all(r.attrs == reqs[0].attrs for r in reqs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(POSTFIX_RCPT) * 2), max_size=30))
def test_random_cuts(cuts: list[int]) -> None:
    stream = POSTFIX_RCPT * 2
    points = sorted({c % len(stream) for c in cuts} | {0, len(stream)})
    parser = PolicyParser()
    events: list[object] = []
    for a, b in itertools.pairwise(points):
        events += parser.feed(stream[a:b])
    assert len(_requests(events)) == 2


def test_several_requests_in_one_read() -> None:
    two = POSTFIX_RCPT + POSTFIX_RCPT.replace(b"RCPT", b"DATA")
    reqs = _requests(PolicyParser().feed(two))
    assert [r.get("protocol_state") for r in reqs] == ["RCPT", "DATA"]


def test_crlf_is_tolerated() -> None:
    reqs = _requests(PolicyParser().feed(POSTFIX_RCPT.replace(b"\n", b"\r\n")))
    assert reqs[0].get("helo_name") == "mail.sender.example"


def test_utf8_split_across_reads_is_decoded_after_framing() -> None:
    data = "request=smtpd_access_policy\nsender=jürgen@bücher.example\n\n".encode()
    cut = data.index("ü".encode()) + 1  # inside the two bytes of ü
    parser = PolicyParser()
    assert parser.feed(data[:cut]) == []
    (req,) = _requests(parser.feed(data[cut:]))
    assert req.get("sender") == "jürgen@bücher.example"


def test_invalid_utf8_survives_as_surrogates() -> None:
    (req,) = _requests(PolicyParser().feed(b"request=smtpd_access_policy\nsender=a\xff@b\n\n"))
    assert req.get("sender").encode("utf-8", "surrogateescape") == b"a\xff@b"


def test_value_may_contain_equals_and_duplicates_keep_the_last() -> None:
    data = b"request=smtpd_access_policy\nccert_subject=CN=x=y\nsize=1\nsize=2\n\n"
    (req,) = _requests(PolicyParser().feed(data))
    assert req.get("ccert_subject") == "CN=x=y"
    assert req.get("size") == "2"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"request=smtpd_access_policy\njunk line\n\n", "name=value"),
        (b"request=smtpd_access_policy\n=value\n\n", "name=value"),
        (b"protocol_state=RCPT\n\n", "no request="),
        (b"request=other_policy\n\n", "expected smtpd_access_policy"),
        (b"\n", "empty request"),
        (b"request=smtpd_access_policy\nsender=a\0b\n\n", "NUL"),
    ],
)
def test_malformed_is_an_error_then_silence(data: bytes, reason: str) -> None:
    parser = PolicyParser()
    events = parser.feed(data)
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert reason in events[0].reason
    assert parser.feed(POSTFIX_RCPT) == []  # nothing more from a broken stream


def test_requests_before_an_error_are_still_answered() -> None:
    events = PolicyParser().feed(POSTFIX_RCPT + b"garbage\n\n" + POSTFIX_RCPT)
    assert isinstance(events[0], PolicyRequest)
    assert isinstance(events[1], ProtocolError)
    assert len(events) == 2


def test_oversized_request_without_newline_is_refused_early() -> None:
    parser = PolicyParser(max_request=1024)
    assert parser.feed(b"request=smtpd_access_policy\nsender=" + b"a" * 500) == []
    (err,) = parser.feed(b"a" * 600)
    assert isinstance(err, ProtocolError) and "larger" in err.reason


def test_too_many_attributes() -> None:
    parser = PolicyParser(max_attributes=10)
    data = b"request=smtpd_access_policy\n" + b"".join(b"x%d=1\n" % i for i in range(20))
    (err,) = parser.feed(data)
    assert isinstance(err, ProtocolError) and "attributes" in err.reason


def test_limits_apply_per_request_not_per_connection() -> None:
    parser = PolicyParser(max_request=len(POSTFIX_RCPT) + 10)
    assert len(_requests(parser.feed(POSTFIX_RCPT * 50))) == 50


# ---------------------------------------------------------------- the whole-request fast path


def _line_parser_events(data: bytes, **limits: int) -> list[object]:
    """The reference: the line-by-line parser alone, with the fast path never tried."""
    return list(PolicyParser(**limits)._feed_lines(data))


_BYTES = st.sampled_from(
    [
        b"a",
        b"=",
        b"\n",
        b"\r",
        b"\0",
        b"\xc3",
        b"\xbc",
        b"\xff",
        b"\xe2\x82",
        b"request",
        b"smtpd_access_policy",
        b"request=smtpd_access_policy\n",
        b"x=1\n",
        b"\n\n",
    ]
)


def _framed(data: bytes, clean: bool) -> bytes:
    """`data` as one request: often taken by the fast path, and by it only when `clean`."""
    body = data.replace(b"\n\n", b"\n").strip(b"\n")
    if clean:  # every line a name=value, no CR or NUL; the limits may still be exceeded
        lines = body.replace(b"\r", b"").replace(b"\0", b"").split(b"\n")
        body = b"\n".join(b"k" + line + (b"" if b"=" in line else b"=") for line in lines)
    return b"request=smtpd_access_policy\n" + body + b"\n\n"


@settings(max_examples=600, deadline=None)
@given(
    st.lists(_BYTES, max_size=40),
    st.integers(min_value=8, max_value=300),
    st.sampled_from(["raw", "framed", "clean"]),
)
def test_fast_path_equals_line_parser(parts: list[bytes], max_request: int, shape: str) -> None:
    data = b"".join(parts)
    if shape != "raw":
        data = _framed(data, clean=shape == "clean")
    limits = {"max_request": max_request, "max_attributes": 6}
    got = PolicyParser(**limits).feed(data)
    assert got == _line_parser_events(data, **limits)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(st.characters(blacklist_characters="=\n\r\0"), min_size=1, max_size=12),
        st.text(st.characters(blacklist_characters="\n\r\0"), max_size=20),
        max_size=30,
    )
)
def test_fast_path_equals_line_parser_on_plausible_requests(attrs: dict[str, str]) -> None:
    body = "".join(f"{k}={v}\n" for k, v in attrs.items())
    data = f"request=smtpd_access_policy\n{body}\n".encode("utf-8", "surrogatepass")
    parser = PolicyParser()
    assert parser._whole(data) is not None or "request" in attrs  # taken for nearly all
    assert parser.feed(data) == _line_parser_events(data)


@pytest.mark.parametrize(
    "data",
    [
        POSTFIX_RCPT,
        POSTFIX_RCPT.replace(b"\n", b"\r\n"),
        POSTFIX_RCPT + POSTFIX_RCPT,
        POSTFIX_RCPT[:-1],
        b"\n" + POSTFIX_RCPT,
        b"\n\n",
        b"request=smtpd_access_policy\n=v\n\n",
        b"request=smtpd_access_policy\nnoequals\n\n",
        b"request=smtpd_access_policy\nsender=a\0b\n\n",
        b"request=smtpd_access_policy\nsender=a\xff\xe2\x82@b\n\n",
        b"request=other\n\n",
        b"protocol_state=RCPT\n\n",
        b"request=smtpd_access_policy\n\n\n",
        b"request=smtpd_access_policy\nsender=a\r\n\n",  # one CR LF, then a bare LF
    ],
)
def test_fast_path_equals_line_parser_on_edges(data: bytes) -> None:
    assert PolicyParser().feed(data) == _line_parser_events(data)
    small = {"max_request": len(data) - 1, "max_attributes": 3}
    assert PolicyParser(**small).feed(data) == _line_parser_events(data, **small)


def test_fast_path_only_for_a_fresh_request() -> None:
    parser = PolicyParser()
    assert parser.feed(b"request=smtpd_access_policy\nsender=a") == []
    # the start of this read finishes the pending line; it is not a request of its own
    (req,) = _requests(parser.feed(b"b\nrecipient=c\n\n"))
    assert req.get("sender") == "ab" and req.get("recipient") == "c"


# ---------------------------------------------------------------- actions


def test_accept_is_dunno_never_ok() -> None:
    assert action_for(ACCEPT) == "DUNNO"
    assert render_verdict(ACCEPT) == b"action=DUNNO\n\n"


def test_accept_with_prepend() -> None:
    assert action_for(ACCEPT, "X-Greylist: delayed 5 seconds") == (
        "PREPEND X-Greylist: delayed 5 seconds"
    )


def test_soft_tempfail_is_defer_if_permit() -> None:
    v = tempfail("greylisted", "Greylisted, try again in 300 seconds", soft=True)
    assert action_for(v) == "DEFER_IF_PERMIT 4.7.1 Greylisted, try again in 300 seconds"


def test_hard_tempfail_keeps_its_code() -> None:
    v = tempfail("rate_limit", "Too many messages", 451, "4.7.1")
    assert action_for(v) == "451 4.7.1 Too many messages"
    odd = Verdict(Action.TEMPFAIL, 250, "", "odd", "x")
    assert action_for(odd) == "450 4.7.1 odd"


def test_reject_keeps_code_and_drops_what_postfix_says_itself() -> None:
    v = reject(
        "unknown_recipient",
        "<bob@example.test>: Recipient address rejected: User unknown",
        550,
        "5.1.1",
    )
    assert action_for(v, address="bob@example.test") == "550 5.1.1 User unknown"
    assert action_for(v) == "550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown"


def test_disconnects() -> None:
    assert action_for(disconnect("rate_limit", "Slow down", 421, "4.7.0")) == "421 4.7.0 Slow down"
    # a 5xx "disconnect" (a deny-list client at connect) is refused at every RCPT instead
    assert action_for(disconnect("denylist", "Go away", 554, "5.7.1")) == "554 5.7.1 Go away"


def test_discard() -> None:
    assert action_for(discard("trap", "Dropped")) == "DISCARD Dropped"


def test_text_cannot_break_the_framing() -> None:
    v = reject("x", "line one\nline two\r\n\0end", 550, "5.7.1")
    out = render_verdict(v)
    assert out == b"action=550 5.7.1 line one line two end\n\n"
    assert render("DUNNO\n\nsneaky").count(b"\n\n") == 1


def test_long_text_is_bounded() -> None:
    out = render_verdict(reject("x", "y" * 5000))
    assert len(out) < 500 and out.endswith(b"\n\n")
