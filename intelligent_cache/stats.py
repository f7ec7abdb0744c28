"""Per-process counters of what the cache did."""

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CacheStats"]


@dataclass(slots=True)
class _RouteCounts:
    hits: int = 0
    misses: int = 0
    skips: int = 0
    stale: int = 0


@dataclass(slots=True)
class CacheStats:
    """Counters kept by a :class:`~intelligent_cache.CacheManager`.

    ``hits`` were served from the cache, ``misses`` computed and stored,
    ``skips`` computed without using the cache (bypassed or not storable).
    ``stale`` were served past their lifetime (stale-while-revalidate or
    stale-if-error), ``collapsed`` waited for another request's computation.
    ``errors`` counts failed backend calls, ``corrupt`` unreadable entries.
    """

    hits: int = 0
    misses: int = 0
    skips: int = 0
    stale: int = 0
    collapsed: int = 0
    refresh_errors: int = 0
    stores: int = 0
    errors: int = 0
    corrupt: int = 0
    invalidations: int = 0
    invalidation_errors: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    routes: dict[str, _RouteCounts] = field(default_factory=dict)

    def _route(self, route: str) -> _RouteCounts:
        counts = self.routes.get(route)
        if counts is None:
            counts = self.routes[route] = _RouteCounts()
        return counts

    def hit(self, route: str) -> None:
        self.hits += 1
        self._route(route).hits += 1

    def miss(self, route: str) -> None:
        self.misses += 1
        self._route(route).misses += 1

    def served_stale(self, route: str) -> None:
        self.stale += 1
        self._route(route).stale += 1

    def skip(self, route: str, reason: str) -> None:
        self.skips += 1
        self._route(route).skips += 1
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1

    @property
    def hit_rate(self) -> float:
        """Hits over hits plus misses (0.0 before any lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every counter."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "skips": self.skips,
            "stale": self.stale,
            "collapsed": self.collapsed,
            "hit_rate": round(self.hit_rate, 4),
            "stores": self.stores,
            "errors": self.errors,
            "corrupt": self.corrupt,
            "invalidations": self.invalidations,
            "invalidation_errors": self.invalidation_errors,
            "refresh_errors": self.refresh_errors,
            "skip_reasons": dict(self.skip_reasons),
            "routes": {
                route: {"hits": c.hits, "misses": c.misses, "skips": c.skips, "stale": c.stale}
                for route, c in sorted(self.routes.items())
            },
        }

    def reset(self) -> None:
        """Zero every counter."""
        for name in (
            "hits",
            "misses",
            "skips",
            "stale",
            "collapsed",
            "stores",
            "errors",
            "corrupt",
            "invalidations",
            "invalidation_errors",
            "refresh_errors",
        ):
            setattr(self, name, 0)
        self.skip_reasons.clear()
        self.routes.clear()
