"""What the Redis backends share: the redis-py import, key mapping, the breaker guard."""

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("RedisBackend needs redis-py: pip install 'fastapi-intelligent-cache[redis]'") from exc

from ..exceptions import ConfigurationError
from .base import CacheBackend, new_generation
from .breaker import CircuitBreaker

__all__ = [
    "AsyncRedisCluster",
    "ClusterNode",
    "NoBackoff",
    "RedisConnectionError",
    "Retry",
    "Sentinel",
    "aioredis",
]

logger = logging.getLogger("intelligent_cache")

T = TypeVar("T")

BATCH = 500
INTERNAL_PREFIX = "~"
STATS_KEY = "~s:stats"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def node_cursor(cursor: Any) -> int:
    # redis-py's cluster SCAN with target_nodes answers {node_name: cursor}.
    if isinstance(cursor, dict):
        return int(next(iter(cursor.values()), 0))
    return int(cursor)


def _generation(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class RedisBase(CacheBackend):
    """What the single-server and the Cluster backends share."""

    shared = True

    _client: Any

    def __init__(
        self,
        *,
        key_prefix: str,
        generation_ttl: float,
        failure_threshold: int,
        recovery_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ConfigurationError("key_prefix must be a non-empty string: it is the cache's namespace")
        if generation_ttl < 1:
            raise ConfigurationError("generation_ttl must be at least one second")
        self.key_prefix = key_prefix
        self._glob_prefix = glob_escape(key_prefix)
        self.generation_ttl = int(generation_ttl)
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold, recovery_timeout=recovery_timeout, clock=clock, name=self.name
        )

    # -- keys -------------------------------------------------------------------

    def _physical(self, key: str) -> str:
        return self.key_prefix + key

    def _logical(self, physical: bytes | str) -> str:
        text = physical.decode("utf-8", "surrogateescape") if isinstance(physical, bytes) else physical
        return text[len(self.key_prefix) :]

    def _physical_pattern(self, pattern: str) -> str:
        return self._glob_prefix + pattern

    # -- the breaker around every call -------------------------------------------

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        self.breaker.before_call()
        try:
            result = await call()
        except Exception as exc:
            self.breaker.failed(exc)
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        if self.breaker.state != "closed" or self.breaker.failures:
            self.breaker.succeeded()
        return result

    # -- CacheBackend ---------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = await self._guard(lambda: self._client.get(self._physical(key)))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = max(1, int(ttl * 1000))
        await self._guard(lambda: self._client.set(self._physical(key), value, px=milliseconds))

    async def delete(self, key: str) -> bool:
        return bool(await self._guard(lambda: self._client.unlink(self._physical(key))))

    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        names = [self._physical(key), *(self._physical(name) for name in generation_keys)]
        values = await self._guard(lambda: self._mget(names))
        raw = values[0] if isinstance(values[0], bytes) else None
        generations = [_generation(value) for value in values[1:]]
        missing = [index for index, value in enumerate(generations) if value is None]
        if missing:
            created = await self._guard(lambda: self._create_generations([names[i + 1] for i in missing]))
            for index, value in zip(missing, created, strict=True):
                generations[index] = value
        return raw, [g for g in generations if g is not None]

    async def _create_generations(self, names: list[str]) -> list[int]:
        # SET NX GET: create the counter only if still absent and learn the value
        # that won, so concurrent first readers agree on one snapshot.
        async with self._client.pipeline(transaction=False) as pipe:
            proposals = [new_generation() for _ in names]
            for name, proposal in zip(names, proposals, strict=True):
                pipe.set(name, proposal, ex=self.generation_ttl, nx=True, get=True)
            results = await pipe.execute()
        values: list[int] = []
        repair: list[tuple[str, int]] = []
        for name, proposal, previous in zip(names, proposals, results, strict=True):
            if previous is None:
                values.append(proposal)
                continue
            existing = _generation(previous)
            if existing is None:  # garbage under a counter key: replace it
                repair.append((name, proposal))
                values.append(proposal)
            else:
                values.append(existing)
        if repair:
            async with self._client.pipeline(transaction=False) as pipe:
                for name, proposal in repair:
                    pipe.set(name, proposal, ex=self.generation_ttl)
                await pipe.execute()
        return values

    async def bump(self, generation_keys: Sequence[str]) -> None:
        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for name in generation_keys:
                    physical = self._physical(name)
                    # A counter that expired or was evicted restarts from a random value,
                    # never from 1: INCR alone would recreate values old entries remember.
                    pipe.set(physical, new_generation(), ex=self.generation_ttl, nx=True)
                    pipe.incr(physical)
                    pipe.expire(physical, self.generation_ttl, nx=True)
                await pipe.execute()

        await self._guard(run)

    async def add_counters(self, deltas: Mapping[str, int]) -> None:
        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for name, amount in deltas.items():
                    pipe.hincrby(self._physical(STATS_KEY), name, amount)
                await pipe.execute()

        await self._guard(run)

    async def read_counters(self) -> dict[str, int] | None:
        raw = await self._guard(lambda: self._client.hgetall(self._physical(STATS_KEY)))
        return {name.decode("utf-8", "replace"): int(value) for name, value in raw.items()}

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        milliseconds = max(1, int(ttl * 1000))
        taken = await self._guard(lambda: self._client.set(self._physical(name), token, px=milliseconds, nx=True))
        return token if taken else None

    async def release_lock(self, name: str, token: str) -> None:
        # Delete only if we still hold it: after a timeout someone else may.
        await self._guard(lambda: self._client.eval(_RELEASE, 1, self._physical(name), token))

    async def _ttls(self, node_client: Any, keys: list[bytes]) -> list[tuple[str, float | None]]:
        if not keys:
            return []
        async with node_client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pttl(key)
            ttls = await pipe.execute()
        page: list[tuple[str, float | None]] = []
        for key, ttl in zip(keys, ttls, strict=True):
            logical = self.logical_or_none(key)
            if ttl == -2 or logical is None:  # deleted since the scan, or not one of ours
                continue
            page.append((logical, None if ttl < 0 else ttl / 1000))
        return page

    def logical_or_none(self, physical: bytes) -> str | None:
        """The logical key, or ``None`` for a key this cache cannot have written (not UTF-8)."""
        try:
            physical.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return self._logical(physical)

    def clearable(self, physical: bytes) -> bool:
        """Whether a clear may delete this key: everything in the namespace but the shared stats."""
        return not self._logical(physical).startswith(STATS_KEY)

    async def ping(self) -> None:
        # Not guarded: health checks must see Redis itself, not the breaker.
        await self._client.ping()

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "key_prefix": self.key_prefix, "breaker": self.breaker.snapshot()}

    async def _mget(self, names: list[str]) -> list[Any]:
        raise NotImplementedError
