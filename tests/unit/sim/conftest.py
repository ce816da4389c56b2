"""A small scenario for the simulator's tests: minutes of traffic, not a day."""

from __future__ import annotations

import pytest

from mxguard.config import Config, load_config
from mxguard.sim.scenario import Scenario, load_scenario_text

SMALL = """
[scenario]
name = "test"
duration = "6h"
seed = 3
drain = "6d"

[[senders]]
behaviour = "postfix"
per_day = 400
hosts = 40

[[senders]]
behaviour = "exim"
per_day = 200
hosts = 20

[[senders]]
behaviour = "qmail"
per_day = 100
hosts = 10

[[senders]]
behaviour = "exchange"
per_day = 200
hosts = 20

[[senders]]
behaviour = "bigprovider"
per_day = 200
hosts = 2

[[senders]]
behaviour = "inapp"
per_day = 200
hosts = 10

[[senders]]
behaviour = "bot_first_mx"
per_day = 2000
hosts = 1500

[[senders]]
behaviour = "bot_backup_first"
per_day = 800
hosts = 600

[[senders]]
behaviour = "bot_highest"
per_day = 400
hosts = 300

[[senders]]
behaviour = "spam_retrying"
per_day = 400
hosts = 100

[[conditions]]
kind = "down"
mx = "primary"
start = "1h"
end = "2h"

[[conditions]]
kind = "busy"
mx = "primary"
start = "3h"
end = "210m"
fraction = 0.5
"""


@pytest.fixture(scope="session")
def small() -> Scenario:
    return load_scenario_text(SMALL, "small.toml")


@pytest.fixture(scope="session")
def default_cfg() -> Config:
    return load_config(None)
