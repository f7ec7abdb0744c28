"""Prometheus text exposition (format 0.0.4) of the cache's counters, written by hand.

No client library is needed for a handful of counters and one histogram.
"""

from collections.abc import Mapping

from ..stats import LATENCY_BUCKETS

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TOTALS = {
    "stores": "Responses stored.",
    "errors": "Failed backend calls (the cache failed open).",
    "corrupt": "Stored values that could not be decoded (read as misses).",
    "invalidations": "Successful invalidations (one per write or manual call).",
    "invalidation_errors": "Invalidations that failed.",
    "collapsed": "Requests answered by another request's computation.",
    "refresh_errors": "Background refreshes that failed.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bound(value: float) -> str:
    return repr(value) if value != int(value) else f"{value:.1f}"


def render(counters: Mapping[str, int], *, breaker_open: bool | None = None) -> str:
    """The metrics document for flat counters (see :mod:`intelligent_cache.stats`)."""
    lines = [
        "# HELP intelligent_cache_requests_total Requests on cached routes, by route and outcome.",
        "# TYPE intelligent_cache_requests_total counter",
    ]
    histograms: dict[tuple[str, str], list[int]] = {}
    sums: dict[tuple[str, str], int] = {}
    reasons: dict[str, int] = {}
    for name, value in sorted(counters.items()):
        kind, _, rest = name.partition("|")
        if kind == "route":
            route, _, total = rest.rpartition("|")
            outcome = {"hits": "hit", "misses": "miss", "skips": "skip", "stale": "stale"}.get(total)
            if outcome:
                lines.append(f'intelligent_cache_requests_total{{route="{_label(route)}",outcome="{outcome}"}} {value}')
        elif kind == "latency":
            route, outcome, bucket = rest.rsplit("|", 2)
            counts = histograms.setdefault((route, outcome), [0] * (len(LATENCY_BUCKETS) + 1))
            if bucket.isdigit() and int(bucket) <= len(LATENCY_BUCKETS):
                counts[int(bucket)] += value
        elif kind == "latency_us":
            route, _, outcome = rest.rpartition("|")
            sums[(route, outcome)] = value
        elif kind == "skip_reason":
            reasons[rest] = value
    lines += [
        "# HELP intelligent_cache_skips_total Requests that did not use the cache, by reason.",
        "# TYPE intelligent_cache_skips_total counter",
    ]
    lines += [
        f'intelligent_cache_skips_total{{reason="{_label(reason)}"}} {value}' for reason, value in reasons.items()
    ]
    for name, help_text in _TOTALS.items():
        metric = f"intelligent_cache_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", f"{metric} {counters.get(name, 0)}"]
    lines += [
        "# HELP intelligent_cache_request_duration_seconds Time spent in the cache layer and the endpoint.",
        "# TYPE intelligent_cache_request_duration_seconds histogram",
    ]
    for (route, outcome), counts in sorted(histograms.items()):
        labels = f'route="{_label(route)}",outcome="{_label(outcome)}"'
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS, None), counts, strict=True):
            cumulative += count
            le = "+Inf" if bound is None else _bound(bound)
            lines.append(f'intelligent_cache_request_duration_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
        total_seconds = sums.get((route, outcome), 0) / 1_000_000
        lines.append(f"intelligent_cache_request_duration_seconds_sum{{{labels}}} {total_seconds}")
        lines.append(f"intelligent_cache_request_duration_seconds_count{{{labels}}} {cumulative}")
    if breaker_open is not None:
        lines += [
            "# HELP intelligent_cache_backend_up Whether the backend's circuit breaker is closed (1) or not (0).",
            "# TYPE intelligent_cache_backend_up gauge",
            f"intelligent_cache_backend_up {0 if breaker_open else 1}",
        ]
    return "\n".join(lines) + "\n"
