"""The tier's blocklist: client networks that gave themselves away at a trap or a retired address.

Entries live in the shared state so that a bot caught at the trap is refused at the primary
a moment later, whichever host runs it. Each entry is one key (``block:<network>``), which
the check reads with one `get` per RCPT, and also a field of one index hash
(``blockidx:all``) so that `mxguard block list` can enumerate them on SQLite and on Redis
alike without a KEYS scan. The index can hold fields whose entry has expired (a hash has one
expiry for all of its fields); `list` drops those as it meets them.
"""

from __future__ import annotations

import ipaddress

from mxguard.memo import Memo
from mxguard.notnow import NOT_NOW, NotNow
from mxguard.policy.address import client_network
from mxguard.policy.facts import IPAddress
from mxguard.state.base import StateStore
from mxguard.walk.blockentry import BlockEntry, remember_parsed
from mxguard.walk.ledger import Ledger, ledger_of

BLOCK_PREFIX = "block:"
INDEX_KEY = "blockidx:all"
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

    def network(self, ip: IPAddress) -> str:
        network = self._networks.get(ip)
        if network is None:
            network = self._networks.remember(ip, client_network(ip, self.v4, self.v6))
        return network

    async def get(self, ip: IPAddress, now: float) -> BlockEntry | None:
        return await self.lookup(self.network(ip), now)

    def get_now(self, ip: IPAddress, now: float) -> BlockEntry | NotNow | None:
        """`get` without waiting, when the state can answer at once (SQLite, memory)."""
        if self.ledger is not None:
            return self._kept(self.network(ip), now)
        value = self.state.get_now(BLOCK_PREFIX + self.network(ip), now)
        if isinstance(value, NotNow):
            return NOT_NOW
        return BlockEntry.from_json(value) if value is not None else None

    async def lookup(self, network: str, now: float) -> BlockEntry | None:
        if self.ledger is not None:
            return self._kept(network, now)
        value = await self.state.get(BLOCK_PREFIX + network, now)
        return BlockEntry.from_json(value) if value is not None else None

    def _kept(self, network: str, now: float) -> BlockEntry | None:
        """The ledger's live entry for `network` (a due one is dropped, as the memory state
        drops an expired entry when it is read)."""
        assert self.ledger is not None
        blocks = self.ledger.blocks
        item = blocks.get(network)
        if item is None:
            return None
        if item[1] <= now:
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
