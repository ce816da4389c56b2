"""Config loading: the documented example works as written; every mistake names file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxguard.config import (
    ConfigError,
    load_config,
    load_config_text,
    parse_duration,
    parse_hostport,
    parse_size,
)
from mxguard.policy.facts import Role
from mxguard.recipients import RecipientDirectory

ROOT = Path(__file__).resolve().parents[2]

ISSUE_EXAMPLE = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "bob@example.test", "postmaster@example.test"]
# recipients_file = "recipients.txt"   # one address per line; "@example.test" accepts any local part

[delivery]
target = "maildir:./mxguard-data/maildir"   # also smtp://HOST:PORT and lmtp://HOST:PORT or lmtp:unix:/path

[state]
url = "sqlite:///./mxguard-data/state.db"

[log]
events = "./mxguard-data/events.jsonl"

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "127.0.0.1:2525"
"""


def test_issue_example_loads_exactly_as_written() -> None:
    cfg = load_config_text(ISSUE_EXAMPLE, "ex.toml")
    assert cfg.local_domains() == ["example.test"]
    assert cfg.mx[0].role is Role.PRIMARY and cfg.mx[0].listen == "127.0.0.1:2525"
    assert cfg.state.url == "sqlite:///./mxguard-data/state.db"


def test_examples_and_builtin_default_load() -> None:
    assert load_config(ROOT / "examples/mxguard.toml").mx
    assert load_config(None).source == "<built-in default>"
    # examples/mxguard.toml is the built-in default, so `serve -c examples/mxguard.toml`
    # behaves exactly like a bare `serve`
    default = ROOT / "src/mxguard/defaults/mxguard.toml"
    assert (ROOT / "examples/mxguard.toml").read_text() == default.read_text()


def test_minimal_example_is_the_documented_one() -> None:
    text = (ROOT / "examples/minimal.toml").read_text()
    assert ISSUE_EXAMPLE.strip() in text
    cfg = load_config(ROOT / "examples/minimal.toml")
    assert [m.role for m in cfg.mx] == [Role.PRIMARY]
    readme = (ROOT / "README.md").read_text()
    assert ISSUE_EXAMPLE.strip() in readme


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[[domain]]\nname='a.test'\nfoo=1\n", "domain[0].foo", "unknown key"),
        ("[limits]\nmax_recipients='ten'\n", "limits.max_recipients", "must be an integer"),
        ("[limits]\nmax_recipients=true\n", "limits.max_recipients", "must be an integer"),
        ("[limits]\ncommand_timeout='5 minutes'\n", "limits.command_timeout", "duration"),
        ("[limits]\nbare_lf='allow'\n", "limits.bare_lf", "one of reject, normalize"),
        ("[[domain]]\nrecipients=[]\n", "domain[0].name", "missing"),
        (
            "[[domain]]\nname='a.test'\nrecipients=['x@b.test']\n",
            "domain[0].recipients[0]",
            "not in domain a.test",
        ),
        (
            "[[domain]]\nname='a.test'\n[[mx]]\nhost='m'\nrole='primary'\nlisten='1.2.3.4:25'\n",
            "mx[0].preference",
            "needs a preference",
        ),
        (
            "[[domain]]\nname='a.test'\n[[mx]]\nhost='f'\nrole='fake'\npreference=0\n"
            "listen='127.0.0.1:25'\naddress='192.0.2.1'\n",
            "mx[0].listen",
            "never listened on",
        ),
        (
            "[[domain]]\nname='a.test'\n[[mx]]\nhost='m'\nrole='primary'\npreference=1\n"
            "listen='127.0.0.1:2525'\n[[mx]]\nhost='b'\nrole='backup'\npreference=2\n"
            "listen='127.0.0.1:2525'\n",
            "mx[1].listen",
            "also the listen of m",
        ),
        ("[relay]\nnetworks=['10.0.0.0/33']\n", "relay.networks[0]", "not an IP network"),
        ("[delivery]\ntarget='ftp://x'\n", "delivery.target", "use maildir:DIR"),
        ("[dnsbl]\nsites=['zen.spamhaus.org*two']\n", "dnsbl.sites[0]", "weight"),
    ],
)
def test_errors_name_file_key_and_problem(text: str, key: str, problem: str) -> None:
    base = "" if "[[domain]]" in text else "[[domain]]\nname='a.test'\n"
    mx = "" if "[[mx]]" in text else "[[mx]]\nhost='m'\nrole='primary'\npreference=1\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(base + text + "\n" + mx, "site.toml")
    assert exc.value.key == key, str(exc.value)
    assert problem in exc.value.problem
    assert str(exc.value).startswith(f"site.toml: {key}: ")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("30s", 30.0), ("5m", 300.0), ("2d", 172800.0), ("250ms", 0.25)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(("value", "n"), [(1024, 1024), ("512k", 524288), ("10M", 10485760)])
def test_sizes(value: object, n: int) -> None:
    assert parse_size(value) == n


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:25", ("::1", 25)),
        ("mx.test", ("mx.test", 25)),
    ],
)
def test_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected


def test_recipients_file_with_catch_all_and_reload(tmp_path: Path) -> None:
    rfile = tmp_path / "r.txt"
    rfile.write_text("# users\ncarol@example.test\n")
    cfg = load_config_text(
        f"[[domain]]\nname='example.test'\nrecipients_file='{rfile}'\n"
        "[[mx]]\nhost='m'\nrole='primary'\npreference=1\n",
        "c.toml",
    )
    directory = RecipientDirectory(cfg.domain, cfg.source)
    assert directory.lookup("carol", "example.test") is True
    assert directory.lookup("dave", "example.test") is False
    rfile.write_text("carol@example.test\ndave@example.test\n")
    import os

    os.utime(rfile, (1, 1))  # a different mtime, whatever the clock's resolution
    assert directory.refresh() is True
    assert directory.lookup("dave", "example.test") is True
    rfile.write_text("not an address\n")
    os.utime(rfile, (2, 2))
    assert directory.refresh() is False  # the bad file is refused, the old list stays
    assert directory.lookup("dave", "example.test") is True
    rfile.write_text("@example.test\n")
    os.utime(rfile, (3, 3))
    assert directory.refresh() is True
    assert directory.lookup("anyone", "example.test") is True
