"""What the policy decided, in a form every front end can render.

A verdict carries both the SMTP reply (code, enhanced status, text) and a short reason tag.
The reply is what the SMTP listener sends; the Postfix policy server maps the action to its own
vocabulary; the reason tag is what the event log, metrics and `mxguard report` count.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxguard.slotinit import fill_slots


class Action(enum.StrEnum):
    ACCEPT = "accept"
    TEMPFAIL = "tempfail"
    REJECT = "reject"
    DISCARD = "discard"
    DISCONNECT = "disconnect"  # 421/521 and close: said at connect or by a rate limit


@fill_slots
@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    code: int
    status: str
    text: str
    reason: str
    # Greylist and walk tempfails are "soft": a Postfix front end renders them as DEFER_IF_PERMIT.
    soft: bool = False

    @property
    def is_final(self) -> bool:
        """A final verdict stops the checks that would follow it at this stage."""
        return self.action is not Action.ACCEPT

    def reply_line(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.code}{status} {self.text}"


ACCEPT = Verdict(Action.ACCEPT, 250, "2.0.0", "OK", "ok")


def accept(reason: str = "ok", text: str = "OK", code: int = 250, status: str = "2.0.0") -> Verdict:
    return Verdict(Action.ACCEPT, code, status, text, reason)


def tempfail(
    reason: str, text: str, code: int = 450, status: str = "4.7.1", soft: bool = False
) -> Verdict:
    return Verdict(Action.TEMPFAIL, code, status, text, reason, soft)


def reject(reason: str, text: str, code: int = 550, status: str = "5.7.1") -> Verdict:
    return Verdict(Action.REJECT, code, status, text, reason)


def disconnect(reason: str, text: str, code: int = 421, status: str = "4.7.0") -> Verdict:
    return Verdict(Action.DISCONNECT, code, status, text, reason)


def discard(reason: str, text: str = "OK") -> Verdict:
    return Verdict(Action.DISCARD, 250, "2.0.0", text, reason)
