"""The event log writes decision lines directly when no listener wants the event dict; the
line must be exactly what encoding the dict gives, since `mxguard report` and people's own
scripts read these files."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mxguard.events import EventLog, _decision_event_line
from mxguard.policy.facts import Facts, MxInfo, Role, Stage
from mxguard.policy.verdict import Action, Verdict

texts = st.text(max_size=40)  # any code point: quotes, backslashes, controls, surrogates
maybe = st.none() | texts
addresses = st.ip_addresses().map(lambda ip: ipaddress.ip_address(str(ip)))

facts_st = st.builds(
    Facts,
    stage=st.sampled_from(list(Stage)),
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 2**33),
    client_ip=addresses,
    mx=st.builds(
        MxInfo,
        host=texts,
        role=st.sampled_from(list(Role)),
        preference=st.none() | st.integers(0, 65535),
    ),
    session_id=texts,
    helo=maybe,
    sender=maybe,
    recipient=maybe,
    size=st.none() | st.integers(0, 10**9),
)
verdicts = st.builds(
    Verdict,
    action=st.sampled_from(list(Action)),
    code=st.integers(200, 599),
    status=texts,
    text=texts,
    reason=texts,
)
extras = st.dictionaries(
    st.sampled_from(["msgid", "rcpt_count", "pregreet_bytes", "frontend", "instance"]),
    st.none() | st.integers() | texts,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(facts=facts_st, verdict=verdicts, queue_id=maybe, extra=extras)
def test_direct_line_is_the_dict_encoding(
    facts: Facts, verdict: Verdict, queue_id: str | None, extra: dict[str, object]
) -> None:
    event = EventLog._decision_event(facts, verdict, queue_id, extra)
    expected = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode(event)
    assert _decision_event_line(facts, verdict, queue_id, extra) == expected + "\n"


#: a decision with text to escape, for the tests that write whole files
FACTS = Facts(
    Stage.RCPT,
    1700000000.123456789,
    ipaddress.ip_address("192.0.2.7"),
    MxInfo("mx1.example.test", Role.BACKUP, 20),
    "S1",
    helo='he"lo\\',
    sender="a@b.example",
    recipient="ünï@example.test",
)
GREYLISTED = Verdict(Action.TEMPFAIL, 450, "4.7.1", "Greylisted", "greylisted", soft=True)


def test_both_paths_write_the_same_file(tmp_path: Path) -> None:
    """With a listener the dict path runs; without, the direct one: same bytes on disk."""
    facts, verdict = FACTS, GREYLISTED
    seen: list[dict[str, object]] = []
    lines = []
    for listen in (False, True):
        log = EventLog(tmp_path / f"{listen}.jsonl")
        if listen:
            log.listeners.append(seen.append)
        log.decision(facts, verdict, queue_id="Q1", msgid="<m@x>")
        log.decision(facts, verdict, stage="eom")  # an extra that replaces a field
        log.close()
        lines.append((tmp_path / f"{listen}.jsonl").read_bytes())
    assert lines[0] == lines[1]
    assert [e["stage"] for e in seen] == ["rcpt", "eom"]
    assert json.loads(lines[0].splitlines()[1])["stage"] == "eom"


def test_decisions_formatted_at_the_flush_keep_their_order_among_other_lines(
    tmp_path: Path,
) -> None:
    """A decision waits in the buffer unformatted; the file still has every line in the
    order it was logged, whichever way each was written."""
    facts, verdict = FACTS, GREYLISTED
    log = EventLog(tmp_path / "e.jsonl")
    log.decision(facts, verdict)
    log.write({"event": "middle"})
    log.decision(facts.at(Stage.EOM), verdict, queue_id="Q2")
    assert (tmp_path / "e.jsonl").read_bytes() == b""  # all still in the buffer
    log.close()
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e.get("stage", e.get("event")) for e in events] == ["rcpt", "middle", "eom"]
    assert events[2]["queue_id"] == "Q2"
