"""A static deny list by CIDR; the allow list is applied by the engine (it skips screening)."""

from __future__ import annotations

from mxguard.policy.checks.base import SyncCheck
from mxguard.policy.facts import Facts, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Verdict, disconnect, reject


class DenyListCheck(SyncCheck):
    name = "access"
    stages = frozenset({Stage.CONNECT, Stage.RCPT})

    def __init__(self, deny: NetworkSet, stage: str = "rcpt") -> None:
        self.deny = deny
        self.stage = Stage.CONNECT if stage == "connect" else Stage.RCPT

    def check_now(self, facts: Facts) -> Verdict | None:
        if facts.stage is not self.stage or facts.client_ip not in self.deny:
            return None
        text = f"Service unavailable; client [{facts.client_ip}] is on the deny list"
        if self.stage is Stage.CONNECT:
            return disconnect("denylist", text, 554, "5.7.1")
        return reject("denylist", text, 554, "5.7.1")
