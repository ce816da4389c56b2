"""Crash safety of the backup: every message that got 250 reaches the primary, kill -9 or not.

A burst of deliveries goes to a backup run as a real `mxguard serve` process while the test
SIGKILLs it at random moments and starts it again on the same spool. The primary is a real
aiosmtpd that records Message-IDs. At the end every acknowledged Message-ID must have arrived;
duplicates are allowed (a crash between the primary's 250 and our bookkeeping resends, which
RFC 5321 prefers to a loss) and reported.
"""

from __future__ import annotations

import collections
import os
import random
import smtplib
import threading
import time
from pathlib import Path

from tests.helpers.servers import (
    MxguardProcess,
    RecordingSmtpServer,
    TierPorts,
    free_port,
    tier_config,
    wait_for,
)

CLIENTS = 6
MESSAGES = 240
KILLS = 4


def test_kill_9_during_a_burst_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("MXGUARD_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    primary = RecordingSmtpServer().start()
    ports = TierPorts(free_port(), free_port())
    cfg = tier_config(
        tmp_path,
        ports,
        primary=False,
        forward_to=f"smtp://127.0.0.1:{primary.port}",
        queue='retry_min = "1s"\nretry_max = "2s"',
    )
    proc = MxguardProcess(tmp_path, cfg).start()
    acked: set[str] = set()
    lock = threading.Lock()
    todo = collections.deque((f"crash{i}.{seed}@sender.test", 0) for i in range(MESSAGES))
    done = threading.Event()

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                msgid, tries = todo.popleft()
            body = f"Message-ID: <{msgid}>\r\nSubject: burst\r\n\r\n{'y' * 500}\r\n".encode()
            try:
                with smtplib.SMTP("127.0.0.1", ports.backup, timeout=10) as s:
                    s.sendmail("a@sender.test", ["alice@example.test", "bob@example.test"], body)
                with lock:
                    acked.add(f"<{msgid}>")
            except (smtplib.SMTPException, OSError):
                # no 250: like a real sender, try again a little later (a few times)
                if tries < 5:
                    time.sleep(0.2)
                    with lock:
                        todo.append((msgid, tries + 1))

    def killer() -> None:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.6))
            if done.is_set():
                return
            proc.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            proc.start()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    k = threading.Thread(target=killer)
    try:
        for t in [*threads, k]:
            t.start()
        for t in threads:
            t.join(120)
        done.set()
        k.join(30)
        if not proc.running():
            proc.start()
        assert len(acked) > MESSAGES // 4, f"too few accepted to prove anything ({len(acked)})"
        arrived = wait_for(lambda: acked <= set(primary.ids()), 60)
        ids = primary.ids()
        counts = collections.Counter(ids)
        duplicates = {m: n for m, n in counts.items() if n > 1}
        lost = acked - set(ids)
        print(
            f"\nseed {seed}: {len(acked)} acknowledged, {len(ids)} arrived, "
            f"{len(duplicates)} duplicated, {len(lost)} lost, {proc.starts} starts"
        )
        assert arrived and not lost, f"seed {seed}: lost {sorted(lost)[:10]}"
        for m in primary.messages:
            assert m.recipients == ["alice@example.test", "bob@example.test"]
    finally:
        done.set()
        proc.stop()
        primary.stop()
