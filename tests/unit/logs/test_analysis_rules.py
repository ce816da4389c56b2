"""Counting rules of the analysis: local traffic, relays between MX hosts, windows,
and the excess estimate's arithmetic."""

from __future__ import annotations

import gzip
import ipaddress
import json
import lzma
from pathlib import Path

import pytest

from mxguard.logs.analysis import Analysis, FileInfo, Options
from mxguard.logs.excess import estimate
from mxguard.logs.inputs import InputError, Source
from mxguard.logs.pipeline import run


def analyse(files: dict[str, str], tmp_path: Path, **opts: object) -> dict:  # type: ignore[type-arg]
    infos, sources = [], []
    for label, text in files.items():
        p = tmp_path / f"{label}.log"
        p.write_text(text)
        role = label if label in ("primary", "backup") else None
        infos.append(FileInfo(path=str(p), label=label, role=role, default_name=label))
        sources.append(Source(str(p)))
    a = Analysis(Options(**opts), infos)  # type: ignore[arg-type]
    run(a, sources, jobs=1)
    return {r["server"]: r for r in a.finish()["servers"]}  # type: ignore[attr-defined]


def _deliver(minute: int, qid: str, ip: str, name: str = "h") -> str:
    return (
        f"Jan  5 10:{minute:02d}:00 mx postfix/smtpd[1]: {qid}: client={name}[{ip}]\n"
        f"Jan  5 10:{minute:02d}:01 mx postfix/pipe[2]: {qid}: to=<a@example.test>, relay=dovecot, delay=0.1, dsn=2.0.0, status=sent (delivered via dovecot service)\n"
        f"Jan  5 10:{minute:02d}:02 mx postfix/qmgr[3]: {qid}: removed\n"
    )


def test_local_networks_are_left_out_of_counts(tmp_path: Path) -> None:
    text = _deliver(1, "Q1", "192.0.2.1") + _deliver(2, "Q2", "10.1.2.3")
    rows = analyse({"primary": text}, tmp_path, local_networks=[ipaddress.ip_network("10.0.0.0/8")])
    assert rows["primary"]["counts"]["delivered"] == 1
    assert rows["primary"]["excluded_local"] == {"delivered": 1}


def test_mail_from_another_mx_counts_once(tmp_path: Path) -> None:
    text = _deliver(1, "Q1", "192.0.2.1") + _deliver(2, "Q2", "192.0.2.20", "mx2.example.test")
    rows = analyse({"primary": text}, tmp_path, peers={"mx2"})
    assert rows["primary"]["counts"]["delivered"] == 1
    assert rows["primary"]["relayed_from_other_mx"] == 1


def test_json_forward_reclassifies_the_primarys_copy(tmp_path: Path) -> None:
    prim = '{"ts": 100, "mx": "mx1", "role": "primary", "client": "192.0.2.20", "stage": "eom", "action": "accept", "reason": "delivered", "msgid": "<a@x>", "sender": "s@x", "recipient": "r@example.test"}\n'
    back = (
        '{"ts": 99, "mx": "mx2", "role": "backup", "client": "192.0.2.7", "stage": "eom", "action": "accept", "reason": "queued", "msgid": "<a@x>", "sender": "s@x", "recipient": "r@example.test"}\n'
        '{"ts": 101, "mx": "mx2", "role": "backup", "stage": "forward", "action": "accept", "reason": "forwarded", "msgid": "<a@x>"}\n'
    )
    p1, p2 = tmp_path / "a.json", tmp_path / "b.json"
    p1.write_text(prim)
    p2.write_text(back)
    infos = [FileInfo(path=str(p1)), FileInfo(path=str(p2))]
    a = Analysis(Options(), infos)
    run(a, [Source(str(p1)), Source(str(p2))], jobs=1)
    rep = a.finish()
    rows = {r["server"]: r for r in rep["servers"]}  # type: ignore[attr-defined]
    assert rows["mx1"]["role"] == "primary" and rows["mx2"]["role"] == "backup"
    assert rows["mx1"]["counts"]["delivered"] == 0
    assert rows["mx1"]["relayed_from_other_mx"] == 1
    assert rows["mx2"]["counts"]["delivered"] == 1
    assert rep["multi_mx_messages"]["seen_at_several_mx"] == {}  # type: ignore[index]


def _reject(minute: int, ip: str, rcpt: str) -> str:
    return (
        f"Jan  5 10:{minute:02d}:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from h[{ip}]: 550 5.1.1 "
        f"<{rcpt}>: Recipient address rejected: User unknown in relay recipient table; "
        f"from=<s@example.org> to=<{rcpt}> proto=ESMTP helo=<h>\n"
    )


