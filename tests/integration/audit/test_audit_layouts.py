"""`mxguard audit` against real DNS and real SMTP listeners on 127.0.0.x.

Each finding comes from the layout that should produce it, and the good layout (mxguard's
own primary, backup and trap, a fake on a closed port) produces none of them.
"""

from __future__ import annotations

from typing import Any

from mxguard.config import load_config
from mxguard.mxplan.audit import AuditReport
from mxguard.mxplan.findings import Finding, Severity
from mxguard.policy.facts import Role

PRIMARY_IP, BACKUP_IP, TRAP_IP, FAKE_IP = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.19"
OTHER_IP, REAL_IP = "127.0.0.14", "127.0.0.30"

GOOD_ZONE = """
@      MX 10 mx1
@      MX 20 mx2
@      MX 30 trap
@      MX 90 fake
mx1    A  127.0.0.11
mx2    A  127.0.0.12
trap   A  127.0.0.13
fake   A  127.0.0.19
"""

#: the findings that the good layout must not have (every probe-level problem the audit knows)
PROBLEMS = {
    "backscatter-backdoor",
    "accepts-unknown",
    "policy-drift",
    "greylist-drift",
    "shared-address",
    "trap-shares-primary-address",
    "trap-shares-address",
    "fake-answers",
    "fake-drops",
    "direct-bypass",
    "also-published",
    "mx-silent",
    "mx-timeout",
    "mx-unreachable",
    "tls-invalid",
    "tls-drift",
    "config-mismatch",
    "no-mx-answers",
}


def found(report: AuditReport, code: str) -> list[Finding]:
    return [f for f in report.findings if f.code == code]


def serious(report: AuditReport) -> list[str]:
    return [f"{f.code}: {f.message}" for f in report.findings if f.severity >= Severity.WARNING]


def use_tier(auditor: Any, tier: Any) -> None:
    auditor.ports.update(tier.ports)
    auditor.cafile = tier.cafile


