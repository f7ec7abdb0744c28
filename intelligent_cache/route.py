"""``CachedRoute``: the one module that knows FastAPI's routing internals.

It wraps the handler FastAPI builds in ``get_route_handler``:

- a GET on a route with ``@cache_config`` looks the key up and replays a fresh,
  still-valid entry (HIT, or 304 when ``If-None-Match`` matches); otherwise the
  normal handler runs, once per key however many requests miss together, and
  a cacheable response is stored (MISS);
- a write (any unsafe method) that succeeds bumps the generation counters of
  what it touches before its response is sent (see :mod:`intelligent_cache.invalidation`);
- HEAD on a cached GET route is answered like the GET, without a body.

Every response of a cached GET route carries ``X-Cache`` (HIT, MISS, STALE or
SKIP) and an RFC 9211 ``Cache-Status``.
"""

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from . import _compat
from .config import CacheConfig, InvalidationConfig, VarySource, get_config, get_invalidation, template_fields
from .entry import CachedResponse, VaryIndex, encode_vary_index, storable_headers
from .exceptions import ConfigurationError
from .flights import Flight
from .invalidation import generation_keys, invalidation_keys, tag_keys
from .keys import build_key, extend_key
from .manager import CacheManager, manager_from_request, manager_from_scope
from .policy import (
    SAFE_METHODS,
    RequestDirectives,
    compute_etag,
    etag_matches,
    forbids_stale,
    must_revalidate,
    response_ttl,
    response_vary,
    shareable_with_credentials,
    store_refusal,
)

__all__ = ["CachedRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

REFRESH_FLAG = "intelligent_cache.refresh"
# Where the fast path leaves its lookup for the full path, so a MISS reads the backend once.
LOOKUP_KEY = "intelligent_cache.lookup"
# Request headers that need the full path (directives, credentials, validators).
_FULL_PATH_HEADERS = frozenset({b"cache-control", b"pragma", b"authorization", b"cookie", b"if-none-match"})
_X_CACHE_HIT = (b"x-cache", b"HIT")
_MEMO_SIZE = 4096
_FAST_PATH_ATTRIBUTE = "_intelligent_cache_fast_path"
_AUTOMATIC = InvalidationConfig()
_UNDECODED = object()
_CACHE_NAME = "intelligent-cache"
_SERVER_ERRORS = frozenset({500, 502, 503, 504})
# Headers a 304 repeats from the 200 it stands for (RFC 9110 section 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({b"etag", b"cache-control", b"expires", b"vary", b"content-location"})
# Conditional and cache-control request headers a background refresh must not inherit.
_REFRESH_DROPPED = frozenset({b"if-none-match", b"if-modified-since", b"cache-control", b"pragma"})

# The response a HIT replays, handed to the stand-in endpoint of routes whose
# dependencies must still run on a HIT.
_REPLAY: ContextVar[Response | None] = ContextVar("intelligent_cache_replay", default=None)


async def _replay_endpoint(**_: Any) -> Response:
    response = _REPLAY.get()
    if response is None:  # pragma: no cover - only reachable through misuse
        raise RuntimeError("replay endpoint called outside a cache hit")
    return response


class _StoredResponse(Response):
    """A response replayed from stored bytes, headers sent exactly as given."""

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


def _not_modified_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields a 304 repeats from the 200 it stands for."""
    return [(name, value) for name, value in headers if name in _NOT_MODIFIED_HEADERS]


def _cache_status(*params: str) -> tuple[bytes, bytes]:
    return b"cache-status", "; ".join((_CACHE_NAME, *params)).encode("latin-1")


def _mark(response: Response, x_cache: bytes, *status: str) -> Response:
    response.raw_headers.append((b"x-cache", x_cache))
    response.raw_headers.append(_cache_status(*status))
    return response


def _field_names(fields: Iterable[Any], *, header: bool) -> Iterable[str]:
    for field in fields:
        annotation = getattr(field.field_info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                alias = info.alias or (name.replace("_", "-") if header else name)
                yield alias.lower() if header else alias
        else:
            yield str(field.alias).lower() if header else str(field.alias)


def _declared_inputs(dependant: Any) -> tuple[set[str], set[str], bool]:
    """Headers and cookies the route (dependencies included) declares, and whether it has dependencies."""
    headers: set[str] = set()
    cookies: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        headers.update(_field_names(current.header_params, header=True))
        cookies.update(_field_names(current.cookie_params, header=False))
        stack.extend(current.dependencies)
    return headers, cookies, bool(dependant.dependencies)


def _fill(template: str, path_params: dict[str, Any]) -> str:
    return template.format_map({name: path_params.get(name, "") for name in template_fields(template)})


def _digest_generations(generations: Sequence[int]) -> str:
    return hashlib.blake2b(",".join(map(str, generations)).encode(), digest_size=8).hexdigest()


def _header(request: Request, name: str) -> str | None:
    """Every line of a request header, joined as one field value; ``None`` if absent."""
    values = request.headers.getlist(name)
    return ", ".join(values) if values else None


def _origin(scope: Scope, host: bytes | None = None) -> str:
    """``scheme://host`` of a request, as the Host header (or the server address) gives it."""
    if host is None:
        host = next((value for name, value in scope["headers"] if name == b"host"), b"")
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}".encode() if server else b""
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1').lower()}"


