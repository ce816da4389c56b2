"""Relay control: mail for someone else's domain is refused, and routing tricks are never local."""

from __future__ import annotations

from mxguard.policy.address import AddressKind, classify
from mxguard.policy.checks.base import SyncCheck
from mxguard.policy.facts import Facts, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Verdict, reject


class RelayCheck(SyncCheck):
    name = "relay"
    stages = frozenset({Stage.RCPT})

    def __init__(self, local_domains: frozenset[str], relay_networks: NetworkSet) -> None:
        self.local_domains = local_domains
        self.relay_networks = relay_networks

    def check_now(self, facts: Facts) -> Verdict | None:
        rcpt = facts.recipient or ""
        kind = classify(rcpt, self.local_domains).kind
        if kind is AddressKind.LOCAL:
            return None
        if kind is AddressKind.REMOTE and facts.client_ip in self.relay_networks:
            return None
        return reject("relay_denied", f"<{rcpt}>: Relay access denied", 554, "5.7.1")
