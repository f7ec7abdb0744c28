"""A caching reverse proxy: every request goes to ``UPSTREAM_URL``, GET and HEAD through the cache.

Method (``M-SEARCH`` too), request target, bodies and the origin's status and
headers (a repeated header stays separate lines) pass byte for byte, gzip
undecoded; hop-by-hop headers are dropped both ways. The origin's
``Cache-Control``/``Expires`` say how long a GET is reused (:data:`PROXY_CACHE`);
HEAD is answered from the GET entry (the origin sees a GET, as with nginx's
``proxy_cache_convert_head``); other methods are never cached and invalidate.

``app`` is built on first access, reading ``UPSTREAM_URL`` then, so importing
needs no environment. Serve it with uvicorn's Date and Server headers off::

    UPSTREAM_URL=http://127.0.0.1:8000 uvicorn example_app.examples.http_proxy:app \\
        --port 8080 --no-date-header --no-server-header
    curl -si localhost:8080/some/path | grep -i x-cache   # HIT while the origin's max-age lasts
"""

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from email.utils import formatdate
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from fastapi import FastAPI, Request, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config

#: The cache settings of the proxy, in this one place: an RFC 9111 shared cache (freshness, validation,
#: Age and ranges as the origin's headers say). No ``public=True``: a request with Authorization or a
#: cookie only shares responses that say they may be shared (RFC 9111 section 3.5).
PROXY_CACHE = cache_config(mode="http")

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Rebuilt for the upstream hop: Host from UPSTREAM_URL, framing from the buffered body; the client's
# 100-continue was already answered by the server in front of the app.
_REBUILT = frozenset({b"host", b"content-length", b"expect"})
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)


def end_to_end(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """``headers`` in order, names lower-cased, without hop-by-hop fields and those ``Connection`` names."""
    lines = [(name.lower(), value) for name, value in headers]
    named = {token.strip().lower() for name, value in lines if name == b"connection" for token in value.split(b",")}
    excluded = HOP_BY_HOP | named | drop
    return [(name, value) for name, value in lines if name not in excluded]


@PROXY_CACHE
async def forward(request: Request) -> Response:
    """Send the request to the origin as it came and answer with the origin's response as it came."""
    client: httpx.AsyncClient = request.app.state.upstream_client
    base: httpx.URL = request.app.state.upstream_url
    scope = request.scope
    query = scope["query_string"]
    path = scope.get("raw_path") or scope["path"].encode()
    target = base.raw_path.rstrip(b"/") + path + (b"?" + query if query else b"")
    headers = end_to_end(scope["headers"], _REBUILT)
    body = await request.body()
    if body or any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]):
        headers.append((b"content-length", b"%d" % len(body)))
    try:
        # httpx re-quotes some characters of a URL; httpcore sends the "target" extension as it is.
        url = base.copy_with(raw_path=target)
    except (httpx.InvalidURL, UnicodeDecodeError):
        return Response(b"Bad Request", status_code=400)
    outgoing = httpx.Request(request.method, url, headers=headers, content=body, extensions={"target": target})
    outgoing.method = request.method  # httpx upper-cases it, but methods are case-sensitive (RFC 9110 section 9.1)
    try:
        upstream = await client.send(outgoing, stream=True)
        try:
            content = b"".join([chunk async for chunk in upstream.aiter_raw()])  # raw: gzip stays gzip
        finally:
            await upstream.aclose()
    except httpx.TimeoutException as exc:
        logger.warning("upstream timeout: %s %s: %r", request.method, target, exc)
        return Response(b"Gateway Timeout", status_code=504)
    except httpx.HTTPError as exc:
        logger.warning("upstream error: %s %s: %r", request.method, target, exc)
        return Response(b"Bad Gateway", status_code=502)
    if not 100 <= upstream.status_code < 600:
        # Invalid (RFC 9110 section 15: handled as a 5xx), and the ASGI server could not send it anyway.
        logger.warning("upstream error: %s %s: invalid status %d", request.method, target, upstream.status_code)
        return Response(b"Bad Gateway", status_code=502)
    response = Response(content, status_code=upstream.status_code)
    response.raw_headers = end_to_end(upstream.headers.raw)
    return response


class _EveryMethod:
    """The catch-all's ASGI app: Starlette routes every method to an object, only GET to a function."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class DateMiddleware:
    """Add ``Date`` to a response without one (RFC 9110 section 6.6.1): the proxy's own 502s and 504s, say."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_dated(message: Message) -> None:
            headers = message.get("headers", [])
            if message["type"] == "http.response.start" and not any(name.lower() == b"date" for name, _ in headers):
                message = {**message, "headers": [*headers, (b"date", formatdate(usegmt=True).encode())]}
            await send(message)

        await self.app(scope, receive, send_dated if scope["type"] == "http" else send)


def create_app(
    upstream_url: str | None = None,
    backend: CacheBackend | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The proxy in front of ``upstream_url`` (default: ``UPSTREAM_URL``).

    Args:
        upstream_url: the origin's base URL; a path in it prefixes every request's.
        backend: where entries live; default a bounded ``MemoryBackend``.
        transport: the upstream client's transport (tests pass ``httpx.MockTransport``).
        clock: the cache's wall clock (tests pass a ``FakeClock``).

    Raises:
        RuntimeError: no upstream URL is given and ``UPSTREAM_URL`` is not set.
    """
    url = upstream_url or os.environ.get("UPSTREAM_URL")
    if not url:
        raise RuntimeError(
            "set UPSTREAM_URL (or pass upstream_url) to the origin's base URL, e.g. http://127.0.0.1:8000"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One connection pool for every request; no redirects followed, no cookie kept (a jar that accepts none).
        jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        async with httpx.AsyncClient(
            transport=transport, timeout=_TIMEOUT, limits=_LIMITS, follow_redirects=False, cookies=jar, trust_env=False
        ) as client:
            app.state.upstream_client, app.state.upstream_url = client, httpx.URL(url)
            yield

    app = FastAPI(
        title="intelligent-cache: HTTP proxy", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )
    # cache_control=False: the origin's Cache-Control goes out as it came, the cache adds none.
    CacheManager(backend or MemoryBackend(clock=clock), cache_control=False, clock=clock).init_app(app)
    app.add_middleware(DateMiddleware)
    # GET alone: CachedRoute then answers HEAD from the GET entry (listing HEAD would leave it uncached).
    app.api_route("/{path:path}", methods=["GET"], include_in_schema=False)(forward)
    # Every other method, extension methods included; after the GET route, which GET and HEAD match first.
    app.router.routes.append(Route("/{path:path}", _EveryMethod(forward), include_in_schema=False))
    return app


def __getattr__(name: str) -> FastAPI:
    # PEP 562: ``app`` is built when first asked for (by uvicorn), not at import.
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = built = create_app()
    return built
