"""``CacheManager(edge=True)``: fresh HITs answered in front of the app, as Varnish answers in front of a server.

:class:`EdgeLayer` wraps the app's whole middleware stack. For a GET or HEAD
of a path it has seen served by a fast-path route (no dependencies to run, no
vary source, not every request credentialed), it runs the fast path's own
lookup and decision (:func:`~intelligent_cache.fastpath.find_hit`): a fresh
HIT is sent right there, before the app's middleware, its router and FastAPI
run; anything else (a MISS, a stale entry, a request with credentials,
preconditions, directives, a ``Range`` or an ``Origin``) goes on to the app
unchanged. Paths are learned from the routes themselves as they serve, in a
bounded memo, so nothing is configured twice.

What an edge HIT skips is the user's middleware: it does not run (no CORS,
GZip, session or logging middleware sees the request). CORS requests carry
``Origin`` and always take the app's path; a HIT is sent uncompressed even
where GZip middleware would have compressed the computed response.
"""

import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .fastpath import LOOKUP_KEY, find_hit
from .lru import ENTRY_OVERHEAD, BoundedLRU
from .routestate import RouteState

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["EdgeLayer", "EdgeRoutes"]

# Request fields the app's middleware answers for, so the app must see them: CORS.
_MIDDLEWARE_FIELDS = frozenset({b"origin"})
_ROUTES_BYTES = 1024 * 1024


class EdgeRoutes:
    """Which fast-path route serves a path: learned as routes serve, bounded in bytes."""

    def __init__(self) -> None:
        self._routes: BoundedLRU[str, tuple[RouteState, dict[str, Any]]] = BoundedLRU(max_bytes=_ROUTES_BYTES)

    def learn(self, path: str, state: RouteState, path_params: dict[str, Any]) -> None:
        if self._routes.peek(path) is None and len(path) <= 1024:
            self._routes.put(path, (state, dict(path_params)), len(path) + ENTRY_OVERHEAD)

    def get(self, path: str) -> tuple[RouteState, dict[str, Any]] | None:
        return self._routes.get(path)


class EdgeLayer:
    """The outermost layer of an app: fresh HITs of learned paths, else the app."""

    def __init__(self, app: ASGIApp, manager: "CacheManager") -> None:
        self.app = app
        self.manager = manager
        self.routes = EdgeRoutes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and not scope.get("root_path"):
            known = self.routes.get(scope["path"])
            if known is not None and await self._answered(scope, send, *known):
                return
        await self.app(scope, receive, send)

    async def _answered(self, scope: Scope, send: Send, state: RouteState, path_params: dict[str, Any]) -> bool:
        if any(name in _MIDDLEWARE_FIELDS for name, _ in scope["headers"]):
            return False
        started = time.perf_counter()
        scope["path_params"] = path_params  # what tags are filled with (the router sets its own later)
        try:
            hit = await find_hit(state, self.manager, scope)
        except Exception:  # the app's own path handles (and reports) whatever went wrong
            hit = None
        scope.pop(LOOKUP_KEY, None)  # the route looks up again: its scope is not this one
        if hit is None:
            return False
        status, headers, body = hit
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
        self.manager.stats.observe(state.template, "hit", time.perf_counter() - started)
        return True
