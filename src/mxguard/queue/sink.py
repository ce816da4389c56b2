"""The spool's two faces towards the SMTP listener: the backup sink and the spool-full gate.

The sink answers ``250`` only after `Spool.store` returned, i.e. after the body and its
envelope are on disk. The gate refuses new transactions with ``452 4.3.1`` at MAIL while the
spool is over its size limit or the disk is nearly full, so a flood is turned away before its
bodies are read; the sink checks again at the end of DATA, with the real size.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import ClassVar

from mxguard.policy.checks.base import Check
from mxguard.policy.checks.greylist import HISTORY_ALLOWED, HISTORY_NONE, GreylistCheck
from mxguard.policy.facts import Facts, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Verdict, accept, tempfail
from mxguard.queue.spool import QueuedMessage, Recipient, Spool, SpoolFull
from mxguard.smtp.listener import Message
from mxguard.state.base import StateUnavailable

log = logging.getLogger("mxguard.queue")

SPOOL_FULL_TEXT = "Insufficient system storage, try again later"
_TRUE = frozenset({"1", "true", "yes", "spam"})


def _spool_full(detail: str) -> Verdict:
    log.warning("refusing mail: %s", detail)
    return tempfail("spool_full", SPOOL_FULL_TEXT, 452, "4.3.1")


def _message_id(data: bytes) -> str:
    end = data.find(b"\r\n\r\n")
    headers = BytesHeaderParser(policy=compat32).parsebytes(data[: end + 2 if end >= 0 else 65536])
    return str(headers.get("Message-ID", "")).strip()[:256]


class SpoolFullCheck(Check):
    """A gate (it runs for trusted and allowlisted clients too: space is space)."""

    name: ClassVar[str] = "spool_space"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.MAIL})
    roles = frozenset({Role.BACKUP})

    def __init__(self, spools: Mapping[str, Spool]) -> None:
        self.spools = spools

    async def check(self, facts: Facts) -> Verdict | None:
        spool = self.spools.get(facts.mx.host)
        if spool is None:
            return None
        reason = spool.full_reason(facts.size or 0)
        return _spool_full(reason) if reason else None


class BackupSink:
    """Store durably, then say 250; the forwarder takes it from there."""

    def __init__(
        self,
        spool: Spool,
        greylist: GreylistCheck | None,
        allow: NetworkSet,
    ) -> None:
        self.spool = spool
        self.greylist = greylist
        self.allow = allow

    async def priority(self, msg: Message) -> int:
        f = msg.facts
        if f.trusted_peer or f.client_ip in self.allow:
            return HISTORY_ALLOWED
        if self.greylist is None:
            return HISTORY_NONE
        try:
            return await self.greylist.history(f.client_ip, msg.sender, msg.recipients, f.now)
        except StateUnavailable:
            return HISTORY_NONE  # an unknown history must not cost the message its place

    async def __call__(self, msg: Message) -> Verdict:
        f = msg.facts
        record = QueuedMessage(
            id=msg.queue_id,
            sender=msg.sender,
            recipients=[Recipient(r) for r in msg.recipients],
            size=len(msg.data),
            created=f.now,
            next_attempt=f.now,
            priority=await self.priority(msg),
            client=str(f.client_ip),
            helo=f.helo or "",
            msgid=_message_id(msg.data),
            spam=f.extra.get("spam", "").lower() in _TRUE,
        )
        try:
            await self.spool.store(record, msg.data)
        except SpoolFull as exc:
            return _spool_full(str(exc))
        except (OSError, sqlite3.Error) as exc:
            log.error("spool write failed for %s: %s", msg.queue_id, exc)
            return tempfail(
                "spool_error", "Local error in processing, try again later", 451, "4.3.0"
            )
        return accept("queued", f"Ok: queued as {msg.queue_id}")
