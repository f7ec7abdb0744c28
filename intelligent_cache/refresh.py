"""Background refresh (stale-while-revalidate): the request replayed through the app, once per key."""

from typing import TYPE_CHECKING, Any

from fastapi import Request
from starlette.types import Message

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["REFRESH_FLAG", "refresh_later"]

#: Set in the scope of a refresh: the read path then computes fresh, and stores.
REFRESH_FLAG = "intelligent_cache.refresh"
# Conditional and cache-control request headers a background refresh must not inherit.
_DROPPED = frozenset({b"if-none-match", b"if-modified-since", b"cache-control", b"pragma", b"range"})
# What routing and FastAPI put in a scope: the refresh is routed afresh.
_ROUTED = frozenset({"route", "endpoint", "path_params", "fastapi", "router", "state"})


def refresh_later(request: Request, manager: "CacheManager", key: str) -> None:
    """Run the request again in the background, so the entry under ``key`` is recomputed."""
    scope = request.scope
    app = scope.get("app")
    if app is None:
        return
    fresh_scope: dict[str, Any] = {
        name: value
        for name, value in scope.items()
        if name not in _ROUTED and not name.startswith(("fastapi_", "intelligent_cache"))
    }
    fresh_scope["method"] = "GET"
    fresh_scope["headers"] = [(n, v) for n, v in scope["headers"] if n not in _DROPPED]
    fresh_scope["state"] = dict(scope.get("state", {}))
    fresh_scope[REFRESH_FLAG] = True

    async def refresh() -> None:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def discard(message: Message) -> None:
            return None

        await app(fresh_scope, receive, discard)

    manager.refresh_in_background(key, refresh)
