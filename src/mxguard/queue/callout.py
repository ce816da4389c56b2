"""Recipient callout: a backup that does not hold the user list asks its primary at RCPT time.

Seed 004's backup accepted every address because keeping user lists in sync was a pain, and
then had to bounce or drop. A callout asks the primary instead: ``MAIL FROM:<>``, ``RCPT TO``,
no DATA, ``QUIT``. Answers are cached in the shared state (``rcpt:`` keys, hashed), positive
ones for long and negative ones briefly, so a dictionary attack costs the primary one probe per
address, and an address that is added is found within `negative_ttl`.

When the primary cannot be asked (down, timeout, a 4xx) and nothing is cached, the answer is
"unknown", which the recipient check turns into ``451 4.4.3``: never accept blindly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

import aiosmtplib

from mxguard.state.base import StateStore, StateUnavailable

log = logging.getLogger("mxguard.callout")

CACHE_PREFIX = "rcpt:"


def cache_key(address: str) -> str:
    local, _, domain = address.rpartition("@")
    # The domain is case-insensitive; the local part is left to the primary to judge.
    raw = f"{local}@{domain.lower()}"
    return CACHE_PREFIX + hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class RecipientCallout:
    """``await callout(address)`` -> True known, False unknown, None could not ask."""

    def __init__(
        self,
        state: StateStore,
        host: str,
        port: int,
        helo: str,
        timeout: float,
        positive_ttl: float,
        negative_ttl: float,
        source_address: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.host, self.port, self.helo, self.timeout = host, port, helo, timeout
        self.positive_ttl, self.negative_ttl = positive_ttl, negative_ttl
        self.source_address = source_address
        self.clock = clock
        # one probe per address at a time: a burst of RCPTs for one user asks the primary once
        self._inflight: dict[str, asyncio.Future[bool | None]] = {}
        self.probes = 0

    async def __call__(self, address: str) -> bool | None:
        key = cache_key(address)
        try:
            cached = await self.state.get(key, self.clock())
        except StateUnavailable:
            cached = None
        if cached is not None:
            return cached == "1"
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self.probe(address)
            if answer is not None:
                ttl = self.positive_ttl if answer else self.negative_ttl
                try:
                    await self.state.put(key, "1" if answer else "0", ttl, self.clock())
                except StateUnavailable as exc:
                    log.warning("callout cache not written: %s", exc)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[key]

    async def probe(self, address: str) -> bool | None:
        """One RCPT probe with a null sender; None for anything that is not a clear answer."""
        self.probes += 1
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            local_hostname=self.helo,
            start_tls=False,
            source_address=(self.source_address, 0) if self.source_address else None,
        )
        try:
            async with asyncio.timeout(self.timeout * 2):
                await client.connect()
                try:
                    await client.mail("")
                    try:
                        await client.rcpt(address)
                        return True
                    except aiosmtplib.SMTPRecipientRefused as exc:
                        if exc.code >= 500:
                            return False
                        log.info("callout <%s>: %d %s", address, exc.code, exc.message)
                        return None
                finally:
                    try:
                        await client.quit()
                    except (aiosmtplib.SMTPException, OSError):
                        client.close()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.warning("callout to %s:%d for <%s> failed: %s", self.host, self.port, address, exc)
            return None
