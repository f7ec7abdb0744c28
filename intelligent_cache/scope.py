"""What the cache reads off an ASGI scope: the app's manager (without importing it) and the origin.

The request path (route, reading, writes) only needs to find the manager an
app was given by ``init_app``; :class:`AttachedCache` lets it check what it
found without importing :mod:`intelligent_cache.manager`, which imports the
request path (imports run one way: manager -> route -> reading -> scope).
"""

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = [
    "CURRENT_MANAGER",
    "STATE_ATTRIBUTE",
    "AttachedCache",
    "authenticated",
    "first_host",
    "manager_from_scope",
    "origin_of",
    "remember_manager",
]

#: The manager of the request being served (set by ``init_app``'s middleware) or of a
#: :func:`~intelligent_cache.use_cache` block: what ``@cached`` functions use.
CURRENT_MANAGER: "ContextVar[CacheManager | None]" = ContextVar("intelligent_cache_manager", default=None)

#: The ``app.state`` attribute holding an app's :class:`~intelligent_cache.CacheManager`.
STATE_ATTRIBUTE = "intelligent_cache"
_SCOPE_KEY = "intelligent_cache.manager"


class AttachedCache:
    """Base of :class:`~intelligent_cache.CacheManager`: what ``app.state`` may hold."""


def manager_from_scope(scope: Any) -> "CacheManager | None":
    """The manager attached to the app serving an ASGI scope, if any (found once per request and app)."""
    app = scope.get("app")
    found = scope.get(_SCOPE_KEY)
    if found is not None and found[0] is app:
        return found[1]  # type: ignore[no-any-return]
    manager = getattr(getattr(app, "state", None), STATE_ATTRIBUTE, None)
    if not isinstance(manager, AttachedCache):
        return None
    scope[_SCOPE_KEY] = (app, manager)
    return manager  # type: ignore[return-value]


def remember_manager(scope: Any, manager: "CacheManager") -> None:
    """Note that the app serving ``scope`` has ``manager`` (``init_app``'s middleware knows it: no look-up later)."""
    scope[_SCOPE_KEY] = (scope.get("app"), manager)


def origin_of(scope: Scope, host: bytes | None = None) -> str:
    """``scheme://host`` of a request, as the Host header (or the server address) gives it."""
    if host is None:
        host = first_host(scope)
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}".encode() if server else b""
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1').lower()}"


def authenticated(scope: Scope) -> bool:
    """Whether Starlette's ``AuthenticationMiddleware`` authenticated the request (from whatever it read)."""
    user = scope.get("user")
    return user is not None and getattr(user, "is_authenticated", False) is True


def first_host(scope: Scope) -> bytes:
    """The request's first ``Host`` line (the one Starlette, and so the endpoint, reads), empty if none."""
    for name, value in scope["headers"]:
        if name == b"host":
            return value  # type: ignore[no-any-return]
    return b""
