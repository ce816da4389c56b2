"""Scenario files: who sends how much, when the tier is unwell, which layouts to compare.

The format is documented in docs/simulate.md; examples/scenario.toml is a working copy of the
built-in default below. Errors name the file, the key and the problem, like the config's, so
the CLI prints one line.

The default population is one weekday of seed 004's domain (200 mailboxes, 1,000-1,500 good
messages a day, 90-95% of all messages spam), with the spam split by seed 000's estimate that
7-14% of it aims at the secondary. Figures no seed gives (which MTA software good senders run,
how many bots retry) are assumptions, marked as such in the comments.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxguard.config import ConfigError, parse_duration, parse_size
from mxguard.sim.senders import BEHAVIOURS

DEFAULT_SCENARIO = """\
# One weekday of a small domain (seed 004: 200 mailboxes, 1,000-1,500 good messages a day,
# 90-95% of all messages spam), with an afternoon spam storm (seed 004, scaled to a tenth),
# a one-hour primary outage and an hour in which the primary is over its connection limit.

[scenario]
name = "a weekday at a 200-mailbox domain"
duration = "1d"
seed = 1
late_after = "5m"        # a message delivered later than this after it was sent is "late"
session_seconds = 2      # how long one SMTP session keeps a connection slot busy
drain = "8d"             # keep the clock running this long after the last arrival

[tier]
forward_seconds = 0.5    # the backup's forwarder: time per message, plus size / forward_rate
forward_rate = "2M"      # bytes per second
classic_drop_unknown = false   # the classic backup bounces what the primary refuses

# ---- good mail: 1,200 a day. The split between MTA kinds is an assumption (no seed gives it).
[[senders]]
behaviour = "postfix"
kind = "good"
per_day = 360
hosts = 150
size = "20k"

[[senders]]
behaviour = "exim"
kind = "good"
per_day = 120
hosts = 50
size = "20k"

[[senders]]
behaviour = "qmail"
kind = "good"
per_day = 24
hosts = 10
size = "20k"

[[senders]]
behaviour = "exchange"
kind = "good"
per_day = 180
hosts = 60
size = "40k"

[[senders]]
behaviour = "bigprovider"
kind = "good"
per_day = 420
hosts = 4
size = "20k"

[[senders]]
behaviour = "inapp"
kind = "good"
per_day = 96
hosts = 20
size = "8k"

# ---- spam: 12,000 a day (91% of all). Seed 000: 7-14% of spam aims at the secondary
# (here 10%: backup-first, highest-first and cached-address bots); seed 000's 3.05-7.00
# unknown-user attempts per delivered message: 80% of spam recipients do not exist.
[[senders]]
behaviour = "bot_first_mx"
kind = "spam"
per_day = 9360
hosts = 8000
recipients = [1, 3]
valid = 0.2
size = "4k"

[[senders]]
behaviour = "bot_backup_first"
kind = "spam"
per_day = 600
hosts = 500
recipients = [1, 3]
valid = 0.2
size = "4k"

[[senders]]
behaviour = "bot_highest"
kind = "spam"
per_day = 300
hosts = 300
recipients = [1, 3]
valid = 0.2
size = "4k"

[[senders]]
behaviour = "bot_cached"
kind = "spam"
per_day = 300
hosts = 100
recipients = [1, 3]
valid = 0.2
size = "4k"

[[senders]]
behaviour = "bot_all_mx"
kind = "spam"
per_day = 240
hosts = 200
recipients = [1, 3]
valid = 0.2
size = "4k"

[[senders]]
behaviour = "spam_retrying"   # assumption: a tenth of the spam comes from tools that retry
kind = "spam"
per_day = 1200
hosts = 300
recipients = [1, 3]
valid = 0.2
size = "4k"

# ---- conditions
[[conditions]]
kind = "down"            # the primary refuses connections for an hour
mx = "primary"
start = "10h"
end = "11h"
mode = "refuse"

[[conditions]]
kind = "busy"            # the primary answers 421 to half of all connections
mx = "primary"
start = "13h"
end = "14h"
fraction = 0.5

[[conditions]]
kind = "storm"           # seed 004: 100,000 in two hours; a tenth of it here
start = "15h"
end = "17h"
behaviour = "bot_backup_first"
messages = 10000
hosts = 3000
recipients = [1, 3]
valid = 0.2
size = "4k"