def _same_origin_paths(request: Request, response: Response) -> list[str]:
    """Paths of same-origin ``Location``/``Content-Location`` of a write response."""
    paths: list[str] = []
    host = request.headers.get("host")
    for name, value in response.raw_headers:
        if name not in (b"location", b"content-location"):
            continue
        target = urlsplit(urljoin(request.scope["path"], value.decode("latin-1")))
        if target.netloc and target.netloc != host:
            continue
        if target.path.startswith("/"):
            paths.append(unquote(target.path))
    return paths


class _CachingHandler:
    """The per-route (per inclusion) wrapper around FastAPI's request handler."""

    def __init__(
        self,
        *,
        handler: Handler,
        hit_handler: Handler | None,
        endpoint: Callable[..., Any],
        template: str,
        writes: bool,
        headers: set[str],
        cookies: set[str],
    ) -> None:
        self.handler = handler
        self.endpoint = endpoint
        self.template = template
        self.writes = writes
        self._declared_headers = headers
        self._declared_cookies = cookies
        self._dependency_hit_handler = hit_handler
        # Derived from the endpoint's CacheConfig, read at request time: the
        # decorator may sit above the route decorator and run after this is built.
        self.config: CacheConfig | None = None
        self.hit_handler: Handler | None = None
        self.vary: tuple[VarySource, ...] = ()
        self.per_caller = self.authorization_ok = self.cookie_ok = False
        # Memos of pure functions of the request: hot keys are built once.
        self._keys: dict[tuple[str, bytes, tuple[tuple[str, str | None], ...]], str] = {}
        self._generation_keys: dict[str, tuple[tuple[str, ...], list[str]]] = {}

    def settings(self) -> CacheConfig | None:
        """The route's cache settings, or ``None`` when it is not cached."""
        config = get_config(self.endpoint)
        if config is None or not config.enabled:
            return None
        if config is not self.config:
            self._configure(config)
        return config

    def _configure(self, config: CacheConfig) -> None:
        vary = list(config.vary_by)
        labels = {source.label for source in vary}
        for name in sorted(self._declared_headers):
            if f"header.{name}" not in labels:
                vary.append(VarySource("header", name))
        for name in sorted(self._declared_cookies):
            if f"cookie.{name}" not in labels:
                vary.append(VarySource("cookie", name))
        keyed_headers = {source.name for source in vary if source.kind == "header"}
        per_caller = bool(config.vary_by)
        self.vary = tuple(vary)
        self.per_caller = (
            per_caller or "authorization" in keyed_headers or "cookie" in keyed_headers or bool(self._declared_cookies)
        )
        self.authorization_ok = config.public or per_caller or "authorization" in keyed_headers
        self.cookie_ok = config.public or per_caller or bool(self._declared_cookies) or "cookie" in keyed_headers
        self.hit_handler = None if config.skip_dependencies_on_hit else self._dependency_hit_handler
        self._keys.clear()
        self._generation_keys.clear()
        self.config = config

    # -- dispatch ---------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        method = request.scope["method"]
        if method == "GET":
            config = self.settings()
            if config is None:
                return await self.handler(request)
            started = time.perf_counter()
            response = await self._read_through(request, config)
            manager = manager_from_request(request)
            if manager is not None:
                outcome = next((v for n, v in reversed(response.raw_headers) if n == b"x-cache"), b"SKIP")
                manager.stats.observe(self.template, outcome.decode().lower(), time.perf_counter() - started)
            return response
        if self.writes and method not in SAFE_METHODS:
            return await self._write(request)
        return await self.handler(request)

    # -- writes -----------------------------------------------------------------

    async def _write(self, request: Request) -> Response:
        response = await self.handler(request)
        # Only a write that succeeded changed anything; invalidate before the response is sent.
        if response.status_code >= 400:
            return response
        manager = manager_from_request(request)
        if manager is None:
            return response
        path: str = request.scope["path"]
        params: dict[str, Any] = request.scope.get("path_params", {})
        invalidation = get_invalidation(self.endpoint) or _AUTOMATIC
        keys: list[str] = []
        if invalidation.hierarchy and not manager.excluded_from_invalidation(path):
            keys.extend(invalidation_keys(path))
            for target in _same_origin_paths(request, response):
                keys.extend(invalidation_keys(target))
        for template in invalidation.paths:
            keys.extend(invalidation_keys(_fill(template, params)))
        keys.extend(tag_keys(_fill(tag, params) for tag in invalidation.tags))
        if keys:
            await manager.invalidate(list(dict.fromkeys(keys)))
        return response

    # -- reads ------------------------------------------------------------------

    def _vary_values(self, request: Request) -> list[tuple[str, str | None]]:
        values: list[tuple[str, str | None]] = []
        for source in self.vary:
            if source.kind == "state":
                value = request.scope.get("state", {}).get(source.name)
                values.append((source.label, None if value is None else str(value)))
            elif source.kind == "header":
                values.append((source.label, _header(request, source.name)))
            else:
                values.append((source.label, request.cookies.get(source.name)))
        return values

    async def _skip(self, request: Request, manager: CacheManager | None, reason: str) -> Response:
        response = await self.handler(request)
        if manager is not None:
            manager.stats.skip(self.template, reason)
        return _mark(response, b"SKIP", "fwd=bypass", f"detail={reason}")

    async def _serve(
        self,
        request: Request,
        entry: CachedResponse,
        now: float,
        directives: RequestDirectives,
        x_cache: bytes,
        *status: str,
    ) -> Response:
        """Answer from an entry (HIT, STALE, collapsed): 304 when the validator matches."""
        extra = [(b"age", b"%d" % entry.age(now)), (b"x-cache", x_cache), _cache_status(*status)]
        if directives.if_none_match is not None and self._validator_matches(directives, entry.headers):
            response: Response = _StoredResponse(304, _not_modified_headers(entry.headers) + extra, b"")
        else:
            response = _StoredResponse(entry.status, [*entry.headers, *extra], entry.body)
        if self.hit_handler is None:
            return response
        # The route has dependencies (authentication, say): FastAPI solves them as
        # usual, then the stand-in endpoint returns the stored response.
        token = _REPLAY.set(response)
        try:
            return await self.hit_handler(request)
        finally:
            _REPLAY.reset(token)

    @staticmethod
    def _validator_matches(directives: RequestDirectives, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        assert directives.if_none_match is not None
        for name, value in headers:
            if name == b"etag":
                return bool(etag_matches(directives.if_none_match, value))
        return False

    async def _read_through(self, request: Request, config: CacheConfig) -> Response:
        manager = manager_from_request(request)
        if manager is None or not manager.enabled:
            return await self._skip(request, manager, "disabled")
        scope = request.scope
        directives = RequestDirectives.parse(scope["headers"])
        if directives.no_store:
            return await self._skip(request, manager, "no-store")
        credentials = (directives.authorization and not self.authorization_ok) or (
            directives.cookie and not self.cookie_ok
        )
        refresh = bool(scope.get(REFRESH_FLAG))
        revalidate = (directives.revalidate and manager.honor_request_no_cache) or refresh
        path: str = scope["path"]
        origin = _origin(scope)
        vary = tuple(self._vary_values(request)) if self.vary else ()
        if manager.key_by_host:
            vary = (*vary, ("origin", origin))
        key = self._key(path, scope["query_string"], vary)
        tags, counters = self._counters(path, scope.get("path_params", {}))
        looked_up = scope.pop(LOOKUP_KEY, None)
        found: Any = _UNDECODED
        if looked_up is not None and looked_up[0] == key and not revalidate:
            _, raw, generations, found = looked_up
        else:
            raw, generations = await manager.lookup(key, counters)
        if generations is None:  # backend down: serve uncached, but still compute once per key
            return await self._compute_without_backend(request, manager, config, key, tags, directives, credentials)
        now = manager.clock()
        entry, forward = None, "uri-miss"
        if raw is not None:
            if found is _UNDECODED:
                found = manager.decode(raw)
            if isinstance(found, VaryIndex):
                variant = extend_key(key, [(name, _header(request, name)) for name in found.names])
                raw = await manager.read(variant)
                found = None if raw is None else manager.decode(raw)
                forward = "vary-miss"
            if isinstance(found, CachedResponse):
                if found.origin and found.origin != origin:
                    # Computed for another Host: never served here, never overwritten from
                    # here, so a forged Host header cannot poison what others receive.
                    return await self._skip(request, manager, "origin")
                entry, forward = self._usable(found, generations, credentials, manager)
        stale: CachedResponse | None = None
        if entry is not None and not revalidate:
            age = entry.age(now)
            fresh = list(entry.generations) == generations and age < entry.ttl
            if fresh and (directives.max_age is None or age <= directives.max_age):
                manager.stats.hit(self.template)
                remaining = int(entry.ttl - age)
                return await self._serve(request, entry, now, directives, b"HIT", "hit", f"ttl={remaining}")
            # An entry past its lifetime (or soft-purged) may still be served stale,
            # within the route's windows, unless it or the client forbids it.
            if directives.max_age is None and not forbids_stale(entry.headers):
                if config.stale_while_revalidate and age < entry.ttl + config.stale_while_revalidate:
                    self._refresh_later(request, manager, key)
                    manager.stats.served_stale(self.template)
                    return await self._serve(request, entry, now, directives, b"STALE", "hit", "fwd=stale")
                if config.stale_if_error and age < entry.ttl + config.stale_if_error:
                    stale = entry
            forward = "stale"
        elif revalidate:
            forward = "request"
        if directives.only_if_cached:
            manager.stats.skip(self.template, "only-if-cached")
            return _mark(_StoredResponse(504, [(b"content-length", b"0")], b""), b"MISS", f"fwd={forward}")
        return await self._compute(
            request, manager, config, key, generations, tags, directives, credentials, forward, stale, entry
        )

    async def find_hit(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The response to a plain GET if it is a fresh HIT: status, headers, body.

        The fast path of routes without dependencies to run: no Request, no
        exception wrapper, no exit stacks. Anything unusual (request directives,
        credentials, validators, a per-caller key, a miss) returns ``None`` and
        FastAPI's own path takes over, reusing this lookup. Behaviour is the
        same either way; only the cost differs. Sends nothing itself.
        """
        if self.settings() is None or self.vary or self.hit_handler:
            return None
        manager = manager_from_scope(scope)
        if manager is None or not manager.enabled:
            return None
        host = b""
        for name, value in scope["headers"]:
            if name in _FULL_PATH_HEADERS:
                return None
            if name == b"host":
                host = value
        origin = _origin(scope, host)
        path: str = scope["path"]
        key = self._key(path, scope["query_string"], (("origin", origin),) if manager.key_by_host else ())
        counters = self._counters(path, scope.get("path_params", {}))[1]
        raw, generations = await manager.lookup(key, counters)
        if raw is None or generations is None:
            scope[LOOKUP_KEY] = (key, raw, generations, _UNDECODED)
            return None
        entry = manager.decode(raw)
        if (
            isinstance(entry, CachedResponse)
            and list(entry.generations) == generations
            and (entry.origin == origin or not entry.origin)
        ):
            age = manager.clock() - entry.stored_at
            if age < entry.ttl:
                manager.stats.hit(self.template)
                headers = [
                    *entry.headers,
                    (b"age", b"%d" % max(age, 0)),
                    _X_CACHE_HIT,
                    (b"cache-status", b"intelligent-cache; hit; ttl=%d" % (entry.ttl - age)),
                ]
                return entry.status, headers, entry.body
        scope[LOOKUP_KEY] = (key, raw, generations, entry)
        return None

    def _key(self, path: str, query: bytes, vary: tuple[tuple[str, str | None], ...]) -> str:
        memo = (path, query, vary)
        key = self._keys.get(memo)
        if key is None:
            if len(self._keys) >= _MEMO_SIZE:
                self._keys.clear()
            assert self.config is not None
            key = self._keys[memo] = build_key("GET", path, query, vary, self.config.key_prefix)
        return key

    def _counters(self, path: str, params: dict[str, Any]) -> tuple[tuple[str, ...], list[str]]:
        # Tags only use path parameters, which the path determines: memoize by path.
        found = self._generation_keys.get(path)
        if found is None:
            if len(self._generation_keys) >= _MEMO_SIZE:
                self._generation_keys.clear()
            assert self.config is not None
            tags = tuple(_fill(tag, params) for tag in self.config.tags)
            found = self._generation_keys[path] = (tags, generation_keys(path, tags))
        return found

    def _usable(
        self, entry: CachedResponse, generations: list[int], credentials: bool, manager: CacheManager
    ) -> tuple[CachedResponse | None, str]:
        if list(entry.generations) != generations and not manager.soft_purge:
            return None, "stale"
        # RFC 9111 section 3.5: a request with credentials the key does not cover
        # may only use a response that said it is shareable.
        if credentials and not shareable_with_credentials(entry.headers):
            return None, "uri-miss"
        return entry, "uri-miss"

    def _refresh_later(self, request: Request, manager: CacheManager, key: str) -> None:
        scope = request.scope
        app = scope.get("app")
        if app is None:
            return
        fresh_scope: dict[str, Any] = {
            name: value
            for name, value in scope.items()
            if name not in ("route", "endpoint", "path_params", "fastapi", "router", "state")
            and not name.startswith("fastapi_")
        }
        fresh_scope["method"] = "GET"
        fresh_scope["headers"] = [(n, v) for n, v in scope["headers"] if n not in _REFRESH_DROPPED]
        fresh_scope["state"] = dict(scope.get("state", {}))
        fresh_scope[REFRESH_FLAG] = True

        async def refresh() -> None:
            sent = False

            async def receive() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return {"type": "http.disconnect"}

            async def discard(message: Message) -> None:
                return None

            await app(fresh_scope, receive, discard)

        manager.refresh_in_background(key, refresh)

    async def _compute(
        self,
        request: Request,
        manager: CacheManager,
        config: CacheConfig,
        key: str,
        generations: list[int],
        tags: tuple[str, ...],
        directives: RequestDirectives,
        credentials: bool,
        forward: str,
        stale: CachedResponse | None,
        expired: CachedResponse | None,
    ) -> Response:
        flight_key = (key, tuple(generations), credentials)
        flight, leader = manager.flights.join(flight_key)
        if not leader:
            entry = await self._shared_outcome(flight, manager, request)
            if entry is not None:
                manager.stats.hit(self.template)
                manager.stats.collapsed += 1
                return await self._serve(
                    request, entry, manager.clock(), directives, b"HIT", "hit", "collapsed", f"ttl={int(entry.ttl)}"
                )
            # Nothing shareable (or too slow): compute for ourselves, without storing.
            response, _ = await self._run(
                request, manager, config, None, generations, tags, directives, credentials, forward
            )
            return response
        stored: CachedResponse | None = None
        # The lock is per key *and* counters: a request that arrives after a write
        # never waits for a computation that started before it.
        lock = f"~l:{key}:{_digest_generations(generations)}"
        try:
            token = await manager.acquire_lock(lock)
            if token is None:
                waited, token = await self._await_other_process(request, manager, key, generations, lock)
                if waited is not None:
                    stored = waited
                    manager.stats.hit(self.template)
                    manager.stats.collapsed += 1
                    return await self._serve(
                        request,
                        waited,
                        manager.clock(),
                        directives,
                        b"HIT",
                        "hit",
                        "collapsed",
                        f"ttl={int(waited.ttl)}",
                    )
            try:
                response, stored = await self._run(
                    request,
                    manager,
                    config,
                    key if token is not None else None,
                    generations,
                    tags,
                    directives,
                    credentials,
                    forward,
                    stale=stale,
                    expired=expired,
                )
                return response
            finally:
                if token is not None:
                    await manager.release_lock(lock, token)
        finally:
            manager.flights.land(flight_key, flight, stored)

    async def _compute_without_backend(
        self,
        request: Request,
        manager: CacheManager,
        config: CacheConfig,
        key: str,
        tags: tuple[str, ...],
        directives: RequestDirectives,
        credentials: bool,
    ) -> Response:
        """The backend failed: compute once per key in this process, share it, store nothing.

        A stampede is when pools run dry and breakers open; without this, every
        request that could not read the cache would run the endpoint.
        """
        flight_key = (key, "unavailable", credentials)
        flight, leader = manager.flights.join(flight_key)
        if not leader:
            entry = await self._shared_outcome(flight, manager, request)
            if entry is not None:
                manager.stats.skip(self.template, "backend-error")
                manager.stats.collapsed += 1
                return await self._serve(
                    request,
                    entry,
                    manager.clock(),
                    directives,
                    b"SKIP",
                    "fwd=bypass",
                    "collapsed",
                    "detail=backend-error",
                )
            return await self._skip(request, manager, "backend-error")
        shared: CachedResponse | None = None
        try:
            response, shared = await self._run(
                request, manager, config, None, [], tags, directives, credentials, "bypass", unstored="backend-error"
            )
            return response
        finally:
            manager.flights.land(flight_key, flight, shared)

    async def _await_other_process(
        self, request: Request, manager: CacheManager, key: str, generations: list[int], lock: str
    ) -> tuple[CachedResponse | None, str | None]:
        """Another process computes this key: wait for its entry, or for its lock to free.

        Returns the entry it stored, or the lock once this request could take it
        over (the holder finished without storing, or died and the lock expired).
        ``(None, None)`` after ``lock_timeout``: compute without storing.
        """
        deadline = time.monotonic() + manager.lock_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            raw = await manager.read(key)
            found = None if raw is None else manager.decode(raw)
            if isinstance(found, VaryIndex):  # the entry lives under this request's variant key
                raw = await manager.read(extend_key(key, [(n, _header(request, n)) for n in found.names]))
                found = None if raw is None else manager.decode(raw)
            if isinstance(found, CachedResponse) and list(found.generations) == generations:
                return found, None
            token = await manager.acquire_lock(lock)
            if token is not None:
                return None, token
        return None, None

    async def _shared_outcome(
        self, flight: Flight[CachedResponse], manager: CacheManager, request: Request
    ) -> CachedResponse | None:
        """The entry the leader of ``flight`` computed, if it has one for this request's variant."""
        entry = await flight.wait(manager.lock_timeout)
        if entry is None or not all(_header(request, name) == value for name, value in entry.vary):
            return None
        return entry

    async def _run(
        self,
        request: Request,
        manager: CacheManager,
        config: CacheConfig,
        key: str | None,
        generations: list[int],
        tags: tuple[str, ...],
        directives: RequestDirectives,
        credentials: bool,
        forward: str,
        stale: CachedResponse | None = None,
        expired: CachedResponse | None = None,
        unstored: str = "lock-timeout",
    ) -> tuple[Response, CachedResponse | None]:
        """Run the endpoint; store the response under ``key`` if given and cacheable.

        Returns the response to send and the entry for it if it was cacheable
        (stored under ``key``, or, without a key, only handed to the requests of
        this process waiting for it; ``unstored`` then says why).
        """
        stored_at = manager.clock()
        try:
            response = await self.handler(request)
        except HTTPException as exc:
            if exc.status_code not in _SERVER_ERRORS:
                raise
            fallback = self._on_error(request, manager, stale, expired, directives)
            if fallback is None:
                raise
            return await fallback, None
        except Exception:
            fallback = self._on_error(request, manager, stale, expired, directives)
            if fallback is None:
                raise
            return await fallback, None
        if response.status_code in _SERVER_ERRORS:
            fallback = self._on_error(request, manager, stale, expired, directives)
            if fallback is not None:
                return await fallback, None
        body = getattr(response, "body", None)
        if not isinstance(body, bytes):
            manager.stats.skip(self.template, "streaming")
            return _mark(response, b"SKIP", f"fwd={forward}", "detail=streaming"), None
        headers = response.raw_headers
        refusal = store_refusal(
            response.status_code,
            headers,
            len(body),
            max_size=manager.max_response_size,
            statuses=config.cacheable_statuses,
            credentials=credentials,
        )
        ttl = config.ttl_seconds or manager.default_ttl
        if refusal is None and config.ttl_from_headers:
            declared = response_ttl(headers)
            if declared is not None:
                ttl = declared
                if ttl <= 0:
                    refusal = "not-reusable"
        vary = response_vary(headers)
        if refusal is not None or vary is None:
            manager.stats.skip(self.template, refusal or "vary-star")
            return _mark(response, b"SKIP", f"fwd={forward}", f"detail={refusal or 'vary-star'}"), None
        if not any(name == b"etag" for name, _ in headers):
            headers.append((b"etag", compute_etag(response.status_code, headers, body)))
        if manager.cache_control and not any(name == b"cache-control" for name, _ in headers):
            lifetime = b"max-age=%d" % int(ttl)
            if config.stale_while_revalidate:
                lifetime += b", stale-while-revalidate=%d" % int(config.stale_while_revalidate)
            headers.append((b"cache-control", b"private, " + lifetime if self.per_caller else lifetime))
        entry = CachedResponse(
            status=response.status_code,
            headers=storable_headers(headers),
            body=body,
            stored_at=stored_at,
            ttl=ttl,
            generations=tuple(generations),
            path=request.scope["path"],
            route=self.template,
            tags=tags,
            vary=tuple((name, _header(request, name)) for name in vary),
            origin=_origin(request.scope),
        )
        if key is None:  # computed without storing (lock timeout, backend down): shareable in process only
            manager.stats.skip(self.template, unstored)
            return self._answer(response, directives, b"SKIP", f"fwd={forward}", f"detail={unstored}"), entry
        keep_for = ttl + max(config.stale_while_revalidate, config.stale_if_error)
        stored = True
        if vary:
            stored = await manager.store_raw(key, encode_vary_index(VaryIndex(vary)), keep_for)
            key = extend_key(key, entry.vary)
        if not (stored and await manager.store(key, entry, keep_for)):
            manager.stats.skip(self.template, "backend-error")
            return self._answer(response, directives, b"SKIP", f"fwd={forward}", "detail=backend-error"), None
        if forward == "request":
            # The client asked not to be answered from the cache: it was not, though
            # its fresh response now refreshes the entry (RFC 9111 section 5.2.1.4).
            manager.stats.skip(self.template, "revalidate")
            return self._answer(response, directives, b"SKIP", "fwd=request", "stored"), entry
        manager.stats.miss(self.template)
        return self._answer(response, directives, b"MISS", f"fwd={forward}", "stored"), entry

    def _answer(self, response: Response, directives: RequestDirectives, x_cache: bytes, *status: str) -> Response:
        """Send a computed response, or a 304 for it when the client's validator matches."""
        if directives.if_none_match is not None and self._validator_matches(directives, response.raw_headers):
            not_modified = _StoredResponse(304, _not_modified_headers(response.raw_headers), b"")
            not_modified.background = response.background
            return _mark(not_modified, x_cache, *status)
        return _mark(response, x_cache, *status)

    def _on_error(
        self,
        request: Request,
        manager: CacheManager,
        stale: CachedResponse | None,
        expired: CachedResponse | None,
        directives: RequestDirectives,
    ) -> Coroutine[Any, Any, Response] | None:
        """The endpoint failed: a stale-if-error answer, a 504 for must-revalidate, or ``None``."""
        if stale is not None and not directives.revalidate:
            manager.stats.served_stale(self.template)
            return self._serve(
                request, stale, manager.clock(), directives, b"STALE", "hit", "fwd=stale", "detail=error"
            )
        if expired is not None and must_revalidate(expired.headers):

            async def gateway_timeout() -> Response:
                manager.stats.skip(self.template, "must-revalidate")
                response = _StoredResponse(504, [(b"content-length", b"0")], b"")
                return _mark(response, b"MISS", "fwd=stale", "detail=must-revalidate")

            return gateway_timeout()
        return None


def _marking_errors(send: Send, scope: Scope, template: str) -> Send:
    """Give X-Cache and Cache-Status to responses FastAPI built from an exception.

    An HTTPException or a validation error raised by the endpoint or a dependency
    becomes a response outside the cache's handler; it was neither served from
    nor stored in the cache.
    """

    async def send_marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name == b"x-cache" for name, _ in headers):
                headers += [(b"x-cache", b"SKIP"), _cache_status("fwd=miss", "detail=status")]
                message = {**message, "headers": headers}
                manager = manager_from_scope(scope)
                if manager is not None:
                    manager.stats.skip(template, "status")
        await send(message)

    return send_marked


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


class CachedRoute(APIRoute):
    """An ``APIRoute`` that caches GET responses of endpoints marked with
    ``@cache_config`` and invalidates them when a write to a related path succeeds.

    Use it as ``APIRouter(route_class=CachedRoute)``, or let
    ``CacheManager.init_app(app)`` set it on the app. Routes without
    ``@cache_config`` (or with ``enabled=False``) behave exactly like ``APIRoute``,
    except that their successful writes invalidate.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # FastAPI <= 0.136 re-creates routes with its own keyword arguments on
        # include_router, and newer versions keep adding some: take them all.
        super().__init__(*args, **kwargs)
        methods = self.methods or set()
        self._get_only = "GET" in methods and "HEAD" not in methods

    def _answers_head(self) -> bool:
        # Read at request time: @cache_config may be applied after the route was built.
        if not self._get_only:
            return False
        config = get_config(self.endpoint)
        return config is not None and config.enabled

    def get_route_handler(self) -> Handler:
        # Called inside APIRoute.__init__ and, on FastAPI >= 0.137, once per
        # inclusion context: stay cheap, keep no state on self.
        handler = super().get_route_handler()
        methods = self.methods or set()
        reads = "GET" in methods
        writes = bool(methods - SAFE_METHODS)
        if not reads and not writes:
            return handler
        route = _compat.effective_route(self)
        template = str(route.path_format)
        headers: set[str] = set()
        cookies: set[str] = set()
        hit_handler: Handler | None = None
        self._check_templates(route, template)
        if reads:
            headers, cookies, has_dependencies = _declared_inputs(route.dependant)
            if has_dependencies:
                hit_handler = self._hit_handler(route)
        wrapper = _CachingHandler(
            handler=handler,
            hit_handler=hit_handler,
            endpoint=self.endpoint,
            template=template,
            writes=writes,
            headers=headers,
            cookies=cookies,
        )
        if reads:
            # Offer the fast path to handle(). The wrapper is kept on whatever
            # FastAPI built this handler for: the inclusion context (new FastAPI,
            # one per include_router) or the route itself (a direct route, or a
            # route copy on FastAPI <= 0.136). Never shared between inclusions.
            setattr(route, _FAST_PATH_ATTRIBUTE, wrapper)
        return wrapper.__call__

    def _check_templates(self, route: Any, template: str) -> None:
        """Fail at set-up when a tag names something that is not a path parameter."""
        config = get_config(self.endpoint)
        invalidation = get_invalidation(self.endpoint)
        path_names = set(route.param_convertors)
        texts = [*(config.tags if config else ())]
        if invalidation is not None:
            texts += [*invalidation.tags, *invalidation.paths]
        for text in texts:
            missing = set(template_fields(text)) - path_names
            if missing:
                raise ConfigurationError(
                    f"{text!r} on {template} names {sorted(missing)}, which are not its path parameters"
                )

    def _hit_handler(self, route: Any) -> Handler:
        """FastAPI's handler for this route with the endpoint replaced by the replay stand-in.

        Built by FastAPI itself, so dependencies (router-level ones included),
        overrides, validation errors and yield-cleanup behave exactly as on a MISS.
        """
        original = route.dependant
        route.dependant = dataclasses.replace(original, call=_replay_endpoint)
        try:
            return super().get_route_handler()
        finally:
            route.dependant = original

    def matches(self, scope: Scope) -> tuple[Any, Scope]:
        if scope["type"] == "http" and scope["method"] == "HEAD" and self._answers_head():
            return super().matches({**scope, "method": "GET"})
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if (method != "GET" and method != "HEAD") or not self._answers_head():
            # Not a cached read: exactly what APIRoute does.
            await super().handle(scope, receive, send)
            return
        if method == "HEAD":
            # HEAD is the GET without a body: same key, same headers, Content-Length included.
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        fast: _CachingHandler | None = getattr(_compat.scope_route(scope, self), _FAST_PATH_ATTRIBUTE, None)
        if fast is not None:
            started = time.perf_counter()
            try:
                hit = await fast.find_hit(scope)
            except Exception:  # the full path below handles (and reports) whatever went wrong
                scope.pop(LOOKUP_KEY, None)
                hit = None
            if hit is not None:
                status, headers, body = hit
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                manager = manager_from_scope(scope)
                if manager is not None:
                    manager.stats.observe(fast.template, "hit", time.perf_counter() - started)
                return
            send = _marking_errors(send, scope, fast.template)
        await super().handle(scope, receive, send)
