"""Line-level parser behaviour on lines written for these tests (example.test data)."""

from __future__ import annotations

import calendar

import pytest

from mxguard.logs import timeparse
from mxguard.logs.blocks import parse_block
from mxguard.logs.model import (
    GREYLIST,
    OP_CONTENT,
    OP_DELIVER,
    OP_DIRECT,
    OP_QCLIENT,
    OP_REJECT,
    OTHER,
    RATE,
    RELAY,
    SCREEN,
    SPAM,
    UNKNOWN,
)
from mxguard.logs.parsers.common import classify
from mxguard.logs.parsers.syslog import resolve


def events(text: str) -> list[tuple[object, ...]]:
    return [e for _, _, e in parse_block(text.encode()).events]


def one(text: str) -> tuple[object, ...]:
    (ev,) = events(text)
    return ev


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (
            b"550 5.1.1 <a@example.test>: Recipient address rejected: User unknown in relay recipient table",
            UNKNOWN,
        ),
        (
            b"554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.example",
            SCREEN,
        ),
        (
            b"450 4.2.0 <a@example.test>: Recipient address rejected: Greylisted, see http://x",
            GREYLIST,
        ),
        (b"554 5.7.1 <a@example.test>: Relay access denied", RELAY),
        (b"421 4.7.0 Error: too many connections from 192.0.2.1", RATE),
        (b"504 5.5.2 <x>: Helo command rejected: need fully-qualified hostname", OTHER),
        (b"rejected after DATA: Your message scored 9.1 SpamAssassin points", SPAM),
    ],
)
def test_classify(reason: bytes, kind: str) -> None:
    assert classify(reason) == kind


def test_program_names_multi_instance_and_service() -> None:
    h1, service, _ = resolve(b"postfix-mx/submission/smtpd")
    h2, _, _ = resolve(b"postfix/smtpd")
    assert h1 is h2 and service == b"submission"
    assert resolve(b"postfix/amavis/smtp")[1] == b"amavis"
    assert resolve(b"unknownd")[0] is None


def test_rfc3339_and_classic_stamps_agree() -> None:
    timeparse.set_reference_year(2024)
    try:
        a = "2024-05-06T07:08:09.123456+02:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.9]: 554 5.7.1 <a@example.test>: Relay access denied; from=<s@example.org> to=<a@example.test> proto=ESMTP helo=<x>\n"
        b = "May  6 05:08:09 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.9]: 554 5.7.1 <a@example.test>: Relay access denied; from=<s@example.org> to=<a@example.test> proto=ESMTP helo=<x>\n"
        (ta, ha, ea), (tb, hb, eb) = parse_block(a.encode()).events + parse_block(b.encode()).events
        assert ta == tb == calendar.timegm((2024, 5, 6, 5, 8, 9))
        assert ha == hb == "mx1"
        assert (
            ea == eb == (OP_REJECT, RELAY, "192.0.2.9", "s@example.org", "a@example.test", 1, None)
        )
    finally:
        timeparse.set_reference_year(None)


def test_maillog_file_microseconds_and_missing_colon_after_pid() -> None:
    ev = one(
        "Jan  5 10:00:00.123456 mx1 postfix/smtpd[42] AB12CD: client=h.example.org[192.0.2.5]\n"
    )
    assert ev == (OP_QCLIENT, b"AB12CD", "192.0.2.5", "h.example.org", False)


def test_sasl_submission_is_local() -> None:
    ev = one(
        "Jan  5 10:00:00 mx1 postfix/submission/smtpd[42]: AB12CD: client=u[192.0.2.5], sasl_method=PLAIN, sasl_username=u@example.test\n"
    )
    assert ev[4] is True


def test_filter_hop_versus_final_delivery() -> None:
    hop, final, relayed = events(
        "Jan  5 10:00:01 mx1 postfix/amavis/smtp[7]: Q1: to=<a@example.test>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as Q2)\n"
        "Jan  5 10:00:02 mx1 postfix/pipe[8]: Q2: to=<a@example.test>, relay=dovecot, delay=0.1, dsn=2.0.0, status=sent (delivered via dovecot service)\n"
        "Jan  5 10:00:03 mx2 postfix/smtp[9]: Q3: to=<a@example.test>, relay=mx1.example.test[192.0.2.1]:25, delay=0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as Q4)\n"
    )
    assert hop == (OP_DELIVER, b"Q1", "a@example.test", False, b"Q2", 1)
    assert final == (OP_DELIVER, b"Q2", "a@example.test", True, None, 1)
    assert relayed[3] is True  # a backup handing mail to the primary delivers it


