"""The audit's judgement from plain data: roles, and findings from scripted probe results."""

from __future__ import annotations

from mxguard.mxplan.findings import Severity
from mxguard.mxplan.judge import AuditInput, DnsView, MxTarget, analyse, assign_roles
from mxguard.mxplan.probe import ProbeResult, ProbeTarget, Reply
from mxguard.policy.facts import Role

VIEW = DnsView(
    "example.test",
    "mx",
    (
        MxTarget(0, "fake0.example.test", ("192.0.2.1",)),
        MxTarget(10, "mx1.example.test", ("192.0.2.10",)),
        MxTarget(20, "mx2.example.test", ("192.0.2.20",)),
        MxTarget(90, "fake9.example.test", ("192.0.2.99",)),
    ),
)


def answered(host: str, address: str, unknown: int, postmaster: int = 250) -> ProbeResult:
    p = ProbeResult(ProbeTarget(host, address, 25))
    p.connect, p.banner, p.ehlo, p.starttls = "ok", Reply(220, "hi"), Reply(250, "ok"), False
    p.mail = Reply(250, "ok")
    p.rcpt_unknown, p.rcpt_postmaster = Reply(unknown, "x"), Reply(postmaster, "y")
    return p


def failed(host: str, address: str, how: str) -> ProbeResult:
    p = ProbeResult(ProbeTarget(host, address, 25))
    p.connect = how  # type: ignore[assignment]
    return p


def probes(unknown_on_backup: int = 550, fake0: str = "refused") -> tuple[ProbeResult, ...]:
    return (
        failed("fake0.example.test", "192.0.2.1", fake0),
        answered("mx1.example.test", "192.0.2.10", 550),
        answered("mx2.example.test", "192.0.2.20", unknown_on_backup),
        failed("fake9.example.test", "192.0.2.99", "refused"),
    )


def test_roles_are_inferred_from_preference_and_behaviour() -> None:
    roles = assign_roles(VIEW, probes(), {})
    assert [r.role for r in roles] == [Role.FAKE, Role.PRIMARY, Role.BACKUP, Role.FAKE]
    assert all(r.inferred for r in roles)
    # a hint wins over the inference
    roles = assign_roles(VIEW, probes(), {"mx2.example.test": Role.TRAP})
    assert roles[2].role is Role.TRAP and not roles[2].inferred


def test_good_answers_give_only_information() -> None:
    findings = analyse(AuditInput(VIEW, probes(), probed=True))
    assert [f.code for f in findings if f.severity > Severity.INFO] == []


def test_backscatter_from_the_answers() -> None:
    findings = analyse(AuditInput(VIEW, probes(unknown_on_backup=250), probed=True))
    [f] = [f for f in findings if f.code == "backscatter-backdoor"]
    assert f.subject == "mx2.example.test" and f.severity is Severity.ERROR


def test_a_dropping_fake_in_front_costs_every_delivery() -> None:
    findings = analyse(AuditInput(VIEW, probes(fake0="timeout"), probed=True))
    [f] = [f for f in findings if f.code == "fake-drops"]
    assert f.subject == "fake0.example.test" and f.severity is Severity.ERROR


def test_without_probes_nothing_is_said_about_answers() -> None:
    findings = analyse(AuditInput(VIEW))
    assert findings == []
