"""The clock, the coroutine driver, one simulated session, and the scenario format."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from random import Random

import pytest

from mxguard.config import Config, ConfigError
from mxguard.policy.facts import Role
from mxguard.sim.layouts import make_layout
from mxguard.sim.loop import EventLoop, SimAwaitError, run_sync
from mxguard.sim.model import REFUSED, SESSION, SimMessage
from mxguard.sim.policy import build_sim_engine, build_sim_server
from mxguard.sim.scenario import DEFAULT_SCENARIO, load_scenario, load_scenario_text
from mxguard.sim.tier import Condition, SimMx, Tier

ROOT = Path(__file__).resolve().parents[3]


def test_a_series_runs_as_the_same_events_queued_one_by_one() -> None:
    """`series` keeps one event of its list in the heap at a time; every event, ties
    included, must run where `at` for each would have put it, and count the same."""

    def play(use_series: bool) -> tuple[list[tuple[float, str]], int]:
        loop = EventLoop(100.0)
        seen: list[tuple[float, str]] = []

        def note(name: str, then: float | None = None) -> None:
            seen.append((loop.now, name))
            if then is not None:  # something the event itself queues, tying with others
                loop.at(then, note, name + "+")

        loop.at(103.0, note, "before")
        items = [(99.0, note, ("early",)), (102.0, note, ("x", 103.0)), (103.0, note, ("y",)),
                 (103.0, note, ("z", 103.0)), (110.0, note, ("last",))]  # fmt: skip
        if use_series:
            loop.series(items)
        else:
            for when, fn, args in items:
                loop.at(when, fn, *args)
        loop.at(103.0, note, "after")
        loop.run(1e9)
        return seen, loop.handled

    assert play(True) == play(False)
    assert [name for _, name in play(True)[0]][:3] == ["early", "x", "before"]


def test_events_run_in_time_order_and_chores_do_not_keep_the_run_alive() -> None:
    loop = EventLoop(100.0)
    seen: list[tuple[float, str]] = []
    loop.at(105.0, lambda: seen.append((loop.now, "b")))
    loop.at(101.0, lambda: seen.append((loop.now, "a")))
    loop.at(105.0, lambda: seen.append((loop.now, "c")))

    def chore() -> None:
        seen.append((loop.now, "chore"))
        loop.housekeeping(loop.now + 1.0, chore)

    loop.housekeeping(100.5, chore)
    loop.run(1e9)
    events = [s for s in seen if s[1] != "chore"]
    assert events == [(101.0, "a"), (105.0, "b"), (105.0, "c")]
    assert len([s for s in seen if s[1] == "chore"]) < 10  # stopped with the last real event


def test_run_sync_drives_a_coroutine_that_never_waits_and_refuses_one_that_does() -> None:
    async def quick() -> int:
        return 7

    assert run_sync(quick()) == 7

    async def slow() -> None:
        await asyncio.sleep(0)

    with pytest.raises(SimAwaitError):
        run_sync(slow())


def _tier(cfg: Config) -> tuple[Tier, list[tuple[str, list[str]]]]:
    server = build_sim_server(cfg)
    engine = build_sim_engine(server)
    mxs = [SimMx(m) for m in cfg.mx]
    tier = Tier(cfg, engine, mxs, Random(1))
    delivered: list[tuple[str, list[str]]] = []

    def deliver(mx: SimMx, msg: SimMessage, rcpts: list[str], now: float, fwd: bool) -> list[str]:
        delivered.append((mx.host, rcpts))
        return []

    tier.deliver = deliver
    return tier, delivered


def test_a_session_asks_the_same_checks_serve_does(default_cfg: Config) -> None:
    tier, delivered = _tier(make_layout(default_cfg, "single").config)
    m = SimMessage(1, "postfix", False, "a@s.example",
                   ("alice@example.test", "nobody@example.test"),
                   frozenset({"alice@example.test"}), 1000, 0.0, 0, False)  # fmt: skip
    c = tier.contact(tier.primary, ipaddress.IPv4Address("127.0.5.10"), m,
                     list(m.recipients), 1_800_000_000.0)  # fmt: skip
    assert c.kind == SESSION
    assert c.delivered == ["alice@example.test"] and c.perm == ["nobody@example.test"]
    assert delivered == [("mail.example.test", ["alice@example.test"])]
    assert tier.primary.stats.reasons == {"unknown_recipient": 1}


def test_fake_refuses_and_a_down_host_refuses_for_its_period(default_cfg: Config) -> None:
    tier, _ = _tier(make_layout(default_cfg, "nolisting").config)
    fake = next(m for m in tier.mxs if m.role is Role.FAKE)
    m = SimMessage(1, "x", True, "a@b", ("alice@example.test",), frozenset(), 100, 0.0, 0, False)
    ip = ipaddress.IPv4Address("127.0.5.10")
    assert tier.contact(fake, ip, m, ["alice@example.test"], 1.8e9).kind == REFUSED
    tier.primary.conditions.append(Condition(1.8e9, 1.8e9 + 60))
    assert tier.contact(tier.primary, ip, m, ["alice@example.test"], 1.8e9 + 30).kind == REFUSED
    assert tier.contact(tier.primary, ip, m, ["alice@example.test"], 1.8e9 + 90).kind == SESSION


def test_the_default_scenario_and_the_example_parse_and_agree() -> None:
    builtin = load_scenario(None)
    example = load_scenario(ROOT / "examples" / "scenario.toml")
    assert builtin.groups == example.groups
    assert builtin.conditions == example.conditions
    assert "[scenario]" in DEFAULT_SCENARIO


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[senders]]\nbehaviour = "sendmail9"\n', "senders[0].behaviour"),
        ('[[senders]]\nbehaviour = "postfix"\nvalid = 2.0\n', "senders[0].valid"),
        ('[[conditions]]\nkind = "down"\nstart = "2h"\nend = "1h"\n', "conditions[0].end"),
        ('[compare]\nlayouts = ["nope"]\n', "compare.layouts[0]"),
        ('[scenario]\nduration = "soon"\n', "scenario.duration"),
        ("[scenario]\nspeed = 1\n", "scenario.speed"),
    ],
)
def test_scenario_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario_text(text, "s.toml")
    assert info.value.key == key and info.value.file == "s.toml"
