"""Rate limits per client network: connections per minute and messages per hour.

Counting happens in the shared state so that a client spreading its load over every MX of
the tier is counted once.
"""

from __future__ import annotations

from mxguard.policy.address import client_network
from mxguard.policy.checks.base import Check
from mxguard.policy.facts import Facts, Stage
from mxguard.policy.verdict import Verdict, disconnect, tempfail
from mxguard.state.base import StateStore


class RateLimitCheck(Check):
    name = "ratelimit"
    stages = frozenset({Stage.CONNECT, Stage.MAIL})

    def __init__(
        self,
        state: StateStore,
        connections_per_minute: int,
        messages_per_hour: int,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
    ) -> None:
        self.state = state
        self.conn_limit = connections_per_minute
        self.msg_limit = messages_per_hour
        self.v4, self.v6 = ipv4_prefix, ipv6_prefix

    async def check(self, facts: Facts) -> Verdict | None:
        net = client_network(facts.client_ip, self.v4, self.v6)
        if facts.stage is Stage.CONNECT and self.conn_limit:
            n = await self.state.counter_add(f"rate:c:{net}", 1, 60.0, facts.now)
            if n > self.conn_limit:
                return disconnect(
                    "rate_limit", f"Too many connections from {net}, slow down", 421, "4.7.0"
                )
        elif facts.stage is Stage.MAIL and self.msg_limit:
            n = await self.state.counter_add(f"rate:m:{net}", 1, 3600.0, facts.now)
            if n > self.msg_limit:
                return tempfail(
                    "rate_limit", f"Too many messages from {net}, try again later", 450, "4.7.1"
                )
        return None
