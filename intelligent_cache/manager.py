"""``CacheManager``: owns the backend, the settings and the stats of one app."""

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.routing import APIRoute

from .backends.base import CacheBackend
from .backends.memory import MemoryBackend
from .config import get_config
from .entry import CachedResponse, decode, encode
from .exceptions import ConfigurationError, CorruptEntryError
from .service import CacheService
from .stats import CacheStats

__all__ = ["STATE_ATTRIBUTE", "CacheManager", "get_cache_service", "manager_from_request"]

logger = logging.getLogger("intelligent_cache")

STATE_ATTRIBUTE = "intelligent_cache"


class CacheManager:
    """The cache of one (or several) FastAPI apps.

    Args:
        backend: where entries live; a fresh :class:`MemoryBackend` if omitted.
        default_ttl: seconds an entry stays fresh when the route sets no TTL.
        enabled: ``False`` turns every cached route into a pass-through.
        include_admin_routes: mount the admin API under ``admin_prefix``.
        admin_dependencies: dependencies applied to every admin route.
        admin_auth_dependency: a single auth dependency (callable) for them.
        allow_unauthenticated_admin: mount admin routes without any auth (a
            warning is logged); without it, admin routes refuse to mount unprotected.
        admin_prefix: where the admin API is mounted.
        max_response_size: bodies larger than this many bytes are not stored.
        clock: wall-clock time source (seconds since the epoch); tests inject one.

    Raises:
        ConfigurationError: a setting is invalid.
    """

    def __init__(
        self,
        backend: CacheBackend | None = None,
        *,
        default_ttl: float = 60,
        enabled: bool = True,
        include_admin_routes: bool = False,
        admin_dependencies: Sequence[Depends] | None = None,
        admin_auth_dependency: Callable[..., Any] | None = None,
        allow_unauthenticated_admin: bool = False,
        admin_prefix: str = "/api/cache",
        max_response_size: int = 10 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if backend is not None and not isinstance(backend, CacheBackend):
            raise ConfigurationError("backend must be a CacheBackend instance")
        if isinstance(default_ttl, bool) or not isinstance(default_ttl, int | float):
            raise ConfigurationError(f"default_ttl must be a number, got {default_ttl!r}")
        if not math.isfinite(default_ttl) or default_ttl <= 0:
            raise ConfigurationError(f"default_ttl must be a positive number, got {default_ttl!r}")
        if isinstance(max_response_size, bool) or not isinstance(max_response_size, int) or max_response_size <= 0:
            raise ConfigurationError(f"max_response_size must be a positive integer, got {max_response_size!r}")
        if not admin_prefix.startswith("/") or admin_prefix.endswith("/"):
            raise ConfigurationError("admin_prefix must start with '/' and not end with one")
        self.backend: CacheBackend = backend if backend is not None else MemoryBackend()
        self.default_ttl = float(default_ttl)
        self.enabled = bool(enabled)
        self.include_admin_routes = include_admin_routes
        self.admin_dependencies = list(admin_dependencies or ())
        self.admin_auth_dependency = admin_auth_dependency
        self.allow_unauthenticated_admin = allow_unauthenticated_admin
        self.admin_prefix = admin_prefix
        self.max_response_size = max_response_size
        self.clock = clock
        self.stats = CacheStats()
        self._degraded = False

    # -- wiring ---------------------------------------------------------------

    def init_app(self, app: FastAPI) -> "CacheManager":
        """Attach this cache to ``app``.

        Stores the manager on ``app.state``, makes :class:`CachedRoute` the
        route class of routes declared on the app from now on, closes the
        backend on shutdown and, if asked, mounts the admin API.

        Raises:
            ConfigurationError: the app already has another cache manager, or
                admin routes were asked for without authentication.
        """
        from .route import CachedRoute

        current = getattr(app.state, STATE_ATTRIBUTE, None)
        if current is not None and current is not self:
            raise ConfigurationError("this app already has a CacheManager")
        setattr(app.state, STATE_ATTRIBUTE, self)
        app.router.route_class = CachedRoute
        for route in app.routes:
            if isinstance(route, APIRoute) and not isinstance(route, CachedRoute):
                config = get_config(route.endpoint)
                if config is not None and config.enabled:
                    logger.warning(
                        "route %s was declared before init_app() and is not cached; "
                        "call init_app() first or use APIRouter(route_class=CachedRoute)",
                        route.path,
                    )
        self._wrap_lifespan(app)
        if self.include_admin_routes:
            from .admin import admin_router

            app.include_router(admin_router(self), prefix=self.admin_prefix)
        return self

    def _wrap_lifespan(self, app: FastAPI) -> None:
        original = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            try:
                async with original(app_) as state:
                    yield state
            finally:
                await self.aclose()

        app.router.lifespan_context = lifespan

    async def aclose(self) -> None:
        """Close the backend's connections."""
        await self.backend.aclose()

    # -- backend calls that fail open --------------------------------------------

    def _failed(self, operation: str, exc: Exception) -> None:
        self.stats.errors += 1
        if not self._degraded:
            self._degraded = True
            logger.warning("cache backend %s failed during %s, serving uncached: %r", self.backend.name, operation, exc)

    def _succeeded(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning("cache backend %s answers again", self.backend.name)

    @property
    def degraded(self) -> bool:
        """Whether the last backend call failed."""
        return self._degraded

    async def lookup(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int] | None]:
        """Read an entry and its counters; ``(None, None)`` if the backend failed."""
        try:
            raw, generations = await self.backend.fetch(key, generation_keys)
        except Exception as exc:
            self._failed("lookup", exc)
            return None, None
        if self._degraded:
            self._succeeded()
        return raw, generations

    def decode(self, raw: bytes) -> Any:
        """Decode a stored value; a corrupt one counts and reads as ``None``."""
        try:
            return decode(raw)
        except CorruptEntryError:
            self.stats.corrupt += 1
            return None

    async def store(self, key: str, entry: CachedResponse) -> bool:
        """Store an entry; ``False`` if the backend failed."""
        try:
            await self.backend.set(key, encode(entry), entry.ttl)
        except Exception as exc:
            self._failed("store", exc)
            return False
        self.stats.stores += 1
        return True

    async def invalidate(self, generation_keys: Sequence[str]) -> bool:
        """Bump counters; ``False`` (logged and counted) if the backend failed."""
        try:
            await self.backend.bump(generation_keys)
        except Exception as exc:
            self.stats.invalidation_errors += 1
            self._failed("invalidation", exc)
            return False
        self.stats.invalidations += 1
        return True

    def service(self) -> CacheService:
        """The manual API bound to this manager."""
        return CacheService(self)


def manager_from_request(request: Request) -> CacheManager | None:
    """The manager attached to the request's app, if any."""
    manager = getattr(request.app.state, STATE_ATTRIBUTE, None)
    return manager if isinstance(manager, CacheManager) else None


def get_cache_service(request: Request) -> CacheService:
    """FastAPI dependency giving the :class:`CacheService` of the current app::

    @app.post("/admin/flush")
    async def flush(cache: CacheService = Depends(get_cache_service)):
        return {"deleted": await cache.clear_all()}
    """
    manager = manager_from_request(request)
    if manager is None:
        raise RuntimeError("no CacheManager on this app: call CacheManager(...).init_app(app)")
    return manager.service()
