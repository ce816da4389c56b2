"""A whole MX tier on loopback addresses for the walk check, with a clock the test moves.

The tier is the one docs/walk.md describes: a fake MX (nolisting, preference 0) whose address
refuses, the primary (10), the backup (20), the trap (30) and a retired address, each on its
own 127.0.0.x address, served by one in-process mxguard (tests/helpers/inproc.py). The
listeners' clock is swapped for a `FakeClock`; `Lab.advance` moves it in heartbeat-sized
steps and beats each time, as the running heartbeat would over that much real time.

`run_behaviours` is the scripted-client run whose table closes issue 4; the bench
(bench/walk/run.py) prints it and tests/integration/walk/test_walk_table.py checks it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from mxguard.policy.facts import Role
from mxguard.walk.feature import WalkFeature, feature_of
from tests.helpers import senders
from tests.helpers.inproc import Running, free_port, running

PRIMARY_IP, BACKUP_IP, TRAP_IP, RETIRED_IP, FAKE_IP = (
    "127.0.0.10",
    "127.0.0.20",
    "127.0.0.30",
    "127.0.0.40",
    "127.0.0.5",
)
PEER_IP = "127.0.0.2"  # the backup forwards from here; the primary trusts it

TIER = """
[[domain]]
name = "example.test"
recipients = ["alice@example.test", "bob@example.test", "postmaster@example.test"]

[delivery]
target = "maildir:{tmp}/maildir"

[state]
url = "sqlite:///{tmp}/state.db"

[log]
events = "{tmp}/events.jsonl"

[[mx]]
host = "fake0.mx.example.test"
preference = 0
role = "fake"
address = "{fake_ip}:{fake_port}"
accept_risk = true

[[mx]]
host = "mail.example.test"
preference = 10
role = "primary"
listen = "{primary_ip}:{primary_port}"

[[mx]]
host = "backup.example.test"
preference = 20
role = "backup"
listen = "{backup_ip}:{backup_port}"
forward_to = "mail.example.test"
spool = "{tmp}/spool-backup"
source_address = "{peer_ip}"

[[mx]]
host = "trap.mx.example.test"
preference = 30
role = "trap"
listen = "{trap_ip}:{trap_port}"
trap_answer = "{trap_answer}"

[[mx]]
host = "old-mail.example.test"
role = "retired"
listen = "{retired_ip}:{retired_port}"
trap_answer = "{trap_answer}"

[relay]
trusted_peers = ["{peer_ip}/32"]

[greylist]
roles = {greylist_roles}
delay = "5m"

[walk]
window = "10m"
blocklist_ttl = "24h"
health_window = "60s"
{walk_extra}
"""


class FakeClock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@dataclass
class Lab:
    run: Running
    clock: FakeClock
    walk: WalkFeature
    world: senders.World

    async def advance(self, seconds: float) -> None:
        """Move the clock, beating as the heartbeat task would have meanwhile."""
        step = self.walk.health.interval
        left = seconds
        while left > 0:
            d = min(step, left)
            self.clock.now += d
            left -= d
            await self.walk.beat_all()
        await self.walk.settle()

    async def stop(self, host: str) -> None:
        """Stop a listener: its address refuses connections, and its next beat says so."""
        li = next(li for li in self.run.server.listeners if li.mx.host == host)
        await li.stop()
        await self.walk.beat_all()

    async def start(self, host: str) -> None:
        li = next(li for li in self.run.server.listeners if li.mx.host == host)
        await li.start()
        await self.walk.beat_all()

    async def blocklisted(self, ip: str) -> bool:
        await self.walk.settle()
        return await self.walk.blocklist.get(ipaddress.ip_address(ip), self.clock.now) is not None


def tier_text(
    trap_answer: str = "rcpt", greylist_roles: tuple[str, ...] = ("backup",), walk_extra: str = ""
) -> str:
    roles = "[" + ", ".join(f'"{r}"' for r in greylist_roles) + "]"
    return TIER.format(
        tmp="{tmp}",
        fake_ip=FAKE_IP,
        fake_port=free_port(FAKE_IP),
        primary_ip=PRIMARY_IP,
        primary_port=free_port(PRIMARY_IP),
        backup_ip=BACKUP_IP,
        backup_port=free_port(BACKUP_IP),
        trap_ip=TRAP_IP,
        trap_port=free_port(TRAP_IP),
        retired_ip=RETIRED_IP,
        retired_port=free_port(RETIRED_IP),
        peer_ip=PEER_IP,
        trap_answer=trap_answer,
        greylist_roles=roles,
        walk_extra=walk_extra,
    )


@contextlib.asynccontextmanager
async def lab(
    tmp: Path,
    trap_answer: str = "rcpt",
    greylist_roles: tuple[str, ...] = ("backup",),
    extra: str = "",
    walk_extra: str = "",
) -> AsyncIterator[Lab]:
    """The tier, up for longer than the health window (so every MX counts as healthy).

    `extra` is appended to the config (new sections), `walk_extra` to its `[walk]` section.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    text = tier_text(trap_answer, greylist_roles, walk_extra)
    async with running(tmp, extra, base=text) as run:
        assert run.server.runtime is not None
        clock = FakeClock()
        run.server.runtime.clock = clock
        walk = feature_of(run.server)
        cfg = run.config
        mxs, retired = [], None
        named: dict[str, senders.MxTarget] = {}
        for m in cfg.mx:
            if m.role is Role.FAKE:
                assert m.address is not None
                ip, _, port = m.address.partition(":")
                mxs.append(senders.MxTarget(m.host, m.preference, ip, int(port)))
                continue
            target = senders.MxTarget(m.host, m.preference, *_bound(run, m.host))
            if m.role is Role.RETIRED:
                retired = target
            else:
                mxs.append(target)
            named[m.role.value] = target
        world = senders.World(mxs, retired, _noop, named)
        the_lab = Lab(run, clock, walk, world)
        world.advance = the_lab.advance
        await the_lab.advance(cfg.walk.health_window + 5)
        yield the_lab


