"""``CacheManager``: owns the backend, the settings and the stats of one app."""

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.params import Depends

from .admin import AdminOptions, admin_router
from .backends.base import CacheBackend
from .backends.failopen import FailOpenBackend, describe_error
from .backends.memory import MemoryBackend
from .config import Seconds, as_seconds
from .edge import EdgeLayer, install
from .entry import CachedResponse
from .exceptions import ConfigurationError, NoCacheManager
from .flights import FlightGroup
from .keys import refresh_lock_name
from .route import CachedRoute
from .routecheck import check_app_routes
from .scope import STATE_ATTRIBUTE, AttachedCache, manager_from_scope
from .service import CacheService
from .stats import CacheStats
from .tasks import Background
from .writes import InvalidationMiddleware

__all__ = ["STATE_ATTRIBUTE", "CacheManager", "get_cache_service", "manager_from_request", "manager_from_scope"]

logger = logging.getLogger("intelligent_cache")


class CacheManager(AttachedCache):
    """The cache of one (or several) FastAPI apps.

    Args:
        backend: where entries live; a fresh :class:`MemoryBackend` if omitted.
        default_ttl: seconds an entry stays fresh when the route sets no TTL
            (this and every duration here may be a :class:`datetime.timedelta`).
        enabled: ``False`` turns every cached route into a pass-through.
        include_admin_routes: mount the admin API under ``admin_prefix``.
        admin_dependencies: dependencies applied to every admin route.
        admin_auth_dependency: a single auth dependency (callable) for them.
        allow_unauthenticated_admin: mount admin routes without any auth (a
            warning is logged); without it, admin routes refuse to mount unprotected.
        admin_prefix: where the admin API is mounted.
        admin_in_schema: list the admin routes in the app's OpenAPI document
            (``/openapi.json``, ``/docs``); ``False`` leaves them out.
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
        edge: answer fresh HITs in front of the app, before its middleware
            and router run (see :mod:`intelligent_cache.edge`: the app's
            middleware does not run for them, so the app refuses to start with
            middleware that is not known to be safe to skip).
        edge_skip_middleware: middleware (classes, ``@app.middleware("http")``
            functions, or their names) that edge HITs may skip besides those
            known to be safe (CORS, GZip, sessions, trusted hosts, HTTPS
            redirects): logging or timing, never authentication or rewriting.
        key_secret: the secret that keys the digests standing for credential
            values (``Authorization``, cookies, API keys) in cache keys, which
            never hold such values in plaintext. Every instance sharing a
            backend must use the same one. By default the backend keeps one
            (Redis: created once in the namespace; memory: random per process).
        startup_check: what the app's start-up does when the backend does not
            answer a ping (wrong password, database index, host or port; a
            cluster backend at a single server): ``"log"`` one warning with
            Redis's error and what to check, and start anyway (requests run
            uncached until it answers); ``"raise"`` refuse to start, with a
            :class:`ConfigurationError`; ``"off"`` no ping.
        clock: wall-clock time source (seconds since the epoch); tests inject one.

    Raises:
        ConfigurationError: a setting is invalid.
    """

    def __init__(
        self,
        backend: CacheBackend | None = None,
        *,
        default_ttl: Seconds = 60,
        enabled: bool = True,
        include_admin_routes: bool = False,
        admin_dependencies: Sequence[Depends] | None = None,
        admin_auth_dependency: Callable[..., Any] | None = None,
        allow_unauthenticated_admin: bool = False,
        admin_prefix: str = "/api/cache",
        admin_in_schema: bool = True,
        max_response_size: int = 10 * 1024 * 1024,
        lock_timeout: Seconds = 5.0,
        cache_control: bool = True,
        soft_purge: bool = False,
        invalidation_exclude_paths: Sequence[str] = (),
        stats_flush_interval: Seconds = 1.0,
        key_by_host: bool = False,
        honor_request_no_cache: bool = True,
        edge: bool = False,
        edge_skip_middleware: Iterable[Any] = (),
        key_secret: str | bytes | None = None,
        startup_check: Literal["log", "raise", "off"] = "log",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if backend is not None and not isinstance(backend, CacheBackend):
            raise ConfigurationError("backend must be a CacheBackend instance")
        default_ttl, lock_timeout = as_seconds(default_ttl), as_seconds(lock_timeout)
        stats_flush_interval = as_seconds(stats_flush_interval)
        if isinstance(default_ttl, bool) or not isinstance(default_ttl, int | float):
            raise ConfigurationError(f"default_ttl must be a number, got {default_ttl!r}")
        if not math.isfinite(default_ttl) or default_ttl <= 0:
            raise ConfigurationError(f"default_ttl must be a positive number, got {default_ttl!r}")
        if isinstance(max_response_size, bool) or not isinstance(max_response_size, int) or max_response_size <= 0:
            raise ConfigurationError(f"max_response_size must be a positive integer, got {max_response_size!r}")
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or not 0 < lock_timeout < 3600:
            raise ConfigurationError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
        if isinstance(invalidation_exclude_paths, str) or not all(
            isinstance(prefix, str) and prefix.startswith("/") for prefix in invalidation_exclude_paths
        ):
            raise ConfigurationError("invalidation_exclude_paths takes a list of path prefixes starting with '/'")
        if key_secret is not None and (not isinstance(key_secret, str | bytes) or len(key_secret) < 16):
            raise ConfigurationError("key_secret must be a str or bytes of at least 16 characters")
        if startup_check not in ("log", "raise", "off"):
            raise ConfigurationError(f"startup_check must be 'log', 'raise' or 'off', got {startup_check!r}")
        self.startup_check = startup_check
        self._secret = key_secret.encode() if isinstance(key_secret, str) else key_secret
        self.backend: CacheBackend = backend if backend is not None else MemoryBackend()
        self.default_ttl = float(default_ttl)
        self.enabled = bool(enabled)
        self.include_admin_routes = include_admin_routes
        #: The admin router's settings, given here for convenience.
        self.admin = AdminOptions(
            dependencies=tuple(admin_dependencies or ()),
            auth_dependency=admin_auth_dependency,
            allow_unauthenticated=allow_unauthenticated_admin,
            prefix=admin_prefix,
            include_in_schema=bool(admin_in_schema),
        )
        self.max_response_size = max_response_size
        if isinstance(stats_flush_interval, bool) or not isinstance(stats_flush_interval, int | float):
            raise ConfigurationError("stats_flush_interval must be a number of seconds")
        if not 0 < stats_flush_interval <= 3600:
            raise ConfigurationError("stats_flush_interval must be between 0 and 3600 seconds")
        self.stats_flush_interval = float(stats_flush_interval)
        self.lock_timeout = float(lock_timeout)
        self.cache_control = bool(cache_control)
        self.key_by_host = bool(key_by_host)
        self.edge_enabled = bool(edge)
        if isinstance(edge_skip_middleware, str):
            raise ConfigurationError("edge_skip_middleware takes a list of middleware, not a single string")
        self.edge_skip_middleware = tuple(edge_skip_middleware)
        self.honor_request_no_cache = bool(honor_request_no_cache)
        self.soft_purge = bool(soft_purge)
        self.invalidation_exclude_paths = tuple(prefix.rstrip("/") or "/" for prefix in invalidation_exclude_paths)
        self.clock = clock
        self.stats = CacheStats()
        self.flights: FlightGroup[CachedResponse] = FlightGroup()
        self._refreshing: set[str] = set()
        self._tasks = Background()  # background refreshes and the stats flusher
        #: Every backend call of the request path, failing open.
        self.io = FailOpenBackend(self.backend, self.stats, lock_timeout=self.lock_timeout, secret=self._secret)

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
        if self.edge_enabled:
            install(app, EdgeLayer(self, self.edge_skip_middleware))  # one per app: each learns its own routes
        self._wrap_lifespan(app)
        if self.include_admin_routes:
            app.include_router(admin_router(self), prefix=self.admin.prefix)
        return self

    def _wrap_lifespan(self, app: FastAPI) -> None:
        original = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            # Routes may have been added since init_app: refuse to start with one the cache cannot see.
            check_app_routes(app)
            self.backend.reopen()  # closed by a previous shutdown of this app, if any
            if self.startup_check != "off":
                # A wrong password, database or port would otherwise show only as misses, request after request.
                try:
                    await self.backend.ping()
                except Exception as exc:
                    self.io.failed("start-up check", exc, log=False)  # counted, kept for /health; reported here
                    error = (self.io.last_error or type(exc).__name__).rstrip(".")
                    hints = (
                        (
                            ("wrongpass", "noauth", "authenticat", "password"),
                            "check the password (password= or redis://:password@host) and the user",
                        ),
                        (
                            ("db index", "invalid database"),
                            "check the database number (db= or the URL's /<db>): the server has fewer databases",
                        ),
                        (
                            ("cluster mode is not enabled", "cluster support disabled"),
                            "this server is not a Redis Cluster node: use RedisBackend for a single server",
                        ),
                    )
                    hint = next(
                        (hint for needles, hint in hints if any(needle in error.lower() for needle in needles)),
                        "check the host and port, and that the server runs and is reachable from here",
                    )
                    problem = f"cache backend {self.backend.name} failed its start-up check: {error}; {hint}"
                    if self.startup_check == "raise":
                        await self.backend.aclose()
                        raise ConfigurationError(problem) from exc
                    logger.warning("%s (requests run uncached until it answers)", problem)
            await self.io.secret()  # fetched now rather than by the first request (a failure is logged)
            flusher = Background()
            flusher.spawn(self._flush_periodically)
            try:
                async with original(app_) as state:
                    yield state
            finally:
                await flusher.aclose()
                await self.flush_stats()
                await self.aclose()

        app.router.lifespan_context = lifespan

    async def _flush_periodically(self) -> None:
        while True:
            await anyio.sleep(self.stats_flush_interval)
            await self.flush_stats()

    async def flush_stats(self) -> None:
        """Add this process's new counts to the backend's shared counters (if it has any).

        Hits per key go to the backend too, which keeps them beside the entries.
        """
        delta = self.stats.delta()
        if delta:
            try:
                await self.backend.add_counters(delta)
            except Exception as exc:
                self.io.failed("stats flush", exc)
            else:
                self.stats.mark_flushed(delta)
        hits = self.stats.take_key_hits()
        if hits:
            try:
                await self.backend.add_key_hits(hits)
            except Exception as exc:
                self.io.failed("stats flush", exc)
                self.stats.return_key_hits(hits)

    async def key_hits(self, keys: Sequence[str]) -> list[int]:
        """Answers served from each key's entry: the backend's counts plus this process's unflushed ones."""
        kept = await self.backend.read_key_hits(keys)
        pending = self.stats.key_hits
        return [count + pending.get(key, 0) for key, count in zip(keys, kept, strict=True)]

    async def shared_counters(self) -> tuple[dict[str, int], bool]:
        """Counters of every process sharing the backend (this one's unflushed counts included).

        The flag says whether they are shared: per-process backends, or a
        failing shared one, give this process's counters and ``False``.
        """
        try:
            shared = await self.backend.read_counters()
        except Exception as exc:
            self.io.failed("stats read", exc)
            shared = None
        if shared is None:
            return dict(self.stats.counters), False
        for name, amount in self.stats.delta().items():
            shared[name] = shared.get(name, 0) + amount
        return shared, True

    async def aclose(self) -> None:
        """Cancel background refreshes and close the backend's connections."""
        await self._tasks.aclose()
        await self.io.aclose()
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
                token = await self.io.acquire_lock(refresh_lock_name(key))
                if token is None:  # another process refreshes it
                    return
                try:
                    await refresh()
                finally:
                    await self.io.release_lock(refresh_lock_name(key), token)
            except Exception as exc:
                self.stats.refresh_errors += 1
                logger.warning("background refresh of %s failed: %s", key, describe_error(exc))
            finally:
                self._refreshing.discard(key)

        self._tasks.spawn(run)
        return True

    @property
    def degraded(self) -> bool:
        """Whether the last backend call failed."""
        return self.io.degraded

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
