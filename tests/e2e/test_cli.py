"""The CLI as a user runs it: `mxguard serve` on the built-in default, `check-config`, `version`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MXGUARD = [sys.executable, "-m", "mxguard"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MXGUARD, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def default_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`mxguard serve` with no config, in an empty directory, as a new user starts it."""
    for port in (2525, 2526, 2527):
        if not port_free(port):
            pytest.fail(f"port {port} is busy; another mxguard is running on this machine")
    proc = subprocess.Popen(
        [*MXGUARD, "serve"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while port_free(2525):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    yield proc, tmp_path
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_default_serve_with_swaks(default_serve: tuple[subprocess.Popen[str], Path]) -> None:
    proc, cwd = default_serve

    def swaks(to: str) -> str:
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1:2525", "--to", to, "--from", "a@sender.test"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout

    assert "250 2.0.0 Ok: queued as" in swaks("alice@example.test")
    assert "<** 550 5.1.1" in swaks("nobody@example.test")
    assert "<** 554 5.7.1" in swaks("victim@elsewhere.invalid")
    delivered = list((cwd / "mxguard-data/maildir/example.test/alice/new").iterdir())
    assert len(delivered) == 1
    assert (cwd / "mxguard-data/state.db").exists()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "listening on 127.0.0.1:2525" in out
    # The event log is buffered; a clean stop writes every decision out.
    reasons = [json.loads(x)["reason"] for x in (cwd / "mxguard-data/events.jsonl").open()]
    assert {"delivered", "unknown_recipient", "relay_denied"} <= set(reasons)


def test_check_config_good_example() -> None:
    res = run("check-config", "-c", str(ROOT / "examples/mxguard.toml"))
    assert res.returncode == 0, res.stderr
    assert "[[mx]]" in res.stdout and 'name = "example.test"' in res.stdout


BAD = [
    (
        "[[domain]]\nname = 'x.test'\nrecipients=['a@x.test']\n[[mx]]\nhost='m'\npreference=10\n"
        "role='secondary'\nlisten='127.0.0.1:2600'\n",
        "mx[0].role: must be one of",
    ),
    ("[[domain]]\nname = 'x.test'\nrecipient=['a@x.test']\n", "domain[0].recipient: unknown key"),
    (
        "[[domain]]\nname = 'x.test'\nrecipients='a@x.test'\n",
        "domain[0].recipients: must be a list",
    ),
    (
        "[[domain]]\nname = 'x.test'\nrecipients_file='/nonexistent/r.txt'\n[[mx]]\nhost='m'\n"
        "preference=10\nrole='primary'\nlisten='127.0.0.1:2600'\n",
        "domain[0].recipients_file: cannot read /nonexistent/r.txt",
    ),
    ("[limits]\nmax_message_size = 'huge'\n", "limits.max_message_size: expected a size"),
    (
        "[[domain]]\nname = 'x.test'\n[[mx]]\nhost='m'\npreference=10\nrole='primary'\n"
        "listen='127.0.0.1:99999'\n",
        "mx[0].listen: bad port",
    ),
    ("not toml = = =", "not valid TOML"),
    ("[scenario]\nseed = 3\n", "scenario: this is a simulate scenario, not an mxguard config"),
    # a value that looks like terminal markup is quoted as written, never interpreted
    *(
        (
            f"[[domain]]\nname = 'x.test'\nrecipients=['{value}']\n[[mx]]\nhost='m'\n"
            "preference=10\nrole='primary'\nlisten='127.0.0.1:2600'\n",
            f"'{value}' is not an address",
        )
        for value in ("[/b]", "[red]x")
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_check_config_bad_files_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = run("check-config", "-c", str(path))
    assert res.returncode == 2
    assert message in res.stderr
    assert str(path) in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_serve_bind_failure_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            "[[domain]]\nname='x.test'\nrecipients=['a@x.test']\n"
            f"[state]\nurl='sqlite:///{tmp_path}/s.db'\n[log]\nevents='{tmp_path}/e.jsonl'\n"
            f"[[mx]]\nhost='m.x.test'\npreference=10\nrole='primary'\nlisten='127.0.0.1:{port}'\n"
        )
        res = run("serve", "-c", str(cfg))
    assert res.returncode == 2
    assert f"{cfg}: mx[0].listen: cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_version_and_help() -> None:
    assert run("version").stdout.startswith("mxguard ")
    res = run("--help")
    assert res.returncode == 0 and "serve" in res.stdout and "check-config" in res.stdout
    assert run("bogus").returncode == 2


def test_missing_config_file() -> None:
    res = run("serve", "-c", "/nonexistent/mxguard.toml")
    assert res.returncode == 2 and "/nonexistent/mxguard.toml: no such file" in res.stderr


def test_environment_variable_names_the_config(tmp_path: Path) -> None:
    env = dict(os.environ, MXGUARD_CONFIG=str(ROOT / "examples/mxguard.toml"))
    res = subprocess.run(
        [*MXGUARD, "check-config", "-q"], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0 and res.stdout == ""
