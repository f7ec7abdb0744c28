"""``CachedRoute``: the one module that knows FastAPI's routing internals.

For a GET route it builds FastAPI's own request handler with one change: the
endpoint is called through a *gate*. FastAPI parses the request and solves
every dependency (router-, include- and app-level ones included) as usual,
then calls the gate, where the read path (:mod:`intelligent_cache.reading`)
looks the request up with every key input known, answers from the cache or
runs the endpoint. Outside a cached read the gate just calls the endpoint, so
routes without ``@cache_config`` behave exactly like ``APIRoute``.

HEAD on a cached GET route is answered like the GET, without a body. Writes
are not this module's business: the app-wide middleware of
:mod:`intelligent_cache.writes` invalidates after every successful write,
whatever route class served it.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from . import _compat
from .config import get_config, get_invalidation, template_fields
from .edge import layer_of
from .exceptions import ConfigurationError
from .fastpath import LOOKUP_KEY, find_hit
from .inputs import RouteInputs
from .outcome import Outcome, count, marks
from .policy import SAFE_METHODS
from .reading import ACTIVE, ANSWERED, after_dependencies, read_through
from .routestate import RouteState
from .scope import manager_from_scope

if TYPE_CHECKING:
    pass

__all__ = ["CachedRoute"]

logger = logging.getLogger("intelligent_cache")

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_STATE_ATTRIBUTE = "_intelligent_cache_state"
_WARNED_ATTRIBUTE = "__intelligent_cache_warned__"
_WARNED_INVALIDATES_ATTRIBUTE = "__intelligent_cache_warned_invalidates__"


def _route_state(route: Any, endpoint: Callable[..., Any]) -> RouteState:
    """The state kept on what FastAPI builds the handler from (the inclusion context or the route)."""
    state: RouteState | None = getattr(route, _STATE_ATTRIBUTE, None)
    if state is None or state.endpoint is not endpoint:
        state = RouteState(endpoint=endpoint, template=str(route.path_format), inputs=RouteInputs.of(route.dependant))
        setattr(route, _STATE_ATTRIBUTE, state)
    return state


def _gate(state: RouteState, dependant: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The stand-in FastAPI calls with the endpoint's solved arguments."""
    call = dependant.call
    is_coroutine = _compat.is_coroutine_endpoint(dependant)

    async def run(values: dict[str, Any]) -> Any:
        if is_coroutine:
            return await call(**values)
        return await run_in_threadpool(call, **values)

    async def gate(**values: Any) -> Any:
        ctx = ACTIVE.get()
        if ctx is None or ctx.route is not state or ctx.entered:
            return await run(values)
        return await after_dependencies(ctx, lambda: run(values))

    gate.__name__ = getattr(call, "__name__", "endpoint")
    gate.__qualname__ = getattr(call, "__qualname__", gate.__name__)
    return gate


def warn_if_misplaced(route: APIRoute) -> None:
    """Log once per endpoint that a decorator cannot take effect on this route's methods.

    ``@cache_config`` on a route without GET caches nothing, and
    ``@invalidates`` on a route with only safe methods invalidates nothing.
    """
    methods = route.methods or set()
    config = get_config(route.endpoint)
    if config is not None and config.enabled and "GET" not in methods:
        _warn_once(
            route,
            _WARNED_ATTRIBUTE,
            "@cache_config on %s %s does nothing: only GET (and HEAD) responses are cached",
        )
    if get_invalidation(route.endpoint) is not None and methods and methods <= SAFE_METHODS:
        _warn_once(
            route,
            _WARNED_INVALIDATES_ATTRIBUTE,
            "@invalidates on %s %s does nothing: only successful writes (POST, PUT, PATCH, DELETE...) invalidate",
        )


def _warn_once(route: APIRoute, attribute: str, message: str) -> None:
    if not getattr(route.endpoint, attribute, False):
        setattr(route.endpoint, attribute, True)
        logger.warning(message, ",".join(sorted(route.methods or ())), route.path)


