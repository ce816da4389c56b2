"""Redis state: one shared store for an MX tier whose hosts are separate machines.

Why it is built the way it is:

- Every operation that reads, decides and writes is one Lua script (`state/lua/*.lua`), so two
  MX hosts racing on one key cannot both win, and each decision costs one round trip. Scripts
  are registered once; redis-py runs them by EVALSHA and reloads them after NOSCRIPT (the
  script cache is empty after a restart or a failover).
- The clock is the server's (`TIME` inside the script), so hosts whose clocks drift still
  agree on when a greylist delay has passed. `trust_client_clock=True` makes the scripts use
  the `now` the caller passes instead; that is for the contract tests and the simulator, which
  drive a virtual clock, and is never set by `open_state`.
- Each entry carries its logical expiry next to its value and Redis's TTL is set as well, so
  both clocks give the same expiry rules and Redis still frees the memory by itself (with a
  caller's clock, a minute later than due: a virtual clock may run behind real time).
- Keys are hashed: interface keys hold IPv6 networks and other text with ``:``, ``{`` or
  ``}``. A Redis key is ``<prefix>:<use>:{<digest>}``: the use (``gl``, ``rate``, ...) stays
  readable so an operator can count keys per use with ``SCAN MATCH``; the digest is the hash
  tag, so a plain entry and the hash of the same interface key (``...:h``) share a Redis
  Cluster slot and `delete` removes both in one command.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlparse

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mxguard.state.base import GreylistResult, GreylistStatus, StateStore, StateUnavailable

T = TypeVar("T")

#: errors that mean "the store cannot take decisions now", as opposed to a bug in a script or
#: key: unreachable, still loading, a wrong password (AuthenticationError is a ConnectionError),
#: a primary demoted under us (READONLY; the next connection finds the new one), a full one
#: (OOM under `maxmemory-policy noeviction`)
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, OSError)
#: the same, for replies redis-py has no class for: a primary that refuses writes because it
#: lost its replicas (`min-replicas-to-write`), a replica cut from its primary
_UNAVAILABLE_REPLIES = ("NOREPLICAS", "MASTERDOWN")

#: how long a connection attempt and a reply may take before the store counts as down; a
#: policy decision waits on this, so it is short (URL options of the same name win)
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 2.0

_SCRIPTS = (
    "get",
    "put",
    "put_if_absent",
    "compare_and_put",
    "counter_add",
    "hash_put",
    "hash_get",
    "hash_delete",
    "greylist",
)


def _load_script(name: str) -> str:
    lua = resources.files("mxguard.state").joinpath("lua")
    return lua.joinpath("prelude.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


def redis_key(prefix: str, key: str) -> str:
    """The Redis key of an interface key (also for operators who need to find one)."""
    use, sep, _ = key.partition(":")
    if not (sep and use.isascii() and use.isalnum() and len(use) <= 16):
        use = "_"
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=10).digest()
    return f"{prefix}:{use}:{{{base64.b32encode(digest).decode().lower()}}}"


def _client_from_url(url: str, **defaults: Any) -> aioredis.Redis:
    """A client with its own pool for redis://, rediss://, unix:// or redis+sentinel://.

    redis-py has no URL form for Sentinel, so we read the one other clients use:
    ``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_password=..]``.
    """
    if not url.startswith("redis+sentinel://"):
        client = aioredis.Redis.from_url(url, **defaults)
        pool = client.connection_pool
        try:  # redis-py passes unknown URL options on and fails at the first connect: now, please
            pool.connection_class(**pool.connection_kwargs)
        except TypeError as exc:
            raise ValueError(f"unknown option in the Redis URL: {exc}") from None
        return client
    parsed = urlparse(url)
    hosts_part = parsed.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for item in hosts_part.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parsed.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL names the service: redis+sentinel://H:P,H:P/SERVICE[/DB]")
    service = unquote(path[0])
    options: dict[str, Any] = dict(defaults)
    if len(path) == 2:
        options["db"] = int(path[1])
    if parsed.password:
        options["password"] = unquote(parsed.password)
    if parsed.username:
        options["username"] = unquote(parsed.username)
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": defaults.get("socket_connect_timeout"),
        "socket_timeout": defaults.get("socket_timeout"),
    }
    for name, value in parse_qsl(parsed.query):
        if name == "sentinel_password":
            sentinel_kwargs["password"] = value
        elif name in ("socket_timeout", "socket_connect_timeout"):
            options[name] = float(value)
        else:
            raise ValueError(f"unknown sentinel URL option {name!r}")
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master: aioredis.Redis = sentinel.master_for(service, **options)
    return master


class RedisState(StateStore):
    """The state interface on Redis; see the module docstring for the choices made."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        key_prefix: str = "mxg",
        *,
        trust_client_clock: bool = False,
        max_connections: int | None = 64,
    ) -> None:
        if not key_prefix or any(c in key_prefix for c in "{}"):
            raise ValueError(f"key_prefix {key_prefix!r} must be non-empty and free of braces")
        self.url = url
        self.prefix = key_prefix
        self.trust_client_clock = trust_client_clock
        self._client = _client_from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
            socket_timeout=DEFAULT_SOCKET_TIMEOUT,
            max_connections=max_connections,
            # one immediate retry replaces a pooled connection that a server restart broke;
            # more would only delay telling the caller that the store is down
            retry=Retry(NoBackoff(), 1),
            client_name="mxguard",
        )
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(_load_script(name)) for name in _SCRIPTS
        }

    # ------------------------------------------------------------------ plumbing

    def _key(self, key: str) -> str:
        return redis_key(self.prefix, key)

    def _hkey(self, key: str) -> str:
        return self._key(key) + ":h"

    def _clock(self, now: float) -> str:
        return repr(float(now)) if self.trust_client_clock else ""

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except _UNAVAILABLE as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        except ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise StateUnavailable(f"redis: {exc}") from exc
            raise

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._guard(lambda: self._scripts[script](keys=list(keys), args=list(args)))

    async def open(self) -> None:
        """Load the scripts now, so the first decisions do not each pay a NOSCRIPT round trip."""

        async def load() -> None:
            for script in self._scripts.values():
                script.sha = await self._client.script_load(script.script)

        await self._guard(load)

    # ------------------------------------------------------------------ the interface

    async def get(self, key: str, now: float) -> str | None:
        value = await self._run("get", [self._key(key)], [self._clock(now)])
        return None if value is None else str(value)

    async def put(self, key: str, value: str, ttl: float, now: float) -> None:
        await self._run("put", [self._key(key)], [self._clock(now), value, repr(float(ttl))])

    async def put_if_absent(self, key: str, value: str, ttl: float, now: float) -> str | None:
        old = await self._run(
            "put_if_absent", [self._key(key)], [self._clock(now), value, repr(float(ttl))]
        )
        return None if old is None else str(old)

    async def compare_and_put(
        self, key: str, expected: str | None, value: str, ttl: float, now: float
    ) -> bool:
        args = [self._clock(now), value, repr(float(ttl)), "0" if expected is None else "1"]
        args.append(expected or "")
        return bool(await self._run("compare_and_put", [self._key(key)], args))

    async def delete(self, key: str) -> bool:
        # both keys carry the same hash tag, so one DEL is one slot even on a cluster
        n = await self._guard(lambda: self._client.delete(self._key(key), self._hkey(key)))
        return bool(n)

    async def counter_add(self, key: str, amount: int, window: float, now: float) -> int:
        total = await self._run(
            "counter_add", [self._key(key)], [self._clock(now), int(amount), repr(float(window))]
        )
        return int(total)

    async def hash_put(self, key: str, field: str, value: str, ttl: float, now: float) -> None:
        if field.startswith("\0"):
            raise ValueError("hash fields starting with NUL are reserved for the expiry")
        await self._run(
            "hash_put", [self._hkey(key)], [self._clock(now), field, value, repr(float(ttl))]
        )

    async def hash_get(self, key: str, now: float) -> dict[str, str]:
        flat = await self._run("hash_get", [self._hkey(key)], [self._clock(now)])
        return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def hash_delete(self, key: str, field: str) -> bool:
        if field.startswith("\0"):
            return False
        return bool(await self._run("hash_delete", [self._hkey(key)], [field]))

    async def greylist(
        self, key: str, now: float, delay: float, retry_window: float, pass_ttl: float
    ) -> GreylistResult:
        status, first = await self._run(
            "greylist",
            [self._key(key)],
            [
                self._clock(now),
                repr(float(delay)),
                repr(float(retry_window)),
                repr(float(pass_ttl)),
            ],
        )
        return GreylistResult(GreylistStatus(status), float(first))

    async def count(self, use: str, now: float) -> int:
        if not (use.isascii() and use.isalnum() and len(use) <= 16):
            raise ValueError(f"not a key use Redis keys keep: {use!r}")
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self.prefix) + f":{use}:*"

        async def live(keys: list[str]) -> int:
            # entries are "<expires>|<value>": the logical expiry decides, as in every script
            values = await self._client.mget(keys)  # str: the client decodes responses
            expiries = (float(str(v).partition("|")[0]) for v in values if v is not None)
            return sum(1 for expires in expiries if expires > now)

        async def scan() -> int:
            n, page = 0, []
            async for key in self._client.scan_iter(match=pattern, count=1000):
                if not key.endswith(":h"):  # a hash's own key, not an entry
                    page.append(key)
                if len(page) >= 1000:
                    n, page = n + await live(page), []
            return n + (await live(page) if page else 0)

        return await self._guard(scan)

    async def ping(self) -> bool:
        return bool(await self._guard(self._client.ping))

    async def memory_usage(self, key: str) -> int | None:
        """Bytes Redis spends on one interface key's entry (`MEMORY USAGE`), for sizing."""
        n = await self._guard(lambda: self._client.memory_usage(self._key(key), samples=0))
        return None if n is None else int(n)

    async def close(self) -> None:
        await self._client.aclose()