async def test_good_layout_has_no_findings(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:
    zone(GOOD_ZONE)
    peers.closed(FAKE_IP)
    peers.closed(REAL_IP)  # the server behind the MX hosts, firewalled as it should be
    use_tier(auditor, tier)
    report = await auditor(config=load_config(tier.config_path), also=(REAL_IP,))
    assert serious(report) == []
    assert not {f.code for f in report.findings} & PROBLEMS
    by_addr = {p.target.address: p for p in report.probes}
    assert by_addr[PRIMARY_IP].tls == "ok" and by_addr[BACKUP_IP].tls == "ok"
    assert by_addr[PRIMARY_IP].rcpt_unknown.code == 550
    assert by_addr[PRIMARY_IP].rcpt_postmaster.code == 250
    assert by_addr[FAKE_IP].connect == "refused"
    # the probes went to the published addresses and the --also one, nowhere else
    assert set(by_addr) == {PRIMARY_IP, BACKUP_IP, TRAP_IP, FAKE_IP, REAL_IP}


async def test_good_layout_without_config_infers_the_roles(
    tier: Any, peers: Any, zone: Any, auditor: Any
) -> None:
    zone(GOOD_ZONE)
    peers.closed(FAKE_IP)
    use_tier(auditor, tier)
    # mxguard's trap answers 250 at RCPT (it tempfails later), which from outside looks like
    # an accept-all backup: only the trap's role is given, the rest is inferred
    report = await auditor(hints={"trap.audit.test": Role.TRAP})
    roles = {t.host: r for t, r in zip(report.view.targets, report.roles, strict=True)}
    assert roles["mx1.audit.test"].role is Role.PRIMARY and roles["mx1.audit.test"].inferred
    assert roles["mx2.audit.test"].role is Role.BACKUP
    assert roles["fake.audit.test"].role is Role.FAKE
    assert serious(report) == []


async def test_accept_all_backup_is_the_backscatter_back_door(
    tier: Any, peers: Any, zone: Any, auditor: Any
) -> None:

    zone("""
        @    MX 10 mx1
        @    MX 20 bad
        mx1  A 127.0.0.11
        bad  A 127.0.0.14
    """)
    peers.accept_all(OTHER_IP)
    use_tier(auditor, tier)
    report = await auditor()
    [f] = found(report, "backscatter-backdoor")
    assert f.severity is Severity.ERROR and f.subject == "bad.audit.test"
    assert any("250" in e for e in f.evidence) and any("550" in e for e in f.evidence)


async def test_greylisting_on_one_host_only(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:

    zone("""
        @    MX 10 mx1
        @    MX 20 grey
        mx1  A 127.0.0.11
        grey A 127.0.0.14
    """)
    peers.greylisting(OTHER_IP)
    use_tier(auditor, tier)
    report = await auditor()
    [f] = found(report, "greylist-drift")
    assert f.subject == "grey.audit.test" and f.severity is Severity.INFO  # seed 000's layout

    # the other way round: the primary greylists, the backup lets the spam in
    zone("""
        @    MX 10 grey
        @    MX 20 mx2
        grey A 127.0.0.14
        mx2  A 127.0.0.12
    """)
    report = await auditor()
    [f] = found(report, "greylist-drift")
    assert f.subject == "mx2.audit.test" and f.severity is Severity.WARNING


async def test_policy_drift(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:

    zone("""
        @    MX 10 mx1
        @    MX 20 other
        mx1  A 127.0.0.11
        other A 127.0.0.14
    """)
    peers.no_postmaster(OTHER_IP)
    use_tier(auditor, tier)
    report = await auditor()
    [f] = found(report, "policy-drift")
    assert "RCPT postmaster" in f.message
    assert found(report, "postmaster-refused")
    assert found(report, "tls-drift")  # aiosmtpd offers no STARTTLS, mxguard's primary does


async def test_secondary_on_the_primary_address(tier: Any, zone: Any, auditor: Any) -> None:
    zone("""
        @    MX 10 mx1
        @    MX 20 mx2
        mx1  A 127.0.0.11
        mx2  A 127.0.0.11
    """)
    use_tier(auditor, tier)
    report = await auditor()
    [f] = found(report, "shared-address")
    assert f.subject == "mx2.audit.test"


async def test_secondary_is_the_real_server_behind_the_filter(
    tier: Any, peers: Any, zone: Any, auditor: Any
) -> None:

    zone("""
        @    MX 10 mx1
        @    MX 20 mx2
        mx1  A 127.0.0.11
        mx2  A 127.0.0.30
        real A 127.0.0.30
    """)
    peers.accept_all(REAL_IP)
    use_tier(auditor, tier)
    report = await auditor(also=("real.audit.test",))
    [f] = found(report, "also-published")
    assert f.subject == "mx2.audit.test" and f.severity is Severity.ERROR


async def test_direct_to_host_bypass(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:

    zone(GOOD_ZONE)
    peers.closed(FAKE_IP)
    peers.careful(REAL_IP)  # a careful server, but reachable by anyone
    use_tier(auditor, tier)
    report = await auditor(config=load_config(tier.config_path), also=(REAL_IP,))
    [f] = found(report, "direct-bypass")
    assert f.severity is Severity.ERROR and REAL_IP in f.message


async def test_fake_that_answers(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:

    zone(GOOD_ZONE)
    peers.accept_all(FAKE_IP)
    use_tier(auditor, tier)
    report = await auditor(config=load_config(tier.config_path))
    [f] = found(report, "fake-answers")
    assert f.subject == "fake.audit.test" and "greets with 220" in f.message


async def test_fake_that_never_greets(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:
    zone(GOOD_ZONE)
    await peers.silent(FAKE_IP)
    use_tier(auditor, tier)
    report = await auditor(hints={"fake.audit.test": Role.FAKE}, timeout=0.5)
    [f] = found(report, "fake-answers")
    assert "never greets" in f.message


async def test_fake_that_drops_packets(tier: Any, peers: Any, zone: Any, auditor: Any) -> None:
    zone(GOOD_ZONE + "@ MX 0 fake0\nfake0 A 127.0.0.20\n")
    peers.dropping(FAKE_IP)
    peers.dropping("127.0.0.20")
    use_tier(auditor, tier)
    report = await auditor(timeout=0.5)  # roles inferred: dead hosts at both ends are fakes
    drops = {f.subject: f.severity for f in found(report, "fake-drops")}
    assert drops == {"fake.audit.test": Severity.WARNING, "fake0.audit.test": Severity.ERROR}


async def test_trap_on_the_primary_address(tier: Any, zone: Any, auditor: Any) -> None:
    zone("""
        @    MX 10 mx1
        @    MX 20 mx2
        @    MX 30 trap
        mx1  A 127.0.0.11
        mx2  A 127.0.0.12
        trap A 127.0.0.11
    """)
    use_tier(auditor, tier)
    report = await auditor(hints={"trap.audit.test": Role.TRAP})
    [f] = found(report, "trap-shares-primary-address")
    assert f.severity is Severity.ERROR
    # seed 002's first layout, the primary's own name at a high preference, is caught too
    zone("""
        @    MX 10 mx1
        @    MX 20 mx2
        @    MX 30 mx1
        mx1  A 127.0.0.11
        mx2  A 127.0.0.12
    """)
    report = await auditor()
    [f] = found(report, "trap-shares-primary-address")
    assert f.severity is Severity.WARNING  # inferred, so said less firmly


async def test_silent_backup_and_the_time_budget(
    tier: Any, peers: Any, zone: Any, auditor: Any
) -> None:
    zone("""
        @    MX 10 mx1
        @    MX 20 hung
        mx1  A 127.0.0.11
        hung A 127.0.0.14
    """)
    await peers.silent(OTHER_IP)
    use_tier(auditor, tier)
    report = await auditor(timeout=0.5)
    assert found(report, "mx-silent")[0].subject == "hung.audit.test"
    cut = await auditor(timeout=5.0, max_time=0.5)
    hung = next(p for p in cut.probes if p.target.address == OTHER_IP)
    assert "time budget" in hung.error and hung.connect == "ok"


async def test_invalid_certificate(tier: Any, zone: Any, auditor: Any) -> None:
    zone("""
        @    MX 10 mx1
        @    MX 20 mx2
        mx1  A 127.0.0.12
        mx2  A 127.0.0.11
    """)  # each name now leads to the other's certificate
    use_tier(auditor, tier)
    report = await auditor()
    assert {f.subject for f in found(report, "tls-invalid")} == {"mx1.audit.test", "mx2.audit.test"}
    probe = report.probes[0]
    assert probe.rcpt_unknown is not None  # the envelope was still asked, in clear
