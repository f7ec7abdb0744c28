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
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from ._types import Header
from .entry import CachedResponse
from .freshness import decide
from .outcome import Outcome, age_field, count, hit_marks
from .policy import RequestDirectives
from .routestate import RouteState
from .scope import authenticated

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["LOOKUP_KEY", "PLAIN", "UNDECODED", "EarlyLookup", "find_hit"]

# Where the fast path leaves its lookup for the full path.
LOOKUP_KEY = "intelligent_cache.lookup"
# An entry not decoded yet (the backend had nothing, or was not asked to decode).
UNDECODED: Any = object()


@dataclass(slots=True, eq=False)  # never changed, but not frozen: a frozen init costs 4x
class EarlyLookup:
    """What the fast path read for ``key``: the raw entry, the counters, and the decoded entry if any.

    Its presence also says that the request carries no header the serve
    decision or the credential check reads (the fast path bails on those), and
    ``origin`` is the request's ``scheme://host``.
    """

    key: str
    origin: str
    tags: tuple[str, ...]
    counters: list[str]
    secret: bytes
    raw: bytes | None
    generations: list[int] | None
    entry: Any = UNDECODED


async def find_hit(
    route: RouteState, manager: "CacheManager", scope: Scope, *, edge: bool = False
) -> tuple[int, list[Header], bytes] | None:
    """The response to a plain GET if it is a fresh HIT: status, headers, body.

    For routes whose lookup needs no request object: no dependencies to run and
    no vary sources. Any header the serve decision or the credential check
    reads (at the ``edge``, ``Origin`` too) sends the request to the full path,
    which reuses this lookup (left in the scope), so behaviour is the same
    either way; only the cost differs.
    """
    settings = route.settings()
    if settings is None or not route.fast_path or not manager.enabled:
        return None
    config = settings[0]
    secret = manager.io.known_secret
    if secret is None:
        return None
    if "user" in scope and authenticated(scope):  # AuthenticationMiddleware read a credential
        return None
    bail = route.edge_headers if edge else route.fast_path_headers
    host: bytes | None = None
    for name, value in scope["headers"]:
        if name in bail:
            return None
        if name == b"host" and host is None:  # the first one, as Starlette (and so the endpoint) reads it
            host = value
    origin, key, tags, counters = route.fast_names(scope, host or b"", manager.key_by_host, secret)
    raw, generations = await manager.io.lookup(key, counters)
    if raw is None or generations is None:
        scope[LOOKUP_KEY] = EarlyLookup(key, origin, tags, counters, secret, raw, generations)
        return None
    entry = manager.io.decode(raw)
    if isinstance(entry, CachedResponse) and (entry.origin == origin or not entry.origin):
        now = manager.clock()
        decision = decide(
            entry,
            generations,
            now,
            PLAIN,
            config,
            revalidate=False,
            soft_purge=manager.soft_purge,
            credentials=False,
        )
        if decision.action == "hit":
            count(manager.stats, route.template, Outcome.HIT)
            manager.stats.key_hit(key)
            headers = [
                *entry.headers,
                age_field(decision.age),
                *hit_marks(decision.remaining),
            ]
            return entry.status, headers, entry.body
    scope[LOOKUP_KEY] = EarlyLookup(key, origin, tags, counters, secret, raw, generations, entry)
    return None


# What a request without any directive header asks: nothing.
PLAIN = RequestDirectives()