def test_postscreen_counts_connections_not_lines() -> None:
    r = parse_block(
        b"Jan  5 10:00:00 mx1 postfix/postscreen[1]: CONNECT from [192.0.2.7]:1000 to [192.0.2.1]:25\n"
        b"Jan  5 10:00:00 mx1 postfix/postscreen[1]: PREGREET 11 after 0.1 from [192.0.2.7]:1000: EHLO x\\r\\n\n"
        b"Jan  5 10:00:01 mx1 postfix/postscreen[1]: DNSBL rank 3 for [192.0.2.7]:1000\n"
        b"Jan  5 10:00:02 mx1 postfix/postscreen[1]: HANGUP after 2 from [192.0.2.7]:1000 in tests after SMTP handshake\n"
        b"Jan  5 10:00:02 mx1 postfix/postscreen[1]: DISCONNECT [192.0.2.7]:1000\n"
        b"Jan  5 10:00:03 mx1 postfix/postscreen[1]: CONNECT from [192.0.2.8]:1000 to [192.0.2.1]:25\n"
        b"Jan  5 10:00:03 mx1 postfix/postscreen[1]: ALLOWLISTED [192.0.2.8]:1000\n"
    )
    assert sum(r.drops.values()) == 1
    assert r.tallies[("mx1", "postscreen_allowlisted")] == 1
    assert r.tallies[("mx1", "connections_postscreen")] == 2
    assert r.clients[("mx1", "192.0.2.7")][2] == 1
    assert r.unparsed == {}


def test_client_first_and_last_connection_times_are_epoch_seconds() -> None:
    # RFC 3339 connection stamps are converted once per client and block, after the
    # lines are read; mixing them with classic stamps must give the same numbers.
    timeparse.set_reference_year(2024)
    try:
        r = parse_block(
            b"2024-01-05T11:00:00.100000+01:00 mx1 postfix/postscreen[1]: CONNECT from [192.0.2.7]:1 to [192.0.2.1]:25\n"
            b"2024-01-05T11:00:30.100000+01:00 mx1 postfix/smtpd[2]: connect from h[192.0.2.7]\n"
            b"Jan  5 10:01:05 mx1 postfix/smtpd[2]: connect from h[192.0.2.7]\n"
            b"2024-01-05T10:02:00Z mx1 postfix/postscreen[1]: CONNECT from [192.0.2.8]:1 to [192.0.2.1]:25\n"
            b"2024-01-05T10:03:xxZ mx1 postfix/postscreen[1]: CONNECT from [192.0.2.9]:1 to [192.0.2.1]:25\n"
        )
    finally:
        timeparse.set_reference_year(None)
    t0 = calendar.timegm((2024, 1, 5, 10, 0, 0))
    assert r.clients[("mx1", "192.0.2.7")] == [t0, t0 + 65, 3.0]
    assert r.clients[("mx1", "192.0.2.8")] == [t0 + 120, t0 + 120, 1.0]
    assert r.clients[("mx1", "192.0.2.9")] == [-1.0, -1.0, 1.0]
    assert r.tallies[("mx1", "connections_postscreen")] == 3
    assert r.tallies[("mx1", "connections_smtpd")] == 2


def test_raw_bytes_never_break_a_block() -> None:
    r = parse_block(
        b"Jan  5 10:00:00 mx1 postfix/postscreen[1]: BARE NEWLINE from [192.0.2.7]:1 after \xc0\xff\xfe\n\xff\xfe\x00garbage\n"
    )
    assert r.corrupt == 1 and r.lines == 2


def test_repeated_lines_are_expanded() -> None:
    evs = events(
        "Jan  5 10:00:00 mx1 postfix/smtpd[1]: warning: Connection rate limit exceeded: 31 from h[192.0.2.3] for service smtpd\n"
        "Jan  5 10:00:01 mx1 last message repeated 2 times\n"
    )
    assert [e[1] for e in evs] == [RATE, RATE, RATE]


def test_amavis_blocked_spam_is_linked_to_the_queue_id() -> None:
    ev = one(
        "Jan  5 10:00:00 mx1 amavis[1]: (1-01) Blocked SPAM {DiscardedInbound}, [192.0.2.4]:2525 [192.0.2.4] <s@example.org> -> <a@example.test>, Queue-ID: 4AbCd, Message-ID: <m@x>, mail_id: x, Hits: 12, size: 100, 300 ms\n"
    )
    assert ev == (OP_CONTENT, SPAM, b"4AbCd", "192.0.2.4", "s@example.org", 1)


def test_postgrey_lines_are_side_counts() -> None:
    r = parse_block(
        b"Jan  5 10:00:00 mx1 postgrey[9]: action=greylist, reason=new, client_name=h, client_address=192.0.2.1, sender=a@example.org, recipient=b@example.test\n"
    )
    assert r.events[0][2] == (11, "postgrey_greylist", 1)


def test_mxguard_json_reasons() -> None:
    evs = events(
        '{"ts": 1700000000.5, "mx": "mx2", "role": "backup", "preference": 20, "client": "192.0.2.9", "stage": "rcpt", "action": "reject", "code": 550, "reason": "unknown_recipient", "sender": "s@example.org", "recipient": "n@example.test"}\n'
        '{"ts": 1700000001, "mx": "mx2", "role": "backup", "preference": 20, "client": "192.0.2.9", "stage": "eom", "action": "accept", "code": 250, "reason": "queued", "msgid": "<m1@x>", "sender": "s@example.org", "recipient": "a@example.test"}\n'
        "{not json\n"
    )
    role, rej, deliv = evs
    assert role[1:] == ("backup", 20)
    assert rej[:2] == (OP_DIRECT, UNKNOWN)
    assert deliv[:2] == (OP_DIRECT, "delivered") and deliv[5] == "<m1@x>"