def check_templates(route: Any, endpoint: Callable[..., Any]) -> None:
    """Fail at set-up when a template names something the route does not have.

    An entry's tags may name path parameters; what ``@invalidates`` names may
    also name the write's query parameters.
    """
    config = get_config(endpoint)
    invalidation = get_invalidation(endpoint)
    path_names = set(route.param_convertors)
    query_names = {str(field.alias) for field in getattr(route.dependant, "query_params", ())}
    texts = [(text, path_names, "path") for text in (config.tags if config else ())]
    if invalidation is not None:
        texts += [
            (text, path_names | query_names, "path or query") for text in (*invalidation.tags, *invalidation.paths)
        ]
    for text, known, kind in texts:
        missing = set(template_fields(text)) - known
        if missing:
            raise ConfigurationError(
                f"{text!r} on {route.path_format} names {sorted(missing)}, which are not its {kind} parameters"
            )


def _marking_errors(send: Send, scope: Scope, template: str) -> Send:
    """Give X-Cache and Cache-Status to responses FastAPI built from an exception.

    An HTTPException or a validation error raised by the endpoint or a dependency
    becomes a response outside the cache's handler; it was neither served from
    nor stored in the cache.
    """

    async def send_marked(message: Message) -> None:
        if message["type"] == "http.response.start" and ANSWERED not in scope:
            headers = list(message.get("headers", ()))
            if not any(name == b"x-cache" for name, _ in headers):
                headers += marks(Outcome.SKIP, "fwd=miss", reason="status")
                message = {**message, "headers": headers}
                manager = manager_from_scope(scope)
                count(None if manager is None else manager.stats, template, Outcome.SKIP, "status")
        await send(message)

    return send_marked


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


class CachedRoute(APIRoute):
    """An ``APIRoute`` that caches GET responses of endpoints marked with ``@cache_config``.

    Use it as ``APIRouter(route_class=CachedRoute)``, or let
    ``CacheManager.init_app(app)`` set it on the app. Routes without
    ``@cache_config`` (or with ``enabled=False``) behave exactly like ``APIRoute``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # FastAPI <= 0.136 re-creates routes with its own keyword arguments on
        # include_router, and newer versions keep adding some: take them all.
        super().__init__(*args, **kwargs)
        methods = self.methods or set()
        self._get_only = "GET" in methods and "HEAD" not in methods

    def _answers_head(self) -> bool:
        # Read at request time: @cache_config may be applied after the route was built.
        if not self._get_only:
            return False
        config = get_config(self.endpoint)
        return config is not None and config.enabled

    def get_route_handler(self) -> Handler:
        # Called inside APIRoute.__init__ and, on FastAPI >= 0.137, once per
        # inclusion context (0.137-0.142: on every request): cheap, and it
        # mutates nothing another request could see.
        route = _compat.effective_route(self)
        check_templates(route, self.endpoint)
        warn_if_misplaced(self)
        if "GET" not in (self.methods or ()):
            return super().get_route_handler()
        state = _route_state(route, self.endpoint)
        state.settings()  # a configuration that cannot work fails here, at set-up
        if _compat.is_streaming_endpoint(route.dependant.call):
            return super().get_route_handler()
        gated = _compat.build_handler(self, dataclasses.replace(route.dependant, call=_gate(state, route.dependant)))

        async def handler(request: Request) -> Response:
            if request.scope["method"] == "GET" and state.settings() is not None:
                return await read_through(state, request, gated)
            response: Response = await gated(request)
            return response

        return handler

    def matches(self, scope: Scope) -> tuple[Any, Scope]:
        if scope["type"] == "http" and scope["method"] == "HEAD" and self._answers_head():
            return super().matches({**scope, "method": "GET"})
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "HEAD" and self._answers_head():
            # HEAD is the GET without a body: same key, same headers, Content-Length included.
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        elif method != "GET" or not self._get_only:
            # Not a cached read (or a route of several methods, cached by its handler): what APIRoute does.
            await super().handle(scope, receive, send)
            return
        state: RouteState | None = getattr(_compat.scope_route(scope, self), _STATE_ATTRIBUTE, None)
        if state is None or state.settings() is None:
            await super().handle(scope, receive, send)  # not cached (the handler knows it too)
            return
        manager = manager_from_scope(scope)
        if manager is not None:
            started = time.perf_counter()
            try:
                hit = await find_hit(state, manager, scope)
            except Exception:  # the full path below handles (and reports) whatever went wrong
                scope.pop(LOOKUP_KEY, None)
                hit = None
            if state.fast_path:
                layer = layer_of(scope.get("app"))
                if layer is not None:
                    layer.learn(scope, method, state)
            if hit is not None:
                status, headers, body = hit
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                manager.stats.observe(state.template, "hit", time.perf_counter() - started)
                return
        await super().handle(scope, receive, _marking_errors(send, scope, state.template))
