"""The fast HIT path: a fresh entry answered from raw ASGI, before FastAPI's handler runs.

Only for routes whose lookup needs no request object (no dependencies to
run, no vary sources) and requests that carry nothing the serve decision or
the credential check reads: the route's :attr:`RouteState.fast_path_headers`
is derived from what :class:`~intelligent_cache.policy.RequestDirectives`
parses and what the route's key plan reads, so the two paths cannot drift.
It uses the same decision (:func:`~intelligent_cache.freshness.decide`) and
the same marks (:mod:`~intelligent_cache.outcome`) as the full path. Whatever
it cannot answer goes on to the full path, which reuses its lookup (an
:class:`EarlyLookup` left in the scope), so a MISS reads the backend once.
"""

from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

from ._types import Header
from .entry import CachedResponse
from .freshness import decide
from .outcome import Outcome, count, marks
from .policy import RequestDirectives
from .routestate import RouteState
from .scope import manager_from_scope

__all__ = ["LOOKUP_KEY", "UNDECODED", "EarlyLookup", "find_hit", "origin_of"]

# Where the fast path leaves its lookup for the full path.
LOOKUP_KEY = "intelligent_cache.lookup"
# An entry not decoded yet (the backend had nothing, or was not asked to decode).
UNDECODED: Any = object()


@dataclass(frozen=True, slots=True)
class EarlyLookup:
    """What the fast path read for ``key``: the raw entry, the counters, and the decoded entry if any."""

    key: str
    raw: bytes | None
    generations: list[int] | None
    entry: Any = UNDECODED


async def find_hit(route: RouteState, scope: Scope) -> tuple[int, list[Header], bytes] | None:
    """The response to a plain GET if it is a fresh HIT: status, headers, body.

    For routes whose lookup needs no request object: no dependencies to run and
    no vary sources. Any header the serve decision or the credential check
    reads sends the request to the full path, which reuses this lookup (left
    in the scope), so behaviour is the same either way; only the cost differs.
    """
    settings = route.settings()
    if settings is None:
        return None
    config, plan = settings
    if plan.late or plan.sources:
        return None
    manager = manager_from_scope(scope)
    if manager is None or not manager.enabled:
        return None
    secret = manager.io.known_secret
    if secret is None:
        return None
    bail = route.fast_path_headers
    host = b""
    for name, value in scope["headers"]:
        if name in bail:
            return None
        if name == b"host":
            host = value
    origin = origin_of(scope, host)
    path: str = scope["path"]
    key = route.key(path, scope["query_string"], (("origin", origin),) if manager.key_by_host else (), secret)
    counters = route.counters(path, scope.get("path_params", {}))[1]
    raw, generations = await manager.io.lookup(key, counters)
    if raw is None or generations is None:
        scope[LOOKUP_KEY] = EarlyLookup(key, raw, generations)
        return None
    entry = manager.io.decode(raw)
    if isinstance(entry, CachedResponse) and (entry.origin == origin or not entry.origin):
        now = manager.clock()
        decision = decide(
            entry,
            generations,
            now,
            _PLAIN,
            config,
            revalidate=False,
            soft_purge=manager.soft_purge,
            credentials=False,
        )
        if decision.action == "hit":
            count(manager.stats, route.template, Outcome.HIT)
            headers = [
                *entry.headers,
                (b"age", b"%d" % entry.age(now)),
                *marks(Outcome.HIT, "hit", f"ttl={decision.remaining}"),
            ]
            return entry.status, headers, entry.body
    scope[LOOKUP_KEY] = EarlyLookup(key, raw, generations, entry)
    return None


# What a request without any directive header asks: nothing.
_PLAIN = RequestDirectives()


def origin_of(scope: Scope, host: bytes | None = None) -> str:
    """``scheme://host`` of a request, as the Host header (or the server address) gives it."""
    if host is None:
        host = next((value for name, value in scope["headers"] if name == b"host"), b"")
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}".encode() if server else b""
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1').lower()}"
