"""Memory is governed by the budget: no memo or index grows with hostile traffic.

Measured with tracemalloc (what Python retains), not RSS or time: deterministic
on a shared machine.
"""

import gc
import tracemalloc

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from intelligent_cache import CachedRoute, CacheManager, MemoryBackend, cache_config

MIB = 1024 * 1024


def budget_app(max_bytes: int) -> tuple[FastAPI, MemoryBackend]:
    app = FastAPI()
    backend = MemoryBackend(max_bytes=max_bytes, max_entries=100_000)
    CacheManager(backend).init_app(app)
    router = APIRouter(route_class=CachedRoute)

    @router.get("/search")
    @cache_config(ttl_seconds=600)
    async def search(q: str = ""):
        return {"length": len(q)}

    @router.get("/items/{item_id}")
    @cache_config(ttl_seconds=600, tags=["item:{item_id}"])
    async def item(item_id: str):
        return {"id": item_id[:10]}

    app.include_router(router)
    return app, backend


def retained_growth(client: TestClient, requests: list[str]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for url in requests:
            assert client.get(url).status_code == 200
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_unique_long_query_strings_cost_no_more_than_the_budget():
    """800 unique 8 KiB query strings against a 256 KiB backend: memos must not hold 6 MiB of them."""
    app, backend = budget_app(256 * 1024)
    with TestClient(app) as client:
        client.get("/search?q=warm")
        growth = retained_growth(client, [f"/search?q={index:06d}{'x' * 8186}" for index in range(800)])
        assert backend.size_bytes <= 256 * 1024
    # The backend's budget (plus Python's own overhead for what it holds) and
    # small bounded memos; before the memos were bounded this was ~7 MiB.
    assert growth < 2 * MIB, f"{growth / MIB:.1f} MiB retained"


def test_unique_long_paths_cost_no_more_than_the_budget():
    app, backend = budget_app(256 * 1024)
    with TestClient(app) as client:
        client.get("/items/warm")
        growth = retained_growth(client, [f"/items/{index:06d}{'y' * 4000}" for index in range(800)])
        assert backend.size_bytes <= 256 * 1024
    # Before the memos were bounded, each path was kept twice: ~6 MiB.
    assert growth < 2 * MIB, f"{growth / MIB:.1f} MiB retained"
