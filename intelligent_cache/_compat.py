"""Shims over FastAPI versions (see FASTAPI_NOTES: include_router changed in 0.137)."""

from contextvars import ContextVar
from typing import Any

from fastapi.routing import APIRoute

_effective_context: ContextVar[Any] | None
try:  # FastAPI >= 0.137 keeps included routes and carries a per-inclusion context.
    from fastapi.routing import _effective_route_context_var as _effective_context
except ImportError:  # FastAPI <= 0.136 copies routes with prefixed paths
    _effective_context = None

__all__ = ["effective_path_format"]


def effective_path_format(route: APIRoute) -> str:
    """The route's full path template, include prefixes included.

    Only meaningful inside ``get_route_handler``: on new FastAPI the inclusion
    context is visible there, on old FastAPI the route copy already holds it.
    """
    if _effective_context is not None:
        context: Any = _effective_context.get()
        if context is not None and context.original_route is route:
            return str(context.path_format)
    return route.path_format
