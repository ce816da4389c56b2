"""Whether the mypyc-compiled modules still match their sources, and running the sources if not.

Why: an editable install builds the extensions next to the .py files, and Python imports an
extension before a source of the same name, so an edited module would silently keep running
its old compiled code. The build (setup.py) records each compiled source's digest in
`compiled.json`; when any source differs, every compiled module is imported from its source
instead. All or none: compiled modules call each other natively, so one module run from
source beside stale compiled neighbours would still run stale code.

`MXGUARD_SOURCE=1` runs the sources on purpose (to compare, or to debug with pdb).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the package
MARKER = Path(__file__).resolve().with_name("compiled.json")

Status = Literal["compiled", "source", "stale"]


class SourceFirst:
    """A meta path finder that loads the named modules from their .py files under `root`."""

    def __init__(self, root: Path, names: frozenset[str]) -> None:
        self.root = root
        self.names = names

    def find_spec(
        self, name: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(
            name, self.root / f"{name.replace('.', '/')}.py"
        )


def stale_sources(root: Path, recorded: dict[str, str]) -> list[str]:
    """The recorded sources (paths under `root`) whose digest is not the recorded one, or
    whose extension is gone (a build that stopped half way)."""
    suffix = EXTENSION_SUFFIXES[0]
    stale = []
    for rel, want in recorded.items():
        source = root / rel
        try:
            have = hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            have = ""
        if have != want or not source.with_suffix(suffix).exists():
            stale.append(rel)
    return stale


def check(root: Path = ROOT, marker: Path = MARKER) -> Status:
    """Called once from the package's __init__, before any compiled module is imported."""
    try:
        recorded: dict[str, str] = json.loads(marker.read_text())
    except (OSError, ValueError):
        return "source"  # a pure build (MXGUARD_PURE=1) or a source tree never built
    wanted = os.environ.get("MXGUARD_SOURCE", "") not in ("", "0")
    stale = [] if wanted else stale_sources(root, recorded)
    if not (wanted or stale):
        return "compiled"
    names = frozenset(rel.removesuffix(".py").replace("/", ".") for rel in recorded)
    sys.meta_path.insert(0, SourceFirst(root, names))
    if wanted:
        return "source"
    more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
    sys.stderr.write(
        f"mxguard: warning: {stale[0]}{more} changed since the compiled modules were built (or lost its build);"
        " running them from source (slower). `make compile` builds them again.\n"
    )
    return "stale"


STATUS: Status = check()
