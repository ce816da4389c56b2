"""The tier's blocklist: client networks that gave themselves away at a trap or a retired address.

Entries live in the shared state so that a bot caught at the trap is refused at the primary
a moment later, whichever host runs it. Each entry is one key (``block:<network>``), and
also a field of one index hash (``blockidx:all``) so that `mxguard block list` can
enumerate them on SQLite and on Redis alike without a KEYS scan. The index can hold fields
whose entry has expired (a hash has one expiry for all of its fields); readers drop those.

The check asks on every RCPT, and nearly every answer is "not listed", so each process
answers from its own copy of the whole list (the index) instead of a read per RCPT: a
state read per RCPT (a round trip on Redis) for a list that changes a few times an hour.
Every change also writes a new random version (``blockver``); a process compares the
version with its copy's at most every `REFRESH` seconds and reads the index again when it
differs, and reads it again every `RELOAD` seconds whatever the version says (a change
whose version write failed is then late, never lost). So a bot caught by another process or
host is refused here within that second; a change made by this process is in its copy at
once.
"""

from __future__ import annotations

import ipaddress
import secrets
import time

from mxguard.memo import Memo
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.address import client_network
from mxguard.policy.facts import IPAddress
from mxguard.state.base import StateStore
from mxguard.walk.blockentry import BlockEntry, remember_parsed
from mxguard.walk.ledger import Ledger, ledger_of

BLOCK_PREFIX = "block:"
INDEX_KEY = "blockidx:all"
#: a new random value at every change of the list, so copies know to read the index again
VERSION_KEY = "blockver"
#: how long a process answers from its copy before it asks whether the version moved
REFRESH = 1.0
#: how long a copy is kept at most, unchanged version or not
RELOAD = 60.0
#: the index outlives every entry it lists; entries longer than this are refused
MAX_TTL = 366 * 86400.0


