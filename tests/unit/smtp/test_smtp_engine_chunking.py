"""Property tests: how bytes are chunked on the wire never changes events or replies."""

from __future__ import annotations

import itertools
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_driver import run

from mxguard.smtp.protocol import EngineConfig, MessageReceived, MessageRejected

ADDRESSES = ["a@example.test", '"a b"@example.test', "bad@example.test", "x@[1.2.3.4]",
             "@r.test:u@example.test", "Postmaster"]  # fmt: skip
LINE_CHARS = "ab .\t-é"

body_line = st.one_of(
    st.text(alphabet=LINE_CHARS, max_size=40),
    st.sampled_from([".", "..", "...", ".x", "", " ."]),
    st.integers(min_value=150, max_value=260).map(lambda n: "L" * n),  # around max_text_line
)
# Lines as the client means them; bare CR/LF are optionally sprinkled in as raw bytes.
raw_body_line = st.tuples(body_line, st.sampled_from(["", "", "", "\n", "\r", "\n.\n", "\r.\r"]))

noise = st.sampled_from([
    b"NOOP\r\n", b"RSET\r\n", b"VRFY someone\r\n", b"HELP\r\n", b"XYZZY\r\n",
    b"MAIL FROM:broken\r\n", b"NOOP " + b"y" * 700 + b"\r\n", b"RCPT TO:<>\r\n", b"NOOP\n",
])  # fmt: skip


@st.composite
def transaction(draw: st.DrawFn) -> tuple[bytes, list[bytes] | None]:
    """One MAIL..DATA exchange; returns the wire bytes and the body the app should get
    (None when the body is expected to be refused or cannot be predicted simply)."""
    out = bytearray()
    out += f"MAIL FROM:<{draw(st.sampled_from(['', *ADDRESSES[:2]]))}>\r\n".encode()
    rcpts = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3))
    if all(r.startswith("bad") for r in rcpts):
        rcpts.append("ok@example.test")  # so that DATA gets a 354 and the body is a body
    for r in rcpts:
        out += f"RCPT TO:<{r}>\r\n".encode()
    out += b"DATA\r\n"
    lines = draw(st.lists(raw_body_line, max_size=12))
    expected: list[bytes] | None = []
    for text, junk in lines:
        line = text.encode()
        stuffed = b"." + line if line.startswith(b".") else line
        out += stuffed + junk.encode() + b"\r\n"
        if junk or len(line) + 2 > 200:
            expected = None
        elif expected is not None:
            expected.append(line + b"\r\n")
    out += b".\r\n"
    return bytes(out), expected


@st.composite
def session(draw: st.DrawFn) -> tuple[bytes, list[bytes | None]]:
    out = bytearray(b"EHLO client.example\r\n")
    bodies: list[bytes | None] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        out += b"".join(draw(st.lists(noise, max_size=2)))
        wire, expected = draw(transaction())
        out += wire
        bodies.append(None if expected is None else b"".join(expected))
    out += b"QUIT\r\n"
    return bytes(out), bodies


def chunkings(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def config(mode: Literal["reject", "normalize"]) -> EngineConfig:
    return EngineConfig(hostname="mx.example.test", max_text_line=200, max_errors=50,
                        bare_lf=mode)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    s=session(),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
    mode=st.sampled_from(["reject", "normalize"]),
)
def test_any_chunking_gives_the_same_session(
    s: tuple[bytes, list[bytes | None]], cuts: list[int], mode: Literal["reject", "normalize"]
) -> None:
    data, bodies = s
    whole_events, whole_out, engine = run([data], config(mode))
    assert engine.wants_close
    single_events, single_out, _ = run([data[i : i + 1] for i in range(len(data))], config(mode))
    random_events, random_out, _ = run(chunkings(data, cuts), config(mode))
    assert single_events == whole_events
    assert single_out == whole_out
    assert random_events == whole_events
    assert random_out == whole_out

    got = [e for e in whole_events if isinstance(e, MessageReceived | MessageRejected)]
    assert len(got) == len(bodies)  # exactly one outcome per DATA, whatever the payload
    for event, expected in zip(got, bodies, strict=True):
        if expected is not None:
            assert event == MessageReceived(expected, False)
        if isinstance(event, MessageReceived):
            assert event.data.count(b"\n") == event.data.count(b"\r\n")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_garbage_never_crashes_and_is_chunking_independent(data: bytes, cuts: list[int]) -> None:
    prefix = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
    for mode in ("reject", "normalize"):
        cfg = EngineConfig(bare_lf=mode, max_command_line=64)
        whole = run([prefix + data], cfg, eof=True)
        split = run([prefix, *chunkings(data, cuts)], cfg, eof=True)
        assert whole[0] == split[0]
        assert whole[1] == split[1]
        assert whole[2].wants_close
