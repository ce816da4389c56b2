"""The report on the shared corpus of real logs (read in place, never copied).

Expected numbers were checked by hand against the files (small ones line by line) or
against an independent oracle where one exists (exim_exporter's tail.metrics).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report_corpus import CORPUS, by_server, needs_corpus, nonzero, run_json

pytestmark = needs_corpus

ALL_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_file_parses_without_crash_and_accounts_for_each_line(path: Path) -> None:
    rep = run_json(str(path), exit_codes=(0, 1))
    (f,) = rep["files"]
    assert f["lines"] > 0
    understood_or_not = f["corrupt"] + sum(rep["unparsed"].values())
    assert f["not_understood"] == sum(rep["unparsed"].values())
    assert 0 <= understood_or_not <= f["lines"]
    # exit 1 exactly when no line was understood (a metrics file, another tool's JSON)
    assert rep["exit_code"] == (1 if understood_or_not == f["lines"] else 0)


def test_fail2ban_postfix_counts_per_host() -> None:
    rows = by_server(run_json(str(CORPUS / "fail2ban" / "postfix")))
    assert {k: nonzero(r["counts"]) for k, r in rows.items()} == {
        "f-vanier-bourgeois": {"unknown": 1},  # VRFY ... User unknown
        "hostname": {"rate": 2},  # anvil limits logged by smtpd
        "mail": {"other": 1},  # CONNECT: cannot find your hostname
        "proxy2": {"unknown": 1},  # undeliverable address
        "saturn": {"relay": 1},
        "server": {"spam": 1, "unknown": 1, "other": 3},  # milter-reject at DATA
        "xxx": {"screen": 2, "other": 13},  # two smtpd DNSBL rejects
        "xxx12345": {"screen": 1},
    }
    # postscreen's RCPT reject is kept apart: postscreen counts per connection
    assert rows["xxx"]["stats"]["postscreen_rcpt_rejects"] == 1
    assert rows["xxx"]["stats"]["postscreen_pregreet"] == 1
    assert rows["proxy2"]["stats"]["postscreen_command_limit"] == 2


def test_fail2ban_postfix_comment_lines_are_corrupt_not_unparsed() -> None:
    rep = run_json(str(CORPUS / "fail2ban" / "postfix"))
    assert rep["files"][0]["lines"] == 151  # non-blank lines: 63 log lines + 88 comments
    assert rep["files"][0]["corrupt"] == 88
    assert rep["unparsed"] == {}


def test_fail2ban_sendmail_reject() -> None:
    rows = by_server(run_json(str(CORPUS / "fail2ban" / "sendmail-reject")))
    assert nonzero(rows["Microsoft"]["counts"]) == {"unknown": 6}
    assert nonzero(rows["petermurray"]["counts"]) == {
        "rate": 1,
        "screen": 1,
        "relay": 2,
        "other": 3,
    }
    assert nonzero(rows["kismet"]["counts"]) == {"screen": 3, "relay": 1}
    assert nonzero(rows["batman"]["counts"]) == {
        "rate": 2,
        "unknown": 1,
        "screen": 1,
        "relay": 1,
        "other": 2,
    }


def test_sendmail_deliveries_count_every_listed_recipient() -> None:
    rows = by_server(run_json(str(CORPUS / "fluent-plugin-sendmail" / "data")))
    r = rows["mta001"]
    assert r["counts"]["delivered"] == 6  # 2 + 2 + 1 retried + 1 local
    assert r["stats"]["deferred"] == 2


@pytest.mark.parametrize("name", ["exim-logs.log", "exim-syslog-logs.log"])
def test_crowdsec_exim_plain_and_syslog_wrapped_agree(name: str) -> None:
    (row,) = run_json(str(CORPUS / "crowdsec-hub" / name))["servers"]
    assert nonzero(row["counts"]) == {"rate": 1, "unknown": 1, "screen": 1, "other": 2}


def test_exim_exporter_matches_its_tail_metrics() -> None:
    metrics = {}
    for line in (CORPUS / "exim_exporter" / "tail.metrics").read_text().splitlines():
        if line.startswith("exim_messages_total{"):
            flag = line.split('flag="')[1].split('"')[0]
            metrics[flag] = int(line.split()[-1])
        elif line.startswith("exim_reject_total "):
            metrics["reject"] = int(line.split()[-1])
    (row,) = run_json(str(CORPUS / "exim_exporter" / "mainlog"))["servers"]
    st = row["stats"]
    assert st["arrived"] == metrics["arrived"] == 14
    assert st["delivered_primary_address"] == metrics["delivered"]
    assert st["delivered_additional"] == metrics["additional"]
    assert st["deferred"] == metrics["deferred"]
    assert st["bounced"] == metrics["failed"]
    assert st["completed"] == metrics["completed"]
    assert row["counts"]["delivered"] == metrics["delivered"] + metrics["additional"]
    (rej,) = run_json(str(CORPUS / "exim_exporter" / "rejectlog"))["servers"]
    assert rej["rejected_total"] == metrics["reject"]


def test_exim_rejectlog_is_not_counted_twice(tmp_path: Path) -> None:
    """A mainlog holding the same rejections as the rejectlog beside it."""
    exim = tmp_path / "exim4"
    exim.mkdir()
    main = (CORPUS / "exim_exporter" / "mainlog").read_bytes()
    rejects = (CORPUS / "exim_exporter" / "rejectlog").read_bytes()
    (exim / "mainlog").write_bytes(main + rejects)
    (exim / "rejectlog").write_bytes(rejects)
    (row,) = run_json(str(exim / "mainlog"), str(exim / "rejectlog"))["servers"]
    assert row["server"] == "exim4"
    assert row["rejected_total"] == 4
    assert row["stats"]["duplicate_rejects_skipped"] == 4


def test_ddgrey_dictionary_attack() -> None:
    (row,) = run_json(str(CORPUS / "ddgrey" / "mainlog.pseudonymized"))["servers"]
    c = row["counts"]
    assert c["unknown"] == 1100  # "Unrouteable address"
    assert c["spam"] == 17  # SA-Exim: rejected by local_scan()
    assert c["relay"] == 3
    assert c["delivered"] + row["excluded_local"].get("delivered", 0) == 41  # "=>" lines


def test_pixelpark_final_deliveries_versus_amavis_handoffs() -> None:
    rep = run_json(str(CORPUS / "pixelpark-postfix-logsums" / "mail.log.xz"))
    (row,) = rep["servers"]
    st = row["stats"]
    # 364 status=sent lines: 181 hand-offs to amavis, 177 dovecot, 3 local forwards,
    # 3 outbound: only the last three groups are deliveries
    assert st["content_filter_handoffs"] == 181
    assert st["final_deliveries_all_origins"] == 183
    # 25 of them started on this host (SASL submission, pickup, a bounce) and are
    # local traffic; checked with an independent script following queue IDs
    assert row["counts"]["delivered"] == 158
    assert row["excluded_local"] == {"delivered": 25}
    assert st["postscreen_dropped_connections"] == 5116  # CONNECT 9700 - PASS 4573 - allowlisted 11
    assert st["postscreen_rcpt_rejects"] == 90
    assert row["counts"]["other"] == 27  # 26 smtpd rejects + 1 amavis BANNED
    assert rep["unparsed"] == {}


def test_youyo_two_timestamp_formats_give_the_same_report(tmp_path: Path) -> None:
    bsd = CORPUS / "youyo-postfix-log-parser" / "test.log"
    n = len(bsd.read_bytes().splitlines())
    iso_lines = (CORPUS / "youyo-postfix-log-parser" / "test-iso8601.log").read_bytes().splitlines()
    iso = tmp_path / "same-events-rfc3339.log"
    iso.write_bytes(b"\n".join(iso_lines[:n]) + b"\n")
    a, b = run_json(str(bsd)), run_json(str(iso))
    for rep in (a, b):
        for r in rep["servers"]:
            r.pop("first_seen"), r.pop("last_seen")
        rep.pop("timeline")
        rep.pop("files")
    assert a == b
    assert a["servers"][0]["counts"]["delivered"] == 4


def test_youyo_milter_greylist_and_ratelimit() -> None:
    rows = by_server(run_json(str(CORPUS / "youyo-postfix-log-parser" / "test-milter.log")))
    assert nonzero(rows["mail.server.com"]["counts"]) == {"greylist": 1}
    assert nonzero(rows["smtp01.example.org"]["counts"]) == {"rate": 1}
