"""``CacheManager(edge=True)``: fresh HITs answered in front of the app, as Varnish answers in front of a server.

The edge runs before anything of the app: :func:`install` gives the app a
subclass of its own class (same name, same behaviour) whose ``__call__`` asks
:class:`EdgeLayer` first, so a fresh HIT is sent before FastAPI's own
``__call__`` (its telemetry check), the app's middleware, its router and
FastAPI's handler run. For a GET or HEAD of a path it has seen served by a
fast-path route (no dependencies to run, no vary source, not every request
credentialed), it runs the fast path's own lookup and decision
(:func:`~intelligent_cache.fastpath.find_hit`); anything else (a MISS, a stale
entry, a request with credentials, preconditions, directives, a ``Range`` or
an ``Origin``, an app with a ``root_path``) goes on to the app unchanged.
Paths are learned from the routes themselves as they serve, in a bounded
memo, so nothing is configured twice.

What an edge HIT skips is the user's middleware and FastAPI's telemetry: they
do not run (no CORS, GZip, session, logging middleware or OpenTelemetry span
sees the request; the cache's own stats count it). CORS requests carry
``Origin`` and always take the app's path; a HIT is sent uncompressed even
where GZip middleware would have compressed the computed response.
"""

import time
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from .fastpath import LOOKUP_KEY, find_hit
from .lru import ENTRY_OVERHEAD, BoundedLRU
from .routestate import RouteState

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .manager import CacheManager

__all__ = ["EdgeLayer", "EdgeRoutes", "install"]

_ROUTES_BYTES = 1024 * 1024
# Where an app with the edge keeps its layer.
_LAYER_ATTRIBUTE = "_intelligent_cache_edge"
# The edge subclass of each app class (one per class, made on first use).
_EDGE_CLASSES: dict[type, type] = {}


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
    """Fresh HITs of learned paths, answered before the app runs."""

    def __init__(self, manager: "CacheManager") -> None:
        self.manager = manager
        self.routes = EdgeRoutes()

    async def answered(self, scope: Scope, send: Send) -> bool:
        """Send the response if the request is a fresh HIT of a learned path; ``False`` to let the app answer."""
        if scope["type"] != "http" or scope.get("root_path"):
            return False
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return False
        known = self.routes.get(scope["path"])
        if known is None:
            return False
        state, path_params = known
        started = time.perf_counter()
        scope["path_params"] = path_params  # what tags are filled with (the router sets its own later)
        try:
            hit = await find_hit(state, self.manager, scope, edge=True)
        except Exception:  # the app's own path handles (and reports) whatever went wrong
            hit = None
        scope.pop(LOOKUP_KEY, None)  # the route looks up again: its scope is not this one
        if hit is None:
            return False
        status, headers, body = hit
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        self.manager.stats.observe(state.template, "hit", time.perf_counter() - started)
        return True


def install(app: "FastAPI", layer: EdgeLayer) -> None:
    """Put ``layer`` in front of ``app``: the app's class becomes its edge subclass (same name and behaviour).

    ``uvicorn app:app`` calls the app object itself, so the only place before
    FastAPI's own ``__call__`` is the app's class.
    """
    setattr(app, _LAYER_ATTRIBUTE, layer)
    base = type(app)
    if base in _EDGE_CLASSES.values():
        return
    edged = _EDGE_CLASSES.get(base)
    if edged is None:
        edged = _EDGE_CLASSES[base] = _edge_class(base)
    app.__class__ = edged


def _edge_class(base: type) -> type:
    async def __call__(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        layer: EdgeLayer | None = self.__dict__.get(_LAYER_ATTRIBUTE)
        if layer is not None and not getattr(self, "root_path", "") and await layer.answered(scope, send):
            return
        await base.__call__(self, scope, receive, send)  # looked up now: patches of it apply

    return type(
        base.__name__, (base,), {"__call__": __call__, "__module__": base.__module__, "__qualname__": base.__qualname__}
    )