[compare]
layouts = ["single", "classic", "mxguard", "greylist", "nolisting", "trap", "recommended", "all"]
"""


@dataclass(frozen=True)
class SenderGroup:
    behaviour: str
    kind: str  # good | spam
    count: int  # messages over the window
    start: float  # seconds from the scenario start
    end: float
    hosts: int = 100
    recipients: tuple[int, int] = (1, 2)
    valid: float = 1.0
    size: int = 20 * 1024
    listed: float = 0.0  # fraction of hosts the DNSBLs list

    @property
    def spam(self) -> bool:
        return self.kind == "spam"


@dataclass(frozen=True)
class ConditionSpec:
    kind: str  # down | busy
    mx: str  # a role (primary, backup, trap) or an [[mx]] host
    start: float
    end: float
    mode: str = "refuse"
    fraction: float = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: float
    seed: int
    groups: tuple[SenderGroup, ...]
    conditions: tuple[ConditionSpec, ...] = ()
    layouts: tuple[str, ...] = ()
    late_after: float = 300.0
    session_seconds: float = 2.0
    drain: float = 8 * 86400.0
    forward_seconds: float = 0.5
    forward_rate: float = 2 * 1024 * 1024
    classic_drop_unknown: bool = False
    max_connections: dict[str, int] = field(default_factory=dict)
    source: str = "<built-in scenario>"


_DEFAULT_LISTED = {"good": 0.0, "spam": 0.7}


def _get(table: dict[str, Any], key: str, file: str, prefix: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise ConfigError(file, f"{prefix}.{key}", f"must be {kind.__name__}, got {value!r}")
    return value


def _duration(table: dict[str, Any], key: str, file: str, prefix: str, default: float) -> float:
    if key not in table:
        return default
    try:
        return parse_duration(table[key])
    except ValueError as exc:
        raise ConfigError(file, f"{prefix}.{key}", str(exc)) from None


def _size(table: dict[str, Any], key: str, file: str, prefix: str, default: int) -> int:
    if key not in table:
        return default
    try:
        return parse_size(table[key])
    except ValueError as exc:
        raise ConfigError(file, f"{prefix}.{key}", str(exc)) from None


def _known(table: dict[str, Any], allowed: set[str], file: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(file, f"{prefix}.{key}", f"unknown key (known keys here: {known})")


_GROUP_KEYS = {"behaviour", "kind", "per_day", "messages", "start", "end", "hosts",
               "recipients", "valid", "size", "listed"}  # fmt: skip


def _group(t: dict[str, Any], file: str, prefix: str, duration: float) -> SenderGroup:
    _known(t, _GROUP_KEYS, file, prefix)
    name = _get(t, "behaviour", file, prefix, str, None)
    if name is None:
        raise ConfigError(file, f"{prefix}.behaviour", "missing (this key is required)")
    if name not in BEHAVIOURS:
        raise ConfigError(
            file, f"{prefix}.behaviour", f"{name!r} is not one of {', '.join(BEHAVIOURS)}"
        )
    default_kind = "spam" if name.startswith(("bot", "spam")) else "good"
    kind = _get(t, "kind", file, prefix, str, default_kind)
    if kind not in ("good", "spam"):
        raise ConfigError(file, f"{prefix}.kind", f"must be good or spam, got {kind!r}")
    start = _duration(t, "start", file, prefix, 0.0)
    end = _duration(t, "end", file, prefix, duration)
    if end <= start:
        raise ConfigError(file, f"{prefix}.end", "must come after start")
    if "messages" in t and "per_day" in t:
        raise ConfigError(file, f"{prefix}.messages", "give messages or per_day, not both")
    if "messages" in t:
        count = _get(t, "messages", file, prefix, int, 0)
    else:
        per_day = _get(t, "per_day", file, prefix, float, 0.0)
        count = round(per_day * (end - start) / 86400.0)
    if count < 0:
        raise ConfigError(file, f"{prefix}.messages", "cannot be negative")
    hosts = _get(t, "hosts", file, prefix, int, 100)
    if hosts < 1:
        raise ConfigError(file, f"{prefix}.hosts", "must be at least 1")
    rc = t.get("recipients", [1, 1] if kind == "good" else [1, 3])
    if (
        not isinstance(rc, list)
        or len(rc) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in rc)
        or not 1 <= rc[0] <= rc[1]
    ):
        raise ConfigError(file, f"{prefix}.recipients", "must be [min, max] with 1 <= min <= max")
    valid = _get(t, "valid", file, prefix, float, 1.0 if kind == "good" else 0.2)
    listed = _get(t, "listed", file, prefix, float, _DEFAULT_LISTED[kind])
    for key, value in (("valid", valid), ("listed", listed)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(file, f"{prefix}.{key}", "must be between 0 and 1")
    size = _size(t, "size", file, prefix, 20 * 1024 if kind == "good" else 4 * 1024)
    return SenderGroup(name, kind, count, start, end, hosts, (rc[0], rc[1]), valid, size, listed)


def load_scenario_text(text: str, file: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    _known(data, {"scenario", "tier", "senders", "conditions", "compare"}, file, "")
    s = data.get("scenario", {})
    _known(s, {"name", "duration", "seed", "late_after", "session_seconds", "drain"},
           file, "scenario")  # fmt: skip
    duration = _duration(s, "duration", file, "scenario", 86400.0)
    if duration <= 0:
        raise ConfigError(file, "scenario.duration", "must be more than 0")
    tier = data.get("tier", {})
    _known(tier, {"forward_seconds", "forward_rate", "classic_drop_unknown", "max_connections"},
           file, "tier")  # fmt: skip
    max_conn = tier.get("max_connections", {})
    if not isinstance(max_conn, dict) or not all(
        isinstance(v, int) and v > 0 for v in max_conn.values()
    ):
        raise ConfigError(file, "tier.max_connections", "must be a table of MX -> positive count")
    groups: list[SenderGroup] = []
    senders = data.get("senders", [])
    if not isinstance(senders, list):
        raise ConfigError(file, "senders", "must be an array of tables ([[senders]])")
    for i, t in enumerate(senders):
        groups.append(_group(t, file, f"senders[{i}]", duration))
    conditions: list[ConditionSpec] = []
    for i, t in enumerate(data.get("conditions", [])):
        prefix = f"conditions[{i}]"
        kind = _get(t, "kind", file, prefix, str, None)
        if kind == "storm":
            rest = {k: v for k, v in t.items() if k != "kind"}
            rest.setdefault("kind", "spam")
            groups.append(_group(rest, file, prefix, duration))
            continue
        if kind not in ("down", "busy"):
            raise ConfigError(file, f"{prefix}.kind", "must be down, busy or storm")
        _known(t, {"kind", "mx", "start", "end", "mode", "fraction"}, file, prefix)
        start = _duration(t, "start", file, prefix, 0.0)
        end = _duration(t, "end", file, prefix, duration)
        if end <= start:
            raise ConfigError(file, f"{prefix}.end", "must come after start")
        mode = _get(t, "mode", file, prefix, str, "refuse")
        if mode not in ("refuse", "drop", "silent"):
            raise ConfigError(file, f"{prefix}.mode", "must be refuse, drop or silent")
        fraction = _get(t, "fraction", file, prefix, float, 1.0)
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(file, f"{prefix}.fraction", "must be between 0 and 1")
        mx = _get(t, "mx", file, prefix, str, "primary")
        conditions.append(ConditionSpec(kind, mx, start, end, mode, fraction))
    compare = data.get("compare", {})
    _known(compare, {"layouts"}, file, "compare")
    layouts = compare.get("layouts", [])
    if not isinstance(layouts, list) or not all(isinstance(x, str) for x in layouts):
        raise ConfigError(file, "compare.layouts", "must be a list of layout names")
    from mxguard.sim.layouts import LAYOUTS

    for j, name in enumerate(layouts):
        if name not in LAYOUTS:
            raise ConfigError(
                file, f"compare.layouts[{j}]", f"{name!r} is not one of {', '.join(LAYOUTS)}"
            )
    return Scenario(
        name=_get(s, "name", file, "scenario", str, Path(file).stem),
        duration=duration,
        seed=_get(s, "seed", file, "scenario", int, 1),
        groups=tuple(groups),
        conditions=tuple(conditions),
        layouts=tuple(layouts),
        late_after=_duration(s, "late_after", file, "scenario", 300.0),
        session_seconds=_get(s, "session_seconds", file, "scenario", float, 2.0),
        drain=_duration(s, "drain", file, "scenario", 8 * 86400.0),
        forward_seconds=_get(tier, "forward_seconds", file, "tier", float, 0.5),
        forward_rate=float(_size(tier, "forward_rate", file, "tier", 2 * 1024 * 1024)) or 1.0,
        classic_drop_unknown=_get(tier, "classic_drop_unknown", file, "tier", bool, False),
        max_connections=dict(max_conn),
        source=file,
    )


def load_scenario(path: str | Path | None) -> Scenario:
    if path is None:
        return load_scenario_text(DEFAULT_SCENARIO, "<built-in scenario>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc}") from None
    return load_scenario_text(text, str(p))
