"""In-process ASGI microbenchmark: microseconds per request, no sockets.

Each variant's app is called directly with a fresh scope per request; the
numbers are CPU cost of the framework and cache path only (no HTTP parsing),
which is what the cache can change.
"""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _scope(path: str, query: bytes, app: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"bench"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Variant:
    """One app and request shape, measured in batches interleaved with the others."""

    def __init__(self, name: str, app: ASGIApp, path: str, query: bytes, distinct: bool) -> None:
        self.name, self.app, self.path, self.query, self.distinct = name, app, path, query, distinct
        self.samples: list[float] = []
        self.status = 0
        self._counter = 0

    def _query(self) -> bytes:
        if not self.distinct:
            return self.query
        # Every request its own (page, limit) within the endpoint's validation bounds: all MISSes.
        self._counter += 1
        page, limit = self._counter % 10_000 + 1, 20 + self._counter // 10_000 % 80
        return b"page=%d&limit=%d" % (page, limit)

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]

    async def batch(self, requests: int, record: bool = True) -> None:
        app, path, send = self.app, self.path, self._send
        started = time.perf_counter()
        for _ in range(requests):
            await app(_scope(path, self._query(), app), _receive, send)
        if record:
            self.samples.append((time.perf_counter() - started) / requests * 1e6)


async def _run(requests: int, rounds: int) -> list[tuple[str, float, int]]:
    from bench.apps import floor, raw_asgi
    from bench.apps.ours import create_app

    ours = create_app()
    edge = create_app(edge=True)
    plain = create_app(cached=False)  # the same routes as plain APIRoutes, no cache
    query = b"page=1&limit=20"
    variants = [
        _Variant("raw ASGI", raw_asgi.app, "/items", b"", False),
        _Variant("FastAPI floor (constant Response)", floor.app, "/items", b"", False),
        _Variant("FastAPI endpoint (APIRoute)", plain, "/uncached", query, False),
        _Variant("ours: route without @cache_config", ours, "/uncached", query, False),
        _Variant("FastAPI endpoint, a new query each time", plain, "/items", query, True),
        _Variant("ours: MISS, a new query each time", ours, "/items", query, True),
        _Variant("ours: HIT (memory)", ours, "/items", query, False),
        _Variant("ours: edge HIT (memory, edge=True)", edge, "/items", query, False),
    ]
    for variant in variants:
        await variant.batch(200, record=False)  # warm up (and store the HIT's entry)
    # Interleaved rounds: drift of a shared machine hits every variant alike.
    for _ in range(rounds):
        for variant in variants:
            await variant.batch(requests)
    return [(variant.name, statistics.median(variant.samples), variant.status) for variant in variants]


def main(requests: int = 500, rounds: int = 15) -> list[tuple[str, float, int]]:
    results = asyncio.run(_run(requests, rounds))
    by_name = {name: micros for name, micros, _ in results}
    floor = by_name["FastAPI floor (constant Response)"]
    print(f"{'variant':42} {'us/request':>11} {'vs floor':>9}  status")
    for name, micros, status in results:
        print(f"{name:42} {micros:11.1f} {floor / micros:8.2f}x  {status}")
    uncached = by_name["ours: route without @cache_config"] / by_name["FastAPI endpoint (APIRoute)"] - 1
    miss = by_name["ours: MISS, a new query each time"] / by_name["FastAPI endpoint, a new query each time"] - 1
    overhead = by_name["ours: MISS, a new query each time"] - by_name["FastAPI endpoint, a new query each time"]
    print(f"route without @cache_config vs APIRoute: {uncached:+.1%}; MISS vs the uncached endpoint: {miss:+.1%}")
    print(f"MISS overhead: {overhead:.1f} us per MISS (the key, the lookup, the entry, its store)")
    return results


if __name__ == "__main__":
    main()
