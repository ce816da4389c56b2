"""Run one scenario against one layout: senders on a virtual clock, through mxguard's checks.

The population (who sends what, when, from where) is drawn once per seed and replayed on
every layout, so the layouts of a `--compare` differ only by what the tier did with the same
traffic. Each layout gets fresh state and its own random stream for retries and jitter, seeded
from the scenario seed: the same scenario and seed give the same numbers, run after run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from operator import attrgetter
from random import Random

from mxguard.config import Config, MxSettings
from mxguard.policy.checks.greylist import GreylistCheck
from mxguard.policy.facts import Role
from mxguard.policy.networks import NetworkSet
from mxguard.recipients import RecipientDirectory
from mxguard.sim.addresses import SimAddress
from mxguard.sim.backup import BackupQueue, backup_source_ip
from mxguard.sim.decisions import decision_sink
from mxguard.sim.layouts import Layout
from mxguard.sim.liveness import WalkLiveness, eager_task_factory, walk_feature
from mxguard.sim.loop import EventLoop, fewer_collections
from mxguard.sim.model import (
    SESSION,
    SILENT,
    TIMEOUT,
    MxStats,
    SimMessage,
)
from mxguard.sim.policy import build_sim_engine, build_sim_server, find_check
from mxguard.sim.scenario import Scenario
from mxguard.sim.senders import BEHAVIOURS, Behaviour
from mxguard.sim.tier import IP, Condition, SimMx, Tier
from mxguard.slotinit import fill_slots
from mxguard.smtp.listener import ConnectionGate, Runtime

#: virtual time zero: a fixed epoch, so that runs do not depend on the day they are made
EPOCH = 1_800_000_000.0
#: the next host in the same attempt follows the last contact by about this (PF 3.1)
STEP = 0.0001


# ---------------------------------------------------------------- population


@fill_slots
@dataclass(frozen=True, slots=True)
class Planned:
    """One message as drawn for the scenario, before any layout saw it."""

    id: int
    group: int
    behaviour: str
    spam: bool
    sender: str
    recipients: tuple[str, ...]
    valid: frozenset[str]
    size: int
    born: float
    host: int  # global sender-host number (addresses derive from it)
    listed: bool


def local_recipients(cfg: Config) -> tuple[str, list[str]]:
    """The first domain and its known recipients (the ground truth of who exists)."""
    directory = RecipientDirectory(cfg.domain, cfg.source)
    d = cfg.domain[0]
    name = d.name.lower().rstrip(".")
    table = directory.tables.get(name)
    locals_ = sorted(table.locals) if table is not None else []
    if not locals_:  # accept-all or callout domains: make up a user base
        locals_ = [f"user{i}" for i in range(200)]
    return name, [f"{local}@{name}" for local in locals_ if local != "postmaster"] or [
        f"postmaster@{name}"
    ]


def draw_population(scenario: Scenario, cfg: Config, seed: int) -> list[Planned]:
    """Every message of the scenario, drawn from one random stream in a fixed order.

    The order of the draws is the population: changing it changes every run's numbers, so
    the loop below only binds names locally (it draws tens of thousands of messages).
    """
    rng = Random(f"population:{seed}")
    # `randrange(n)`, `randint(a, b)` and `choice(seq)` each draw `_randbelow(width)` once and
    # nothing else (CPython's random.py); calling it directly gives the same numbers without
    # their argument checks, at every draw of tens of thousands of messages
    # (`tests/unit/test_sim_draws.py` holds that to the public calls)
    below: Callable[[int], int] = rng._randbelow  # type: ignore[attr-defined]
    domain, valid_rcpts = local_recipients(cfg)
    n_valid = len(valid_rcpts)
    with fewer_collections():  # what it allocates all lives on: young collections find nothing
        out = _draw(scenario, rng, below, domain, valid_rcpts, n_valid)
    out.sort(key=attrgetter("born", "id"))
    return out


def _draw(
    scenario: Scenario,
    rng: Random,
    below: Callable[[int], int],
    domain: str,
    valid_rcpts: list[str],
    n_valid: int,
) -> list[Planned]:
    random, lognormvariate = rng.random, rng.lognormvariate
    out: list[Planned] = []
    append = out.append
    host_base = 0
    n = 0
    for gi, g in enumerate(scenario.groups):
        listed_hosts = max(0, round(g.hosts * g.listed))
        hosts, spam, behaviour, valid_share = g.hosts, g.spam, g.behaviour, g.valid
        first, span = EPOCH + g.start, g.end - g.start
        fewest, most = g.recipients
        if hosts < 1 or not 1 <= fewest <= most:  # as load_scenario checks: `below` needs it
            raise ValueError(f"group {gi}: hosts {hosts}, recipients {g.recipients}")
        size_median = g.size
        for _ in range(g.count):
            host = below(hosts)
            born = first + random() * span
            k = fewest + below(most - fewest + 1)
            rcpts: list[str] = []
            valid: set[str] = set()
            for _ in range(k):
                if random() < valid_share:
                    r = valid_rcpts[below(n_valid)]
                    valid.add(r)
                else:
                    r = f"nobody{below(10**6)}@{domain}"
                if r not in rcpts:
                    rcpts.append(r)
            if spam:
                sender = f"x{below(10**6)}@forged{below(1000)}.example"
            else:
                sender = f"u{below(50)}@s{host_base + host}.{behaviour}.example"
            size = max(300, int(lognormvariate(0.0, 0.8) * size_median))
            n += 1
            append(Planned(n, gi, behaviour, spam, sender, tuple(rcpts), frozenset(valid), size,
                           born, host_base + host, host < listed_hosts))  # fmt: skip
        host_base += hosts * BEHAVIOURS[behaviour].pool
    return out


_IPS: dict[int, IP] = {}


def client_ip(host: int, pool: int, rng: Random) -> IP:
    """A loopback address per sender host; pool senders get one of `pool` in distinct /24s.

    Loopback (127.0.1.0 and up) because the simulator must never name a real network; every
    host sits in its own /24 so that greylisting's network keys tell hosts apart.
    """
    n = host * pool + (rng.randrange(pool) if pool > 1 else 0)
    ip = _IPS.get(n)
    if ip is None:
        net = 1 + n % 65000
        ip = _IPS[n] = SimAddress(0x7F000000 | (net << 8) | 10)
    return ip


# ---------------------------------------------------------------- results


@dataclass
class GroupResult:
    behaviour: str
    spam: bool
    queueing: bool
    attempted: int = 0
    delivered: int = 0  # every existing recipient in a mailbox
    late: int = 0
    delays: list[float] = field(default_factory=list)  # of the late ones
    lost: int = 0  # an existing recipient never got it (gave up, bounced, dropped)
    held: int = 0  # an mxguard backup holds it (not lost, not delivered)
    in_flight: int = 0  # still queued somewhere when the run ended
    stopped_before_data: int = 0  # no MX took the body (refused at connect, MAIL or RCPT)
    accepted: int = 0  # some MX answered 250 after the body
    reached_mailbox: int = 0  # spam: at least one recipient got it
    backscatter: int = 0  # bounces sent to forged senders
    sessions: int = 0


@dataclass
class LayoutResult:
    layout: str
    title: str
    groups: dict[str, GroupResult]
    mx: list[MxStats]
    queue_peak: int = 0
    queue_peak_bytes: int = 0
    sessions: int = 0
    contacts: int = 0
    events: int = 0
    wall: float = 0.0
    features: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the run


class Run:
    """One layout, one population, one virtual clock."""

    def __init__(self, scenario: Scenario, layout: Layout, population: list[Planned]) -> None:
        self.scenario = scenario
        self.layout = layout
        self.population = population
        cfg = layout.config
        self.rng = Random(f"run:{scenario.seed}:{layout.name}")
        self.loop = EventLoop(EPOCH)
        truth = {r for p in population for r in p.valid}
        domain_valid = set(local_recipients(cfg)[1])
        known = truth | domain_valid
        self.server = build_sim_server(cfg, valid=lambda a: a.lower() in known)
        self.engine = build_sim_engine(self.server)
        mxs = [
            SimMx(
                m,
                accept_all=layout.classic_backup and m.role is Role.BACKUP,
                max_connections=self._max_connections(cfg, m.host, m.role),
            )
            for m in cfg.mx
        ]
        self.tier = Tier(cfg, self.engine, mxs, self.rng, scenario.session_seconds)
        self._apply_conditions(mxs)
        self.tier.deliver = self._deliver
        self.tier.queue = self._enqueue
        # The Runtime the listeners would share, for the features' runtime hooks (the walk
        # feature chains its capacity hook into `on_session`); its clock is the virtual one.
        self.gate = ConnectionGate(
            cfg.limits.max_connections, cfg.limits.max_connections_per_network
        )
        self.runtime = Runtime(cfg, self.engine, self.server.events, self.gate,
                               clock=lambda: self.loop.now)  # fmt: skip
        self.server.runtime = self.runtime
        for hook in self.server.runtime_hooks:
            hook(self.runtime)
        if self.runtime.on_session is not None:
            # a session goes straight to the hook; a refusal at the cap needs _on_capacity
            self.tier.on_session = self.runtime.on_session
            self.tier.on_capacity = self._on_capacity
        walk = walk_feature(self.server)
        self.tier.events = decision_sink(self.server.events, walk)
        self.liveness = WalkLiveness(walk, self.loop, mxs) if walk is not None else None
        greylist = find_check(self.engine.checks(), "greylist")
        self.queues: dict[str, BackupQueue] = {}
        q = cfg.queue
        for i, mx in enumerate(self.tier.backups):
            self.queues[mx.host] = BackupQueue(
                self.tier,
                mx,
                self.loop,
                self.rng,
                backup_source_ip(mx.settings.source_address, i),
                q.retry_min,
                q.retry_max,
                q.max_lifetime,
                q.concurrency,
                scenario.forward_seconds,
                scenario.forward_rate,
                classic=mx.accept_all,
                drop_unknown=scenario.classic_drop_unknown,
                greylist=greylist if isinstance(greylist, GreylistCheck) else None,
                allow=NetworkSet(cfg.access.allow),
            )
        self.messages: list[SimMessage] = []
        self.contacts = 0

    def _on_capacity(self, mx: MxSettings, event: str) -> None:
        """A simulated cap is the whole process's cap: the gate says "full" while we tell."""
        hook = self.runtime.on_session
        assert hook is not None
        self.gate.total = self.gate.max_total
        try:
            hook(mx, event)
        finally:
            self.gate.total = 0

    def _max_connections(self, cfg: Config, host: str, role: Role) -> int:
        m = self.scenario.max_connections
        return m.get(host, m.get(role.value, cfg.limits.max_connections))

    def _apply_conditions(self, mxs: list[SimMx]) -> None:
        for c in self.scenario.conditions:
            targets = [m for m in mxs if m.host == c.mx or m.role.value == c.mx]
            for m in targets:
                m.conditions.append(
                    Condition(EPOCH + c.start, EPOCH + c.end, c.kind, c.mode, c.fraction)
                )

    # ------------------------------------------------------------ sinks

    def _deliver(
        self, mx: SimMx, msg: SimMessage, rcpts: list[str], now: float, forwarded: bool
    ) -> list[str]:
        for r in rcpts:
            if r in msg.valid:
                msg.delivered.setdefault(r, now)
            # a recipient the primary accepted but that does not exist cannot happen with a
            # recipient table; with accept-all domains it is dropped downstream (not counted)
        return []

    def _enqueue(self, mx: SimMx, msg: SimMessage, rcpts: list[str], ip: IP, now: float) -> None:
        self.queues[mx.host].enqueue(msg, rcpts, ip, now)

    # ------------------------------------------------------------ senders

    def start(self, msg: SimMessage) -> None:
        beh = BEHAVIOURS[msg.behaviour]
        if beh.send_to_all:
            self._send_to_all(msg, beh)
            return
        self._attempt(msg, beh)

    def _attempt(self, msg: SimMessage, beh: Behaviour) -> None:
        msg.attempts += 1
        now = self.loop.now
        ip = client_ip(msg.host, beh.pool, self.rng) if beh.pool > 1 else msg.ip
        assert ip is not None
        self._walk(msg, beh, beh.hosts(self.tier, self.rng), 0, 0, 0, now, ip)

    def _walk(
        self,
        msg: SimMessage,
        beh: Behaviour,
        hosts: list[SimMx],
        i: int,
        addresses: int,
        sessions: int,
        t: float,
        ip: IP,
    ) -> None:
        contact = self.tier.contact
        helo = msg.sender.rpartition("@")[2] or "client.example"
        n = len(hosts)
        while i < n:
            mx = hosts[i]
            i += 1
            addresses += 1
            self.contacts += 1
            c = contact(mx, ip, msg, msg.pending, t, helo)
            kind = c.kind
            if c.data_sent:
                msg.body_sent = True
            if kind == SESSION:
                sessions += 1
                msg.sessions += 1
                if c.delivered and msg.accepted_at is None:
                    msg.accepted_at = t
                if c.perm:
                    msg.bounced += c.perm
                msg.pending = c.temp
                if not c.temp:
                    return
            elif kind >= 3:  # a banner
                msg.sessions += 1
                if kind == 4 and beh.fail_on_5xx_greeting:
                    msg.bounced += msg.pending
                    msg.pending = []
                    return
            if kind == TIMEOUT:
                t += beh.connect_timeout
            elif kind == SILENT:
                t += beh.greeting_timeout
            else:
                t += STEP
            if (
                i >= n
                or not beh.moves_on(c)
                or (beh.session_limit and sessions >= beh.session_limit)
                or addresses >= beh.address_limit
            ):
                break
            if t - self.loop.now > 1.0:  # a long wait: let the rest of the world move first
                self.loop.at(t, self._walk, msg, beh, hosts, i, addresses, sessions, t, ip)
                return
        self._deferred(msg, beh, t)

    def _deferred(self, msg: SimMessage, beh: Behaviour, t: float) -> None:
        when = beh.retry_at(msg, t, self.rng) if beh.queueing else None
        if when is None:
            msg.gave_up += msg.pending
            msg.pending = []
            return
        self.loop.at(when, self._attempt, msg, beh)

    def _send_to_all(self, msg: SimMessage, beh: Behaviour) -> None:
        now = self.loop.now
        assert msg.ip is not None
        rcpts = list(msg.pending)
        helo = msg.sender.rpartition("@")[2]
        left = set(rcpts)
        for mx in beh.hosts(self.tier, self.rng):
            self.contacts += 1
            c = self.tier.contact(mx, msg.ip, msg, rcpts, now, helo)
            if c.kind >= 3:
                msg.sessions += 1
            if c.data_sent:
                msg.body_sent = True
            if c.delivered:
                if msg.accepted_at is None:
                    msg.accepted_at = now
                left.difference_update(c.delivered)
        msg.gave_up += [r for r in rcpts if r in left]
        msg.pending = []

    # ------------------------------------------------------------ the whole run

    def run(self) -> LayoutResult:
        return asyncio.run(self._run())

    async def _run(self) -> LayoutResult:
        aloop = asyncio.get_running_loop()
        aloop.set_task_factory(eager_task_factory)  # type: ignore[arg-type]
        try:
            return await self._simulate()
        finally:
            aloop.set_task_factory(None)

    async def _simulate(self) -> LayoutResult:
        t0 = time.perf_counter()
        with fewer_collections():
            self._play()
        wall = time.perf_counter() - t0
        for closer in self.server.closers:
            with contextlib.suppress(Exception):
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
        return self._result(wall)

    def _play(self) -> None:
        loop = self.loop
        if self.liveness is not None:
            self.liveness.start(EPOCH)
        arrivals = []
        start = self.start
        for p in self.population:
            beh = BEHAVIOURS[p.behaviour]
            msg = SimMessage(p.id, p.behaviour, p.spam, p.sender, p.recipients, p.valid,
                             p.size, p.born, p.host, p.listed)  # fmt: skip
            msg.pending = list(p.recipients)
            msg.ip = client_ip(p.host, 1, self.rng) if beh.pool == 1 else None  # type: ignore[assignment]
            self.messages.append(msg)
            arrivals.append((p.born, start, (msg,)))
        loop.series(arrivals)  # as loop.at for each, one in the heap at a time
        loop.run(EPOCH + self.scenario.duration + self.scenario.drain)

    def _result(self, wall: float) -> LayoutResult:
        groups: dict[str, GroupResult] = {}
        late_after = self.scenario.late_after
        for msg in self.messages:
            key = ("spam:" if msg.spam else "good:") + msg.behaviour
            g = groups.get(key)
            if g is None:
                beh = BEHAVIOURS[msg.behaviour]
                g = groups[key] = GroupResult(msg.behaviour, msg.spam, beh.queueing)
            g.attempted += 1
            g.sessions += msg.sessions
            g.backscatter += msg.backscatter
            if not msg.body_sent:
                g.stopped_before_data += 1
            if msg.accepted_at is not None:
                g.accepted += 1
            if msg.spam:
                if msg.delivered:
                    g.reached_mailbox += 1
                continue
            valid = msg.valid
            got = [msg.delivered[r] for r in valid if r in msg.delivered]
            if len(got) == len(valid):
                g.delivered += 1
                delay = (max(got) - msg.born) if got else 0.0
                if delay > late_after:
                    g.late += 1
                    g.delays.append(delay)
                continue
            missing = [r for r in valid if r not in msg.delivered]
            lost = set(msg.bounced) | set(msg.gave_up) | set(msg.dropped)
            if any(r in lost for r in missing):
                g.lost += 1
            elif msg.held:
                g.held += 1
            else:
                g.in_flight += 1
        peak = sum(q.peak for q in self.queues.values())
        peak_bytes = sum(q.peak_bytes for q in self.queues.values())
        mx_stats = [m.stats for m in self.tier.mxs]
        from mxguard.sim.policy import installed_features

        return LayoutResult(
            self.layout.name,
            self.layout.title,
            dict(sorted(groups.items(), key=lambda kv: (kv[1].spam, kv[0]))),
            mx_stats,
            queue_peak=peak,
            queue_peak_bytes=peak_bytes,
            sessions=sum(s.sessions for s in mx_stats),
            contacts=self.contacts,
            events=self.loop.handled,
            wall=wall,
            features=installed_features(),
            checks=[c.name for c in self.engine.checks()],
        )


def _run_one(scenario: Scenario, layout: Layout, population: list[Planned]) -> LayoutResult:
    return Run(scenario, layout, population).run()


def run_layouts(
    scenario: Scenario, layouts: list[Layout], seed: int | None = None, jobs: int = 1
) -> Iterator[LayoutResult]:
    """Each layout on the same population; with `jobs` > 1, layouts run side by side in
    worker processes (one per core: a layout is one CPU-bound loop), results in order."""
    seed = scenario.seed if seed is None else seed
    if seed != scenario.seed:
        scenario = dataclasses.replace(scenario, seed=seed)
    population = draw_population(scenario, layouts[0].config, seed)
    if jobs <= 1 or len(layouts) == 1:
        for layout in layouts:
            yield _run_one(scenario, layout, population)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(jobs, len(layouts)), mp_context=ctx) as pool:
        futures = [pool.submit(_run_one, scenario, layout, population) for layout in layouts]
        for f in futures:
            yield f.result()
