"""`mxguard plan`: records derived from the config, and each finding from the layout that causes it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
from click.testing import CliRunner

from mxguard.cli import main
from mxguard.config import Config, ConfigError, load_config_text
from mxguard.mxplan.findings import Severity
from mxguard.mxplan.plan import Plan, build_plan, render_bind, render_json

DOMAINS = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "postmaster@example.test"]

[[domain]]
name = "example.org"
recipients = ["bob@example.org", "postmaster@example.org"]
"""

PRIMARY = """
[[mx]]
host = "mail.example.test"
role = "primary"
preference = 10
listen = "127.0.0.1:2525"
address = "192.0.2.10"
addresses = ["2001:db8::10"]
"""

BACKUP = """
[[mx]]
host = "backup.example.net"
role = "backup"
preference = 20
listen = "127.0.0.2:2525"
address = "198.51.100.20"
"""

TRAP = """
[[mx]]
host = "trap.example.test"
role = "trap"
preference = 30
listen = "127.0.0.3:2525"
address = "192.0.2.30"
"""

FAKE_BACK = """
[[mx]]
host = "fake9.example.test"
role = "fake"
preference = 90
address = "192.0.2.99"
"""

RETIRED = """
[[mx]]
host = "old.example.test"
role = "retired"
listen = "127.0.0.4:2525"
address = "192.0.2.50"
"""

GOOD = DOMAINS + PRIMARY + BACKUP + TRAP + FAKE_BACK + RETIRED


def cfg(*parts: str) -> Config:
    return load_config_text(textwrap.dedent("\n".join(parts)), "test.toml")


def codes(plan: Plan, at_least: Severity = Severity.INFO) -> set[str]:
    return {f.code for f in plan.findings if f.severity >= at_least}


def test_good_layout_has_no_warning_or_error() -> None:
    plan = build_plan(cfg(GOOD))
    assert codes(plan, Severity.WARNING) == set()


def _mx_and_addresses(text: str, origin: str) -> tuple[set[tuple[int, str]], dict[str, set[str]]]:
    zone = dns.zone.from_text(text, origin=origin, check_origin=False, relativize=False)
    mx: set[tuple[int, str]] = set()
    addrs: dict[str, set[str]] = {}
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            for rr in rds:
                if rds.rdtype == dns.rdatatype.MX:
                    mx.add((rr.preference, rr.exchange.to_text().rstrip(".")))
                elif rds.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    addrs.setdefault(name.to_text().rstrip("."), set()).add(rr.to_text())
    return mx, addrs


def test_bind_output_parses_back_to_the_config() -> None:
    config = cfg(GOOD)
    text = render_bind(build_plan(config))
    published = {(m.preference, m.host) for m in config.mx if m.role.value != "retired"}
    for domain in ("example.test", "example.org"):
        mx, addrs = _mx_and_addresses(text, domain)
        assert mx == published
        if domain == "example.test":
            assert addrs == {
                "mail.example.test": {"192.0.2.10", "2001:db8::10"},
                "trap.example.test": {"192.0.2.30"},
                "fake9.example.test": {"192.0.2.99"},
            }
        else:
            assert addrs == {}
    # the backup lives in another zone: its records are there, under their own origin
    _mx, addrs = _mx_and_addresses(text, "example.net")
    assert addrs == {"backup.example.net": {"198.51.100.20"}}
    # a retired host is never published
    assert "old.example.test." not in text.replace("; old.example.test", "")


def test_comments_name_the_role() -> None:
    text = render_bind(build_plan(cfg(GOOD)))
    line = next(x for x in text.splitlines() if "MX 30" in x)
    assert "; trap:" in line
    line = next(x for x in text.splitlines() if "MX 90" in x)
    assert "fake" in line and "192.0.2.99" in line


def test_json_matches_the_config() -> None:
    doc = json.loads(render_json(build_plan(cfg(GOOD))))
    mx = {(m["preference"], m["host"], m["role"]) for m in doc["domains"][0]["mx"]}
    assert mx == {
        (10, "mail.example.test", "primary"),
        (20, "backup.example.net", "backup"),
        (30, "trap.example.test", "trap"),
        (90, "fake9.example.test", "fake"),
    }
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["old.example.test"]["published"] is False
    assert {a["type"] for a in hosts["mail.example.test"]["addresses"]} == {"A", "AAAA"}


def test_listen_address_is_published_without_address() -> None:
    plan = build_plan(
        cfg(
            DOMAINS,
            '[[mx]]\nhost = "mail.example.test"\nrole = "primary"\npreference = 10\n'
            'listen = "192.0.2.7:25"\n',
        )
    )
    assert plan.hosts[0].addresses == ("192.0.2.7",)


def test_trap_on_the_primary_address_is_an_error() -> None:
    trap = TRAP.replace("192.0.2.30", "192.0.2.10")
    plan = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, trap))
    f = next(f for f in plan.findings if f.code == "trap-shares-primary-address")
    assert f.severity is Severity.ERROR and f.subject == "trap.example.test"


def test_backup_on_the_primary_address_is_a_warning() -> None:
    backup = BACKUP.replace("198.51.100.20", "192.0.2.10")
    plan = build_plan(cfg(DOMAINS, PRIMARY, backup, TRAP))
    assert "shared-address" in codes(plan, Severity.WARNING)


def test_accept_all_with_a_backup_is_an_error() -> None:
    domains = DOMAINS.replace(
        'recipients = ["bob@example.org", "postmaster@example.org"]',
        'recipients = ["bob@example.org"]\nrecipients_source = "accept-all"',
    )
    plan = build_plan(cfg(domains, PRIMARY, BACKUP, TRAP))
    assert "backup-accept-all" in codes(plan, Severity.ERROR)
    # without a backup it is checkconfig's business, not a layout problem
    assert "backup-accept-all" not in codes(build_plan(cfg(domains, PRIMARY, TRAP)))


