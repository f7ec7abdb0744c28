"""``CachedRoute``: the one module that knows FastAPI's routing internals.

It wraps the handler FastAPI builds in ``get_route_handler``:

- a GET on a route with ``@cache_config`` looks the key up and answers a HIT
  straight from the stored bytes; a MISS runs the normal handler and stores
  what it returned;
- a write (any unsafe method) that succeeds bumps the generation counters of
  its path before the response is sent (see :mod:`intelligent_cache.invalidation`);
- HEAD on a cached GET route is answered like the GET, without a body.

Every response of a cached GET route carries ``X-Cache: HIT``, ``MISS`` or ``SKIP``.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from . import _compat
from .config import CacheConfig, VarySource, get_config
from .entry import CachedResponse, storable_headers
from .invalidation import generation_keys, invalidation_keys
from .keys import build_key
from .manager import CacheManager, manager_from_request
from .policy import SAFE_METHODS, request_bypass, store_refusal

__all__ = ["CachedRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_X_CACHE = b"x-cache"
_HIT = (_X_CACHE, b"HIT")


class _StoredResponse(Response):
    """A response replayed from stored bytes, headers sent exactly as stored."""

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


def _mark(response: Response, value: bytes) -> Response:
    response.raw_headers.append((_X_CACHE, value))
    return response


def _vary_value(request: Request, source: VarySource) -> str | None:
    if source.kind == "state":
        value = getattr(request.state, source.name, None)
        return None if value is None else str(value)
    if source.kind == "header":
        return request.headers.get(source.name)
    return request.cookies.get(source.name)


class _CachingHandler:
    """The per-route wrapper around FastAPI's request handler."""

    __slots__ = ("config", "handler", "invalidates", "template")

    def __init__(self, handler: Handler, config: CacheConfig | None, template: str, invalidates: bool) -> None:
        self.handler = handler
        self.config = config
        self.template = template
        self.invalidates = invalidates

    async def __call__(self, request: Request) -> Response:
        method = request.scope["method"]
        if method == "GET" and self.config is not None:
            return await self._read_through(request, self.config)
        if self.invalidates and method not in SAFE_METHODS:
            return await self._write(request)
        return await self.handler(request)

    async def _write(self, request: Request) -> Response:
        response = await self.handler(request)
        # Only a write that succeeded changed anything; invalidate before the response is sent.
        if response.status_code < 400:
            manager = manager_from_request(request)
            if manager is not None:
                await manager.invalidate(invalidation_keys(request.scope["path"]))
        return response

    async def _skip(self, request: Request, manager: CacheManager | None, reason: str) -> Response:
        response = await self.handler(request)
        if manager is not None:
            manager.stats.skip(self.template, reason)
        return _mark(response, b"SKIP")

    async def _read_through(self, request: Request, config: CacheConfig) -> Response:
        manager = manager_from_request(request)
        if manager is None or not manager.enabled:
            return await self._skip(request, manager, "disabled")
        scope = request.scope
        reason = request_bypass(scope["headers"], config)
        if reason is not None:
            return await self._skip(request, manager, reason)
        path: str = scope["path"]
        vary = [(source.label, _vary_value(request, source)) for source in config.vary_by]
        key = build_key("GET", path, scope["query_string"], vary, config.key_prefix)
        raw, generations = await manager.lookup(key, generation_keys(path))
        if raw is not None and generations is not None:
            entry = manager.decode(raw)
            if isinstance(entry, CachedResponse):
                now = manager.clock()
                if entry.is_fresh(now) and list(entry.generations) == generations:
                    manager.stats.hit(self.template)
                    headers = [*entry.headers, (b"age", b"%d" % entry.age(now)), _HIT]
                    return _StoredResponse(entry.status, headers, entry.body)
        stored_at = manager.clock()
        response = await self.handler(request)
        if generations is None:
            manager.stats.skip(self.template, "backend-error")
            return _mark(response, b"SKIP")
        body = getattr(response, "body", None)
        if not isinstance(body, bytes):
            manager.stats.skip(self.template, "streaming")
            return _mark(response, b"SKIP")
        refusal = store_refusal(response.status_code, response.raw_headers, len(body), manager.max_response_size)
        if refusal is not None:
            manager.stats.skip(self.template, refusal)
            return _mark(response, b"SKIP")
        entry = CachedResponse(
            status=response.status_code,
            headers=storable_headers(response.raw_headers),
            body=body,
            stored_at=stored_at,
            ttl=config.ttl_seconds or manager.default_ttl,
            generations=tuple(generations),
            path=path,
            route=self.template,
        )
        if not await manager.store(key, entry):
            manager.stats.skip(self.template, "backend-error")
            return _mark(response, b"SKIP")
        manager.stats.miss(self.template)
        return _mark(response, b"MISS")


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
        config = get_config(self.endpoint)
        methods = self.methods or set()
        self._answers_head = config is not None and config.enabled and "GET" in methods and "HEAD" not in methods

    def get_route_handler(self) -> Handler:
        # Called inside APIRoute.__init__ and, on FastAPI >= 0.137, once per
        # inclusion context: stay cheap, keep no state on self.
        handler = super().get_route_handler()
        config = get_config(self.endpoint)
        if config is not None and not config.enabled:
            return handler
        methods = self.methods or set()
        reads = config is not None and "GET" in methods
        writes = bool(methods - SAFE_METHODS)
        if not reads and not writes:
            return handler
        wrapper = _CachingHandler(handler, config if reads else None, _compat.effective_path_format(self), writes)
        return wrapper.__call__

    def matches(self, scope: Scope) -> tuple[Any, Scope]:
        if self._answers_head and scope["type"] == "http" and scope["method"] == "HEAD":
            return super().matches({**scope, "method": "GET"})
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._answers_head and scope["method"] == "HEAD":
            # HEAD is the GET without a body: same key, same headers, Content-Length included.
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        await super().handle(scope, receive, send)
