"""Shims over FastAPI versions (see FASTAPI_NOTES: include_router changed in 0.137)."""

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from fastapi.routing import APIRoute

_effective_context: ContextVar[Any] | None
try:  # FastAPI >= 0.137 keeps included routes and carries a per-inclusion context.
    from fastapi.routing import _effective_route_context_var as _effective_context
except ImportError:  # FastAPI <= 0.136 copies routes with prefixed paths
    _effective_context = None

__all__ = ["effective_route", "scope_route"]

_scope_context: Callable[[Any], Any] | None
try:  # FastAPI >= 0.137: the inclusion context of the request lives in the scope.
    from fastapi.routing import _get_scope_effective_route_context as _scope_context
except ImportError:  # FastAPI <= 0.136
    _scope_context = None


def effective_route(route: APIRoute) -> Any:
    """What FastAPI builds the handler from: the inclusion context or the route.

    Both carry ``path_format`` (include prefixes included), ``dependant``
    (router-level dependencies included) and ``param_convertors``. Only
    meaningful inside ``get_route_handler``: on new FastAPI the inclusion
    context is visible there; on old FastAPI the route copy already holds it all.
    """
    if _effective_context is not None:
        context: Any = _effective_context.get()
        if context is not None and context.original_route is route:
            return context
    return route


def scope_route(scope: Any, route: APIRoute) -> Any:
    """At request time, the object ``effective_route`` returned when the handler was built."""
    if _scope_context is not None:
        context = _scope_context(scope)
        if context is not None and context.original_route is route:
            return context
    return route
