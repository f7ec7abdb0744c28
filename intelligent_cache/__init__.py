"""intelligent-cache: a server-side response cache for FastAPI.

Quick start::

    from fastapi import FastAPI
    from intelligent_cache import CacheManager, cache_config

    app = FastAPI()
    CacheManager(default_ttl=60).init_app(app)

    @app.get("/items")
    @cache_config(ttl_seconds=3600)
    async def list_items(page: int = 1): ...
"""

from typing import TYPE_CHECKING, Any

from .backends import CacheBackend, MemoryBackend, NearCache
from .config import CacheConfig, cache_config, invalidates
from .entry import CachedResponse
from .exceptions import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    CorruptEntryError,
    IntelligentCacheError,
    NoCacheManager,
)
from .functions import cached, use_cache
from .keys import build_key
from .manager import CacheManager, get_cache_service
from .route import CachedRoute
from .service import CacheService
from .stats import CacheStats

if TYPE_CHECKING:
    from .backends.redis import RedisBackend
    from .backends.redis_cluster import RedisClusterBackend

__version__ = "0.3.0"

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CacheBackend",
    "CacheConfig",
    "CacheManager",
    "CacheService",
    "CacheStats",
    "CachedResponse",
    "CachedRoute",
    "ConfigurationError",
    "CorruptEntryError",
    "IntelligentCacheError",
    "MemoryBackend",
    "NearCache",
    "NoCacheManager",
    "RedisBackend",
    "RedisClusterBackend",
    "__version__",
    "build_key",
    "cache_config",
    "cached",
    "get_cache_service",
    "invalidates",
    "use_cache",
]


def __getattr__(name: str) -> Any:
    # The Redis backends need the optional redis extra: imported on first use only.
    if name in ("RedisBackend", "RedisClusterBackend"):
        from . import backends

        return getattr(backends, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
