"""The storm benchmark's primary: an aiosmtpd server that logs "arrival-time message-id" lines.

Run by storm.py as its own process, so that receiving mail does not compete with the load
generator for one interpreter lock. Usage: primary_sink.py PORT LOGFILE
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Logger:
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        msgid = "-"
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                msgid = line.split(b":", 1)[1].strip().decode()
        self.out.write(f"{time.time():.6f} {msgid}\n")
        return "250 OK"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Logger(path), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
