"""The lean DNSBL wire path, against replies that dnspython itself builds."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset
import pytest

from mxguard import dnswire

QNAME = "2.0.0.127.zen.example.test"


def reply(
    qid: int,
    *,
    rcode: int = 0,
    answers: list[str] = (),
    soa: bool = False,
    tc: bool = False,
    cname: bool = False,
) -> bytes:  # type: ignore[assignment]
    q = dns.message.from_wire(dnswire.encode_query(qid, QNAME))
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if cname:
        r.answer.append(dns.rrset.from_text(QNAME + ".", 60, "IN", "CNAME", "x.example.test."))
        r.answer.append(dns.rrset.from_text("x.example.test.", 30, "IN", "A", "127.0.0.4"))
    if answers:
        r.answer.append(dns.rrset.from_text(QNAME + ".", 120, "IN", "A", *answers))
    if soa:
        r.authority.append(
            dns.rrset.from_text(
                "zen.example.test.", 900, "IN", "SOA", "ns.example.test. h.example.test. 1 2 3 4 60"
            )
        )
    if tc:
        r.flags |= dns.flags.TC
    return r.to_wire()


def test_query_is_what_dnspython_reads() -> None:
    q = dns.message.from_wire(dnswire.encode_query(4711, QNAME))
    assert q.id == 4711 and q.question[0].name.to_text() == QNAME + "."
    assert q.question[0].rdtype == 1 and q.flags & dns.flags.RD


def test_listing_with_ttl() -> None:
    r = dnswire.decode_reply(reply(7, answers=["127.0.0.2", "127.0.0.10"]), 7, QNAME)
    assert (r.rcode, sorted(r.addresses), r.ttl) == (0, ["127.0.0.10", "127.0.0.2"], 120)


def test_negative_answers_take_the_soa_minimum() -> None:
    nx = dnswire.decode_reply(reply(7, rcode=dns.rcode.NXDOMAIN, soa=True), 7, QNAME)
    assert (nx.rcode, nx.addresses, nx.ttl) == (3, (), 60)
    nodata = dnswire.decode_reply(reply(7, soa=True), 7, QNAME)
    assert (nodata.rcode, nodata.addresses, nodata.ttl) == (0, (), 60)
    no_soa = dnswire.decode_reply(reply(7, rcode=dns.rcode.NXDOMAIN), 7, QNAME)
    assert no_soa.ttl == dnswire.NEGATIVE_TTL_WITHOUT_SOA


def test_cname_chain_keeps_the_lowest_ttl() -> None:
    r = dnswire.decode_reply(reply(7, cname=True), 7, QNAME)
    assert r.addresses == ("127.0.0.4",) and r.ttl == 30


@pytest.mark.parametrize(
    ("data", "qid", "why"),
    [
        (lambda: reply(8), 7, "not our reply"),
        (lambda: reply(7, tc=True), 7, "truncated"),
        (lambda: b"\x00\x07", 7, "short reply"),
    ],
)
def test_unusable_replies_are_refused(data, qid, why) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(dnswire.WireError, match=why):
        dnswire.decode_reply(data(), qid, QNAME)


def test_other_question_is_refused() -> None:
    with pytest.raises(dnswire.WireError, match="question"):
        dnswire.decode_reply(reply(7), 7, "3.0.0.127.zen.example.test")
