"""An app with a CacheManager under both of anyio's event loops: asyncio and trio.

FastAPI runs on anyio, so an app may be served by trio (hypercorn --worker-class
trio, say). Every cache path that waits or works in the background must then
work there too: single flight waiters, stale-while-revalidate refreshes, the
lifespan's stats flusher, write invalidation and @cached functions.
"""

import contextlib

import anyio
import httpx
import pytest
from fastapi import FastAPI

from intelligent_cache import CacheManager, MemoryBackend, cache_config, cached
from intelligent_cache.testing import FakeClock


def build(clock: FakeClock) -> tuple[FastAPI, dict[str, int]]:
    calls = {"items": 0, "slow": 0, "price": 0}
    app = FastAPI()
    CacheManager(MemoryBackend(clock=clock), clock=clock, stats_flush_interval=0.01).init_app(app)

    @cached(ttl_seconds=60)
    async def price(sku: str) -> int:
        calls["price"] += 1
        return 3

    @app.get("/items")
    @cache_config(ttl_seconds=10, stale_while_revalidate=60)
    async def items() -> dict[str, int]:
        calls["items"] += 1
        return {"n": calls["items"], "price": await price("x")}

    @app.get("/slow")
    @cache_config(ttl_seconds=60)
    async def slow() -> dict[str, int]:
        calls["slow"] += 1
        await anyio.sleep(0.05)
        return {"n": calls["slow"]}

    @app.post("/items")
    async def add() -> dict[str, bool]:
        return {"ok": True}

    return app, calls


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_cache_works_on_both_event_loops(backend: str) -> None:
    clock = FakeClock()
    app, calls = build(clock)

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(app.router.lifespan_context(app))  # the stats flusher runs
            transport = httpx.ASGITransport(app=app)
            client = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))
            assert (await client.get("/items")).headers["x-cache"] == "MISS"
            assert (await client.get("/items")).headers["x-cache"] == "HIT"
            async with anyio.create_task_group() as group:  # concurrent misses: one computes, the rest wait
                for _ in range(10):
                    group.start_soon(client.get, "/slow")
            assert calls["slow"] == 1
            clock.advance(11)
            assert (await client.get("/items")).headers["x-cache"] == "STALE"  # and a refresh starts
            for _ in range(100):
                if calls["items"] == 2:
                    break
                await anyio.sleep(0.01)
            assert calls["items"] == 2
            assert (await client.post("/items")).status_code == 200  # the write invalidates
            assert (await client.get("/items")).headers["x-cache"] == "MISS"
            assert calls["price"] == 1  # the @cached function answered the later calls
            await anyio.sleep(0.05)  # the flusher ticks

    anyio.run(scenario, backend=backend)
