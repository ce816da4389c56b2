"""Greylisting at RCPT: a first sight of (client network, sender, recipient) is tempfailed.

Real MTAs retry; most bots do not (seed 000, Bart's comment: greylist the backup only, and
legitimate mail, which rarely reaches a backup, pays nothing). The triplet is keyed by the
client's network, not its address, because large senders retry from a pool of addresses
(postgrey's most common complaint); passes are counted per network so that a network with a
history of retrying is let through without delay (`auto_allow_after`).

Two exemptions, both on purpose:

- Mail to ``postmaster@`` is never greylisted: RFC 5321 4.5.1 wants postmaster reachable, and
  a person reporting a problem with our mail system may be writing from a broken one.
- The null sender (bounces, DSNs) *is* greylisted, keyed by network and recipient only. A
  real bounce comes from a real MTA that retries like any other; bounce-shaped spam and
  backscatter do not. Keying it like any sender would add nothing (the sender is always
  ``<>``), so the key says so explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import ClassVar

from mxguard.policy.address import ceil_seconds, client_network, normalize_sender, split_address
from mxguard.policy.checks.base import NOT_NOW, Check, NotNow
from mxguard.policy.facts import Facts, IPAddress, Role, Stage
from mxguard.policy.networks import NetworkSet
from mxguard.policy.verdict import Verdict, tempfail
from mxguard.state.base import GreylistResult, GreylistStatus, StateStore

#: the triplet entries (first-seen and passed flag), one per hashed triplet
TRIPLET_PREFIX = "gl:"
#: passed-triplet counters per client network, for auto-allow
NETWORK_PREFIX = "glnet:"

#: what `GreylistCheck.history` answers, best first (the queue's priority column)
HISTORY_ALLOWED, HISTORY_PASSED, HISTORY_NONE = 0, 1, 2


def triplet_key(network: str, sender: str, recipient: str) -> str:
    """The state key of one triplet.

    Hashed because IPv6 networks and quoted local parts contain ``:`` and ``|``, and because
    addresses do not belong in a shared store in clear. The parts are joined by NUL, which no
    address or network can contain, so two different triplets cannot meet in one key.
    """
    sender_part = normalize_sender(sender) if sender else "<>"
    raw = "\0".join((network, sender_part, recipient.lower()))
    return TRIPLET_PREFIX + hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def is_postmaster(recipient: str) -> bool:
    parts = split_address(recipient)
    return parts is not None and parts[0].strip('"').lower() == "postmaster"


class GreylistCheck(Check):
    """First sight: ``450 4.7.1``; a retry after ``delay`` and within ``retry_window`` passes."""

    name: ClassVar[str] = "greylist"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.RCPT})

    def __init__(
        self,
        state: StateStore,
        roles: Iterable[Role],
        delay: float,
        retry_window: float,
        pass_ttl: float,
        auto_allow_after: int = 5,
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 64,
        allow_networks: Iterable[str] = (),
        allow_sender_domains: Iterable[str] = (),
    ) -> None:
        if retry_window < delay:
            raise ValueError("retry_window must not be shorter than delay")
        self.state = state
        self.roles = frozenset(roles)
        self.delay, self.retry_window, self.pass_ttl = delay, retry_window, pass_ttl
        self.auto_allow_after = auto_allow_after
        self.v4, self.v6 = ipv4_prefix, ipv6_prefix
        self.allow_networks = NetworkSet(allow_networks)
        self.allow_domains = frozenset(d.lower().rstrip(".") for d in allow_sender_domains)

    def network(self, ip: IPAddress) -> str:
        return client_network(ip, self.v4, self.v6)

    def allowlisted(self, ip: IPAddress, sender: str) -> bool:
        if ip in self.allow_networks:
            return True
        parts = split_address(sender) if sender else None
        if parts is None:
            return False
        domain = parts[1].lower().rstrip(".")
        # a listed domain covers its subdomains (mail.bigsender.example sends for bigsender)
        return any(domain == d or domain.endswith("." + d) for d in self.allow_domains)

    async def network_allowed(self, network: str, now: float) -> bool:
        if self.auto_allow_after <= 0:
            return False
        passed = await self.state.get(NETWORK_PREFIX + network, now)
        return passed is not None and int(passed) >= self.auto_allow_after

    def check_now(self, facts: Facts) -> Verdict | NotNow | None:
        """`check` without awaiting, where the state can answer at once (SQLite, memory).

        NOT_NOW only before anything was written: the greylist step and the count of a
        first pass are one `greylist_now`, so `check` can then start from the beginning.
        """
        recipient = facts.recipient or ""
        sender = facts.sender or ""
        if is_postmaster(recipient) or self.allowlisted(facts.client_ip, sender):
            return None
        network = self.network(facts.client_ip)
        # the network's auto-allow count is read with the triplet, in one step
        result = self.state.greylist_now(
            triplet_key(network, sender, recipient),
            facts.now,
            self.delay,
            self.retry_window,
            self.pass_ttl,
            NETWORK_PREFIX + network,
            self.auto_allow_after,
        )
        if isinstance(result, NotNow):
            return NOT_NOW
        return self._verdict(result, facts.now)

    async def check(self, facts: Facts) -> Verdict | None:
        recipient = facts.recipient or ""
        sender = facts.sender or ""
        if is_postmaster(recipient) or self.allowlisted(facts.client_ip, sender):
            return None
        network = self.network(facts.client_ip)
        if await self.network_allowed(network, facts.now):
            return None
        result = await self.state.greylist(
            triplet_key(network, sender, recipient),
            facts.now,
            self.delay,
            self.retry_window,
            self.pass_ttl,
        )
        if result.status is GreylistStatus.PASSED:
            # Only a first pass counts towards auto-allow: a triplet that keeps sending is one
            # sender, not evidence that the whole network retries properly.
            await self.state.counter_add(NETWORK_PREFIX + network, 1, self.pass_ttl, facts.now)
        return self._verdict(result, facts.now)

    def _verdict(self, result: GreylistResult, now: float) -> Verdict | None:
        if result.allowed:
            return None
        wait = ceil_seconds(result.first_seen + self.delay - now)
        return tempfail(
            "greylisted", f"Greylisted, try again in {wait} seconds", 450, "4.7.1", soft=True
        )

    async def history(
        self, ip: IPAddress, sender: str, recipients: Iterable[str], now: float
    ) -> int:
        """How much this client has earned here: 0 allowlisted or auto-allowed network, 1 passed
        greylisting for every one of these triplets, 2 no history.

        The backup's queue orders forwarding by this in a storm; it only reads state, so asking
        never starts or refreshes a greylist entry.
        """
        if self.allowlisted(ip, sender):
            return HISTORY_ALLOWED
        network = self.network(ip)
        if await self.network_allowed(network, now):
            return HISTORY_ALLOWED
        rcpts = [r for r in recipients if not is_postmaster(r)]
        if not rcpts:
            return HISTORY_NONE
        for rcpt in rcpts:
            value = await self.state.get(triplet_key(network, sender, rcpt), now)
            if value is None or not value.endswith("|1"):
                return HISTORY_NONE
        return HISTORY_PASSED
