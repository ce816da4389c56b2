"""Config around the walk check: fake MX entries and the `[walk]`/`[blocklist]` sections."""

from __future__ import annotations

import pytest

from mxguard.checkconfig import warnings_for
from mxguard.config import ConfigError, load_config_text

BASE = """
[[domain]]
name = "example.test"
recipients = ["postmaster@example.test"]

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "127.0.0.10:2525"
"""


def test_a_fake_on_an_address_mxguard_listens_on_is_warned_about() -> None:
    cfg = load_config_text(
        BASE + '[[mx]]\nhost = "fake0.example.test"\npreference = 0\nrole = "fake"\n'
        'address = "127.0.0.10"\naccept_risk = true\n',
        "t.toml",
    )
    assert any("fake MX fake0.example.test" in w for w in warnings_for(cfg))


def test_a_fake_elsewhere_is_fine_and_is_never_listened_on() -> None:
    text = BASE + '[[mx]]\nhost = "fake0.example.test"\npreference = 0\nrole = "fake"\n'
    cfg = load_config_text(text + 'address = "127.0.0.5"\naccept_risk = true\n', "t.toml")
    assert not any("fake" in w for w in warnings_for(cfg))
    assert [m.host for m in cfg.listeners()] == ["mail.example.test"]
    with pytest.raises(ConfigError, match="never listened on"):
        load_config_text(text + 'address = "127.0.0.5"\nlisten = "127.0.0.5:25"\n', "t.toml")


def test_walk_and_blocklist_sections() -> None:
    cfg = load_config_text(
        BASE
        + '[walk]\nwindow = "5m"\nbackup_action = "greylist"\n[blocklist]\naction = "tempfail"\n',
        "t.toml",
    )
    assert (cfg.walk.window, cfg.walk.blocklist_ttl, cfg.walk.health_window) == (300, 86400, 60)
    assert cfg.walk.backup_action == "greylist" and cfg.blocklist.action == "tempfail"
    with pytest.raises(ConfigError, match=r"walk\.backup_action"):
        load_config_text(BASE + '[walk]\nbackup_action = "reject"\n', "t.toml")
