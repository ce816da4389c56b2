"""The mypyc-compiled build: it is what runs, it gives the sources' results, and an edited
source is never shadowed by its stale extension (src/mxguard/compiled.py).

Each case runs Python in a subprocess, so that the import machinery it changes stays there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mxguard
from mxguard import compiled

PURE = os.environ.get("MXGUARD_PURE", "") not in ("", "0")
#: this test run itself runs the sources (`make test` runs the unit tests so too)
SOURCE = os.environ.get("MXGUARD_SOURCE", "") not in ("", "0")
PROBE = (
    "import mxguard, mxguard.sim.tier as t, mxguard.policy.engine as e;"
    "print(mxguard.COMPILED, Path(t.__file__).suffix, Path(e.__file__).suffix)"
)


def python(code: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MXGUARD_SOURCE"} | env
    if path is not None:
        environ["PYTHONPATH"] = str(path)
    return subprocess.run(
        [sys.executable, "-c", f"from pathlib import Path; {code}"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_the_installed_build_is_compiled_unless_asked_not_to_be() -> None:
    assert ("source" if PURE or SOURCE else "compiled") == mxguard.COMPILED
    out = python(PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["source", ".py", ".py"] if PURE else ["compiled", ".so", ".so"])
    assert out.stderr == ""


def test_version_says_how_the_hot_modules_run() -> None:
    version = "from mxguard.cli import main; main(['version'])"
    assert python(version).stdout.strip().endswith("(source)" if PURE else "(compiled)")
    assert python(version, MXGUARD_SOURCE="1").stdout.strip().endswith("(source)")


def test_mxguard_source_runs_the_sources() -> None:
    out = python(PROBE, MXGUARD_SOURCE="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["source", ".py", ".py"]
    assert out.stderr == ""


def test_the_compiled_simulator_gives_the_sources_numbers() -> None:
    run = "from mxguard.cli import main; main(['simulate', '--seed', '5', '--format', 'json'])"
    compiled_run, source_run = python(run), python(run, MXGUARD_SOURCE="1")
    assert compiled_run.returncode == 0 and source_run.returncode == 0, source_run.stderr
    assert json.loads(compiled_run.stdout)["layouts"][0]["contacts"] > 10_000  # a real run
    assert compiled_run.stdout == source_run.stdout


def copy_of_the_package(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(compiled.ROOT / "mxguard", root / "mxguard")
    for lib in compiled.ROOT.glob("*__mypyc*"):  # the shared library of a compiled build
        shutil.copy2(lib, root / lib.name)
    return root


def test_an_edited_source_runs_instead_of_its_stale_build(tmp_path: Path) -> None:
    root = copy_of_the_package(tmp_path)
    as_built = python(PROBE, root)
    assert as_built.returncode == 0, as_built.stderr
    assert as_built.stdout.split()[0] == ("source" if PURE else "compiled")
    if PURE:
        assert not (root / "mxguard" / "compiled.json").exists()
        return
    tier = root / "mxguard" / "sim" / "tier.py"
    tier.write_text(tier.read_text() + "\nEDITED = True\n")
    edited = python(PROBE + "; print(t.EDITED)", root)
    assert edited.returncode == 0, edited.stderr
    # every compiled module runs from source, not only the edited one
    assert edited.stdout.split() == ["stale", ".py", ".py", "True"]
    assert "mxguard/sim/tier.py changed since the compiled modules were built" in edited.stderr


def test_a_build_without_its_record_or_its_library_runs_the_sources(tmp_path: Path) -> None:
    root = copy_of_the_package(tmp_path)
    if PURE:
        assert python(PROBE, root).stdout.split()[0] == "source"
        return
    record = json.loads((root / "mxguard" / "compiled.json").read_text())
    (shared,) = record["shared"]
    (root / f"{shared}{compiled.SUFFIX}").rename(tmp_path / "aside")
    no_library = python(PROBE, root)
    assert no_library.stdout.split() == ["stale", ".py", ".py"], no_library.stderr
    assert f"{shared}{compiled.SUFFIX} changed since" in no_library.stderr
    (tmp_path / "aside").rename(root / f"{shared}{compiled.SUFFIX}")
    (root / "mxguard" / "compiled.json").unlink()  # as a checkout from before the build
    no_record = python(PROBE, root)
    assert no_record.stdout.split() == ["stale", ".py", ".py"], no_record.stderr
    assert "compiled, but the record of that build is missing" in no_record.stderr


def test_stale_sources_names_each_changed_missing_or_unbuilt_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(f"{name.upper()} = 1\n")
        (tmp_path / f"{name}{compiled.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    recorded = {rel: compiled.hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
                for rel in ("a.py", "b.py")}  # fmt: skip
    assert compiled.stale_sources(tmp_path, recorded) == []
    (tmp_path / "b.py").write_text("B = 2\n")
    assert compiled.stale_sources(tmp_path, recorded) == ["b.py"]
    (tmp_path / "b.py").write_text("B = 1\n")
    (tmp_path / f"b{compiled.EXTENSION_SUFFIXES[0]}").unlink()
    assert compiled.stale_sources(tmp_path, recorded) == ["b.py"]
    (tmp_path / "a.py").unlink()
    assert compiled.stale_sources(tmp_path, recorded) == ["a.py", "b.py"]
