"""``CacheManager``: owns the backend, the settings and the stats of one app."""

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.params import Depends

from .backends.base import CacheBackend
from .backends.memory import MemoryBackend
from .entry import CachedResponse, VaryIndex, decode, encode
from .exceptions import ConfigurationError, CorruptEntryError, NoCacheManager
from .flights import FlightGroup
from .route import CachedRoute
from .routecheck import check_app_routes
from .scope import STATE_ATTRIBUTE, AttachedCache, manager_from_scope
from .service import CacheService
from .stats import CacheStats
from .writes import InvalidationMiddleware

__all__ = ["STATE_ATTRIBUTE", "CacheManager", "get_cache_service", "manager_from_request", "manager_from_scope"]

logger = logging.getLogger("intelligent_cache")

# Bounds of the decoded-entry memo: values of at most this size, at most this many
# bytes of them in all (each costs about twice its size: the bytes and the entry).
_DECODED_MAX_SIZE = 64 * 1024
_DECODED_MAX_BYTES = 1024 * 1024
# Failed invalidations kept for replay, and how often the replay is tried.
_MAX_PENDING = 10_000
_REPLAY_INTERVAL = 0.25


class CacheManager(AttachedCache):
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
        lock_timeout: seconds a request waits for another one computing the
            same key (nginx's ``proxy_cache_lock_timeout``); after it, the
            request computes for itself without storing.
        cache_control: add ``Cache-Control: max-age=<ttl>`` (``private`` on
            per-caller routes) to cached responses that carry none, so clients
            know how long they may reuse them. Turn off if a CDN in front must
            not cache (it would not see this cache's invalidations).
        soft_purge: treat invalidated entries as stale instead of dead, so
            ``stale_while_revalidate``/``stale_if_error`` may still serve them.
            Off by default: with it, a read right after a write can return
            pre-write data.
        invalidation_exclude_paths: path prefixes whose writes never invalidate
            automatically (webhooks, internal endpoints).
        honor_request_no_cache: whether a request's ``Cache-Control: no-cache``
            or ``max-age=0`` (or ``Pragma: no-cache``) makes it computed fresh.
            ``False`` answers such requests from the cache like any other,
            as nginx does by default, so clients cannot force recomputation.
        key_by_host: make ``scheme://host`` part of every key, for apps served
            under several host names. Without it an entry answers only requests
            for the host it was computed for (others run uncached), so a forged
            ``Host`` header can never poison what other clients receive.
        stats_flush_interval: seconds between two additions of this process's
            counters to the backend's shared ones (Redis), so stats cover every
            worker without a round trip per request.
        key_secret: the secret that keys the digests standing for credential
            values (``Authorization``, cookies, API keys) in cache keys, which
            never hold such values in plaintext. Every instance sharing a
            backend must use the same one. By default the backend keeps one
            (Redis: created once in the namespace; memory: random per process).
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
        lock_timeout: float = 5.0,
        cache_control: bool = True,
        soft_purge: bool = False,
        invalidation_exclude_paths: Sequence[str] = (),
        stats_flush_interval: float = 1.0,
        key_by_host: bool = False,
        honor_request_no_cache: bool = True,
        key_secret: str | bytes | None = None,
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
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or not 0 < lock_timeout < 3600:
            raise ConfigurationError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
        if isinstance(invalidation_exclude_paths, str) or not all(
            isinstance(prefix, str) and prefix.startswith("/") for prefix in invalidation_exclude_paths
        ):
            raise ConfigurationError("invalidation_exclude_paths takes a list of path prefixes starting with '/'")
        if key_secret is not None and (not isinstance(key_secret, str | bytes) or len(key_secret) < 16):
            raise ConfigurationError("key_secret must be a str or bytes of at least 16 characters")
        self._secret: bytes | None = key_secret.encode() if isinstance(key_secret, str) else key_secret
        self.backend: CacheBackend = backend if backend is not None else MemoryBackend()
        self.default_ttl = float(default_ttl)
        self.enabled = bool(enabled)
        self.include_admin_routes = include_admin_routes
        self.admin_dependencies = list(admin_dependencies or ())
        self.admin_auth_dependency = admin_auth_dependency
        self.allow_unauthenticated_admin = allow_unauthenticated_admin
        self.admin_prefix = admin_prefix
        self.max_response_size = max_response_size
        if isinstance(stats_flush_interval, bool) or not isinstance(stats_flush_interval, int | float):
            raise ConfigurationError("stats_flush_interval must be a number of seconds")
        if not 0 < stats_flush_interval <= 3600:
            raise ConfigurationError("stats_flush_interval must be between 0 and 3600 seconds")
        self.stats_flush_interval = float(stats_flush_interval)
        self.lock_timeout = float(lock_timeout)
        self.cache_control = bool(cache_control)
        self.key_by_host = bool(key_by_host)
        self.honor_request_no_cache = bool(honor_request_no_cache)
        self.soft_purge = bool(soft_purge)
        self.invalidation_exclude_paths = tuple(prefix.rstrip("/") or "/" for prefix in invalidation_exclude_paths)
        self.clock = clock
        self.stats = CacheStats()
        self.flights: FlightGroup[CachedResponse] = FlightGroup()
        self._refreshing: set[str] = set()
        self._decoded: dict[bytes, Any] = {}
        self._decoded_bytes = 0
        # Invalidations that failed (backend unreachable), in order, until they land.
        self._pending: dict[str, None] = {}
        self._pending_overflow = False
        self._replaying: asyncio.Task[None] | None = None
        # Locks whose release failed: this process frees them before waiting on them.
        self._unreleased: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._degraded = False

    # -- wiring ---------------------------------------------------------------

    def init_app(self, app: FastAPI) -> "CacheManager":
        """Attach this cache to ``app``.

        Stores the manager on ``app.state``, makes :class:`CachedRoute` the
        route class of routes declared on the app from now on, installs the
        write-invalidation middleware, checks every route when the app starts,
        closes the backend on shutdown and, if asked, mounts the admin API.

        Raises:
            ConfigurationError: the app already has another cache manager or
                has started, a route declared so far cannot be cached as its
                ``@cache_config`` asks (see :func:`check_app_routes`), or admin
                routes were asked for without authentication.
        """
        current = getattr(app.state, STATE_ATTRIBUTE, None)
        if current is not None and current is not self:
            raise ConfigurationError("this app already has a CacheManager")
        check_app_routes(app)
        try:
            app.add_middleware(InvalidationMiddleware, manager=self)
        except RuntimeError as exc:  # Starlette: the middleware stack is built once the app started
            raise ConfigurationError(f"init_app() must be called before the app starts: {exc}") from exc
        setattr(app.state, STATE_ATTRIBUTE, self)
        app.router.route_class = CachedRoute
        self._wrap_lifespan(app)
        if self.include_admin_routes:
            from .admin import admin_router

            app.include_router(admin_router(self), prefix=self.admin_prefix)
        return self

    def _wrap_lifespan(self, app: FastAPI) -> None:
        original = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            # Routes may have been added since init_app: refuse to start with one the cache cannot see.
            check_app_routes(app)
            flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
            try:
                async with original(app_) as state:
                    yield state
            finally:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)
                await self.flush_stats()
                await self.aclose()

        app.router.lifespan_context = lifespan

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.stats_flush_interval)
            await self.flush_stats()

    async def flush_stats(self) -> None:
        """Add this process's new counts to the backend's shared counters (if it has any)."""
        delta = self.stats.delta()
        if not delta:
            return
        try:
            await self.backend.add_counters(delta)
        except Exception as exc:
            self._failed("stats flush", exc)
            return
        self.stats.mark_flushed(delta)

    async def shared_counters(self) -> tuple[dict[str, int], bool]:
        """Counters of every process sharing the backend (this one's unflushed counts included).

        The flag says whether they are shared: per-process backends, or a
        failing shared one, give this process's counters and ``False``.
        """
        try:
            shared = await self.backend.read_counters()
        except Exception as exc:
            self._failed("stats read", exc)
            shared = None
        if shared is None:
            return dict(self.stats.counters), False
        for name, amount in self.stats.delta().items():
            shared[name] = shared.get(name, 0) + amount
        return shared, True

    async def aclose(self) -> None:
        """Cancel background refreshes and close the backend's connections."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.aclose()

    def excluded_from_invalidation(self, path: str) -> bool:
        """Whether writes to ``path`` skip automatic invalidation."""
        return any(
            prefix == "/" or path == prefix or path.startswith(prefix + "/")
            for prefix in self.invalidation_exclude_paths
        )

    def refresh_in_background(self, key: str, refresh: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``refresh()`` unless one for ``key`` is already running here; ``False`` if it is."""
        if key in self._refreshing:
            return False
        self._refreshing.add(key)

        async def run() -> None:
            try:
                token = await self.acquire_lock("~l:r:" + key)
                if token is None:  # another process refreshes it
                    return
                try:
                    await refresh()
                finally:
                    await self.release_lock("~l:r:" + key, token)
            except Exception as exc:
                self.stats.refresh_errors += 1
                logger.warning("background refresh of %s failed: %r", key, exc)
            finally:
                self._refreshing.discard(key)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

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
        """Read an entry and its counters; ``(None, None)`` if the backend failed.

        While an invalidation of this process has not landed, nothing is read:
        entries it should have invalidated may still be there.
        """
        try:
            if self._pending or self._pending_overflow:
                await self._land_pending()
            raw, generations = await self.backend.fetch(key, generation_keys)
        except Exception as exc:
            self._failed("lookup", exc)
            return None, None
        if self._degraded:
            self._succeeded()
        return raw, generations

    async def read(self, key: str) -> bytes | None:
        """Read a value; ``None`` (counted) if the backend failed."""
        try:
            return await self.backend.get(key)
        except Exception as exc:
            self._failed("lookup", exc)
            return None

    async def acquire_lock(self, name: str) -> str | None:
        """A cross-process lock held at most ``lock_timeout``; a token, or ``None`` if taken.

        A backend failure grants the lock: computing is always safe.
        """
        if not self.backend.shared:  # one process: its own single-flight is the whole story
            return "local"
        try:
            stale_token = self._unreleased.pop(name, None)
            if stale_token is not None:  # ours, left behind by a failed release
                await self.backend.release_lock(name, stale_token)
            return await self.backend.acquire_lock(name, self.lock_timeout)
        except Exception as exc:
            self._failed("lock", exc)
            return "unlocked"

    async def release_lock(self, name: str, token: str) -> None:
        """Release a lock taken with :meth:`acquire_lock`."""
        if not self.backend.shared:
            return
        try:
            await self.backend.release_lock(name, token)
        except Exception as exc:
            self._failed("unlock", exc)
            if len(self._unreleased) < _MAX_PENDING:
                self._unreleased[name] = token

    async def secret(self) -> bytes | None:
        """The key secret (see ``key_secret``); ``None`` (counted) if the backend failed to give one."""
        if self._secret is None:
            try:
                self._secret = await self.backend.secret()
            except Exception as exc:
                self._failed("secret", exc)
                return None
        return self._secret

    @property
    def known_secret(self) -> bytes | None:
        """The key secret if already known (the fast path cannot wait for the backend)."""
        return self._secret

    def decode(self, raw: bytes) -> Any:
        """Decode a stored value; a corrupt one counts and reads as ``None``.

        Recently decoded small values are remembered by their bytes: a hot entry
        is unpacked once, not on every HIT (equal bytes decode to equal values).
        """
        decoded = self._decoded.get(raw)
        if decoded is not None:
            return decoded
        try:
            decoded = decode(raw)
        except CorruptEntryError:
            self.stats.corrupt += 1
            return None
        # Only immutable results are shared; plain values (lists, dicts) are decoded each time.
        if len(raw) <= _DECODED_MAX_SIZE and isinstance(decoded, CachedResponse | VaryIndex):
            memo = self._decoded
            while memo and self._decoded_bytes + len(raw) > _DECODED_MAX_BYTES:
                self._decoded_bytes -= len(next(iter(memo)))
                del memo[next(iter(memo))]
            memo[raw] = decoded
            self._decoded_bytes += len(raw)
        return decoded

    async def store(
        self, key: str, entry: CachedResponse, keep_for: float | None = None, generation_keys: Sequence[str] = ()
    ) -> bool:
        """Store an entry for ``keep_for`` seconds (default: its TTL); ``False`` if the backend failed.

        ``generation_keys`` are the counters it depends on: the backend keeps
        them at least as long as the entry.
        """
        try:
            await self.backend.put(key, encode(entry), entry.ttl if keep_for is None else keep_for, generation_keys)
        except Exception as exc:
            self._failed("store", exc)
            return False
        self.stats.stores += 1
        return True

    async def store_raw(self, key: str, value: bytes, ttl: float) -> bool:
        """Store already-encoded bytes; ``False`` if the backend failed."""
        try:
            await self.backend.set(key, value, ttl)
        except Exception as exc:
            self._failed("store", exc)
            return False
        return True

    async def invalidate(self, generation_keys: Sequence[str]) -> bool:
        """Bump counters; ``False`` (logged and counted) if the backend failed.

        A bump that fails is not forgotten: this process retries it in the
        background, and lands it before it trusts the backend again for a lookup.
        """
        try:
            await self.backend.bump(generation_keys)
        except Exception as exc:
            self.stats.invalidation_errors += 1
            self._failed("invalidation", exc)
            self._keep_pending(generation_keys)
            return False
        self.stats.invalidations += 1
        return True

    def _keep_pending(self, generation_keys: Sequence[str]) -> None:
        for name in generation_keys:
            self._pending[name] = None
        if len(self._pending) > _MAX_PENDING:
            # Too many to replay one by one: drop the whole namespace instead.
            self._pending.clear()
            self._pending_overflow = True
        if self._replaying is None or self._replaying.done():
            self._replaying = asyncio.get_running_loop().create_task(self._replay_pending())
            self._tasks.add(self._replaying)
            self._replaying.add_done_callback(self._tasks.discard)

    async def _replay_pending(self) -> None:
        while self._pending or self._pending_overflow:
            await asyncio.sleep(_REPLAY_INTERVAL)
            try:
                await self._land_pending()
            except Exception:  # still unreachable; the next round tries again
                continue

    async def _land_pending(self) -> None:
        """Land every invalidation that failed earlier (raises if the backend still fails)."""
        if self._pending_overflow:
            await self.backend.clear()
            self._pending_overflow = False
            self._pending.clear()
        if self._pending:
            names = list(self._pending)
            await self.backend.bump(names)
            for name in names:
                self._pending.pop(name, None)
            logger.warning("cache backend %s: %d delayed invalidations landed", self.backend.name, len(names))

    def service(self) -> CacheService:
        """The manual API bound to this manager."""
        return CacheService(self)


def manager_from_request(request: Request) -> CacheManager | None:
    """The manager attached to the request's app, if any."""
    return manager_from_scope(request.scope)


def get_cache_service(request: Request) -> CacheService:
    """FastAPI dependency giving the :class:`CacheService` of the current app::

    @app.post("/admin/flush")
    async def flush(cache: CacheService = Depends(get_cache_service)):
        return {"deleted": await cache.clear_all()}
    """
    manager = manager_from_request(request)
    if manager is None:
        raise NoCacheManager("no CacheManager on this app: call CacheManager(...).init_app(app)")
    return manager.service()