def network_of(target: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network an IP or CIDR stands for, at the blocklist's granularity.

    A network wider than the prefix cannot be one entry (the check looks up exactly one
    network per client); `[access].deny` is the place for static ranges.
    """
    if "/" not in target:
        return client_network(ipaddress.ip_address(target), ipv4_prefix, ipv6_prefix)
    net = ipaddress.ip_network(target, strict=False)
    prefix = ipv4_prefix if net.version == 4 else ipv6_prefix
    if net.prefixlen < prefix:
        raise ValueError(
            f"{target} is wider than the blocklist's /{prefix} ([blocklist].ipv{net.version}_prefix);"
            " list static ranges in [access].deny"
        )
    return client_network(net.network_address, ipv4_prefix, ipv6_prefix)


class Blocklist:
    """The ``block:`` entries and their index; over the plain memory state, kept as entries
    in its ledger (`walk/ledger.py`); `objects=False` keeps text there too (tests)."""

    def __init__(
        self,
        state: StateStore,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        *,
        objects: bool = True,
    ) -> None:
        self.state = state
        self.v4, self.v6 = ipv4_prefix, ipv6_prefix
        self.ledger = ledger_of(state, objects)
        #: client -> its network: a bot at the trap is blocklisted again at every contact
        self._networks: Memo[IPAddress, str] = Memo(1 << 14)
        # over stored text: this process's copy of the list (network -> entry), the version
        # it was read at, and when the version was last found unchanged
        self._copy: dict[str, BlockEntry] | None = None
        self._version: str | None = None
        self._confirmed = 0.0
        self._loaded = 0.0

    def network(self, ip: IPAddress) -> str:
        network = self._networks.get(ip)
        if network is None:
            network = self._networks.remember(ip, client_network(ip, self.v4, self.v6))
        return network

    async def get(self, ip: IPAddress, now: float) -> BlockEntry | None:
        if self.ledger is not None:
            return self._kept(self.network(ip), now, drop=False)
        if not self._current(now):
            await self._refresh(now)
        return self._copied(self.network(ip), now)

    def get_now(self, ip: IPAddress, now: float) -> BlockEntry | NotNow | None:
        """`get` without waiting: from the ledger, or from this process's copy while it is
        current; NOT_NOW when the copy must be read again (`get` does that)."""
        if self.ledger is not None:
            return self._kept(self.network(ip), now, drop=False)
        if not self._current(now):
            return NOT_NOW
        return self._copied(self.network(ip), now)

    def _current(self, now: float) -> bool:
        """Whether the copy may answer: confirmed within REFRESH, or confirmed now with a
        read that needs no waiting."""
        if self._copy is None or not 0.0 <= now - self._loaded < RELOAD:
            return False
        if 0.0 <= now - self._confirmed < REFRESH:
            return True
        version = self.state.get_now(VERSION_KEY, now)
        if isinstance(version, NotNow) or version != self._version:
            return False
        self._confirmed = now
        return True

    async def _refresh(self, now: float) -> None:
        """Read the version, and the index again if the version moved (in that order: a
        change between the two reads only brings another reading)."""
        version = await self.state.get(VERSION_KEY, now)
        stale = not 0.0 <= now - self._loaded < RELOAD
        if self._copy is None or version != self._version or stale:
            copy = {
                network: entry
                for network, entry in (await self._index(now)).items()
                if entry is not None and entry.until > now
            }
            self._copy, self._version, self._loaded = copy, version, now
        self._confirmed = now

    def _copied(self, network: str, now: float) -> BlockEntry | None:
        assert self._copy is not None
        entry = self._copy.get(network)
        return entry if entry is not None and entry.until > now else None

    async def _changed(self, network: str, entry: BlockEntry | None, now: float) -> None:
        """After this process changed `network`: a new version for the others, and the
        change in this copy at once. The copy keeps the version it was read at, so it is read
        again at its next check: another change may have come in between."""
        await self.state.put(VERSION_KEY, secrets.token_hex(8), MAX_TTL, now)
        if self._copy is None:
            return
        if entry is None:
            self._copy.pop(network, None)
        else:
            self._copy[network] = entry

    async def lookup(self, network: str, now: float) -> BlockEntry | None:
        if self.ledger is not None:
            return self._kept(network, now)
        value = await self.state.get(BLOCK_PREFIX + network, now)
        return BlockEntry.from_json(value) if value is not None else None

    def _kept(self, network: str, now: float, drop: bool = True) -> BlockEntry | None:
        """The ledger's live entry for `network`; with `drop`, a due one is dropped, as the
        memory state drops an expired entry when it is read (`lookup` reads the key; the
        check's `get` reads a copy of the index, which leaves the key as it is)."""
        assert self.ledger is not None
        blocks = self.ledger.blocks
        item = blocks.get(network)
        if item is None:
            return None
        if item[1] <= now:
            if drop:
                del blocks[network]
            return None
        return item[0]

    async def add(self, entry: BlockEntry, now: float, keep_longer: bool = True) -> BlockEntry:
        """Store `entry`; with `keep_longer`, a live entry that lasts longer stays as it is.

        A bot that keeps hitting the trap renews its entry, but never shortens a longer one
        an operator set by hand.
        """
        if self.ledger is not None:
            return self._keep(self.ledger, entry, now, keep_longer)
        ttl = _ttl(entry, now)
        if keep_longer:
            old = await self.lookup(entry.network, now)
            if old is not None and old.until >= entry.until:
                return old
        value = entry.to_json()
        if entry.round_trips():
            # the next read of this entry parses this very value, to an equal entry
            remember_parsed(value, entry)
        await self.state.put(BLOCK_PREFIX + entry.network, value, ttl, now)
        await self.state.hash_put(INDEX_KEY, entry.network, value, MAX_TTL, now)
        await self._changed(entry.network, entry, now)
        return entry

    def add_now(
        self, entry: BlockEntry, now: float, keep_longer: bool = True
    ) -> BlockEntry | NotNow:
        """`add` without a coroutine, into the ledger; NOT_NOW over stored text."""
        if self.ledger is None:
            return NOT_NOW
        return self._keep(self.ledger, entry, now, keep_longer)

    def _keep(self, ledger: Ledger, entry: BlockEntry, now: float, keep_longer: bool) -> BlockEntry:
        ttl = _ttl(entry, now)
        if keep_longer:
            old = self._kept(entry.network, now)
            if old is not None and old.until >= entry.until:
                return old
        # what parsing the stored text would give: the entry itself for the usual types
        kept = entry if entry.round_trips() else BlockEntry.from_json(entry.to_json())
        assert kept is not None  # the generic encoder's text always parses back
        if len(ledger.blocks) >= ledger.next_block_sweep:
            ledger.sweep_blocks(now)
        ledger.blocks[entry.network] = (kept, now + ttl)
        if ledger.index_expires <= now:
            ledger.index.clear()
        ledger.index[entry.network] = kept
        ledger.index_expires = now + MAX_TTL
        return entry

    async def remove(self, network: str) -> bool:
        ledger = self.ledger
        if ledger is not None:
            # as the memory state's delete and hash_delete: expired or not
            found = ledger.blocks.pop(network, None) is not None
            indexed = ledger.index.pop(network, None) is not None
            return found or indexed
        found = await self.state.delete(BLOCK_PREFIX + network)
        indexed = await self.state.hash_delete(INDEX_KEY, network)
        await self._changed(network, None, time.time())
        return found or indexed

    async def _index(self, now: float) -> dict[str, BlockEntry | None]:
        """The index hash, parsed (an unreadable field is None)."""
        ledger = self.ledger
        if ledger is not None:
            if ledger.index_expires <= now:
                ledger.index.clear()
            return dict(ledger.index)
        index = await self.state.hash_get(INDEX_KEY, now)
        return {network: BlockEntry.from_json(value) for network, value in index.items()}

    async def size(self, now: float) -> int:
        """Live entries by the index alone (one read, no clean-up): a level for metrics."""
        return sum(1 for e in (await self._index(now)).values() if e and e.until > now)

    async def entries(self, now: float) -> list[BlockEntry]:
        """Every live entry, oldest first; index fields without a live entry are dropped."""
        out = []
        for network, indexed in (await self._index(now)).items():
            entry = indexed
            if entry is not None and entry.until > now:
                # the key is the truth (a renewal or a purge may have moved on)
                entry = await self.lookup(network, now)
            if entry is None or entry.until <= now:
                if self.ledger is not None:
                    self.ledger.index.pop(network, None)
                else:
                    await self.state.hash_delete(INDEX_KEY, network)
                continue
            out.append(entry)
        return sorted(out, key=lambda e: (e.at, e.network))


def _ttl(entry: BlockEntry, now: float) -> float:
    ttl = min(entry.until - now, MAX_TTL)
    if ttl <= 0:
        raise ValueError("the entry has already expired")
    return ttl
