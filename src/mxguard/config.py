"""TOML config -> typed, validated, immutable settings.

Every error names the file, the key and the problem on one line ("mxguard.toml: mx[0].role:
must be one of primary, backup, trap, retired, fake"), because the person reading it is an
administrator at a shell, not a Python developer. Sections are plain dataclasses; the loader
walks their type hints, so adding a key is adding a field (and a line in docs/configuration.md).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from mxguard.policy.facts import Role

# Markers for values given as text in TOML but used as numbers.
DURATION = "duration"  # "5m", "2d", "30s", "250ms" or a number of seconds
SIZE = "size"  # "10M", "512k", "1G" or a number of bytes
Duration = Annotated[float, DURATION]
Size = Annotated[int, SIZE]

DEFAULT_CONFIG_NAME = "mxguard.toml"


class ConfigError(Exception):
    """A config problem, rendered as one line: FILE: KEY: PROBLEM."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class ServerSettings:
    hostname: str = ""  # the name in the banner and Received: header; default: the MX's host
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"  # auto: uvloop when installed
    shutdown_grace: Duration = 30.0  # on SIGTERM, open sessions get this long, then 421


@dataclass(frozen=True)
class DomainSettings:
    name: str
    recipients: tuple[str, ...] = ()
    recipients_file: str | None = None
    # table: known recipients only; callout: ask the primary; accept-all: explicit backscatter risk
    recipients_source: Literal["table", "callout", "accept-all"] = "table"
    case_sensitive_local_part: bool = False


@dataclass(frozen=True)
class DeliverySettings:
    target: str = "maildir:./mxguard-data/maildir"
    timeout: Duration = 60.0


@dataclass(frozen=True)
class StateSettings:
    url: str = "sqlite:///./mxguard-data/state.db"
    on_unavailable: Literal["tempfail", "local"] = "tempfail"
    local_fallback: str = "sqlite:///./mxguard-data/state-fallback.db"
    key_prefix: str = "mxg"


@dataclass(frozen=True)
class LogSettings:
    events: str = "./mxguard-data/events.jsonl"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class MxSettings:
    host: str
    role: Role
    preference: int | None = None
    listen: str | None = None  # "IP:PORT" or "[IPv6]:PORT"
    address: str | None = None  # for a fake MX: the published address that must refuse
    # more published addresses of this host (say its AAAA beside the A); `mxguard plan`
    # writes them and counts them against the senders' 5-address limit
    addresses: tuple[str, ...] = ()
    # fake MX in front of the primary: the operator accepts that senders which never try the
    # next MX (some in-app mailers) lose mail; without it `mxguard plan` refuses the layout
    accept_risk: bool = False
    forward_to: str | None = None  # backup: an [[mx]] host or smtp://HOST:PORT
    spool: str | None = None  # backup: the durable queue directory
    # backup: bind forwarding and callout connections to this local IP, so the next hop can
    # trust this backup by address ([relay].trusted_peers) without trusting every client
    source_address: str | None = None
    greet_pause: Duration | None = None  # overrides [early_talker].greet_pause
    tls_cert: str | None = None
    tls_key: str | None = None
    trap_answer: Literal["rcpt", "connect"] = "rcpt"


@dataclass(frozen=True)
class RelaySettings:
    networks: tuple[str, ...] = ()  # clients allowed to relay to any domain
    trusted_peers: tuple[str, ...] = ()  # our own backups: their checks judged the client


@dataclass(frozen=True)
class LimitSettings:
    max_message_size: Size = 25 * 1024 * 1024
    max_recipients: int = 100
    max_errors: int = 10
    max_text_line: int = 8192
    bare_lf: Literal["reject", "normalize"] = "reject"
    max_connections: int = 500
    max_connections_per_network: int = 20
    greeting_timeout: Duration = 30.0  # how long a client may take to send its first command
    command_timeout: Duration = 300.0  # between commands (RFC 5321 4.5.3.2.7: 5 minutes)
    data_timeout: Duration = 180.0  # between chunks of the body (RFC 5321: 3 minutes per block)
    session_timeout: Duration = 1800.0  # a whole session, however chatty


