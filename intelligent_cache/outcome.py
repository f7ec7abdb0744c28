"""What the cache did for a request, said once: the ``X-Cache`` and ``Cache-Status`` fields and the stats.

Every response of a cached route gets exactly one :class:`Outcome`, through
:func:`mark`, which both writes the headers (RFC 9211 ``Cache-Status``) and
counts the outcome, so what the client reads and what the stats say cannot
disagree. Paths that answer raw ASGI messages (the fast HIT path, the marker
of responses the handler never saw) use its two halves, :func:`marks` and
:func:`count`.
"""

import enum
import functools
from typing import TYPE_CHECKING

from starlette.responses import Response

from ._types import Header

if TYPE_CHECKING:  # for annotations only: stats never import the request path
    from .stats import CacheStats

__all__ = ["CACHE_NAME", "Outcome", "age_field", "cache_status", "count", "hit_marks", "mark", "marks"]

CACHE_NAME = "intelligent-cache"


class Outcome(enum.Enum):
    """The four answers of the cache, as ``X-Cache`` spells them."""

    HIT = "HIT"  # served from the cache
    MISS = "MISS"  # computed and stored
    STALE = "STALE"  # served past its lifetime (stale-while-revalidate, stale-if-error)
    SKIP = "SKIP"  # computed without using the cache; the reason says why

    @functools.cached_property
    def header(self) -> bytes:
        """The ``X-Cache`` value."""
        return self.value.encode()

    @functools.cached_property
    def stat(self) -> str:
        """The name the stats count it under."""
        return self.value.lower()


def cache_status(*params: str) -> Header:
    """A ``Cache-Status`` field: ``intelligent-cache; <params>``."""
    return b"cache-status", "; ".join((CACHE_NAME, *params)).encode("latin-1")


@functools.lru_cache(maxsize=4096)
def marks(outcome: Outcome, *params: str, reason: str | None = None) -> tuple[Header, Header]:
    """The ``X-Cache`` and ``Cache-Status`` fields of ``outcome``; ``reason`` is shown as ``detail=``.

    Memoized: a handful of outcomes and parameters (``ttl=`` values) cover almost every response.
    """
    if reason is not None:
        params = (*params, f"detail={reason}")
    return (b"x-cache", outcome.header), cache_status(*params)


@functools.lru_cache(maxsize=4096)
def hit_marks(remaining: int) -> tuple[Header, Header]:
    """:func:`marks` of a fresh HIT with ``remaining`` seconds of freshness (memoized by the number alone)."""
    return marks(Outcome.HIT, "hit", f"ttl={remaining}")


@functools.lru_cache(maxsize=4096)
def _age_field(seconds: int) -> Header:
    return b"age", b"%d" % seconds


def age_field(seconds: float) -> Header:
    """The ``Age`` field of an answer from an entry ``seconds`` old (memoized by whole seconds)."""
    return _age_field(int(seconds))


def count(stats: "CacheStats | None", route: str, outcome: Outcome, reason: str | None = None) -> None:
    """Count ``outcome`` (a SKIP with its ``reason``) for ``route``."""
    if stats is None:
        return
    if outcome is Outcome.SKIP:
        stats.skip(route, reason or "bypass")
    else:
        stats.record(route, outcome.stat)


def mark(
    response: Response,
    outcome: Outcome,
    *params: str,
    stats: "CacheStats | None",
    route: str,
    reason: str | None = None,
    shown: bool = True,
) -> Response:
    """Give ``response`` its ``X-Cache`` and ``Cache-Status``, and count ``outcome`` for ``route``.

    ``reason`` (a SKIP's cause) is counted, and added as ``detail=`` unless
    ``shown`` is false (when ``params`` already say it).
    """
    response.raw_headers.extend(marks(outcome, *params, reason=reason if shown else None))
    count(stats, route, outcome, reason)
    return response
