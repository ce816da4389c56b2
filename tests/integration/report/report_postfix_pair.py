"""Two private Postfix instances on loopback: a primary and a backup that relays to it.

Each instance has its own config, queue and data directories under a temp dir, logs
with ``maillog_file`` (no syslog needed), delivers to the ``discard`` transport, and
is stopped by the PID in its own ``master.pid``.  Rules are chosen so that every kind
of rejection the report counts can be triggered from a scripted client.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.postfix import stop_master

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
PORT = 2525
PRIMARY_IP = "127.0.0.10"
BACKUP_IP = "127.0.0.20"
VALID = ("good@example.test", "grey@example.test")

MASTER_CF = """\
{ip}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Instance:
    name: str
    ip: str
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def postconf(self, *settings: str) -> None:
        subprocess.run([POSTCONF, "-c", str(self.config), "-e", *settings], check=True)

    def setup(self, transport: str, extra: list[str]) -> None:
        etc, queue, data = self.config, self.root / "queue", self.root / "data"
        for d in (etc, queue, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        (etc / "main.cf").write_text("")
        (etc / "master.cf").write_text(MASTER_CF.format(ip=self.ip, port=PORT))
        (etc / "recipients").write_text("".join(f"{r} ok\n" for r in VALID))
        (etc / "transport").write_text(f"example.test {transport}\n")
        (etc / "access_rcpt").write_text("grey@example.test 450 Greylisted, come back later\n")
        (etc / "access_client").write_text(
            "127.0.0.66 554 Service unavailable; Client host [127.0.0.66] blocked using rbl.test\n"
        )
        (etc / "header_checks").write_text("/^Subject:.*VIAGRA/ REJECT spam content\n")
        t = f"texthash:{etc}"
        self.postconf(
            f"queue_directory = {queue}",
            f"data_directory = {data}",
            "compatibility_level = 3.6",
            f"myhostname = {self.name}.mx.test",
            "inet_interfaces = loopback-only",
            f"proxy_interfaces = {self.ip}",
            "inet_protocols = ipv4",
            "mydestination =",
            "mynetworks = 127.0.0.1/32",
            "relay_domains = example.test",
            f"relay_recipient_maps = {t}/recipients",
            f"transport_maps = {t}/transport",
            f"header_checks = regexp:{etc}/header_checks",
            "smtpd_peername_lookup = no",
            "smtpd_client_event_limit_exceptions =",
            "smtp_dns_support_level = disabled",
            "smtp_tls_security_level = none",
            "smtpd_tls_security_level = none",
            "disable_dns_lookups = yes",
            "biff = no",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            "smtputf8_enable = no",
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.root}",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            f"smtpd_recipient_restrictions = check_client_access {t}/access_client, "
            f"check_recipient_access {t}/access_rcpt",
            "minimal_backoff_time = 2s",
            "maximal_backoff_time = 4s",
            "queue_run_delay = 2s",
            "smtpd_error_sleep_time = 0",
            "smtpd_soft_error_limit = 100",
            "smtpd_hard_error_limit = 200",
            *extra,
        )
        subprocess.run(
            [POSTFIX, "-c", str(etc), "set-permissions"], check=False, capture_output=True
        )
        subprocess.run([POSTFIX, "-c", str(etc), "check"], check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.config), "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.ip, PORT), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name}: postfix did not start listening")

    def master_pid(self) -> int | None:
        pidfile = self.root / "queue" / "pid" / "master.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is not None:
            stop_master(pid)

    def queue_empty(self) -> bool:
        q = self.root / "queue"
        for sub in ("incoming", "active", "deferred"):
            d = q / sub
            if d.exists() and any(p.is_file() for p in d.rglob("*")):
                return False
        return True
