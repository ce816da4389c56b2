"""A private, real Postfix for tests: its own config and queue under a temp dir, on loopback.

Nothing of the host's Postfix is touched: `config_directory` and `queue_directory` are ours,
master.cf is Debian's with chroot off and smtpd moved to 127.0.0.1 high ports, logs go to
`maillog` through postlogd (no syslog needed), and mail for the relay domain goes to a sink on
loopback over `[127.0.0.1]:PORT` with DNS off. It is started with `postfix -c DIR start` and
stopped by the PID in the queue's `pid/master.pid`, never by name.

    with PostfixInstance(smtpd={"primary": port1}, relay_domains=["example.test"],
                         relay_to=("127.0.0.1", sink_port),
                         policy="inet:127.0.0.1:10023") as pf:
        ...smtp to 127.0.0.1:port1...
        pf.wait_for_log(r"status=sent")

The base directory lives directly under /tmp with mode 0755 because Postfix's unprivileged
daemons (user postfix) must reach the queue and the log; pytest's tmp_path is private to root.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
MASTER_CF = "/etc/postfix/master.cf"


def available() -> bool:
    return os.path.exists(POSTFIX) and os.path.exists(MASTER_CF) and os.geteuid() == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (small race, acceptable for tests that start their own servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _chroot_off(line: str) -> str:
    fields = line.split()
    if len(fields) >= 8:
        fields[4] = "n"
    return " ".join(fields)


def _master_cf(
    source: str, smtpd: Mapping[str, int], host: str, smtpd_lines: Sequence[str] | None
) -> str:
    """Debian's master.cf with chroot off everywhere and smtpd on our ports only."""
    out = []
    for line in source.splitlines():
        if not line or line[0] in "# \t":
            out.append(line)
            continue
        fields = line.split()
        if fields[0] == "smtp" and len(fields) > 1 and fields[1] == "inet":
            continue  # port 25 is not ours to take
        out.append(_chroot_off(line))
    if smtpd_lines is not None:
        out += [_chroot_off(line) for line in smtpd_lines]
    else:
        for name, port in smtpd.items():
            out.append(f"# {name}")
            out.append(f"{host}:{port} inet n - n - - smtpd")
    return "\n".join(out) + "\n"


def stop_master(pid: int, timeout: float = 15.0) -> None:
    """Stop one Postfix master by PID (never by name): SIGTERM, wait, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


class PostfixInstance:
    def __init__(
        self,
        *,
        smtpd: Mapping[str, int],
        relay_domains: Iterable[str],
        relay_to: tuple[str, int],
        policy: str | None = None,
        recipient_restrictions: str | None = None,
        extra: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        smtpd_lines: Sequence[str] | None = None,
    ) -> None:
        self.smtpd = dict(smtpd)
        self.host = host
        self.base = Path(tempfile.mkdtemp(prefix="mxg-postfix-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "spool"
        self.data_dir = self.base / "data"
        self.maillog = self.base / "maillog"
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir()
        owner = pwd.getpwnam("postfix")
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)  # master's lock file lives here
        restrictions = recipient_restrictions or "permit_mynetworks, reject_unauth_destination" + (
            f", check_policy_service {policy}" if policy else ""
        )
        self.settings: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.1/32",  # the sending tests use other 127/8 addresses
            "inet_interfaces": host,
            "inet_protocols": "ipv4",
            "relay_domains": ", ".join(relay_domains),
            "relay_transport": f"smtp:[{relay_to[0]}]:{relay_to[1]}",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_peername_lookup": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": restrictions,
            "smtpd_policy_service_max_idle": "30s",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": "/tmp",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
        }
        self.settings.update(extra or {})
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in self.settings.items())
        )
        (self.config_dir / "master.cf").write_text(
            _master_cf(Path(MASTER_CF).read_text(), self.smtpd, host, smtpd_lines)
        )
        self.started = False

    # ------------------------------------------------------------ control

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def postconf(self, *settings: str) -> None:
        """Change main.cf (`key = value` strings) and reload a running instance."""
        for setting in settings:
            subprocess.run(
                [POSTCONF, "-c", str(self.config_dir), "-e", setting],
                check=True,
                capture_output=True,
                timeout=30,
            )
        if self.started:
            self.postfix("reload")

    def start(self) -> None:
        result = self.postfix("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}")
        self.started = True
        deadline = time.monotonic() + 20
        pending = dict(self.smtpd)
        while pending and time.monotonic() < deadline:
            for name, port in list(pending.items()):
                try:
                    with socket.create_connection((self.host, port), timeout=1):
                        del pending[name]
                except OSError:
                    pass
            time.sleep(0.1)
        if pending:
            self.stop()
            raise RuntimeError(f"postfix smtpd did not listen on {pending}: {self.log()}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """SIGTERM to our master only (by its PID file), then wait for it to go."""
        pid = self.master_pid()
        self.started = False
        if pid is not None:
            stop_master(pid)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostfixInstance:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # ------------------------------------------------------------ observation

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list[str]:
        """Lines of the maillog matching `pattern`, once there are `count` of them."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log().splitlines() if rx.search(line)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {count} maillog line(s) matching {pattern!r} in {timeout}s:\n{self.log()}"
                )
            time.sleep(0.1)
