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
SUFFIX = EXTENSION_SUFFIXES[0]  # what this interpreter's extensions end with

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
    stale = []
    for rel, want in recorded.items():
        source = root / rel
        try:
            have = hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            have = ""
        if have != want or not source.with_suffix(SUFFIX).exists():
            stale.append(rel)
    return stale


def unrecorded_builds(root: Path) -> list[str]:
    """Sources with an extension beside them, for a tree whose record is missing (a build
    that stopped, or a checkout of a commit from before the build)."""
    return sorted(
        str(so.relative_to(root)).removesuffix(SUFFIX) + ".py"
        for so in (root / "mxguard").rglob(f"*{SUFFIX}")
        if so.with_name(so.name.removesuffix(SUFFIX) + ".py").exists()
    )


def check(root: Path = ROOT, marker: Path = MARKER) -> Status:
    """Called once from the package's __init__, before any compiled module is imported."""
    try:
        record = json.loads(marker.read_text())
        recorded: dict[str, str] = record["sources"]
        shared: list[str] = record["shared"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded, shared = {}, []
    if not recorded:
        stray = unrecorded_builds(root)
        if not stray:
            return "source"  # a pure build (MXGUARD_PURE=1, no compiler) or never built
        return run_sources(
            root, stray, stray, ": compiled, but the record of that build is missing"
        )
    if os.environ.get("MXGUARD_SOURCE", "") not in ("", "0"):
        run_sources(root, list(recorded), [], "")
        return "source"
    stale = stale_sources(root, recorded)
    stale += [f"{lib}{SUFFIX}" for lib in shared if not (root / f"{lib}{SUFFIX}").exists()]
    if not stale:
        return "compiled"
    return run_sources(root, list(recorded), stale, "changed since the compiled modules were built")


def run_sources(root: Path, modules: list[str], why: list[str], what: str) -> Status:
    """Import `modules` (paths of sources) from source; say why when there is a reason."""
    names = frozenset(rel.removesuffix(".py").replace("/", ".") for rel in modules)
    sys.meta_path.insert(0, SourceFirst(root, names))
    if not why:
        return "source"
    more = f" and {len(why) - 1} more" if len(why) > 1 else ""
    sys.stderr.write(
        f"mxguard: warning: {why[0]}{more}{'' if what.startswith(':') else ' '}{what}; running the compiled modules from source"
        " (slower). `make compile` builds them again.\n"
    )
    return "stale"


STATUS: Status = check()
