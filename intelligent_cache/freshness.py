"""The one serve decision: may a found entry answer this request, and how.

Pure: the fast path of :class:`~intelligent_cache.CachedRoute` and the full read
path both call :func:`decide`, so they cannot drift apart. What the decision
reads from a request is :class:`~intelligent_cache.policy.RequestDirectives`;
a request carrying any header those directives come from takes the full path.
"""

from typing import Literal, NamedTuple

from .config import CacheConfig
from .entry import CachedResponse
from .httpmode import rules
from .policy import RequestDirectives, forbids_stale, shareable_with_credentials

__all__ = ["Decision", "decide"]

Action = Literal["hit", "stale", "miss"]


class Decision(NamedTuple):
    """What to do with what the lookup found.

    Attributes:
        action: ``hit`` (serve fresh), ``stale`` (serve past its lifetime while
            one background refresh runs) or ``miss`` (compute).
        entry: the usable entry (kept on a miss too: a stale-if-error or
            must-revalidate fallback may need it).
        forward: RFC 9211 ``fwd`` of a miss (``uri-miss``, ``stale``, ``request``...).
        remaining: whole seconds of freshness left, for a hit.
        fallback: on a miss, the entry may answer if the endpoint fails (stale-if-error).
        age: the entry's age in seconds, for a hit.

    A named tuple: immutable, and built on every lookup at the cost of a tuple.
    """

    action: Action
    entry: CachedResponse | None = None
    forward: str = "uri-miss"
    remaining: int = 0
    fallback: bool = False
    age: float = 0.0


def decide(
    found: CachedResponse | None,
    generations: list[int],
    now: float,
    directives: RequestDirectives,
    config: CacheConfig,
    *,
    revalidate: bool,
    soft_purge: bool,
    credentials: bool,
    forward: str = "uri-miss",
) -> Decision:
    """Decide how ``found`` (the entry under the request's key, if any) answers the request."""
    if found is None:
        return Decision("miss", forward="request" if revalidate else forward)
    current = list(found.generations) == generations
    if not current and not soft_purge:
        return Decision("miss", forward="stale")
    # RFC 9111 section 3.5: a request with credentials the key does not cover
    # may only use a response that said it is shareable.
    if credentials and not shareable_with_credentials(found.headers):
        return Decision("miss", forward="request" if revalidate else forward)
    if revalidate:
        return Decision("miss", found, forward="request")
    age = found.age(now)
    http = config.mode == "http"
    if (
        current
        and age < found.ttl
        and (directives.max_age is None or age <= directives.max_age)
        and not (http and directives.min_fresh is not None and found.ttl - age < directives.min_fresh)
    ):
        return Decision("hit", found, "uri-miss", int(found.ttl - age), False, age)  # positional: the hot path
    # Past its lifetime (or soft-purged): it may still be served stale, within
    # the windows of the route (or, in HTTP mode, of the response), unless it
    # or the client forbids it.
    if http:
        stale = rules(found.headers)
        forbidden, swr, sie = stale.forbids_stale, stale.stale_while_revalidate, stale.stale_if_error
        if current and not forbidden and directives.max_stale is not None and age < found.ttl + directives.max_stale:
            return Decision("hit", found, age=age)  # the client accepts it this stale (RFC 9111 section 5.2.1.2)
    else:
        forbidden, swr, sie = forbids_stale(found.headers), config.stale_while_revalidate, config.stale_if_error
    if directives.max_age is None and not forbidden:
        if swr and age < found.ttl + swr:
            return Decision("stale", found)
        if sie and age < found.ttl + sie:
            return Decision("miss", found, forward="stale", fallback=True)
    return Decision("miss", found, forward="stale")
