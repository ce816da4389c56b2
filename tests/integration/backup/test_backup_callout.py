"""`recipients_source = "callout"`: a backup that holds no user list asks a live primary.

Two real processes, as in a real deployment where the backup runs elsewhere: a primary that
knows the users, and a backup whose domain has no list and asks the primary at RCPT.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

from tests.helpers.servers import MxguardProcess, TierPorts, free_port, tier_config

MXGUARD = str(Path(sys.executable).with_name("mxguard"))


def rcpt(port: int, address: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("mta.sender.test")
        s.mail("a@sender.test")
        code, text = s.rcpt(address)
        return code, text.decode()


def test_callout_live_primary_then_primary_down(tmp_path: Path) -> None:
    ports = TierPorts.pick()
    primary = MxguardProcess(
        tmp_path / "primary", tier_config(tmp_path / "primary", ports, backup=False)
    ).start()
    backup_cfg = tier_config(
        tmp_path / "backup",
        TierPorts(free_port(), ports.backup),
        primary=False,
        forward_to=f"smtp://127.0.0.1:{ports.primary}",
        recipients_source="callout",
        recipients=(),
        extra='\n[callout]\ntimeout = "3s"\npositive_ttl = "1h"\nnegative_ttl = "1h"\n',
    )
    backup = MxguardProcess(tmp_path / "backup", backup_cfg).start()
    try:
        assert rcpt(ports.backup, "alice@example.test")[0] == 250
        code, text = rcpt(ports.backup, "nobody@example.test")
        assert (code, text.split()[0]) == (550, "5.1.1")
        assert rcpt(ports.backup, "victim@other.test")[0] == 554  # relay control, no callout
        primary.stop()  # (the event log is complete once the process has stopped)
        # the probes were null-sender RCPTs without DATA, from the backup's source address
        events = (tmp_path / "primary" / "events.jsonl").read_text()
        assert '"client":"127.0.0.2"' in events and '"sender":""' in events
        assert '"stage":"eom"' not in events
        # primary down: cached answers still hold, an unknown address is tempfailed
        assert rcpt(ports.backup, "alice@example.test")[0] == 250
        assert rcpt(ports.backup, "nobody@example.test")[0] == 550
        code, text = rcpt(ports.backup, "carol@example.test")
        assert (code, text.split()[0]) == (451, "4.4.3")
    finally:
        backup.stop()
        primary.stop()


def test_accept_all_is_warned_at_start_and_by_check_config(tmp_path: Path) -> None:
    ports = TierPorts.pick()
    cfg = tier_config(tmp_path, ports, recipients_source="accept-all")
    proc = MxguardProcess(tmp_path, cfg).start()
    try:
        assert rcpt(ports.backup, "anyone@example.test")[0] == 250
    finally:
        proc.stop()
    assert "accept-all" in proc.output() and "backscatter" in proc.output()
    checked = subprocess.run(
        [MXGUARD, "check-config", "-q", "-c", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0 and "accept-all" in checked.stderr


def test_callout_to_own_primary_in_one_process_is_a_config_error(tmp_path: Path) -> None:
    cfg = tier_config(tmp_path, TierPorts.pick(), recipients_source="callout")
    proc = MxguardProcess(tmp_path, cfg)
    try:
        proc.start(timeout=10)
        raise AssertionError("serve should have refused this config")
    except RuntimeError as exc:
        assert "callout.target" in str(exc)
