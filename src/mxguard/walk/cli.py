"""`mxguard block add|remove|list` and `mxguard explain IP`: the walk check's state, for people.

Both talk to the configured state store directly (SQLite in WAL mode shares the file with a
running server; Redis is shared anyway), never to the daemon, so they work whether it runs
or not. `explain` also reads the tail of the event log, because greylist entries are keyed
by a hash of (network, sender, recipient): only the envelopes the log saw can be looked up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from mxguard.cliutil import config_option, fail, table_console
from mxguard.config import Config, ConfigError, load_config, parse_duration
from mxguard.policy.facts import IPAddress, Role
from mxguard.policy.networks import NetworkSet
from mxguard.state.base import StateStore
from mxguard.walk.blockentry import BlockEntry
from mxguard.walk.blocklist import MAX_TTL, Blocklist, network_of
from mxguard.walk.health import Health
from mxguard.walk.sightings import Sightings

out = table_console()
T = TypeVar("T")
#: how much of the event log `explain` reads back, from its end
EVENT_TAIL_BYTES = 8 * 1024 * 1024


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _config(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))


def _with_state(cfg: Config, work: Callable[[StateStore], Awaitable[T]]) -> T:
    from mxguard.state.failover import open_configured_state

    if cfg.state.url.startswith("memory:"):
        fail(f"{cfg.source}: state.url: memory:// lives inside the server; nothing to read here")

    async def run() -> T:
        try:
            state = open_configured_state(cfg.state)
        except ValueError as exc:
            fail(escape(f"{cfg.source}: state.url: {exc}"))
        opener = getattr(state, "open", None)
        try:
            if opener is not None:
                await opener()
            return await work(state)
        except Exception as exc:  # an unreachable Redis, a locked or unreadable file
            fail(escape(f"{cfg.source}: state.url: cannot use the state: {exc}"))
        finally:
            await state.close()

    return asyncio.run(run())


def _blocklist(cfg: Config, state: StateStore) -> Blocklist:
    return Blocklist(state, cfg.blocklist.ipv4_prefix, cfg.blocklist.ipv6_prefix)


def _network(cfg: Config, target: str) -> str:
    try:
        return network_of(target, cfg.blocklist.ipv4_prefix, cfg.blocklist.ipv6_prefix)
    except ValueError as exc:
        fail(escape(f"{target}: {exc}"))


# ---------------------------------------------------------------- block


@click.group()
def block() -> None:
    """The tier's blocklist: networks caught at a trap or a retired address, or added by hand."""


@block.command("add")
@config_option
@click.argument("target")
@click.option(
    "--ttl", default=None, help="How long, e.g. 24h or 7d (default: [walk].blocklist_ttl)."
)
@click.option("--reason", "note", default="", help="Why, in words (shown by list and explain).")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
def block_add(
    config_path: str | None, target: str, ttl: str | None, note: str, as_json: bool
) -> None:
    """Block an IP or network (at the blocklist's prefix) on every MX of the tier."""
    cfg = _config(config_path)
    network = _network(cfg, target)
    try:
        seconds = parse_duration(ttl) if ttl is not None else cfg.walk.blocklist_ttl
    except ValueError as exc:
        fail(escape(f"--ttl: {exc}"))
    if not 0 < seconds <= MAX_TTL:
        fail(f"--ttl: must be more than 0 and at most {int(MAX_TTL // 86400)}d")
    probe = ipaddress.ip_network(network, strict=False).network_address
    if probe in NetworkSet(cfg.relay.trusted_peers):
        fail(
            f"{network} is a trusted peer ([relay].trusted_peers); the blocklist never applies to it"
        )
    now = time.time()
    entry = BlockEntry(network, "manual", now, now + seconds, "cli", "", note)
    _with_state(cfg, lambda st: _blocklist(cfg, st).add(entry, now, keep_longer=False))
    if as_json:
        click.echo(json.dumps(asdict(entry), sort_keys=True))
    else:
        out.print(f"blocked {network} until {_when(entry.until)} UTC")


@block.command("remove")
@config_option
@click.argument("target")
def block_remove(config_path: str | None, target: str) -> None:
    """Lift the entry for an IP or network. Exits 1 when there was none."""
    cfg = _config(config_path)
    network = _network(cfg, target)
    found = _with_state(cfg, lambda st: _blocklist(cfg, st).remove(network))
    if not found:
        out.print(f"{network} was not blocklisted")
        raise SystemExit(1)
    out.print(f"removed {network}")


@block.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document: a list of entries.")
def block_list(config_path: str | None, as_json: bool) -> None:
    """Every live entry, oldest first."""
    cfg = _config(config_path)
    entries = _with_state(cfg, lambda st: _blocklist(cfg, st).entries(time.time()))
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2, sort_keys=True))
        return
    if not entries:
        out.print("the blocklist is empty")
        return
    table = Table("network", "reason", "caught by", "since (UTC)", "until (UTC)", "why")
    table.columns[0].no_wrap = True
    for e in entries:
        table.add_row(e.network, e.reason, e.by, _when(e.at), _when(e.until), escape(e.note or "-"))
    out.print(table)


