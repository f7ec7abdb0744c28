"""``CacheService``: the manual API, for endpoints, workers and scripts."""

import math
from typing import TYPE_CHECKING, Any

from .config import Seconds, as_seconds
from .entry import CachedResponse, encode, encode_value
from .exceptions import BackendError
from .invalidation import invalidation_keys, tag_keys
from .keys import INTERNAL_PREFIX, is_internal
from .stats import summarize

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["CacheService"]

MAX_PATTERN_LENGTH = 1024


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > 4096:
        raise ValueError("a cache key is a non-empty string of at most 4096 characters")
    if is_internal(key):
        raise ValueError(f"keys starting with {INTERNAL_PREFIX!r} are reserved")
    return key


def _check_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"a pattern is a non-empty string of at most {MAX_PATTERN_LENGTH} characters")
    return pattern


class CacheService:
    """Read, write and clear the cache by hand.

    Obtain it with ``Depends(get_cache_service)`` inside a request, or with
    ``manager.service()`` elsewhere. Keys are the cache's logical keys
    (``GET:items:page=1``); the backend adds its namespace. Unlike the request
    path, these methods raise :class:`BackendError` when the backend fails,
    and ``ValueError`` for an invalid argument.
    """

    def __init__(self, manager: "CacheManager") -> None:
        self._manager = manager

    async def _call(self, operation: str, coroutine: Any) -> Any:
        try:
            return await coroutine
        except ValueError:
            raise
        except Exception as exc:
            raise BackendError(f"{operation} failed: {exc!r}") from exc

    async def get(self, key: str) -> Any:
        """The stored value: a :class:`CachedResponse` for cached responses,
        the original value for :meth:`set` values, ``None`` if absent or unreadable."""
        raw = await self._call("get", self._manager.backend.get(_check_key(key)))
        return None if raw is None else self._manager.io.decode(raw)

    async def set(self, key: str, value: Any, ttl: Seconds | None = None) -> None:
        """Store ``value`` (anything msgpack can encode, or a :class:`CachedResponse`).

        Args:
            ttl: seconds (or a :class:`datetime.timedelta`) to keep it; the
                manager's ``default_ttl`` if omitted.
        """
        seconds = self._manager.default_ttl if ttl is None else as_seconds(ttl)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ValueError(f"ttl must be a positive number, got {ttl!r}")
        data = encode(value) if isinstance(value, CachedResponse) else encode_value(value)
        await self._call("set", self._manager.backend.set(_check_key(key), data, float(seconds)))

    async def delete(self, key: str) -> bool:
        """Delete one key; ``True`` if it existed."""
        return bool(await self._call("delete", self._manager.backend.delete(_check_key(key))))

    async def clear_pattern(self, pattern: str) -> int:
        """Delete the keys matching a glob (``GET:items:*``); the number deleted."""
        return int(await self._call("clear", self._manager.backend.clear(_check_pattern(pattern))))

    async def clear_all(self) -> int:
        """Delete every key of this cache's namespace; the number of entries deleted."""
        return int(await self._call("clear", self._manager.backend.clear(None)))

    async def list_keys(self, pattern: str = "*", limit: int = 1000) -> list[str]:
        """Up to ``limit`` cached keys matching a glob (internal counters excluded)."""
        _check_pattern(pattern)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        keys: list[str] = []
        cursor = 0
        while True:
            cursor, page = await self._call("scan", self._manager.backend.scan(pattern, cursor, min(limit, 1000)))
            keys.extend(key for key, _ in page if not is_internal(key))
            if cursor == 0 or len(keys) >= limit:
                return keys[:limit]

    async def invalidate_path(self, path: str) -> None:
        """Invalidate as a successful write to ``path`` would."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("path must start with '/'")
        await self._invalidate(invalidation_keys(path))

    async def invalidate_tags(self, *tags: str) -> None:
        """Invalidate every entry carrying any of ``tags``."""
        if not tags or not all(isinstance(tag, str) and tag for tag in tags):
            raise ValueError("invalidate_tags takes one or more non-empty strings")
        await self._invalidate(tag_keys(tags))

    async def _invalidate(self, counters: list[str]) -> None:
        stats = self._manager.stats
        try:
            await self._call("invalidate", self._manager.backend.bump(counters))
        except BackendError:
            stats.invalidation_errors += 1
            raise
        stats.invalidations += 1

    async def get_stats(self) -> dict[str, Any]:
        """Counters and backend information.

        With a Redis backend the counters add up every process sharing it
        (each flushes its counts every ``stats_flush_interval`` seconds); with
        the memory backend they are this process's.
        """
        manager = self._manager
        counters, shared = await manager.shared_counters()
        stats = summarize(counters)
        stats["scope"] = "shared" if shared else "process"
        stats["backend"] = manager.backend.info()
        stats["enabled"] = manager.enabled
        stats["degraded"] = manager.degraded
        return stats
