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
where GZip middleware would have compressed the computed response. Skipping a
middleware that authenticates, rate-limits or rewrites requests would hand its
callers what it refuses or sends elsewhere, so the app refuses to start with
any middleware but those known to be safe to skip (:data:`SAFE_TO_SKIP`) and
those the manager's ``edge_skip_middleware`` names; an app class with its own
``__call__`` cannot have the edge at all. Paths are learned per method and
``Host`` (the first one, as Starlette reads it), so ``Host`` routing and a
HEAD route of its own are answered by their own routes, and forgotten
whenever the app's route list changes (a route removed, replaced or
inserted), since another route may then answer them.
"""

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from .exceptions import ConfigurationError
from .fastpath import LOOKUP_KEY, find_hit
from .lru import ENTRY_OVERHEAD, BoundedLRU
from .routestate import RouteState
from .scope import first_host

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .manager import CacheManager

__all__ = ["SAFE_TO_SKIP", "EdgeLayer", "EdgeRoutes", "install", "layer_of"]

# Middleware an edge HIT may skip: what it does never applies to a request the
# edge answers (CORS: requests with Origin go to the app; sessions: requests with
# cookies do; trusted hosts and HTTPS redirects: an entry answers only the origin
# its request came through) or only reshapes the bytes (GZip).
SAFE_TO_SKIP = frozenset(
    {
        "starlette.middleware.cors.CORSMiddleware",
        "starlette.middleware.gzip.GZipMiddleware",
        "starlette.middleware.sessions.SessionMiddleware",
        "starlette.middleware.trustedhost.TrustedHostMiddleware",
        "starlette.middleware.httpsredirect.HTTPSRedirectMiddleware",
        "intelligent_cache.writes.InvalidationMiddleware",
    }
)

_ROUTES_BYTES = 1024 * 1024
# Where an app with the edge keeps its layer.
_LAYER_ATTRIBUTE = "_intelligent_cache_edge"
# The edge subclass of each app class (one per class, made on first use).
_EDGE_CLASSES: dict[type, type] = {}


class EdgeRoutes:
    """Which fast-path route serves a method, ``Host`` and path: learned as routes serve, bounded in bytes."""

    def __init__(self) -> None:
        self._routes: BoundedLRU[tuple[str, bytes, str], tuple[RouteState, dict[str, Any]]] = BoundedLRU(
            max_bytes=_ROUTES_BYTES
        )

    def learn(self, method: str, host: bytes, path: str, state: RouteState, path_params: dict[str, Any]) -> None:
        where = (method, host, path)
        size = len(path) + len(host)
        if size <= 1024 and self._routes.peek(where) is None:
            # The path parameters are held too: a str of each name and value, about 100 bytes besides.
            size += sum(len(str(name)) + len(str(value)) + 100 for name, value in path_params.items())
            self._routes.put(where, (state, dict(path_params)), size + ENTRY_OVERHEAD)

    def get(self, method: str, host: bytes, path: str) -> tuple[RouteState, dict[str, Any]] | None:
        return self._routes.get((method, host, path))


class _WatchedRoutes(list[Any]):
    """The app's route list, counting its changes (so the edge knows when what it learned may be wrong)."""

    version = 0

    def _changed(self) -> None:
        self.version += 1


def _watching(name: str) -> Any:
    method = getattr(list, name)

    def changing(self: _WatchedRoutes, *args: Any) -> Any:
        self._changed()
        return method(self, *args)

    changing.__name__ = name
    return changing


for _name in (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
):
    setattr(_WatchedRoutes, _name, _watching(_name))


