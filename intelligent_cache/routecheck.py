"""The start-up check: every route of an app with a cache takes part, or the app does not start.

A route the cache cannot see is never silently uncached: ``@cache_config`` on
a plain ``APIRoute`` (a plain ``APIRouter()``, or a route declared on the app
before ``init_app``) is a :class:`~intelligent_cache.ConfigurationError` naming
the route and the fix, and so is a setting that cannot work for its route.
Mounted routers (``Mount("/x", routes=[...])``) are part of the app and
checked with it; a mounted application is checked as an app without a
cache unless it has a ``CacheManager`` of its own (whose check covers it).
Writes need no check: the app-wide middleware invalidates after any route.
"""

from collections.abc import Iterator
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Host, Mount

from .config import get_config
from .edge import layer_of
from .exceptions import ConfigurationError
from .inputs import RouteInputs
from .route import CachedRoute, warn_if_misplaced
from .scope import STATE_ATTRIBUTE

__all__ = ["check_app_routes"]

try:  # FastAPI >= 0.137.2: included routes with their effective path and dependencies
    from fastapi.routing import iter_route_contexts as _iter_route_contexts
except ImportError:  # FastAPI <= 0.136: app.routes holds flat copies
    _iter_route_contexts = None  # type: ignore[assignment]


def _routes(routes: Any, prefix: str = "") -> Iterator[tuple[Any, str, Any, bool]]:
    """``(route, effective path, effective dependant, served with a cache)`` of every route.

    ``served with a cache`` is False inside a mounted application that has no
    ``CacheManager`` of its own; a mounted application that has one is left to its own check.
    """
    for route, path, dependant in _flat(routes):
        if isinstance(route, Mount | Host):
            mounted = route.app
            inner = getattr(mounted, "routes", None)
            if inner is None:
                continue
            here = prefix + (route.path if isinstance(route, Mount) else "")
            state = getattr(mounted, "state", None)
            if state is None:  # a Router: its routes are this app's
                yield from _routes(inner, here)
            elif getattr(state, STATE_ATTRIBUTE, None) is None:
                for found, inner_path, inner_dependant, _ in _routes(inner, here):
                    yield found, inner_path, inner_dependant, False
            continue
        yield route, prefix + path, dependant, True


def _flat(routes: Any) -> Iterator[tuple[Any, str, Any]]:
    """``(route, path, dependant)`` of each route, included routers flattened."""
    if _iter_route_contexts is None:
        for route in routes:
            yield route, getattr(route, "path_format", getattr(route, "path", "")), getattr(route, "dependant", None)
        return
    for context in _iter_route_contexts(routes):
        route = context.original_route
        effective = getattr(context, "_route_context", None) or route
        yield route, str(getattr(effective, "path_format", "") or ""), getattr(effective, "dependant", None)


def check_app_routes(app: Any) -> None:
    """Raise if a route of ``app`` asks for caching it cannot get.

    Raises:
        ConfigurationError: naming every such route and the fix.
    """
    problems: list[str] = []
    for route, path, dependant, with_cache in _routes(app.routes):
        if not isinstance(route, APIRoute):
            continue
        warn_if_misplaced(route)
        config = get_config(route.endpoint)
        if config is None or not config.enabled or "GET" not in (route.methods or ()):
            continue
        if not with_cache:
            problems.append(
                f"GET {path} has @cache_config but is in a mounted application without a CacheManager, "
                "which the cache cannot see: call CacheManager(...).init_app() on that application too"
            )
        elif not isinstance(route, CachedRoute):
            problems.append(
                f"GET {path} has @cache_config but is a plain APIRoute, which the cache cannot see: "
                "declare its router as APIRouter(route_class=CachedRoute), or declare routes on the app "
                "after CacheManager(...).init_app(app)"
            )
        elif dependant is not None:
            try:
                RouteInputs.of(dependant).plan(config, where=f"GET {path}")
            except ConfigurationError as exc:
                problems.append(str(exc))
    layer = layer_of(app)
    if layer is not None:
        problems.extend(layer.problems(app))
    if problems:
        raise ConfigurationError("; ".join(problems))