# ---------------------------------------------------------------- explain


def _recent_envelopes(path: str, client: str) -> list[tuple[str, str]]:
    """(sender, recipient) pairs the event log saw from this client, newest last."""
    p = Path(path)
    if not path or not p.exists():
        return []
    with p.open("rb") as f:
        f.seek(max(0, p.stat().st_size - EVENT_TAIL_BYTES))
        lines = f.read().splitlines()
    pairs: dict[tuple[str, str], None] = {}
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("client") == client and ev.get("stage") == "rcpt" and ev.get("recipient"):
            pairs[(ev.get("sender") or "", ev["recipient"])] = None
    return list(pairs)


async def _explain(cfg: Config, state: StateStore, ip: IPAddress) -> dict[str, Any]:
    from mxguard.policy.address import client_network
    from mxguard.policy.checks.greylist import NETWORK_PREFIX, triplet_key

    now = time.time()
    w = cfg.walk
    sightings = Sightings(state, w.window, w.ipv4_prefix, w.ipv6_prefix)
    contacts = sorted((await sightings.contacts(ip, now)).values(), key=lambda c: c.first)
    health = Health(state, w.health_window)
    tier = [m for m in cfg.mx if m.role in (Role.PRIMARY, Role.BACKUP, Role.TRAP)]
    statuses = await health.statuses(sorted({m.host for m in tier}), now)
    entry = await _blocklist(cfg, state).get(ip, now)
    g = cfg.greylist
    gl_net = client_network(ip, g.ipv4_prefix, g.ipv6_prefix)
    passes = await state.get(NETWORK_PREFIX + gl_net, now)
    greylist = []
    for sender, rcpt in _recent_envelopes(cfg.log.events, str(ip)):
        value = await state.get(triplet_key(gl_net, sender, rcpt), now)
        if value is None:
            continue
        first, _, passed = value.partition("|")
        greylist.append(
            {
                "sender": sender,
                "recipient": rcpt,
                "first_seen": float(first),
                "passed": passed == "1",
            }
        )
    return {
        "client": str(ip),
        "now": now,
        "sighting_network": sightings.network(ip),
        "window": w.window,
        "sightings": [
            {
                "mx": c.host,
                "role": c.role,
                "preference": c.preference,
                "first": c.first,
                "last": c.last,
                "count": c.count,
                "walk": c.walk.value,
                "outcome": asdict(c.outcome) if c.outcome else None,
            }
            for c in contacts
        ],
        "greylist": {
            "network": gl_net,
            "passed_triplets": int(passes) if passes else 0,
            "entries": greylist,
        },
        "blocklist": asdict(entry) if entry else None,
        "tier_health": {h: asdict(s) for h, s in statuses.items()},
    }


@click.command()
@config_option
@click.argument("ip")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def explain(config_path: str | None, ip: str, as_json: bool) -> None:
    """What the shared state knows of a client: its MX contacts in order, greylisting, blocklist."""
    cfg = _config(config_path)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        fail(f"{ip!r} is not an IP address")
    report = _with_state(cfg, lambda st: _explain(cfg, st, addr))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    _render(report)


def _render(r: dict[str, Any]) -> None:
    out.print(
        f"[bold]{r['client']}[/] (sightings of {r['sighting_network']}, window {r['window']:g}s)"
    )
    if r["sightings"]:
        t = Table("first (UTC)", "last (UTC)", "n", "MX", "pref", "role", "walk", "last answer")
        for s in r["sightings"]:
            o = s["outcome"]
            answer = f"{o['code']} {o['reason']} at {o['stage']}" if o else "-"
            pref = "-" if s["preference"] is None else str(s["preference"])
            t.add_row(
                _when(s["first"]),
                _when(s["last"]),
                str(s["count"]),
                s["mx"],
                pref,
                s["role"],
                s["walk"],
                escape(answer),
            )
        out.print(t)
    else:
        out.print("no contacts with any MX inside the window")
    gl = r["greylist"]
    out.print(f"greylisting: network {gl['network']}, {gl['passed_triplets']} passed triplets")
    for e in gl["entries"]:
        state = "passed" if e["passed"] else "waiting"
        out.print(
            f"  {escape(e['sender'] or '<>')} -> {escape(e['recipient'])}: {state}, "
            f"first seen {_when(e['first_seen'])}"
        )
    b = r["blocklist"]
    if b:
        out.print(
            f"[bold red]blocklisted[/] {b['network']} ({b['reason']}, by {b['by']}) "
            f"since {_when(b['at'])} until {_when(b['until'])}: {escape(b['note'] or '-')}"
        )
    else:
        out.print("not blocklisted")
    out.print("tier health now:")
    for host, h in r["tier_health"].items():
        mark = "[green]healthy[/]" if h["healthy"] else "[yellow]not healthy[/]"
        out.print(f"  {host}: {mark} ({escape(h['why'])})")