class EdgeLayer:
    """Fresh HITs of learned paths, answered before the app runs.

    Args:
        manager: the app's cache manager.
        skip: middleware the app's edge HITs may skip besides :data:`SAFE_TO_SKIP`:
            classes, ``@app.middleware("http")`` functions, or their names.
    """

    def __init__(self, manager: "CacheManager", skip: Iterable[Any] = ()) -> None:
        self.manager = manager
        self.routes = EdgeRoutes()
        self.router: Any = None  # the app's router, once installed
        self._seen: tuple[Any, int] | None = None  # the route list and its version the learned paths hold for
        self.skip: frozenset[str] = frozenset().union(*(_names(item) for item in skip))

    def learn(self, scope: Scope, method: str, state: RouteState) -> None:
        """Remember that the route of ``state`` served this request (``method`` as the client sent it)."""
        if not scope.get("root_path") and self.router is not None:
            self._routes_unchanged()  # forgets what was learned with other routes
            host = first_host(scope)
            self.routes.learn(method, host, scope["path"], state, scope.get("path_params", {}))

    def _routes_unchanged(self) -> bool:
        """Whether the app's routes are those the learned paths were learned with; if not, forget those."""
        routes = self.router.routes
        if self._seen is not None and routes is self._seen[0] and routes.version == self._seen[1]:
            return True
        self.routes = EdgeRoutes()
        if not isinstance(routes, _WatchedRoutes):  # replaced by a plain list: watch that one
            routes = self.router.routes = _WatchedRoutes(routes)
        self._seen = (routes, routes.version)
        return False

    def problems(self, app: Any) -> list[str]:
        """Why the edge cannot answer in front of ``app``: middleware it must not skip."""
        found: list[str] = []
        for middleware in getattr(app, "user_middleware", ()):
            cls = getattr(middleware, "cls", None)
            dispatch = getattr(middleware, "kwargs", {}).get("dispatch")
            names = _names(cls) if dispatch is None else _names(dispatch)
            if names & SAFE_TO_SKIP or names & self.skip:
                continue
            shown = f"{_shown(names)} (an @app.middleware function)" if dispatch else _shown(names)
            found.append(
                f"edge=True answers fresh HITs before the app's middleware, and {shown} would not run for them: "
                "if it authenticates, rate-limits or rewrites requests, use edge=False; if skipping it is fine "
                f"(logging, timing), name it in CacheManager(edge_skip_middleware=[...])"
            )
        return found

    async def answered(self, scope: Scope, send: Send) -> bool:
        """Send the response if the request is a fresh HIT of a learned path; ``False`` to let the app answer."""
        if scope["type"] != "http" or scope.get("root_path"):
            return False
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return False
        if self.router is None or not self._routes_unchanged():
            return False
        known = self.routes.get(method, first_host(scope), scope["path"])
        if known is None:
            return False
        state, path_params = known
        started = time.perf_counter()
        had_params = "path_params" in scope
        params = scope.get("path_params")
        scope["path_params"] = path_params  # what tags are filled with (the router sets its own later)
        try:
            hit = await find_hit(state, self.manager, scope, edge=True)
        except Exception:  # the app's own path handles (and reports) whatever went wrong
            hit = None
        scope.pop(LOOKUP_KEY, None)  # the route looks up again: its scope is not this one
        if hit is None:
            if had_params:
                scope["path_params"] = params
            else:
                del scope["path_params"]
            return False
        status, headers, body = hit
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        self.manager.stats.observe(state.template, "hit", time.perf_counter() - started)
        return True


def _names(item: Any) -> frozenset[str]:
    """What a middleware (class, function or name) is known by: its name, qualified or not."""
    if isinstance(item, str):
        return frozenset({item})
    name = getattr(item, "__name__", None) or repr(item)
    qualname = getattr(item, "__qualname__", name)
    return frozenset({name, qualname, f"{getattr(item, '__module__', '')}.{qualname}"})


def _shown(names: frozenset[str]) -> str:
    return min(names, key=len)


def layer_of(app: Any) -> EdgeLayer | None:
    """The edge layer in front of ``app``, if it has one."""
    return getattr(app, "__dict__", {}).get(_LAYER_ATTRIBUTE)


def install(app: "FastAPI", layer: EdgeLayer) -> None:
    """Put ``layer`` in front of ``app``: the app's class becomes its edge subclass (same name and behaviour).

    ``uvicorn app:app`` calls the app object itself, so the only place before
    FastAPI's own ``__call__`` is the app's class.
    """
    base = type(app)
    if base not in _EDGE_CLASSES.values():
        from fastapi import FastAPI

        own = next((cls for cls in base.__mro__ if "__call__" in vars(cls)), FastAPI)
        if own is not FastAPI:
            raise ConfigurationError(
                f"edge=True cannot answer in front of {own.__qualname__}.__call__, which would not run for edge "
                "HITs: use edge=False, or move what it does into middleware"
            )
    layer.router = app.router
    layer._routes_unchanged()  # watch the route list from now on
    setattr(app, _LAYER_ATTRIBUTE, layer)
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
