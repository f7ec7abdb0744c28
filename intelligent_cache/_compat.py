"""Shims over FastAPI versions (see FASTAPI_NOTES: include_router changed in 0.137)."""

import copy
import dataclasses
import functools
import inspect
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any

from fastapi.routing import APIRoute

_effective_context: ContextVar[Any] | None
try:  # FastAPI >= 0.137 keeps included routes and carries a per-inclusion context.
    from fastapi.routing import _effective_route_context_var as _effective_context
except ImportError:  # FastAPI <= 0.136 copies routes with prefixed paths
    _effective_context = None

__all__ = ["build_handler", "effective_route", "is_coroutine_endpoint", "is_streaming_endpoint", "scope_route"]

_is_coroutine_callable: Callable[[Any], bool] | None
try:  # FastAPI >= 0.137
    from fastapi.dependencies.models import _is_coroutine_callable
except ImportError:  # FastAPI <= 0.136: Dependant.is_coroutine_callable
    _is_coroutine_callable = None

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


def build_handler(route: APIRoute, dependant: Any) -> Callable[[Any], Coroutine[Any, Any, Any]]:
    """FastAPI's request handler for ``route`` built from ``dependant``, mutating nothing.

    ``APIRoute.get_route_handler`` reads the dependant from the route, or on
    FastAPI >= 0.137 from the inclusion context in a ContextVar. Both are
    shared by concurrent requests (0.137-0.142 rebuild the handler on every
    request), so the dependant is swapped on a copy: a copy of the context,
    set in this context only, or a shallow copy of the route.
    """
    if _effective_context is not None:
        context: Any = _effective_context.get()
        if context is not None and context.original_route is route:
            token = _effective_context.set(dataclasses.replace(context, dependant=dependant))
            try:
                return APIRoute.get_route_handler(route)
            finally:
                _effective_context.reset(token)
    clone = copy.copy(route)
    clone.dependant = dependant
    return APIRoute.get_route_handler(clone)


def is_coroutine_endpoint(dependant: Any) -> bool:
    """Whether FastAPI awaits the dependant's call (else it runs it in the threadpool)."""
    known = getattr(dependant, "is_coroutine_callable", None)  # FastAPI <= 0.136: a cached property
    if isinstance(known, bool):
        return known
    if _is_coroutine_callable is not None:
        return bool(_is_coroutine_callable(dependant.call))
    call = dependant.call
    # A callable instance is awaited when its __call__ is a coroutine function.
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def is_streaming_endpoint(call: Any) -> bool:
    """Whether an endpoint yields (a streaming endpoint: never gated, never stored)."""
    while isinstance(call, functools.partial):
        call = call.func
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)
