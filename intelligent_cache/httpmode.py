"""``cache_config(mode="http")``: a route's cache as an RFC 9111 shared cache in front of its endpoint.

In the default mode the route says how long its responses stay fresh; here
the response does, as a standards-following proxy cache reads it:

- :func:`storable`: what may be stored and for how long (RFC 9111 sections 3
  and 4.2.1; ``Intelligent-Cache-Control`` and ``CDN-Cache-Control``, RFC 9213,
  over ``Cache-Control``). The entry keeps the response's own header fields,
  ``Date`` included, and its age: ``stored_at`` is set back by the corrected
  initial age (section 4.2.3), so ``now - stored_at`` is the current age, the
  one a HIT's ``Age`` says;
- :func:`rules`: what a stored response allows when it is stale
  (``no-cache``, ``must-revalidate``, ``proxy-revalidate``, ``s-maxage``;
  RFC 5861 ``stale-while-revalidate`` and ``stale-if-error``);
- :func:`conditional` and :func:`freshened`: a stale entry with a validator
  is revalidated by calling the endpoint with ``If-None-Match`` /
  ``If-Modified-Since``; a 304 updates the stored header fields (section
  4.3.4) and the entry is served again;
- :func:`ranged`: a single byte ``Range`` answered from a stored 200 (RFC 9110
  section 14).

``Set-Cookie`` responses stay unstored, as everywhere in this package: safer
than the RFC, which allows storing them.
"""

import dataclasses
import functools
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from starlette.responses import Response

from ._types import Header
from .config import HEURISTIC_STATUSES, CacheConfig
from .entry import CachedResponse
from .fields import DEFAULT_TARGETS, delta_seconds, parse_http_date, targeted_directives
from .policy import etag_matches, response_vary
from .rfc9111 import (
    content_range,
    freshness_lifetime,
    initial_age,
    parse_range,
    stored_headers,
    unsatisfied_content_range,
    updated_headers,
)
from .storing import Basis, Storable

__all__ = ["CONDITIONAL_FIELDS", "Rules", "conditional", "freshened", "ranged", "rules", "storable"]

# How long an entry without freshness left is kept for revalidation (it has a validator).
KEEP_FOR_REVALIDATION = 3600.0
# The request fields a revalidation replaces with the stored entry's validators.
CONDITIONAL_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
_NEVER_STALE = ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage")
#: The statuses RFC 9110 defines, whose caching requirements this cache knows (for ``must-understand``).
UNDERSTOOD_STATUSES = frozenset([*range(200, 207), *range(300, 309), *range(400, 418), 421, 422, 426, *range(500, 506)])


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """What a stored response allows once stale."""

    forbids_stale: bool
    stale_while_revalidate: float
    stale_if_error: float


def _seconds(directives: dict[str, str | None], name: str) -> float:
    # Delta-seconds like every other: ASCII digits, at most 2**31 (an endless window would never expire).
    return float(delta_seconds(directives.get(name)) or 0)


# The fields the stale rules are read from, and the most of them a memoized rule is keyed by.
_RULE_FIELDS = frozenset({b"cache-control", *DEFAULT_TARGETS})
_MEMOIZED_RULE_BYTES = 1024


def rules(headers: tuple[Header, ...]) -> Rules:
    """The stale rules of a stored response (memoized by its directive fields: a hot entry is read once)."""
    fields = tuple(pair for pair in headers if pair[0] in _RULE_FIELDS)
    if sum(len(value) for _, value in fields) > _MEMOIZED_RULE_BYTES:
        return _rules(fields)
    return _memoized_rules(fields)


def _rules(fields: tuple[Header, ...]) -> Rules:
    directives, _ = targeted_directives(fields)
    return Rules(
        forbids_stale=any(name in directives for name in _NEVER_STALE),
        stale_while_revalidate=_seconds(directives, "stale-while-revalidate"),
        stale_if_error=_seconds(directives, "stale-if-error"),
    )


_memoized_rules = functools.lru_cache(maxsize=256)(_rules)


def _has_validator(headers: Any) -> bool:
    return any(name == b"etag" or name == b"last-modified" for name, _ in headers)


def _lifetime(headers: Any, status: int, config: CacheConfig, received: float, directives: Any) -> float | None:
    lifetime = freshness_lifetime(
        headers,
        received=received,
        status=status,
        heuristic_fraction=config.heuristic_freshness,
        directives=directives,
    )
    if "no-cache" in directives[0]:  # qualified or not: reused only once validated
        return 0.0
    return lifetime


def _keep_for(entry: CachedResponse, now: float) -> float:
    """Seconds to keep ``entry`` from ``now``: what freshness is left, its stale windows, time to revalidate."""
    stale = rules(entry.headers)
    left = max(0.0, entry.ttl - entry.age(now)) + max(stale.stale_while_revalidate, stale.stale_if_error)
    return left + (KEEP_FOR_REVALIDATION if _has_validator(entry.headers) else 0.0)


