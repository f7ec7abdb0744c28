"""The storing decision: a computed response becomes an entry, or a reason why not.

Pure apart from the validators it adds to the response (``ETag`` and, when the
manager says so, ``Cache-Control``), which the client receives too.
"""

from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response

from .config import CacheConfig
from .entry import CachedResponse, storable_headers
from .policy import compute_etag, response_ttl, response_vary, store_refusal

__all__ = ["Basis", "Storable", "storable"]


@dataclass(slots=True, eq=False)  # never changed after creation (see EarlyLookup)
class Storable:
    """A response that may be stored: its entry and how long to keep it.

    Attributes:
        entry: what to store.
        keep_for: seconds to keep it (its lifetime plus its stale windows).
        vary: the request headers its ``Vary`` names (sorted).
    """

    entry: CachedResponse
    keep_for: float
    vary: tuple[str, ...]


@dataclass(slots=True, eq=False)
class Basis:
    """What an entry records about the request it answers."""

    stored_at: float
    generations: tuple[int, ...]
    path: str
    route: str
    tags: tuple[str, ...]
    origin: str


def storable(
    response: Response,
    config: CacheConfig,
    basis: Basis,
    *,
    default_ttl: float,
    max_size: int,
    credentials: bool,
    cache_control: bool,
    per_caller: bool,
    header: Callable[[str], str | None],
) -> Storable | str:
    """The entry for ``response``, or why it must not be stored.

    ``header(name)`` reads a request header (every line joined, ``None`` if
    absent): the entry records the values of those its ``Vary`` names.
    """
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return "streaming"
    headers = response.raw_headers
    refusal = store_refusal(
        response.status_code,
        headers,
        len(body),
        max_size=max_size,
        statuses=config.cacheable_statuses,
        credentials=credentials,
    )
    if refusal is not None:
        return refusal
    ttl = config.ttl_seconds or default_ttl
    if config.ttl_from_headers or credentials:
        # A response to credentials is shared only as it says (RFC 9111 section 3.5), for no longer than it says.
        declared = response_ttl(headers)
        if declared is not None:
            if declared <= 0:
                return "not-reusable"
            ttl = declared if config.ttl_from_headers else min(ttl, declared)
    vary = response_vary(headers)
    if vary is None:
        return "vary-star"
    if not any(name == b"etag" for name, _ in headers):
        headers.append((b"etag", compute_etag(response.status_code, headers, body)))
    if cache_control and not any(name == b"cache-control" for name, _ in headers):
        lifetime = b"max-age=%d" % int(ttl)
        if config.stale_while_revalidate:
            lifetime += b", stale-while-revalidate=%d" % int(config.stale_while_revalidate)
        headers.append((b"cache-control", b"private, " + lifetime if per_caller else lifetime))
    entry = CachedResponse(
        status=response.status_code,
        headers=storable_headers(headers),
        body=body,
        stored_at=basis.stored_at,
        ttl=ttl,
        generations=basis.generations,
        path=basis.path,
        route=basis.route,
        tags=basis.tags,
        vary=tuple((name, header(name)) for name in vary),
        origin=basis.origin,
    )
    return Storable(entry, ttl + max(config.stale_while_revalidate, config.stale_if_error), vary)
