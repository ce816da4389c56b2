"""Rate limits per client network: connections per minute and messages per hour.

Counting happens in the shared state so that a client spreading its load over every MX of
the tier is counted once.
"""

from __future__ import annotations

from mxguard.policy.address import client_network
from mxguard.policy.checks.base import NOT_NOW, Check, NotNow
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

    def _counter(self, facts: Facts) -> tuple[str, float, int] | None:
        """(key, window, limit) of the counter this stage adds to, if any."""
        net = client_network(facts.client_ip, self.v4, self.v6)
        if facts.stage is Stage.CONNECT and self.conn_limit:
            return f"rate:c:{net}", 60.0, self.conn_limit
        if facts.stage is Stage.MAIL and self.msg_limit:
            return f"rate:m:{net}", 3600.0, self.msg_limit
        return None

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        counter = self._counter(facts)
        if counter is None:
            return None
        key, window, limit = counter
        n = self.state.counter_add_now(key, 1, window, facts.now)
        if isinstance(n, NotNow):
            return NOT_NOW  # nothing was counted: `check` counts it once
        return self._verdict(facts, n, limit)

    async def check(self, facts: Facts) -> Verdict | None:
        counter = self._counter(facts)
        if counter is None:
            return None
        key, window, limit = counter
        return self._verdict(facts, await self.state.counter_add(key, 1, window, facts.now), limit)

    def _verdict(self, facts: Facts, n: int, limit: int) -> Verdict | None:
        if n <= limit:
            return None
        net = client_network(facts.client_ip, self.v4, self.v6)
        if facts.stage is Stage.CONNECT:
            return disconnect(
                "rate_limit", f"Too many connections from {net}, slow down", 421, "4.7.0"
            )
        return tempfail(
            "rate_limit", f"Too many messages from {net}, try again later", 450, "4.7.1"
        )
