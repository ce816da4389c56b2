"""`mxguard top` against a running `mxguard serve`, driven through tmux like a person would.

The scripted load is bounded and known, so the test reads the exact numbers off the screen:
per listener accepted / tempfailed / rejected, the refused networks, the queue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mxguard.ops.client import Source
from tests.helpers.opstier import LOAD, OpsPorts, ops_config, scripted_load, settled
from tests.helpers.servers import MXGUARD, MxguardProcess, wait_for
from tests.helpers.smtpload import send_one

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]


class Tmux:
    """A tmux server of our own (its own socket), so the test never touches anyone else's."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {args}: {done.stderr}")
        return done.stdout

    def screen(self) -> str:
        """The pane, once a whole frame is on it (a capture can land mid-redraw)."""
        text = ""
        for _ in range(50):
            text = self("capture-pane", "-p", "-t", "top")
            if "DNSBL errors" in text and "trap.example.test" in text:
                break
            time.sleep(0.1)
        return text

    def alive(self) -> bool:
        return (
            subprocess.run([*self.base, "has-session", "-t", "top"], capture_output=True).returncode
            == 0
        )

    def kill(self) -> None:
        self("kill-server", check=False)


def row(screen: str, mx: str) -> list[str]:
    """The cells of the listener table's row for `mx`."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if mx in cells:
            return [c for c in cells if c]
    raise AssertionError(f"no row for {mx} in:\n{screen}")


def test_top_shows_the_numbers_of_a_scripted_load(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    tmux = Tmux(f"mxguard-test-{os.getpid()}")
    with MxguardProcess(tmp_path, ops_config(tmp_path, ports)) as mx:
        scripted_load(ports)
        settled(Source(url=ports.metrics_url), tmp_path)
        # the pane's size, not whatever COLUMNS/LINES the test runner exported
        env = f"PATH={Path(MXGUARD).parent}:{os.environ.get('PATH', '')}"
        try:
            tmux(
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "200",
                "-y",
                "60",
                f"env -u COLUMNS -u LINES {env} {MXGUARD} top -c {mx.config_path}",
            )
            assert wait_for(lambda: "trap.example.test" in tmux.screen(), 15), tmux.screen()
            screen = tmux.screen()
            # MX, role, listen, conns, sess/min, accepted, tempfailed, rejected
            primary = row(screen, "mail.example.test")
            assert primary[1] == "primary"
            # six from the client, four forwarded by the backup; three unknown users
            assert primary[5:] == [
                str(LOAD["accepted"] + LOAD["backup"]),
                "0",
                str(LOAD["unknown"]),
            ]
            assert row(screen, "backup.example.test")[5:] == [str(LOAD["backup"]), "0", "0"]
            assert row(screen, "trap.example.test")[5:] == ["0", str(LOAD["trap"]), "0"]
            assert "127.9.9.0/24" in screen and "127.1.2.0/24" in screen
            assert "unknown_recipient" in screen
            # it refreshes: one more refusal shows up within a few seconds
            assert send_one("127.0.0.3", ports.trap, "bob@example.test", "late")[0] == 451
            assert wait_for(
                lambda: row(tmux.screen(), "trap.example.test")[6] == str(LOAD["trap"] + 1), 5
            ), tmux.screen()
            tmux("send-keys", "-t", "top", "q")
            assert wait_for(lambda: not tmux.alive(), 5), "q did not quit"
        finally:
            tmux.kill()


def test_top_once_prints_one_frame(tmp_path: Path) -> None:
    ports = OpsPorts.pick()
    with MxguardProcess(tmp_path, ops_config(tmp_path, ports)) as mx:
        scripted_load(ports)
        settled(Source(url=ports.metrics_url), tmp_path)
        started = time.monotonic()
        for how in (["-c", str(mx.config_path)], ["--url", ports.metrics_url]):
            out = subprocess.run(
                [MXGUARD, "top", "--once", *how], capture_output=True, text=True, timeout=20
            )
            assert out.returncode == 0, out.stderr
            assert row(out.stdout, "trap.example.test")[5:] == ["0", str(LOAD["trap"]), "0"]
            assert "backup queues" in out.stdout
        assert time.monotonic() - started < 15
    for once in (["--once"], []):  # into a pipe, even without --once: one frame or one error
        gone = subprocess.run(
            [MXGUARD, "top", *once, "--url", ports.metrics_url],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert gone.returncode == 1
        assert "cannot read" in gone.stderr
    bare = subprocess.run([MXGUARD, "top"], capture_output=True, text=True, timeout=20)
    assert bare.returncode == 2
    assert "[metrics] has no listen or control_socket; set [metrics] listen" in bare.stderr
