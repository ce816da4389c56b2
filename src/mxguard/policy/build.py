"""Turn a config into the ordered checks of a PolicyEngine.

The order is the policy: cheap, certain answers first (deny list, relay control, recipients),
then the screens that cost state or DNS. New checks register here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mxguard.config import Config
from mxguard.policy.checks.access import DenyListCheck
from mxguard.policy.checks.base import Check
from mxguard.policy.checks.earlytalk import EarlyTalkerCheck
from mxguard.policy.checks.ratelimit import RateLimitCheck
from mxguard.policy.checks.recipients import Callout, RecipientCheck
from mxguard.policy.checks.relay import RelayCheck
from mxguard.policy.engine import PolicyEngine
from mxguard.policy.networks import NetworkSet
from mxguard.recipients import RecipientDirectory
from mxguard.state.base import StateStore

#: a factory for checks that later modules add: (config, state) -> (gates, screens)
Extension = Callable[[Config, StateStore], tuple[list[Check], list[Check]]]


@dataclass
class PolicyParts:
    """What the builder needs besides the config; adapters fill what they have."""

    state: StateStore
    recipients: RecipientDirectory
    callout: Callout | None = None
    extensions: list[Extension] = field(default_factory=list)


def build_engine(cfg: Config, parts: PolicyParts) -> PolicyEngine:
    local_domains = parts.recipients.domains
    gates: list[Check] = [
        RelayCheck(local_domains, NetworkSet(cfg.relay.networks)),
        RecipientCheck(lambda: parts.recipients.domains, parts.recipients.lookup, parts.callout),
    ]
    screens: list[Check] = []
    if cfg.access.deny:
        screens.append(DenyListCheck(NetworkSet(cfg.access.deny), cfg.access.deny_stage))
    if cfg.early_talker.action != "ignore":
        screens.append(EarlyTalkerCheck(cfg.early_talker.action))
    if cfg.dnsbl.sites:
        from mxguard.dns import parse_list_site
        from mxguard.policy.checks.dnsbl import DnsblCheck

        screens.append(
            DnsblCheck(
                [parse_list_site(s) for s in cfg.dnsbl.sites],
                threshold=cfg.dnsbl.threshold,
                action=cfg.dnsbl.action,
                stage=cfg.dnsbl.stage,
                reply_text=cfg.dnsbl.reply_text,
            )
        )
    if cfg.ratelimit.connections_per_minute or cfg.ratelimit.messages_per_hour:
        screens.append(
            RateLimitCheck(
                parts.state,
                cfg.ratelimit.connections_per_minute,
                cfg.ratelimit.messages_per_hour,
                cfg.ratelimit.ipv4_prefix,
                cfg.ratelimit.ipv6_prefix,
            )
        )
    for ext in parts.extensions:
        g, s = ext(cfg, parts.state)
        gates += g
        screens += s
    # A trap answers every client alike, before relay control or a recipient lookup could
    # give a 5xx or tell valid addresses from invalid ones: such a gate says `runs_first`.
    gates.sort(key=lambda c: not getattr(c, "runs_first", False))
    return PolicyEngine(
        gates,
        screens,
        allow=NetworkSet(cfg.access.allow),
        trusted=NetworkSet(cfg.relay.trusted_peers),
    )