@dataclass(frozen=True)
class AccessSettings:
    allow: tuple[str, ...] = ()  # CIDRs that skip the screening checks (never relay control)
    deny: tuple[str, ...] = ()  # CIDRs refused
    deny_stage: Literal["connect", "rcpt"] = "rcpt"


@dataclass(frozen=True)
class DnsblSettings:
    sites: tuple[
        str, ...
    ] = ()  # postscreen style: "zen.spamhaus.org*2", "list.dnswl.org=127.0.[0..255].[1..3]*-5"
    threshold: int = 1
    action: Literal["reject", "tempfail"] = "reject"
    stage: Literal["connect", "rcpt"] = "rcpt"
    nameservers: tuple[str, ...] = ()  # default: the system resolver
    timeout: Duration = 2.0
    reply_text: str | None = None  # hides the list names from the client


@dataclass(frozen=True)
class RateLimitSettings:
    connections_per_minute: int = 0  # per client network; 0 = off
    messages_per_hour: int = 0  # per client network; 0 = off
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class EarlyTalkerSettings:
    greet_pause: Duration = 0.0  # wait this long before the banner and watch for early talk
    action: Literal["ignore", "tempfail", "reject", "drop"] = "ignore"


@dataclass(frozen=True)
class TlsSettings:
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class GreylistSettings:
    roles: tuple[str, ...] = ()  # e.g. ["backup"]: greylist on the backup only (seed 000)
    delay: Duration = 300.0
    retry_window: Duration = 2 * 86400.0
    pass_ttl: Duration = 35 * 86400.0
    auto_allow_after: int = (
        5  # a client network is allowed after this many passed triplets; 0 = never
    )
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    allow_networks: tuple[str, ...] = ()
    allow_sender_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueSettings:
    max_spool_bytes: Size = 1024**3
    min_free_bytes: Size = 256 * 1024**2  # new mail gets 452 when the disk has less free
    retry_min: Duration = 60.0
    retry_max: Duration = 3600.0
    max_lifetime: Duration = 5 * 86400.0
    concurrency: int = 4
    dsn: bool = False  # RFC 3464 bounces for held mail; never to <> or spam


@dataclass(frozen=True)
class CalloutSettings:
    # who answers the RCPT probe: an [[mx]] host or smtp://HOST:PORT; default: the
    # backup's forward_to, else the first primary
    target: str | None = None
    timeout: Duration = 10.0
    positive_ttl: Duration = 7 * 86400.0
    negative_ttl: Duration = 3600.0


@dataclass(frozen=True)
class WalkSettings:
    window: Duration = 600.0  # how far back a client's earlier contacts count
    blocklist_ttl: Duration = 86400.0
    health_window: Duration = 60.0  # a lower MX counts as healthy if it answered this recently
    backup_action: Literal["tempfail", "greylist"] = "tempfail"
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class BlocklistSettings:
    action: Literal["reject", "tempfail"] = "reject"
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class PolicydSettings:
    listen: str = "127.0.0.1:10023"  # "IP:PORT" or a UNIX socket path
    role: Role | None = None  # fixed role; default: matched from server_address/server_port
    on_state_error: Literal["default", "tempfail", "dunno"] = "default"
    prepend_header: bool = False  # PREPEND X-Greylist: ... after a greylist pass
    workers: int = 1  # processes answering behind the one socket; 0: one per CPU


@dataclass(frozen=True)
class MetricsSettings:
    listen: str | None = None  # "127.0.0.1:9325" serves Prometheus metrics
    control_socket: str | None = None  # a UNIX socket for `mxguard top`


