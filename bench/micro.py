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


async def measure(app: ASGIApp, path: str, query: bytes, *, requests: int, rounds: int) -> tuple[float, int]:
    """Median microseconds per request over ``rounds`` rounds, and the last status."""
    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    for _ in range(200):  # warm up (and store the entry)
        await app(_scope(path, query, app), _receive, send)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            await app(_scope(path, query, app), _receive, send)
        samples.append((time.perf_counter() - started) / requests * 1e6)
    return statistics.median(samples), status


async def _run(requests: int, rounds: int) -> list[tuple[str, float, int]]:
    from bench.apps import floor, raw_asgi, uncached
    from bench.apps.ours import create_app

    ours = create_app()
    variants: list[tuple[str, ASGIApp, str, bytes]] = [
        ("raw ASGI", raw_asgi.app, "/items", b""),
        ("FastAPI floor (constant Response)", floor.app, "/items", b""),
        ("FastAPI uncached endpoint", uncached.app, "/items", b"page=1&limit=20"),
        ("ours: uncached route on CachedRoute", ours, "/uncached", b"page=1&limit=20"),
        ("ours: HIT (memory)", ours, "/items", b"page=1&limit=20"),
    ]
    results = []
    for name, app, path, query in variants:
        micros, status = await measure(app, path, query, requests=requests, rounds=rounds)
        results.append((name, micros, status))
    return results


def main(requests: int = 2000, rounds: int = 7) -> list[tuple[str, float, int]]:
    results = asyncio.run(_run(requests, rounds))
    floor = next(micros for name, micros, _ in results if name.startswith("FastAPI floor"))
    print(f"{'variant':40} {'us/request':>11} {'vs floor':>9}  status")
    for name, micros, status in results:
        print(f"{name:40} {micros:11.1f} {floor / micros:8.2f}x  {status}")
    return results


if __name__ == "__main__":
    main()
