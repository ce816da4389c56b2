"""Early talkers: a client that speaks before the greeting ends is not waiting for us, so it is a bot.

As postscreen's greet test: the listener pauses before its banner and records what arrived;
the action is to log only (the default), tempfail or reject at RCPT (so the envelope is
logged), or drop at once.
"""

from __future__ import annotations

from mxguard.policy.checks.base import SyncCheck
from mxguard.policy.facts import Facts, Stage
from mxguard.policy.verdict import Verdict, disconnect, reject, tempfail


class EarlyTalkerCheck(SyncCheck):
    name = "early_talker"
    stages = frozenset({Stage.CONNECT, Stage.RCPT})

    def __init__(self, action: str) -> None:
        self.action = action

    def check_now(self, facts: Facts) -> Verdict | None:
        if not facts.pregreet or self.action == "ignore":
            return None
        text = "Protocol error: talked before the greeting"
        if facts.stage is Stage.CONNECT:
            if self.action == "drop":
                return disconnect("pregreet", text, 521, "5.5.1")
            return None
        if self.action == "reject":
            return reject("pregreet", text, 550, "5.5.1")
        if self.action == "tempfail":
            return tempfail("pregreet", text, 450, "4.5.1")
        return None