@dataclass(frozen=True)
class Config:
    domain: tuple[DomainSettings, ...]
    mx: tuple[MxSettings, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    state: StateSettings = field(default_factory=StateSettings)
    log: LogSettings = field(default_factory=LogSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    early_talker: EarlyTalkerSettings = field(default_factory=EarlyTalkerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    greylist: GreylistSettings = field(default_factory=GreylistSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    callout: CalloutSettings = field(default_factory=CalloutSettings)
    walk: WalkSettings = field(default_factory=WalkSettings)
    blocklist: BlocklistSettings = field(default_factory=BlocklistSettings)
    policyd: PolicydSettings = field(default_factory=PolicydSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    #: where the config came from ("<built-in default>" or a path); not a TOML key
    source: str = field(default="<built-in default>", metadata={"internal": True})

    def mx_by_role(self, role: Role) -> list[MxSettings]:
        return [m for m in self.mx if m.role is role]

    def mx_by_host(self, host: str) -> MxSettings | None:
        host = host.lower().rstrip(".")
        return next((m for m in self.mx if m.host.lower().rstrip(".") == host), None)

    def listeners(self) -> list[MxSettings]:
        return [m for m in self.mx if m.listen and m.role is not Role.FAKE]

    def local_domains(self) -> list[str]:
        return [d.name for d in self.domain]


# ---------------------------------------------------------------- value parsing

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]i?[bB]?|[bB])?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from 30, "30s", "5m", "2d"; ValueError names the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 2h or 2d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration like 30s, 5m, 2h or 2d, got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from 1048576, "512k", "10M", "1G"."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512k, 10M or 1G")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "").lower()[:1]
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"expected a size like 512k, 10M or 1G, got {value!r}")


