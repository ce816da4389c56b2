"""Who our recipients are, per domain, from the config's lists and files.

Files are re-read when their mtime changes (a background task calls `refresh()`) and on
SIGHUP, so an administrator can add a user without restarting. A file that became unreadable
keeps the last good table in force and is reported, because refusing every recipient for a
typo would bounce real mail.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from mxguard.config import ConfigError, DomainSettings

log = logging.getLogger("mxguard.recipients")


@dataclass
class DomainTable:
    name: str
    case_sensitive: bool
    source: str  # table | callout | accept-all
    locals: set[str] = field(default_factory=set)
    catch_all: bool = False

    def knows(self, local: str) -> bool:
        if self.catch_all or self.source == "accept-all":
            return True
        return (local if self.case_sensitive else local.lower()) in self.locals


def _read_file(path: Path, domain: str, config_file: str, key: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # a relative path is read from the current directory, not the config's: say so
        where = f"{path} ({path.absolute()})" if not path.is_absolute() else str(path)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(config_file, key, f"cannot read {where}: {why}") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "@" not in line:
            raise ConfigError(
                config_file, key, f"{path} line {n}: {line!r} is not an address or @domain"
            )
        if line.rsplit("@", 1)[1].lower().rstrip(".") != domain:
            raise ConfigError(config_file, key, f"{path} line {n}: {line!r} is not in {domain}")
        out.append(line)
    return out


class RecipientDirectory:
    def __init__(self, domains: tuple[DomainSettings, ...], config_file: str) -> None:
        self._settings = domains
        self._config_file = config_file
        self._mtimes: dict[Path, float] = {}
        self.tables: dict[str, DomainTable] = {}
        self.load()

    def _build(self, i: int, d: DomainSettings) -> DomainTable:
        name = d.name.lower().rstrip(".")
        table = DomainTable(name, d.case_sensitive_local_part, d.recipients_source)
        entries = list(d.recipients)
        if d.recipients_file:
            path = Path(d.recipients_file)
            entries += _read_file(path, name, self._config_file, f"domain[{i}].recipients_file")
            try:
                self._mtimes[path] = path.stat().st_mtime
            except OSError:
                pass
        for entry in entries:
            local = entry.rsplit("@", 1)[0]
            if local == "":
                table.catch_all = True
            else:
                table.locals.add(local if d.case_sensitive_local_part else local.lower())
        return table

    def load(self) -> None:
        """Build every table; raises ConfigError (the caller keeps the old tables then)."""
        tables = {t.name: t for t in (self._build(i, d) for i, d in enumerate(self._settings))}
        self.tables = tables

    def changed(self) -> bool:
        for path, mtime in self._mtimes.items():
            try:
                if os.stat(path).st_mtime != mtime:
                    return True
            except OSError:
                return True
        return False

    def refresh(self, force: bool = False) -> bool:
        """Re-read when a file changed; keep the old tables if the new ones are bad."""
        if not force and not self.changed():
            return False
        try:
            self.load()
        except ConfigError as exc:
            log.error("recipients not reloaded, the previous list stays in force: %s", exc)
            return False
        log.info("recipient tables reloaded (%d domains)", len(self.tables))
        return True

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(self.tables)

    def lookup(self, local: str, domain: str) -> bool | None:
        """True: known; False: unknown; None: ask the primary (callout)."""
        table = self.tables.get(domain)
        if table is None:
            return False
        if table.source == "callout" and not table.knows(local):
            return None
        return table.knows(local)
