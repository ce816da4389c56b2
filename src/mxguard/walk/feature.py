"""Wire the walk check into `serve`: sightings, liveness, the trap's answer and the blocklist.

What this installs, and why each piece sits where it does:

- policy checks through `server.extensions`, put in front of the other features' so that
  the blocklist and the walk answer come before greylisting (a bot that skipped the
  primary is told so, not greylisted and taught to retry);
- `Runtime.on_session` (through `server.runtime_hooks`, since the Runtime is built after
  the installers run): a listener that refuses clients at its connection cap is marked
  "at capacity", so that the senders it turned away are not judged as having skipped it;
- an event-log listener: what each MX answered a client (including refusals over capacity,
  which never reach the policy) is added to its sightings, for `mxguard explain` and so that
  a refused contact still counts as "seen at a lower MX";
- a heartbeat task for every listener this process runs, and a clean "stopped" mark when
  a listener stops. Under `mxguard policyd` there are no listeners of ours: the sessions
  Postfix reports (`on_session(mx, "connect")`) are the liveness evidence instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from mxguard.config import Config
from mxguard.levels import StoredLevel
from mxguard.memo import Memo
from mxguard.notnow import NOT_NOW
from mxguard.policy.checks.base import Check
from mxguard.policy.checks.blocklist import BlocklistCheck
from mxguard.policy.checks.walk import BackupWalkCheck, Tier, TierMx, WalkGate
from mxguard.policy.facts import Facts, IPAddress, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Action, Verdict
from mxguard.state.base import StateStore, complete_now
from mxguard.walk.blocklist import Blocklist
from mxguard.walk.health import Health
from mxguard.walk.sightings import Outcome, Sightings

if TYPE_CHECKING:
    from mxguard.serve import Server
    from mxguard.smtp.listener import Runtime

log = logging.getLogger("mxguard.walk")

#: the roles whose contacts someone judges; a tier of primaries only records nothing
_JUDGING_ROLES = frozenset({Role.BACKUP, Role.TRAP, Role.RETIRED})

#: module names for enum members read per decision (an enum attribute costs a lookup)
_RCPT, _ACCEPT = Stage.RCPT, Action.ACCEPT

#: installed features by server, for tests and the bench (`feature_of`)
_installed: dict[int, WalkFeature] = {}


def greylists_backup(cfg: Config) -> bool:
    from mxguard.greylist_feature import greylist_roles

    return Role.BACKUP in greylist_roles(cfg)


class WalkFeature:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.configure(server.config, server.state)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.down: set[str] = set()  # listeners already marked stopped
        self.capacity_marked: dict[str, float] = {}
        self.answer_marked: dict[str, float] = {}
        self.runtime: Runtime | None = None
        #: the latest decision time and its event "ts" (rounding is slower than the write)
        self._ts_of: float | None = None
        self._ts = 0.0

    def configure(self, cfg: Config, state: StateStore) -> None:
        w = cfg.walk
        self.cfg = cfg
        self.sightings = Sightings(state, w.window, w.ipv4_prefix, w.ipv6_prefix)
        self.health = Health(state, w.health_window)
        self.blocklist = Blocklist(state, cfg.blocklist.ipv4_prefix, cfg.blocklist.ipv6_prefix)
        self.immediate = state.immediate
        self.record = any(m.role in _JUDGING_ROLES for m in cfg.mx)
        self.exempt = NetworkSet((*cfg.access.allow, *cfg.relay.trusted_peers))
        self.hosts = {m.host: m for m in cfg.mx}
        #: event client text -> (address, exempt), and address -> exempt: emptied here,
        #: since `exempt` may change
        self._clients: Memo[str, tuple[IPAddress, bool]] = Memo(1 << 14)
        self._exempt: Memo[IPAddress, bool] = Memo(1 << 14)

    def follow_events(self) -> None:
        """Outcomes only matter to a tier that judges walks; without one, stay off the event
        log's listener list, so that no decision line is turned into a dict for us."""
        listeners = self.server.events.listeners
        if self.record and self.on_event not in listeners:
            listeners.append(self.on_event)
        elif not self.record and self.on_event in listeners:
            listeners.remove(self.on_event)

    def now(self) -> float:
        rt = self.server.runtime
        return rt.clock() if rt is not None else time.time()

    # ------------------------------------------------------------ policy

    def extension(self, cfg: Config, state: StateStore) -> tuple[list[Check], list[Check]]:
        self.configure(cfg, state)  # again on a reload: the layout may have changed
        self.follow_events()
        tier = Tier(TierMx(m.host, m.role, m.preference) for m in cfg.mx)
        gate = WalkGate(
            tier,
            self.sightings,
            self.health,
            self.blocklist,
            cfg.walk.blocklist_ttl,
            self.exempt,
            {m.host: m.trap_answer for m in cfg.mx},
            record=self.record,
        )
        screens: list[Check] = [BlocklistCheck(self.blocklist, cfg.blocklist.action)]
        if cfg.walk.backup_action == "greylist" and greylists_backup(cfg):
            pass  # greylisting at the backup decides alone (see BackupWalkCheck)
        else:
            if cfg.walk.backup_action == "greylist" and any(m.role is Role.BACKUP for m in cfg.mx):
                log.warning(
                    '%s: walk.backup_action = "greylist" but greylisting is off at the '
                    "backup ([greylist].roles); tempfailing walk violations instead",
                    cfg.source,
                )
            screens.append(BackupWalkCheck(self.sightings))
        return [gate], screens

    # ------------------------------------------------------------ hooks

    def attach(self, runtime: Runtime) -> None:
        """Chain our session hook into the Runtime's (once: reloads call this again)."""
        if self.runtime is runtime:
            return
        self.runtime = runtime
        previous = runtime.on_session
        if previous is None:
            runtime.on_session = self.on_session
            return

        def both(mx: Any, event: str) -> None:
            previous(mx, event)
            self.on_session(mx, event)

        runtime.on_session = both

    def on_session(self, mx: Any, event: str) -> None:
        if event == "connect":
            self.on_connect(mx)
            return
        if event != "capacity":
            return
        rt = self.server.runtime
        # The per-network cap turns away one client (its refused contact is a sighting);
        # only the total cap says this MX is full for everyone.
        if rt is not None and rt.gate.total < rt.gate.max_total:
            return
        now = self.now()
        if now - self.capacity_marked.get(mx.host, -1e18) < self.health.interval / 2:
            return  # a storm of refusals needs one mark, not one write each
        self.capacity_marked[mx.host] = now
        self.spawn(self.health.mark(mx.host, "capacity", now))

    def on_connect(self, mx: Any) -> None:
        """A session at an MX we do not heartbeat (a Postfix in front of policyd) proves it up."""
        rt = self.server.runtime  # self.now(), without a call more at every connection
        now = rt.clock() if rt is not None else time.time()
        # the cheap test first: it is asked at every connection; a host marked lately is
        # not ours (ours are never marked), so the order does not change the answer
        if now - self.answer_marked.get(mx.host, -1e18) < self.health.interval / 2:
            return
        listeners = self.server.listeners
        if listeners and any(li.mx.host == mx.host for li in listeners):
            return  # our own listener: the heartbeat says more than its sessions
        self.answer_marked[mx.host] = now
        if self.health.answered_now(mx.host, now) is NOT_NOW:  # the ledger's: no coroutine
            self.spawn(self.health.answered(mx.host, now))

    def on_event(self, event: dict[str, Any]) -> None:
        """Keep what each MX answered, as the sightings' outcome field."""
        if not self.record or event.get("mx") not in self.hosts:
            return
        stage = event.get("stage")
        action = event.get("action")
        if stage == "rcpt" and action == "accept":
            return  # the end of the message will say how it ended; skip the busiest event
        try:
            ip, exempt = self._client(str(event.get("client")))
            outcome = Outcome(
                float(event["ts"]),
                str(stage),
                str(action),
                int(event.get("code") or 0),
                str(event.get("reason")),
            )
        except (ValueError, KeyError, TypeError):
            return
        if not exempt:
            self._note(ip, str(event["mx"]), outcome)

    def on_decision(self, facts: Facts, verdict: Verdict, **_: Any) -> None:
        """`on_event` for the event `EventLog.decision(facts, verdict)` would write, from the
        facts and verdict themselves.

        For a front end whose event log has no other reader and no file (the simulator):
        there, building the event's dict, with the address as text, only for this listener
        to parse it back is most of the cost of a decision's bookkeeping.
        """
        mx = facts.mx
        if not self.record or mx.host not in self.hosts:
            return
        stage = facts.stage
        action = verdict.action
        if stage is _RCPT and action is _ACCEPT:
            return  # as on_event
        ip = facts.client_ip
        exempt = self._exempt.get(ip)
        if exempt is None:
            exempt = self._exempt.remember(ip, ip in self.exempt)
        if not exempt:
            # the fields as on_event reads them from the event (its "ts" is rounded)
            # (str() of these enums is their value, without the enum property's cost)
            now = facts.now
            if now != self._ts_of:  # a session's decisions share one time: round it once
                self._ts_of, self._ts = now, float(round(now, 6))
            at, host = self._ts, mx.host
            stage_s, action_s = str(stage), str(action)
            code, reason = int(verdict.code or 0), str(verdict.reason)
            try:  # into the memory state's ledger without making the Outcome
                done = self.sightings.note_answer_now(ip, host, at, stage_s, action_s, code, reason)
            except Exception as exc:  # as _note does
                log.warning("walk bookkeeping failed: %s", exc)
                return
            if done is NOT_NOW:
                self._note(ip, host, Outcome(at, stage_s, action_s, code, reason))

    def _note(self, ip: IPAddress, host: str, outcome: Outcome) -> None:
        try:
            # a write the state can do at once needs no task (memory state: every write)
            done = self.sightings.note_outcome_now(ip, host, outcome, outcome.at)
        except Exception as exc:  # as a failed task would be: logged, never the caller's
            log.warning("walk bookkeeping failed: %s", exc)
            return
        if done is NOT_NOW:
            self.spawn(self.sightings.note_outcome(ip, host, outcome, outcome.at))

    def _client(self, text: str) -> tuple[IPAddress, bool]:
        """The event's client address, parsed, and whether it is exempt from the walk check.

        Kept per address: the same clients come back all day, and parsing the address and
        matching it against the exempt networks cost more than the write they lead to.
        """
        known = self._clients.get(text)
        if known is None:
            ip = ipaddress.ip_address(text)
            known = self._clients.remember(text, (ip, ip in self.exempt))
        return known

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.immediate:  # the write cannot wait: no task for it
            try:
                complete_now(coro)
            except Exception as exc:  # as _done logs a failed task
                log.warning("walk bookkeeping failed: %s", exc)
            return
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a tool building the engine): nothing to record into
            coro.close()
            return
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("walk bookkeeping failed: %s", task.exception())

    async def settle(self) -> None:
        """Wait for the bookkeeping writes in flight (tests, the bench, shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # ------------------------------------------------------------ liveness

    async def beat_all(self) -> None:
        """One heartbeat for every listener this process runs; a stopped one is marked down."""
        now = self.now()
        for listener in self.server.listeners:
            host = listener.mx.host
            srv = listener.server
            if srv is not None and srv.is_serving():
                await self.health.beat(host, now)
                self.down.discard(host)
            elif host not in self.down:
                await self.health.stopped(host, now)
                self.down.add(host)

    async def heartbeat_loop(self) -> None:
        await asyncio.sleep(0.05)  # let start() bind the listeners first
        while True:
            rt = self.server.runtime
            if rt is not None and self.runtime is not rt:
                # a front end that builds its Runtime without runtime_hooks (policyd)
                self.attach(rt)
            try:
                await self.beat_all()
            except Exception as exc:  # the state may be down; beats resume with it
                log.warning("walk heartbeat failed: %s", exc)
            await asyncio.sleep(self.health.interval)

    async def close(self) -> None:
        await self.settle()
        now = self.now()
        with contextlib.suppress(Exception):
            for listener in self.server.listeners:
                if listener.mx.host not in self.down:
                    await self.health.stopped(listener.mx.host, now)
        _installed.pop(id(self.server), None)


def feature_of(server: Server) -> WalkFeature:
    """The walk feature installed on `server` (for tests and the bench)."""
    return _installed[id(server)]


def install(server: Server) -> None:
    feature = WalkFeature(server)
    feature.follow_events()
    server.gauges["blocklist_entries"] = StoredLevel(
        "blocklist_entries", lambda: feature.blocklist.size(feature.now())
    )
    server.extensions.insert(0, feature.extension)
    server.runtime_hooks.append(feature.attach)
    server.tasks.append(asyncio.create_task(feature.heartbeat_loop(), name="walk heartbeat"))
    server.closers.append(feature.close)
    _installed[id(server)] = feature
