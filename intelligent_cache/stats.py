"""Counters of what the cache did, per process, mergeable across processes.

Every counter is one integer in a flat mapping (``"hits"``,
``"route|/items|hits"``, ``"latency|/items|hit|3"``...), so that the counters of
several workers add up field by field: the Redis backends keep a shared hash
that each process adds its deltas to in batches (see
:meth:`~intelligent_cache.CacheManager.flush_stats`), never one round trip per
request.
"""

import bisect
from collections.abc import Mapping
from typing import Any

__all__ = ["LATENCY_BUCKETS", "MAX_TRACKED_KEYS", "CacheStats", "summarize"]

#: Most distinct keys whose hits one process counts between two flushes (beyond: not counted per key).
MAX_TRACKED_KEYS = 10_000

#: Upper bounds (seconds) of the latency histogram buckets, Prometheus style.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_TOTALS = (
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
)
_OUTCOMES = {"hit": "hits", "miss": "misses", "skip": "skips", "stale": "stale"}


class _Total:
    """A flat counter exposed as an attribute (``stats.errors += 1``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: "CacheStats | None", owner: type) -> Any:
        if instance is None:
            return self
        return instance.counters.get(self.name, 0)

    def __set__(self, instance: "CacheStats", value: int) -> None:
        instance.counters[self.name] = value


class _Names:
    """The counter names of one route and outcome (``route|/items|hits``, ``latency|/items|hit|3``...)."""

    __slots__ = ("buckets", "latency", "route", "total")

    def __init__(self, route: str, outcome: str) -> None:
        self.total = _OUTCOMES[outcome]
        self.route = f"route|{route}|{self.total}"
        self.latency = f"latency_us|{route}|{outcome}"
        self.buckets = [f"latency|{route}|{outcome}|{bucket}" for bucket in range(len(LATENCY_BUCKETS) + 1)]


class CacheStats:
    """Counters kept by a :class:`~intelligent_cache.CacheManager`.

    ``hits`` were served from the cache, ``misses`` computed and stored,
    ``skips`` computed without using the cache (bypassed or not storable),
    ``stale`` served past their lifetime (stale-while-revalidate or
    stale-if-error), ``collapsed`` answered by another request's computation.
    ``errors`` counts failed backend calls, ``corrupt`` unreadable entries.
    """

    hits = _Total()
    misses = _Total()
    skips = _Total()
    stale = _Total()
    collapsed = _Total()
    stores = _Total()
    errors = _Total()
    corrupt = _Total()
    invalidations = _Total()
    invalidation_errors = _Total()
    refresh_errors = _Total()

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self._flushed: dict[str, int] = {}
        # Hits per cache key not yet handed to the backend (which keeps them beside the entries).
        self.key_hits: dict[str, int] = {}
        # Counter names by (route, outcome): a few per route, built once.
        self._names: dict[tuple[str, str], _Names] = {}

    def _add(self, name: str, amount: int = 1) -> None:
        counters = self.counters
        counters[name] = counters.get(name, 0) + amount

    def _new_names(self, route: str, outcome: str) -> _Names:
        names = self._names[route, outcome] = _Names(route, outcome)
        return names

    def record(self, route: str, outcome: str) -> None:
        """Count one request of ``route`` with ``outcome`` (hit, miss, skip, stale)."""
        names = self._names.get((route, outcome)) or self._new_names(route, outcome)
        counters = self.counters
        counters[names.total] = counters.get(names.total, 0) + 1
        counters[names.route] = counters.get(names.route, 0) + 1

    def observe(self, route: str, outcome: str, seconds: float) -> None:
        """Add a request's duration in the cache layer to the latency histogram."""
        names = self._names.get((route, outcome)) or self._new_names(route, outcome)
        histogram = names.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)]  # the first bound >= seconds
        counters = self.counters
        counters[histogram] = counters.get(histogram, 0) + 1
        counters[names.latency] = counters.get(names.latency, 0) + int(seconds * 1_000_000)

    def key_hit(self, key: str, amount: int = 1) -> None:
        """Count an answer from the entry under ``key`` (bounded: see :data:`MAX_TRACKED_KEYS`)."""
        hits = self.key_hits
        seen = hits.get(key)
        if seen is not None:
            hits[key] = seen + amount
        elif len(hits) < MAX_TRACKED_KEYS:
            hits[key] = amount

    def take_key_hits(self) -> dict[str, int]:
        """The per-key hits counted since the last call, now handed over (see :meth:`return_key_hits`)."""
        taken, self.key_hits = self.key_hits, {}
        return taken

    def return_key_hits(self, taken: dict[str, int]) -> None:
        """Take back per-key hits a flush could not deliver (within the same bound)."""
        for key, amount in taken.items():
            self.key_hit(key, amount)

    def skip(self, route: str, reason: str) -> None:
        self.record(route, "skip")
        self._add(f"skip_reason|{reason}")

    def delta(self) -> dict[str, int]:
        """What changed since the last :meth:`mark_flushed`."""
        flushed = self._flushed
        return {
            name: value - flushed.get(name, 0) for name, value in self.counters.items() if value != flushed.get(name, 0)
        }

    def mark_flushed(self, delta: Mapping[str, int]) -> None:
        """Record that ``delta`` reached the shared counters."""
        for name, value in delta.items():
            self._flushed[name] = self._flushed.get(name, 0) + value

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready summary of this process's counters."""
        return summarize(self.counters)


def _hit_rate(counters: Mapping[str, int]) -> float:
    hits, misses = counters.get("hits", 0), counters.get("misses", 0)
    return hits / (hits + misses) if hits + misses else 0.0


def summarize(counters: Mapping[str, int]) -> dict[str, Any]:
    """Turn flat counters (one process's or several added up) into the stats document."""
    summary: dict[str, Any] = {name: counters.get(name, 0) for name in _TOTALS}
    summary["hit_rate"] = round(_hit_rate(counters), 4)
    reasons: dict[str, int] = {}
    routes: dict[str, dict[str, int]] = {}
    for name, value in counters.items():
        kind, _, rest = name.partition("|")
        if kind == "skip_reason":
            reasons[rest] = value
        elif kind == "route":
            route, _, total = rest.rpartition("|")
            routes.setdefault(route, dict.fromkeys(("hits", "misses", "skips", "stale"), 0))[total] = value
    summary["skip_reasons"] = dict(sorted(reasons.items()))
    summary["routes"] = {
        route: {**counts, "hit_rate": round(_hit_rate(counts), 4)} for route, counts in sorted(routes.items())
    }
    return summary