async def _noop(seconds: float) -> None:
    return None


def _bound(run: Running, host: str) -> tuple[str, int]:
    li = next(li for li in run.server.listeners if li.mx.host == host)
    ip, port = li.bound()[0]
    return ip, port


# ---------------------------------------------------------------- the closing-note run

Behaviour = Callable[[senders.World, str], Awaitable[list[senders.MessageLog]]]


@dataclass
class Scenario:
    name: str
    good: bool  # a legitimate sender (must be delivered, never blocklisted)
    behaviour: Behaviour
    client_ip: str
    greylist_roles: tuple[str, ...] = ("backup",)
    stop_primary: bool = False


@dataclass
class Row:
    name: str
    good: bool
    attempted: int
    delivered: int
    delayed: int
    refused: int
    blocklisted: int
    trail: list[tuple[str, str, int | None]]  # the first client's contacts


SCENARIOS = [
    Scenario("rfc sender (postfix)", True, senders.rfc_sender, "127.1.0.1"),
    Scenario("rfc sender, primary down", True, senders.rfc_sender, "127.1.0.2", stop_primary=True),
    Scenario(
        "rfc sender (exim), primary tempfails",
        True,
        senders.exim_sender,
        "127.1.0.3",
        greylist_roles=("primary", "backup"),
    ),
    Scenario("bot: straight to highest MX", False, senders.bot_highest, "127.2.0.1"),
    Scenario("bot: starts at backup", False, senders.bot_backup, "127.2.0.2"),
    Scenario("bot: blasts every MX", False, senders.bot_blast, "127.2.0.3"),
    Scenario("bot: retired address", False, senders.bot_retired, "127.2.0.4"),
]


async def run_scenario(tmp: Path, sc: Scenario, trap_answer: str = "rcpt", clients: int = 1) -> Row:
    """One behaviour on a fresh tier: `clients` clients, one after the other, each from its
    own /24 (127.1.k.x, 127.2.k.x), so greylisting by network does not let one pass for another."""
    ips = [str(ipaddress.ip_address(sc.client_ip) + 256 * k) for k in range(clients)]
    logs: list[senders.MessageLog] = []
    blocked = 0
    async with lab(tmp, trap_answer=trap_answer, greylist_roles=sc.greylist_roles) as the_lab:
        if sc.stop_primary:
            await the_lab.stop("mail.example.test")
        for ip in ips:
            logs += await sc.behaviour(the_lab.world, ip)
        for ip in ips:
            blocked += await the_lab.blocklisted(ip)
    return Row(
        sc.name,
        sc.good,
        attempted=len(logs),
        delivered=sum(m.delivered for m in logs),
        delayed=sum(m.delayed for m in logs),
        refused=sum(m.refused for m in logs),
        blocklisted=blocked,
        trail=logs[0].codes() if logs else [],
    )


async def run_behaviours(tmp: Path, trap_answer: str = "rcpt", clients: int = 1) -> list[Row]:
    """Every scenario on a fresh tier of its own, one after the other."""
    return [
        await run_scenario(tmp / f"s{i}", sc, trap_answer, clients)
        for i, sc in enumerate(SCENARIOS)
    ]
