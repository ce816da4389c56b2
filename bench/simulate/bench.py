"""Simulated sender contacts per second of wall time, and what driving the policy costs.

    .venv/bin/python bench/simulate/bench.py [--quick]

1. Driving `PolicyEngine.decide` for a RCPT: `run_sync` (one `coro.send(None)`), a plain
   `await` inside one long-running coroutine, and `loop.run_until_complete` per call.
2. The default scenario (one day, 34,000 messages) against the recommended layout, with every
   installed feature (the walk check included) and with the policy core only (walk left out).
3. `--compare` of the default scenario: all layouts, one process vs one per core.

Each scenario line gives contacts per second of wall time and of CPU time (the workers'
included).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
import sys
import time

from mxguard.config import load_config
from mxguard.policy.facts import Facts, MxInfo, Role, Stage
from mxguard.sim import policy as sim_policy
from mxguard.sim.layouts import make_layout
from mxguard.sim.loop import run_sync
from mxguard.sim.run import run_layouts
from mxguard.sim.scenario import load_scenario


def drive(n: int) -> None:
    cfg = make_layout(load_config(None), "recommended").config
    engine = sim_policy.build_sim_engine(sim_policy.build_sim_server(cfg))
    facts = Facts(Stage.RCPT, 1.8e9, ipaddress.IPv4Address("127.0.9.10"),
                  MxInfo("mail.example.test", Role.PRIMARY, 10), "s", helo="h", sender="a@b.c",
                  recipient="alice@example.test")  # fmt: skip
    t = time.perf_counter()
    for _ in range(n):
        run_sync(engine.decide(facts, True))
    a = n / (time.perf_counter() - t)

    async def awaiting() -> float:
        t = time.perf_counter()
        for _ in range(n):
            await engine.decide(facts, True)
        return n / (time.perf_counter() - t)

    b = asyncio.run(awaiting())
    loop = asyncio.new_event_loop()
    t = time.perf_counter()
    for _ in range(n // 10):
        loop.run_until_complete(engine.decide(facts, True))
    c = (n // 10) / (time.perf_counter() - t)
    loop.close()
    print(f"decide() at RCPT on the primary, {n} calls:")
    print(f"  run_sync (coro.send)            {a:>10,.0f}/s")
    print(f"  await in one coroutine          {b:>10,.0f}/s")
    print(f"  loop.run_until_complete per call {c:>9,.0f}/s")


def scenario(label: str, names: list[str], jobs: int) -> None:
    sc = load_scenario(None)
    cfg = load_config(None)
    layouts = [make_layout(cfg, n) for n in names]
    c = cpu_seconds()
    t = time.perf_counter()
    results = list(run_layouts(sc, layouts, jobs=jobs))
    wall = time.perf_counter() - t
    cpu = cpu_seconds() - c
    contacts = sum(r.contacts for r in results)
    forwards = sum(m.forwarded_in for r in results for m in r.mx)
    print(f"{label:52} {contacts:>8} contacts {wall:6.1f}s wall  {contacts / wall:>8,.0f}/s"
          f"  {cpu:6.1f}s CPU  {contacts / cpu:>8,.0f}/s  (+{forwards} forwards)")  # fmt: skip


def cpu_seconds() -> float:
    """CPU of this process and of its finished workers: on a shared machine the wall time
    says as much about the other jobs as about this one, the CPU time does not."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    quick = "--quick" in sys.argv
    drive(20000 if quick else 200000)
    print()
    scenario("recommended layout, all features", ["recommended"], 1)
    saved = dict(sim_policy.SKIPPED_FEATURES)
    sim_policy.SKIPPED_FEATURES["mxguard.walk.feature"] = "bench: policy core only"
    scenario("recommended layout, walk feature left out", ["recommended"], 1)
    sim_policy.SKIPPED_FEATURES.clear()
    sim_policy.SKIPPED_FEATURES.update(saved)
    if not quick:
        names = list(load_scenario(None).layouts)
        scenario(f"--compare ({len(names)} layouts), 1 process", names, 1)
        cpus = os.cpu_count() or 1
        scenario(f"--compare ({len(names)} layouts), {cpus} processes", names, cpus)


if __name__ == "__main__":
    main()
