"""Storage backends. ``RedisBackend`` is imported lazily, so ``redis`` stays optional."""

from typing import TYPE_CHECKING, Any

from .base import CacheBackend
from .memory import MemoryBackend
from .near import NearCache

if TYPE_CHECKING:
    from .redis import RedisBackend
    from .redis_cluster import RedisClusterBackend

__all__ = ["CacheBackend", "MemoryBackend", "NearCache", "RedisBackend", "RedisClusterBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    if name == "RedisClusterBackend":
        from .redis_cluster import RedisClusterBackend

        return RedisClusterBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
