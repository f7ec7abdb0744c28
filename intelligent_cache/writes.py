"""Write invalidation: one ASGI middleware sees every write of the app.

``init_app`` installs :class:`InvalidationMiddleware`. Every request with an
unsafe method (POST, PUT, PATCH, DELETE or any extension method) whose
response is a success (2xx or 3xx) invalidates, before the response starts:

- the request path and its ancestors (unless ``@invalidates(hierarchy=False)``
  or ``invalidation_exclude_paths`` says otherwise), and the same-origin
  ``Location``/``Content-Location`` targets of the response;
- what the endpoint's ``@invalidates`` names (tags and paths, with path
  parameters filled in).

It works whatever route class served the write (a plain ``APIRouter``, a
Starlette route, a mounted sub-application), so no write can leave cached
reads stale because of how its route was declared. A 4xx, a 5xx or an
exception invalidates nothing.
"""

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import InvalidationConfig, get_invalidation
from .invalidation import invalidation_keys, tag_keys
from .policy import SAFE_METHODS
from .routecheck import check_app_routes
from .routestate import fill
from .scope import CURRENT_MANAGER, first_host, remember_manager

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["InvalidationMiddleware", "write_invalidations"]

_AUTOMATIC = InvalidationConfig()


class InvalidationMiddleware:
    """Invalidates after every successful write, before its response is sent."""

    def __init__(self, app: ASGIApp, manager: "CacheManager") -> None:
        self.app = app
        self.manager = manager
        self._checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._checked and scope["type"] == "http":
            # An app served without its lifespan (TestClient without "with") was not
            # checked at start-up: refuse to serve until its routes are right.
            app = scope.get("app")
            if app is not None:
                check_app_routes(app)
            self._checked = True
        manager = self.manager
        token = CURRENT_MANAGER.set(manager)  # what @cached functions called while serving use
        remember_manager(scope, manager)
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            send = _invalidating(scope, send, manager)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_MANAGER.reset(token)


def _invalidating(scope: Scope, send: Send, manager: "CacheManager") -> Send:
    """``send`` that invalidates what a successful write makes stale before its response starts."""

    async def send_after_invalidating(message: Message) -> None:
        if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
            keys = write_invalidations(scope, message.get("headers", ()), manager)
            if keys:
                await manager.io.invalidate(keys)
        await send(message)

    return send_after_invalidating


def write_invalidations(scope: Scope, response_headers: Any, manager: "CacheManager") -> list[str]:
    """The counters a successful write bumps (in order, without repeats)."""
    path: str = scope["path"]
    endpoint = scope.get("endpoint")
    invalidation = (get_invalidation(endpoint) if endpoint is not None else None) or _AUTOMATIC
    params: dict[str, Any] = scope.get("path_params", {})
    if invalidation.tags or invalidation.paths:
        # Templates may name query parameters too (the first value of each); path parameters win.
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        params = {**dict(reversed(query)), **params}
    keys: list[str] = []
    if invalidation.hierarchy and not manager.excluded_from_invalidation(path):
        keys.extend(invalidation_keys(path))
        for target in _same_origin_paths(scope, response_headers):
            keys.extend(invalidation_keys(target))
    for template in invalidation.paths:
        keys.extend(invalidation_keys(fill(template, params)))
    keys.extend(tag_keys(fill(tag, params) for tag in invalidation.tags))
    return list(dict.fromkeys(keys))


def _same_origin_paths(scope: Scope, response_headers: Any) -> list[str]:
    """Paths of same-origin ``Location``/``Content-Location`` of a write response."""
    host = first_host(scope).decode("latin-1")
    paths: list[str] = []
    for name, value in response_headers:
        if name.lower() not in (b"location", b"content-location"):
            continue
        try:
            target = urlsplit(urljoin(scope["path"], value.decode("latin-1")))
        except ValueError:  # not a URL (a malformed IPv6 host, say): it names nothing to invalidate
            continue
        if target.netloc and target.netloc != host:
            continue
        if target.path.startswith("/"):
            paths.append(unquote(target.path))
    return paths