def test_several_mx_within_the_window_only(tmp_path: Path) -> None:
    prim = _reject(0, "192.0.2.9", "a@example.test") + _reject(30, "192.0.2.8", "b@example.test")
    back = _reject(1, "192.0.2.9", "a@example.test") + _reject(59, "192.0.2.8", "b@example.test")
    p1, p2 = tmp_path / "p.log", tmp_path / "b.log"
    p1.write_text(prim)
    p2.write_text(back)
    infos = [FileInfo(str(p1), "primary", "primary"), FileInfo(str(p2), "backup", "backup")]
    a = Analysis(Options(window=600), infos)
    run(a, [Source(str(p1)), Source(str(p2))], jobs=1)
    rep = a.finish()
    # 192.0.2.9 hit both within 60 s; 192.0.2.8 came back to the backup 29 min later
    assert rep["multi_mx_clients"]["seen_at_several_mx"] == 1  # type: ignore[index]
    assert rep["multi_mx_clients"]["client_visits"] == 3  # type: ignore[index]
    assert rep["multi_mx_clients"]["first_contacted"] == {"primary": 1}  # type: ignore[index]
    assert rep["multi_mx_messages"]["seen_at_several_mx"] == {"sender_recipient": 1}  # type: ignore[index]
    assert rep["multi_mx_messages"]["keys"] == {"sender_recipient": 3}  # type: ignore[index]


def test_excess_reproduces_the_seed_arithmetic() -> None:
    # seed 000: unknown:delivered 3.05 on the primary, 7.00 on the backup
    e = estimate(
        kind_primary=3050,
        delivered_primary=1000,
        kind_backup=700,
        delivered_backup=100,
        min_count=30,
    )
    assert e["expected_backup"] == pytest.approx(305)
    assert e["excess"] == pytest.approx(395)
    assert e["share"] == pytest.approx(395 / 3750, abs=1e-4)
    assert e["warnings"] == []
    small = estimate(3, 10, 2, 1, min_count=30)
    assert small["warnings"] and "too small" in small["warnings"][0]  # type: ignore[index]
    assert estimate(1, 0, 1, 1, 0)["share"] is None


@pytest.mark.parametrize("opener", [gzip.open, lzma.open, None])
def test_compressed_inputs_are_recognised_by_content(tmp_path: Path, opener) -> None:  # type: ignore[no-untyped-def]
    import bz2

    data = _deliver(1, "Q1", "192.0.2.1").encode()
    path = tmp_path / "mail.log.1"  # no telling suffix on purpose
    if opener is None:
        path.write_bytes(bz2.compress(data))
    else:
        with opener(path, "wb") as fh:
            fh.write(data)
    src = Source(str(path))
    try:
        assert b"".join(src.blocks()) == data
    finally:
        src.close()


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.log: no such file"):
        Source(str(tmp_path / "nope.log"))


def _event(ts: int, mx: str, role: str, client: str, session: str, stage: str, **more: str) -> str:
    fields = {"ts": ts, "mx": mx, "role": role, "client": client, "session": session}
    fields |= {"stage": stage, "action": "tempfail", "reason": "greylisted"} | more
    return json.dumps(fields) + "\n"


def test_json_sessions_are_client_contacts(tmp_path: Path) -> None:
    """serve logs decisions, not accepted connections: a session's events are one contact,
    so a client that walks primary, backup and trap is seen at several MX."""
    log = (
        _event(100, "mx1", "primary", "192.0.2.5", "S1", "rcpt")
        + _event(101, "mx1", "primary", "192.0.2.5", "S1", "rcpt")  # same session
        + _event(110, "mx2", "backup", "192.0.2.5", "S2", "rcpt")
        + _event(115, "trap", "trap", "192.0.2.5", "S3", "rcpt", action="reject", reason="trap")
        + _event(120, "mx1", "primary", "198.51.100.1", "S4", "rcpt")
    )
    p = tmp_path / "events.jsonl"
    p.write_text(log)
    a = Analysis(Options(window=600), [FileInfo(path=str(p))])
    run(a, [Source(str(p))], jobs=1)
    rep = a.finish()
    mc = rep["multi_mx_clients"]
    assert mc["client_visits"] == 2  # type: ignore[index]
    assert mc["seen_at_several_mx"] == 1  # type: ignore[index]
    assert mc["first_contacted"] == {"mx1": 1}  # type: ignore[index]
    rows = {r["server"]: r for r in rep["servers"]}  # type: ignore[attr-defined]
    assert rows["mx1"]["stats"]["connections_mxguard"] == 2  # S1 once, S4
