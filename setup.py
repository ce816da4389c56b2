"""Build mxguard with its hottest modules compiled by mypyc.

Why: the simulator and the policy path spend their time in many small, typed Python calls,
and a flat profile leaves nothing big to rewrite. mypyc turns the modules in COMPILED into C
extensions (about 1.3x on `bench/simulate`) while the .py files stay the one source: the
package works the same without them. `MXGUARD_PURE=1` skips compiling, and a machine without
a C compiler or Python's headers gets the pure package too (`mxguard version` says which).

Next to the extensions the build writes `mxguard/compiled.json`: the digest of every compiled
source as mypyc read it, and the name of the shared library. `mxguard/compiled.py` checks it
at import and runs the sources instead of extensions that no longer match them (an edited
file in an editable install).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

SRC = Path(__file__).resolve().parent / "src"
#: the setup commands that build: the others (metadata, requirements) need no extensions
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}
#: the commands of an editable install, which builds (or drops builds) in the source tree
EDITABLE = {"editable_wheel", "develop"}
#: what the extensions are built from, read before mypyc reads the sources
RECORD: dict[str, object] = {}

# The modules on the simulator's and the policy's hot paths. What a module must be to go on
# the list is in docs/design.md ("Compiled modules"): typed as it really is at run time, no
# `type(x) is float` on a float-typed value, no class that interpreted code subclasses.
COMPILED = [
    "mxguard/memo.py",
    "mxguard/policy/address.py",
    "mxguard/policy/build.py",
    "mxguard/policy/engine.py",
    "mxguard/policy/networks.py",
    "mxguard/policy/checks/access.py",
    "mxguard/policy/checks/blocklist.py",
    "mxguard/policy/checks/earlytalk.py",
    "mxguard/policy/checks/greylist.py",
    "mxguard/policy/checks/ratelimit.py",
    "mxguard/policy/checks/recipients.py",
    "mxguard/policy/checks/relay.py",
    "mxguard/policy/checks/walk.py",
    "mxguard/recipients.py",
    "mxguard/sim/backup.py",
    "mxguard/sim/decisions.py",
    "mxguard/sim/liveness.py",
    "mxguard/sim/model.py",
    "mxguard/sim/run.py",
    "mxguard/sim/senders.py",
    "mxguard/sim/tier.py",
    "mxguard/walk/blocklist.py",
    "mxguard/walk/feature.py",
    "mxguard/walk/health.py",
    "mxguard/walk/ledger.py",
    "mxguard/walk/sightings.py",
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forget_builds(root: Path) -> None:
    """Drop the extensions and the digests an earlier build left under `root`."""
    (root / "mxguard" / "compiled.json").unlink(missing_ok=True)
    for old in [*root.glob("*__mypyc*.so"), *(root / "mxguard").rglob("*.so")]:
        old.unlink()


class OptionalBuildExt(build_ext):
    """Compile if this machine can, then record what was compiled; if it cannot, install the
    pure package and say so.

    An editable install builds in place, in the source tree; a wheel builds into its own
    directory and leaves the source tree (and any editable build in it) alone.
    """

    def run(self) -> None:
        target = SRC if self.inplace else Path(self.build_lib)
        # what an earlier build left (a module since taken off the list would still import)
        forget_builds(target)
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python.h, out of memory: never fatal
            sys.stderr.write(
                f"mxguard: compiling the hot modules failed ({exc}); installing them as pure"
                " Python, which works the same, slower. Install gcc and the Python headers"
                " (Debian: gcc python3-dev) and reinstall to compile them.\n"
            )
            forget_builds(target)
            return
        if RECORD:
            marker = target / "mxguard" / "compiled.json"
            partial = marker.with_suffix(".json.part")
            partial.write_text(json.dumps(RECORD, indent=1) + "\n")
            partial.replace(marker)  # a reader never sees half of it


def compiled_extensions() -> list[Any]:
    if os.environ.get("MXGUARD_PURE"):
        if EDITABLE.intersection(sys.argv[1:]):  # its old extensions would shadow the sources
            forget_builds(SRC)
        return []
    if not BUILDING.intersection(sys.argv[1:]):
        return []
    sources = {m: digest(SRC / m) for m in COMPILED}  # before mypyc reads them
    # The build environment has none of the runtime dependencies: their modules type as Any
    # here (mypyc treats them as plain Python objects anyway); `make lint` is the strict check.
    options = ["--config-file=", "--python-version=3.11", "--ignore-missing-imports"]
    try:
        from mypyc.build import mypycify

        extensions: list[Any] = mypycify(
            options + [f"src/{m}" for m in COMPILED], opt_level="3", debug_level="0"
        )
    except (Exception, SystemExit) as exc:  # mypy missing, or a type error it stops on
        sys.stderr.write(f"mxguard: mypyc could not compile ({exc!r}); installing pure Python\n")
        return []
    shared = [e.name for e in extensions if e.name.endswith("__mypyc")]
    RECORD.update(sources=sources, shared=shared)
    return extensions


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