def test_greylisting_on_the_primary_only_is_drift_on_the_backup_only_is_not() -> None:
    primary_only = build_plan(cfg(GOOD, '[greylist]\nroles = ["primary"]'))
    assert "greylist-drift" in codes(primary_only, Severity.WARNING)
    backup_only = build_plan(cfg(GOOD, '[greylist]\nroles = ["backup"]'))
    assert codes(backup_only, Severity.WARNING) == set()
    assert "greylist-backup-only" in codes(backup_only)


def test_weaker_greet_pause_and_missing_tls_on_the_backup() -> None:
    primary = PRIMARY + 'greet_pause = "3s"\ntls_cert = "/c.pem"\ntls_key = "/k.pem"\n'
    config = cfg(DOMAINS, primary, BACKUP, TRAP, '[early_talker]\naction = "reject"')
    assert {"greet-pause-drift", "tls-drift"} <= codes(build_plan(config), Severity.WARNING)


def test_fake_pointing_at_a_listener_is_an_error() -> None:
    fake = FAKE_BACK.replace("192.0.2.99", "127.0.0.2")
    plan = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, TRAP, fake))
    assert "fake-answers" in codes(plan, Severity.ERROR)
    fake = FAKE_BACK.replace("192.0.2.99", "192.0.2.30")  # the trap's published address
    assert "fake-answers" in codes(build_plan(cfg(DOMAINS, PRIMARY, BACKUP, TRAP, fake)))


def test_single_real_mx() -> None:
    plan = build_plan(cfg(DOMAINS, PRIMARY, TRAP))
    assert "single-real-mx" in codes(plan, Severity.WARNING)


def test_fake_in_front_needs_accept_risk() -> None:
    front = FAKE_BACK.replace("preference = 90", "preference = 0")
    plan = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, front))
    assert "fake-in-front" in codes(plan, Severity.ERROR)
    accepted = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, front + "accept_risk = true\n"))
    f = next(f for f in accepted.findings if f.code == "fake-in-front")
    assert f.severity is Severity.INFO
    assert "accept_risk" in render_bind(accepted)


def test_accept_risk_only_on_a_fake() -> None:
    with pytest.raises(ConfigError, match=r"mx\[0\]\.accept_risk"):
        cfg(DOMAINS, PRIMARY + "accept_risk = true\n")


def test_addresses_must_be_ip() -> None:
    with pytest.raises(ConfigError, match=r"mx\[0\]\.addresses\[0\]"):
        cfg(DOMAINS, PRIMARY.replace('["2001:db8::10"]', '["mail.example.test"]'))


def test_too_many_addresses_crowd_out_the_primary() -> None:
    fakes = "".join(
        f'[[mx]]\nhost = "f{i}.example.test"\nrole = "fake"\npreference = {i}\n'
        f'address = "192.0.2.{100 + i}"\naddresses = ["2001:db8::{100 + i}"]\naccept_risk = true\n'
        for i in range(3)
    )
    plan = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, fakes))
    f = [f for f in plan.findings if f.code == "address-limit"]
    assert {x.subject for x in f} == {"mail.example.test", "backup.example.net"}
    assert all(x.severity is Severity.ERROR for x in f)


def test_traps_past_the_limit_are_only_information() -> None:
    traps = "".join(
        f'[[mx]]\nhost = "t{i}.example.test"\nrole = "trap"\npreference = {40 + i}\n'
        f'listen = "127.0.0.{20 + i}:2525"\naddress = "192.0.2.{40 + i}"\n'
        for i in range(4)
    )
    plan = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, traps))
    assert [f.severity for f in plan.findings if f.code == "address-limit"] == [Severity.INFO]


def test_no_postmaster() -> None:
    domains = DOMAINS.replace(', "postmaster@example.org"', "")
    plan = build_plan(cfg(domains, PRIMARY, BACKUP))
    f = next(f for f in plan.findings if f.code == "no-postmaster")
    assert f.subject == "example.org"


def test_wildcard_listen_needs_an_address() -> None:
    primary = '[[mx]]\nhost = "mail.example.test"\nrole = "primary"\npreference = 10\nlisten = "0.0.0.0:25"\n'
    plan = build_plan(cfg(DOMAINS, primary, BACKUP))
    assert "no-address" in codes(plan, Severity.ERROR)


def test_trap_below_the_primary() -> None:
    trap = TRAP.replace("preference = 30", "preference = 5")
    plan = build_plan(cfg(DOMAINS, PRIMARY, BACKUP, trap))
    assert "trap-order" in codes(plan, Severity.ERROR)


# ---------------------------------------------------------------- the command


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mxguard.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(main, ["plan", "-c", _write(tmp_path, GOOD)])
    assert good.exit_code == 0, good.output
    assert "IN MX 10" in good.stdout
    bad = runner.invoke(
        main, ["plan", "-c", _write(tmp_path, GOOD.replace("192.0.2.30", "192.0.2.10"))]
    )
    assert bad.exit_code == 1
    assert "trap-shares-primary-address" in bad.stderr
    broken = runner.invoke(main, ["plan", "-c", _write(tmp_path, GOOD + "[nonsense]\n")])
    assert broken.exit_code == 2


def test_cli_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "-c", _write(tmp_path, GOOD), "--format", "json"])
    doc = json.loads(result.stdout)
    assert doc["domains"][1]["name"] == "example.org"
    assert all(f["severity"] != "error" for f in doc["findings"])