def storable(
    response: Response,
    config: CacheConfig,
    basis: Basis,
    *,
    max_size: int,
    credentials: bool,
    request_time: float,
    response_time: float,
    header: Callable[[str], str | None],
) -> Storable | str:
    """The entry for ``response`` as an RFC 9111 shared cache stores it, or why it is not stored."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return "streaming"
    status, headers = response.status_code, response.raw_headers
    if not 200 <= status < 600 or status in (206, 304):
        return "status"
    if len(body) > max_size:
        return "too-large"
    if any(name == b"set-cookie" for name, _ in headers):
        return "set-cookie"
    vary = response_vary(headers)
    if vary is None:
        return "vary-star"
    directives = targeted_directives(headers)
    control = directives[0]
    if "must-understand" in control:
        if status not in UNDERSTOOD_STATUSES:
            return "status"  # RFC 9111 section 5.2.2.3
    elif "no-store" in control:  # must-understand overrides no-store for a status the cache understands
        return "no-store"
    if "private" in control:
        return "private"
    if credentials and not any(name in control for name in ("public", "s-maxage", "must-revalidate")):
        return "credentials"
    lifetime = _lifetime(headers, status, config, response_time, directives)
    if lifetime is None:
        # No freshness information: kept only to be revalidated, where RFC 9111 section 3 lets it be stored.
        if not (status in HEURISTIC_STATUSES or "public" in control):
            return "not-reusable"
        lifetime = 0.0
    kept = stored_headers(headers)
    if not any(name == b"date" for name, _ in kept):
        kept.append((b"date", formatdate(response_time, usegmt=True).encode()))  # RFC 9110 section 6.6.1
    entry = CachedResponse(
        status=status,
        headers=tuple(kept),
        body=body,
        stored_at=response_time - initial_age(headers, request_time, response_time),
        ttl=lifetime,
        generations=basis.generations,
        path=basis.path,
        route=basis.route,
        tags=basis.tags,
        vary=tuple((name, header(name)) for name in vary),
        origin=basis.origin,
    )
    keep_for = _keep_for(entry, response_time)
    if keep_for <= 0:
        return "not-reusable"
    return Storable(entry, keep_for, vary)


def conditional(entry: CachedResponse) -> list[Header]:
    """The request fields that revalidate ``entry``: its ``ETag`` and ``Last-Modified`` as preconditions."""
    fields: list[Header] = []
    for name, value in entry.headers:
        if name == b"etag":
            fields.append((b"if-none-match", value))
        elif name == b"last-modified":
            fields.append((b"if-modified-since", value))
    return fields


def freshened(
    entry: CachedResponse,
    not_modified: Response,
    config: CacheConfig,
    *,
    request_time: float,
    response_time: float,
) -> tuple[CachedResponse, float]:
    """The entry a 304 validated (RFC 9111 section 4.3.4), and how long to keep it."""
    headers = updated_headers(entry.headers, not_modified.raw_headers)
    lifetime = _lifetime(headers, entry.status, config, response_time, targeted_directives(headers))
    age = initial_age(not_modified.raw_headers, request_time, response_time)
    renewed = dataclasses.replace(
        entry, headers=tuple(headers), stored_at=response_time - age, ttl=0.0 if lifetime is None else lifetime
    )
    return renewed, _keep_for(renewed, response_time)


def _if_range_holds(if_range: str, headers: tuple[Header, ...]) -> bool:
    """RFC 9110 section 13.1.5: a strong ETag match, or the exact Last-Modified date."""
    for name, value in headers:
        if name == b"etag" and if_range.lstrip().startswith('"'):
            return not value.startswith(b"W/") and etag_matches(if_range, value) is True
        if name == b"last-modified" and not if_range.lstrip().startswith(("W/", '"')):
            date = parse_http_date(if_range)
            return date is not None and date == parse_http_date(value.decode("latin-1"))
    return False


def ranged(
    entry: CachedResponse, range_value: str | None, if_range: str | None
) -> tuple[int, list[Header], bytes] | None:
    """A 206 (or 416) for a ``Range`` request answered from a stored 200, or ``None`` to send it whole."""
    if range_value is None or entry.status != 200:
        return None
    if if_range is not None and not _if_range_holds(if_range, entry.headers):
        return None
    length = len(entry.body)
    found = parse_range(range_value, length)
    if found is None:
        return None
    others = [(name, value) for name, value in entry.headers if name != b"content-length"]
    if found == "unsatisfiable":
        return 416, [*others, (b"content-range", unsatisfied_content_range(length)), (b"content-length", b"0")], b""
    first, last = found
    part = entry.body[first : last + 1]
    headers = [*others, (b"content-range", content_range(first, last, length)), (b"content-length", b"%d" % len(part))]
    return 206, headers, part