def parse_hostport(value: str, default_port: int = 25) -> tuple[str, int]:
    """Split "127.0.0.1:2525", "[::1]:2525" or "host" into (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed '[' in {value!r}")
        port_s = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected [IPv6]:PORT, got {value!r}")
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif ":" in value:
        raise ValueError(f"write an IPv6 address with a port as [ADDR]:PORT, got {value!r}")
    else:
        host, port_s = value, ""
    if not host:
        raise ValueError(f"no host in {value!r}")
    if not port_s:
        return host, default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bad port {port_s!r} in {value!r}")
    return host, int(port_s)


def _parse_network(value: str) -> None:
    ipaddress.ip_network(value, strict=False)


# ---------------------------------------------------------------- the generic loader


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        marker = get_args(tp)[1]
        return {DURATION: "a duration (30s, 5m, 2d)", SIZE: "a size (512k, 10M)"}[marker]
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if isinstance(tp, type) and issubclass(tp, Role):
        return "one of " + ", ".join(r.value for r in Role)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, file: str, key: str) -> Any:
    origin = get_origin(tp)
    try:
        if origin is Annotated:
            marker = get_args(tp)[1]
            return parse_duration(value) if marker == DURATION else parse_size(value)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            return _convert(value, args[0], file, key)
        if origin is Literal:
            if value not in get_args(tp):
                raise ValueError(f"must be {_type_name(tp)}, got {value!r}")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise ValueError(f"must be {_type_name(tp)}")
            inner = get_args(tp)[0]
            return tuple(_convert(v, inner, file, f"{key}[{i}]") for i, v in enumerate(value))
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ValueError("must be a table")
            return _load_section(tp, value, file, key)
        if isinstance(tp, type) and issubclass(tp, Role):
            try:
                return Role(value)
            except ValueError:
                raise ValueError(f"must be {_type_name(tp)}, got {value!r}") from None
        if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if tp in (str, int, bool) and type(value) is tp:
            return value
        raise ValueError(f"must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(file, key, str(exc)) from None


def _load_section(cls: Any, data: dict[str, Any], file: str, prefix: str) -> Any:
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, key, f"unknown key (known keys here: {known})")
        kwargs[name] = _convert(value, hints[name], file, key)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(file, key, "missing (this key is required)")
    return cls(**kwargs)


# ---------------------------------------------------------------- semantic checks


def _validate(cfg: Config, file: str) -> None:
    if not cfg.domain:
        raise ConfigError(file, "domain", "at least one [[domain]] is needed")
    if not cfg.mx:
        raise ConfigError(file, "mx", "at least one [[mx]] is needed")
    seen_domains: set[str] = set()
    for i, d in enumerate(cfg.domain):
        name = d.name.lower().rstrip(".")
        if not name or "@" in name or " " in name:
            raise ConfigError(file, f"domain[{i}].name", f"not a domain name: {d.name!r}")
        if name in seen_domains:
            raise ConfigError(file, f"domain[{i}].name", f"{d.name} is listed twice")
        seen_domains.add(name)
        for j, r in enumerate(d.recipients):
            if "@" not in r:
                raise ConfigError(
                    file, f"domain[{i}].recipients[{j}]", f"{r!r} is not an address (local@domain)"
                )
            if r.rsplit("@", 1)[1].lower() != name:
                raise ConfigError(
                    file, f"domain[{i}].recipients[{j}]", f"{r!r} is not in domain {d.name}"
                )
    hosts: set[str] = set()
    binds: dict[tuple[str, int], str] = {}
    for i, m in enumerate(cfg.mx):
        key = f"mx[{i}]"
        if m.host.lower() in hosts:
            raise ConfigError(file, f"{key}.host", f"{m.host} is listed twice")
        hosts.add(m.host.lower())
        if m.role is Role.FAKE:
            if m.listen:
                raise ConfigError(
                    file,
                    f"{key}.listen",
                    "a fake (nolisting) MX is never listened on; remove listen",
                )
            if m.address is None:
                raise ConfigError(
                    file,
                    f"{key}.address",
                    "a fake MX needs the address it publishes (which refuses)",
                )
        elif m.role is not Role.RETIRED and m.preference is None:
            raise ConfigError(file, f"{key}.preference", f"a {m.role} MX needs a preference")
        if m.role is Role.RETIRED and m.preference is not None:
            raise ConfigError(
                file, f"{key}.preference", "a retired address is not in DNS; remove its preference"
            )
        if m.preference is not None and not 0 <= m.preference <= 65535:
            raise ConfigError(file, f"{key}.preference", "must be between 0 and 65535")
        for attr in ("listen", "address"):
            value = getattr(m, attr)
            if value is None:
                continue
            try:
                host, port = parse_hostport(value)
                if attr == "address":
                    ipaddress.ip_address(host)
            except ValueError as exc:
                raise ConfigError(file, f"{key}.{attr}", str(exc)) from None
            if attr == "listen" and port != 0:  # port 0: any free port (tests)
                if (host, port) in binds:
                    raise ConfigError(
                        file, f"{key}.listen", f"{value} is also the listen of {binds[host, port]}"
                    )
                binds[host, port] = m.host
        for j, extra in enumerate(m.addresses):
            try:
                ipaddress.ip_address(extra)
            except ValueError:
                raise ConfigError(
                    file, f"{key}.addresses[{j}]", f"{extra!r} is not an IP address"
                ) from None
        if m.accept_risk and m.role is not Role.FAKE:
            raise ConfigError(file, f"{key}.accept_risk", "only a fake MX has a risk to accept")
        if m.forward_to is not None and m.role is not Role.BACKUP:
            raise ConfigError(file, f"{key}.forward_to", "only a backup forwards")
        if (m.tls_cert is None) != (m.tls_key is None):
            raise ConfigError(file, f"{key}.tls_cert", "tls_cert and tls_key go together")
    for section, keys in (("relay", ("networks", "trusted_peers")), ("access", ("allow", "deny"))):
        for k in keys:
            for j, net in enumerate(getattr(getattr(cfg, section), k)):
                try:
                    _parse_network(net)
                except ValueError:
                    raise ConfigError(
                        file, f"{section}.{k}[{j}]", f"{net!r} is not an IP network (CIDR)"
                    ) from None
    if (cfg.tls.cert is None) != (cfg.tls.key is None):
        raise ConfigError(file, "tls.cert", "tls.cert and tls.key go together")
    for j, spec in enumerate(cfg.dnsbl.sites):
        try:
            from mxguard.dns import parse_list_site

            parse_list_site(spec)
        except ValueError as exc:
            raise ConfigError(file, f"dnsbl.sites[{j}]", str(exc)) from None
    for j, ns in enumerate(cfg.dnsbl.nameservers):
        try:
            ipaddress.ip_address(parse_hostport(ns, 53)[0])
        except ValueError:
            raise ConfigError(
                file, f"dnsbl.nameservers[{j}]", f"{ns!r} is not IP or IP:PORT"
            ) from None
    _validate_target(cfg.delivery.target, file, "delivery.target")
    state_schemes = ("sqlite", "redis", "rediss", "unix", "redis+sentinel", "memory")
    if cfg.state.url.split(":", 1)[0] not in state_schemes:
        raise ConfigError(
            file,
            "state.url",
            "use sqlite:///PATH, redis://HOST:PORT/DB (also rediss://, unix://, "
            "redis+sentinel://) or memory://",
        )
    if cfg.limits.max_recipients < 1:
        raise ConfigError(file, "limits.max_recipients", "must be at least 1")
    for name in ("ipv4_prefix", "ipv6_prefix"):
        limit = 32 if name == "ipv4_prefix" else 128
        if not 0 < getattr(cfg.ratelimit, name) <= limit:
            raise ConfigError(file, f"ratelimit.{name}", f"must be between 1 and {limit}")
    if not 0 <= cfg.policyd.workers <= 64:
        raise ConfigError(
            file,
            "policyd.workers",
            f"must be between 0 (one per CPU) and 64, got {cfg.policyd.workers}",
        )


def _validate_target(target: str, file: str, key: str) -> None:
    if target == "discard" or target.startswith(("maildir:", "lmtp:unix:")):
        return
    for scheme in ("smtp://", "lmtp://"):
        if target.startswith(scheme):
            try:
                parse_hostport(target[len(scheme) :].rstrip("/"))
            except ValueError as exc:
                raise ConfigError(file, key, str(exc)) from None
            return
    raise ConfigError(
        file,
        key,
        f"{target!r}: use maildir:DIR, smtp://HOST:PORT, lmtp://HOST:PORT, lmtp:unix:/PATH or discard",
    )


# ---------------------------------------------------------------- entry points


def load_config_text(text: str, source: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    if "scenario" in data or "senders" in data:
        raise ConfigError(
            source,
            "scenario",
            "this is a simulate scenario, not an mxguard config: give it as "
            "`mxguard simulate SCENARIO.toml` (with the config, if any, after --config)",
        )
    cfg: Config = _load_section(Config, data, source, "")
    cfg = dataclasses.replace(cfg, source=source)
    _validate(cfg, source)
    return cfg


def load_config(path: str | Path | None) -> Config:
    """Load a config file, or the built-in default (a demo tier on loopback) when path is None."""
    if path is None:
        text = resources.files("mxguard").joinpath("defaults/mxguard.toml").read_text()
        return load_config_text(text, "<built-in default>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc}") from None
    return load_config_text(text, str(p))


def effective_toml(cfg: Config) -> str:
    """Render the effective config back to TOML (what `check-config` prints)."""
    lines: list[str] = []

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, Role):
            return f'"{v.value}"'
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, tuple):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    def emit(obj: Any) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if v is None or dataclasses.is_dataclass(v) or f.metadata.get("internal"):
                continue
            if isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
                continue
            lines.append(f"{f.name} = {fmt(v)}")

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.metadata.get("internal"):
            continue
        if isinstance(v, tuple):
            for item in v:
                lines.append(f"\n[[{f.name}]]")
                emit(item)
        elif dataclasses.is_dataclass(v):
            lines.append(f"\n[{f.name}]")
            emit(v)
    return "\n".join(lines).lstrip() + "\n"
