"""Build mxguard with its hottest modules compiled by mypyc.

Why: the simulator and the policy path spend their time in many small, typed Python calls,
and a flat profile leaves nothing big to rewrite. mypyc turns the modules in COMPILED into C
extensions (about 1.35x on `bench/simulate`) while the .py files stay the one source: the
package works the same without them. `MXGUARD_PURE=1` skips compiling (no C compiler needed).

Next to the extensions the build writes `mxguard/compiled.json`, the digest of every compiled
source: `mxguard/compiled.py` checks it at import and runs the sources instead of extensions
that no longer match them (an edited file in an editable install).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from setuptools import setup

SRC = Path(__file__).resolve().parent / "src"

# The modules on the simulator's and the policy's hot paths. Each must compile under mypyc:
# no __slots__, no subclass of a builtin other than Exception, no class that interpreted
# code subclasses or that slotinit refills (the frozen records stay interpreted).
COMPILED = [
    "mxguard/policy/address.py",
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
    "mxguard/sim/backup.py",
    "mxguard/sim/decisions.py",
    "mxguard/sim/liveness.py",
    "mxguard/sim/run.py",
    "mxguard/sim/senders.py",
    "mxguard/sim/tier.py",
    "mxguard/walk/feature.py",
    "mxguard/walk/health.py",
    "mxguard/walk/ledger.py",
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_extensions() -> list[object]:
    marker = SRC / "mxguard" / "compiled.json"
    # An editable install builds in place: drop what an earlier build left, or a module taken
    # off the list (or every module, with MXGUARD_PURE) would still import as its old build.
    for old in [*SRC.glob("*__mypyc*.so"), *(SRC / "mxguard").rglob("*.so")]:
        old.unlink()
    if os.environ.get("MXGUARD_PURE"):
        marker.unlink(missing_ok=True)
        return []
    from mypyc.build import mypycify

    # The build environment has none of the runtime dependencies: their modules type as Any
    # here (mypyc treats them as plain Python objects anyway); `make lint` is the strict check.
    options = ["--config-file=", "--python-version=3.11", "--ignore-missing-imports"]
    sources = [f"src/{m}" for m in COMPILED]
    extensions: list[object] = mypycify(options + sources, opt_level="3", debug_level="0")
    marker.write_text(json.dumps({m: digest(SRC / m) for m in COMPILED}, indent=1) + "\n")
    return extensions


setup(ext_modules=compiled_extensions())
