"""The DNS half of `mxguard audit`, against a real DNS server on 127.0.0.1 (no SMTP probes)."""

from __future__ import annotations

from typing import Any

from mxguard.mxplan.audit import AuditReport
from mxguard.mxplan.findings import Severity
from mxguard.policy.facts import Role


def codes(report: AuditReport) -> dict[str, Severity]:
    return {f.code: f.severity for f in report.findings}


async def test_plain_layout_has_no_dns_findings(zone: Any, auditor: Any) -> None:
    zone("""
        @    MX 10 mx1
        @    MX 20 mx2
        mx1  A    192.0.2.1
        mx1  AAAA 2001:db8::1
        mx2  A    192.0.2.2
    """)
    report = await auditor(probe=False)
    assert report.findings == []
    assert report.view.status == "mx"
    assert report.view.targets[0].addresses == ("192.0.2.1", "2001:db8::1")
    assert report.probes == []  # no --probe, no connection


async def test_null_mx(zone: Any, auditor: Any) -> None:
    zone("@ MX 0 .")
    report = await auditor()
    assert codes(report) == {"null-mx": Severity.INFO}
    assert report.probes == []


async def test_null_mx_beside_other_records(zone: Any, auditor: Any) -> None:
    zone("@ MX 0 .\n@ MX 10 mx1\nmx1 A 192.0.2.1")
    report = await auditor(probe=False)
    assert codes(report)["null-mx-mixed"] is Severity.ERROR


async def test_nxdomain_is_not_nodata(dns_server: Any, zone: Any, auditor: Any) -> None:
    dns_server.set_zone("other.test", "@ A 192.0.2.9")  # audit.test itself does not exist
    report = await auditor(probe=False)
    assert codes(report) == {"nxdomain": Severity.ERROR}


async def test_implicit_mx(zone: Any, auditor: Any) -> None:
    zone("@ A 192.0.2.80")  # NODATA for MX: the domain's own address takes mail
    report = await auditor(probe=False)
    assert codes(report) == {"implicit-mx": Severity.WARNING}
    assert report.view.targets[0].implicit and report.view.targets[0].addresses == ("192.0.2.80",)


async def test_no_mx_and_no_address(zone: Any, auditor: Any) -> None:
    zone('@ TXT "v=spf1 -all"')
    report = await auditor(probe=False)
    assert codes(report) == {"no-mail-host": Severity.ERROR}


async def test_cname_target(zone: Any, auditor: Any) -> None:
    zone("""
        @     MX 10 alias
        alias CNAME mx1
        mx1   A 192.0.2.1
    """)
    report = await auditor(probe=False)
    assert codes(report) == {"mx-cname": Severity.WARNING}
    assert report.view.targets[0].cname == "mx1.audit.test"


async def test_ip_literal_target(zone: Any, auditor: Any) -> None:
    zone("@ MX 10 192.0.2.1.")
    report = await auditor(probe=False)
    assert codes(report) == {"mx-ip-literal": Severity.ERROR}


async def test_target_without_address(zone: Any, auditor: Any) -> None:
    zone("""
        @    MX 10 mx1
        @    MX 20 gone
        mx1  A 192.0.2.1
    """)
    report = await auditor(probe=False)
    assert codes(report) == {"mx-no-address": Severity.ERROR}
    assert report.view.targets[1].error == "NXDOMAIN"


async def test_too_many_addresses_for_a_sender(zone: Any, auditor: Any) -> None:
    fakes = "".join(
        f"@ MX {i} f{i}\nf{i} A 192.0.2.{10 + i}\nf{i} AAAA 2001:db8::{10 + i}\n" for i in range(3)
    )
    zone(fakes + "@ MX 10 mx1\nmx1 A 192.0.2.1\n")
    fakes_are = {f"f{i}.audit.test": Role.FAKE for i in range(3)}
    report = await auditor(probe=False, hints=fakes_are)
    [f] = [f for f in report.findings if f.code == "address-limit"]
    assert f.severity is Severity.ERROR and f.subject == "mx1.audit.test"
    # without roles and probes the lowest preference passes for the primary, the rest for
    # backups: the later "backups" are crowded out too
    report = await auditor(probe=False)
    limits = {f.subject: f.severity for f in report.findings if f.code == "address-limit"}
    assert limits == {"f2.audit.test": Severity.WARNING, "mx1.audit.test": Severity.ERROR}
