"""What each MX role does with a message the policy accepted.

The primary delivers before it answers (so "250" means "stored downstream"); the backup
queues durably (queue/); trap and retired roles never reach DATA, their checks answer first.
"""

from __future__ import annotations

from mxguard.delivery import DeliveryResult, Target
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.verdict import Verdict, accept, reject, tempfail
from mxguard.smtp.listener import Message


class DeliverSink:
    """Primary role: the message is delivered to the target before the client hears 250.

    One SMTP reply answers for every recipient, so when the target answered differently per
    recipient, a temporary failure wins (the client retries and some recipients may get a
    duplicate: RFC 5321 6.1 prefers duplicates to loss), then a permanent one.
    """

    def __init__(self, target: Target) -> None:
        self.target = target

    async def __call__(self, msg: Message) -> Verdict:
        result = await self.target.deliver(msg.sender, msg.recipients, msg.data, msg.queue_id)
        return self._verdict(msg, result)

    def now(self, msg: Message) -> Verdict | NotNow:
        """For a target that stores without waiting (the discard target); else NOT_NOW."""
        result = self.target.deliver_now(msg.sender, msg.recipients, msg.data, msg.queue_id)
        return NOT_NOW if isinstance(result, NotNow) else self._verdict(msg, result)

    @staticmethod
    def _verdict(msg: Message, result: DeliveryResult) -> Verdict:
        if result.temp_failed:
            code, status, text = next(iter(result.temp_failed.values()))
            return tempfail("delivery_deferred", text or "Try again later", code, status or "4.3.0")
        if result.perm_failed:
            code, status, text = next(iter(result.perm_failed.values()))
            return reject(
                "delivery_rejected", text or "Rejected downstream", code, status or "5.0.0"
            )
        return accept("delivered", f"Ok: queued as {msg.queue_id}")


class NeverAcceptSink:
    """For roles that must never take a message (trap, retired): a safety net behind their checks."""

    async def __call__(self, msg: Message) -> Verdict:
        return self.now(msg)

    def now(self, msg: Message) -> Verdict:
        return tempfail("trap", "Try again later", 451, "4.3.2")
