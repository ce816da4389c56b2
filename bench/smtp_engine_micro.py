"""Micro-benchmark: full SMTP sessions through the sans-I/O engine, in-process, no sockets.

Each session: banner, EHLO, MAIL, RCPT, DATA with a 1 KB body, QUIT; the client side sends
the commands one exchange at a time (as a non-pipelining client would) and the "app" answers
every event with a fixed reply. This measures the protocol layer's own cost, the ceiling for
the whole server's msg/s. Usage: python bench/smtp_engine_micro.py [SESSIONS]
"""

from __future__ import annotations

import sys
import time

from mxguard.smtp.protocol import (
    DataCommand,
    EngineConfig,
    Helo,
    MailFrom,
    MessageReceived,
    RcptTo,
    Reply,
    ServerEngine,
)

BANNER = Reply(220, "", "mx.example.test ESMTP")
ANSWERS = {
    Helo: Reply(250, "", "mx.example.test"),
    MailFrom: Reply(250, "2.1.0", "OK"),
    RcptTo: Reply(250, "2.1.5", "OK"),
    DataCommand: Reply(354, "", "End data with <CR><LF>.<CR><LF>"),
    MessageReceived: Reply(250, "2.0.0", "Queued"),
}
LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod t.\r\n"
BODY = b"Subject: bench\r\nFrom: a@example.org\r\nTo: b@example.test\r\n\r\n" + LINE * 13
EXCHANGES = [
    b"EHLO client.example.org\r\n",
    b"MAIL FROM:<sender@example.org> SIZE=1100\r\n",
    b"RCPT TO:<rcpt@example.test>\r\n",
    b"DATA\r\n",
    BODY + b".\r\n",
    b"QUIT\r\n",
]


def one_session(config: EngineConfig) -> int:
    engine = ServerEngine(config)
    engine.greet(BANNER)
    received = 0
    for chunk in EXCHANGES:
        engine.receive_data(chunk)
        while (event := engine.next_event()) is not None:
            if engine.pending is not None:
                if isinstance(event, MessageReceived):
                    received += 1
                engine.send(ANSWERS[type(event)])
        engine.data_to_send()
    assert engine.wants_close
    return received


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    config = EngineConfig(hostname="mx.example.test")
    assert one_session(config) == 1 and len(BODY) >= 1000
    start = time.perf_counter()
    total = sum(one_session(config) for _ in range(n))
    elapsed = time.perf_counter() - start
    assert total == n
    print(f"{n} sessions in {elapsed:.2f} s: {n / elapsed:,.0f} sessions/s "
          f"({elapsed / n * 1e6:.1f} us/session, body {len(BODY)} bytes)")  # fmt: skip


if __name__ == "__main__":
    main()
