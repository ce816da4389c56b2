"""Baseline (a): a bare aiosmtpd server whose handler accepts and discards every message."""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.smtp import SMTP


class Discard:
    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        return "250 OK"


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Discard(), hostname="sink.test"), "127.0.0.1", port, backlog=1024
    )
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
