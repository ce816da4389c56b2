"""DNSBL/DNSWL scoring, postscreen style: weighted sites, one threshold.

The adapter has already asked the lists (`facts.dnsbl`); this check only scores, so the same
answers decide the same way in the SMTP listener, the policy server and the simulator.

By default the verdict waits for RCPT, like postscreen's `enforce`: the client still reaches
the envelope, so the event log shows who the blocked mail was for and a false positive can be
traced to a recipient. `stage="connect"` answers at the greeting instead and hangs up, which is
cheaper under a flood but logs nothing beyond the address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from mxguard.dns import DnsListSite, score
from mxguard.policy.checks.base import SyncCheck
from mxguard.policy.facts import Facts, IPAddress, Stage
from mxguard.policy.verdict import Verdict, disconnect, reject, tempfail

#: what a reply says instead of a zone marked secret
SECRET_ZONE_TEXT = "a DNS blocklist"


class DnsblCheck(SyncCheck):
    """Is the client listed, by weight, at or above the threshold?

    Unknown answers (timeouts, SERVFAIL, 127.255.255.x error codes) count for nothing, so an
    unreachable or rate-limiting list never costs a sender mail. A client that an allowlist
    pulled below the threshold gets no opinion from here, not an accept: other checks still run.
    """

    name: ClassVar[str] = "dnsbl"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.CONNECT, Stage.RCPT})

    def __init__(
        self,
        sites: Sequence[DnsListSite],
        threshold: int = 1,
        action: Literal["reject", "tempfail"] = "reject",
        stage: Literal["connect", "rcpt"] = "rcpt",
        reply_text: str | None = None,
    ) -> None:
        if not sites:
            raise ValueError("no DNS list sites configured")
        # A threshold of 0 or less would block every client that no list mentions.
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        if action not in ("reject", "tempfail"):
            raise ValueError(f"action must be 'reject' or 'tempfail', not {action!r}")
        if stage not in ("connect", "rcpt"):
            raise ValueError(f"stage must be 'connect' or 'rcpt', not {stage!r}")
        if reply_text is not None and ("\r" in reply_text or "\n" in reply_text):
            raise ValueError("reply_text must be one line")
        self.sites = tuple(sites)
        self.threshold = threshold
        self.action = action
        self.stage = Stage.CONNECT if stage == "connect" else Stage.RCPT
        self.reply_text = reply_text

    def check_now(self, facts: Facts) -> Verdict | None:
        if facts.stage is not self.stage or facts.dnsbl is None or facts.trusted_peer:
            return None
        total, matched = score(facts.dnsbl, self.sites)
        if total < self.threshold:
            return None
        blocking = self._blocking_zones(matched)
        # total >= threshold >= 1 means some positive-weight site matched; the fallback is
        # for a caller-built facts object that defies that.
        zone = blocking[0] if blocking else (matched[0] if matched else "unknown")
        reason = f"dnsbl:{zone}"
        text = self._text(facts.client_ip, blocking)
        if self.stage is Stage.CONNECT:
            if self.action == "reject":
                return disconnect(reason, text, code=554, status="5.7.1")
            return disconnect(reason, text, code=421, status="4.7.1")
        if self.action == "reject":
            return reject(reason, text, code=554, status="5.7.1")
        return tempfail(reason, text, code=450, status="4.7.1")

    def _blocking_zones(self, matched: list[str]) -> list[str]:
        """The matched zones that pushed the score up (an allowlist hit is not a reason)."""
        positive = {site.zone for site in self.sites if site.weight > 0}
        return [zone for zone in matched if zone in positive]

    def _text(self, client_ip: IPAddress, blocking: list[str]) -> str:
        secret = {site.zone for site in self.sites if site.secret}
        shown = next((z for z in blocking if z not in secret), SECRET_ZONE_TEXT)
        if self.reply_text is not None:
            # Plain substitution, not str.format: a stray brace in config must not break replies.
            return self.reply_text.replace("{ip}", str(client_ip)).replace("{zone}", shown)
        return f"Service unavailable; client [{client_ip}] blocked using {shown}"
