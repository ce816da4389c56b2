"""In-process state for tests and the simulator: the reference behaviour of the interface."""

from __future__ import annotations

from mxguard.state.base import GreylistResult, GreylistStatus, StateStore, greylist_transition


class MemoryState(StateStore):
    kind = "memory"
    immediate = True  # nothing here ever awaits

    def __init__(self) -> None:
        self._kv: dict[str, tuple[str, float]] = {}
        self._hashes: dict[str, tuple[dict[str, str], float]] = {}

    def _live(self, key: str, now: float) -> str | None:
        item = self._kv.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._kv[key]
            return None
        return item[0]

    async def get(self, key: str, now: float) -> str | None:
        return self._live(key, now)

    async def count(self, use: str, now: float) -> int:
        head = use + ":"
        return sum(1 for k, (_, exp) in self._kv.items() if exp > now and k.startswith(head))

    def get_now(self, key: str, now: float) -> str | None:
        return self._live(key, now)

    async def put(self, key: str, value: str, ttl: float, now: float) -> None:
        self._kv[key] = (value, now + ttl)

    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        old = self._live(key, now)
        if old is None:
            self._kv[key] = (value, now + ttl)
        return old

    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        if self._live(key, now) != expected:
            return False
        self._kv[key] = (value, now + ttl)
        return True

    async def delete(self, key: str) -> bool:
        # both, as SQLite and Redis do: `or` would keep the hash when an entry was found
        found_entry = self._kv.pop(key, None) is not None
        found_hash = self._hashes.pop(key, None) is not None
        return found_entry or found_hash

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        return self.counter_add_now(key, amount, window, now)

    def counter_add_now(self, key: str, amount: int, window: float, now: float) -> int:
        item = self._kv.get(key)
        if item is None or item[1] <= now:
            total, expires = amount, now + window
        else:
            total, expires = int(item[0]) + amount, item[1]
        self._kv[key] = (str(total), expires)
        return total

    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        self.hash_put_now(key, field, value, ttl, now)

    def hash_put_now(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        fields = self._hash(key, now)
        fields[field] = value
        self._hashes[key] = (fields, now + ttl)

    def _hash(self, key: str, now: float) -> dict[str, str]:
        item = self._hashes.get(key)
        if item is None or item[1] <= now:
            self._hashes.pop(key, None)
            return {}
        return item[0]

    async def hash_get(self, key: str, now: float) -> dict[str, str]:
        return dict(self._hash(key, now))

    async def hash_delete(self, key: str, field: str) -> bool:
        item = self._hashes.get(key)
        return item is not None and item[0].pop(field, None) is not None

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        return self._greylist(key, now, delay, retry_window, pass_ttl, None)

    def greylist_now(
        self,
        key: str,
        now: float,
        delay: float,
        retry_window: float,
        pass_ttl: float,
        pass_counter: str | None = None,
        allow_after: int = 0,
    ) -> GreylistResult:
        if allow_after > 0 and pass_counter is not None:
            passes = self._live(pass_counter, now)
            if passes is not None and int(passes) >= allow_after:
                return GreylistResult(GreylistStatus.ALLOWED, now)
        return self._greylist(key, now, delay, retry_window, pass_ttl, pass_counter)

    def _greylist(
        self,
        key: str,
        now: float,
        delay: float,
        retry_window: float,
        pass_ttl: float,
        pass_counter: str | None,
    ) -> GreylistResult:
        new, ttl, result = greylist_transition(
            self._live(key, now), now, delay, retry_window, pass_ttl
        )
        if new is not None:
            self._kv[key] = (new, now + ttl)
        if pass_counter is not None and result.status is GreylistStatus.PASSED:
            self.counter_add_now(pass_counter, 1, pass_ttl, now)
        return result

    async def purge_expired(self, now: float) -> int:
        dead = [k for k, (_, exp) in self._kv.items() if exp <= now]
        dead_h = [k for k, (_, exp) in self._hashes.items() if exp <= now]
        for k in dead:
            del self._kv[k]
        for k in dead_h:
            del self._hashes[k]
        return len(dead) + len(dead_h)
