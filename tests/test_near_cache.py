"""The opt-in near cache in front of Redis: HITs without a round trip, coherent through pub/sub."""

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from intelligent_cache import BackendUnavailable, CacheManager, cache_config
from intelligent_cache.backends import NearCache
from intelligent_cache.backends.redis import RedisBackend
from intelligent_cache.testing import FakeClock
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis


class Instance:
    """One app process: its own backend and near cache, sharing Redis with the others."""

    def __init__(self, url: str, prefix: str, data: dict[str, int], near: NearCache) -> None:
        self.near = near
        self.backend = RedisBackend(url, key_prefix=prefix, near_cache=near, **PATIENT)
        self.app = FastAPI()
        CacheManager(self.backend).init_app(self.app)

        @self.app.get("/items")
        @cache_config
        async def items() -> dict[str, int]:
            return {"version": data["version"]}

        @self.app.post("/items")
        async def write() -> dict[str, int]:
            data["version"] += 1
            return {"version": data["version"]}

        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://app")

    async def subscribed(self) -> None:
        await self.client.get("/items")  # the first lookup starts the subscription
        deadline = time.monotonic() + 5
        while not self.near.subscribed:
            assert time.monotonic() < deadline, "near cache never subscribed"
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.backend.aclose()


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[Instance, Instance, dict[str, int]]]:
    data = {"version": 1}
    prefix = unique_prefix()
    a = Instance(redis_server.url, prefix, data, NearCache())
    b = Instance(redis_server.url, prefix, data, NearCache())
    await a.subscribed()
    await b.subscribed()
    yield a, b, data
    await a.aclose()
    await b.aclose()


async def test_hits_come_from_process_memory(pair: tuple[Instance, Instance, dict[str, int]]) -> None:
    a, _, _ = pair
    await a.client.get("/items")
    before = a.near.hits
    for _ in range(5):
        response = await a.client.get("/items")
        assert response.headers["x-cache"] == "HIT"
    assert a.near.hits == before + 5


async def test_the_writer_never_serves_what_it_invalidated(pair: tuple[Instance, Instance, dict[str, int]]) -> None:
    a, _, _ = pair
    await a.client.get("/items")
    await a.client.get("/items")
    assert (await a.client.post("/items")).json() == {"version": 2}
    after = await a.client.get("/items")  # right away, no waiting for pub/sub
    assert after.json() == {"version": 2}
    assert after.headers["x-cache"] == "MISS"


async def test_another_process_sees_a_write_within_the_staleness_bound(
    pair: tuple[Instance, Instance, dict[str, int]],
) -> None:
    a, b, _ = pair
    await a.client.get("/items")
    assert (await a.client.get("/items")).headers["x-cache"] == "HIT"
    await b.client.post("/items")
    written = time.monotonic()
    while (await a.client.get("/items")).json() != {"version": 2}:
        assert time.monotonic() - written < a.near.max_staleness, "write unseen past max_staleness"
        await asyncio.sleep(0.001)


async def test_lost_messages_are_bounded_by_max_staleness(redis_server: RedisServer) -> None:
    clock = FakeClock(0.0)
    data = {"version": 1}
    prefix = unique_prefix()
    a = Instance(redis_server.url, prefix, data, NearCache(max_staleness=2.0, clock=clock))
    b = Instance(redis_server.url, prefix, data, NearCache())
    try:
        await a.subscribed()
        a.near.apply = lambda message: None  # type: ignore[method-assign]  # every message lost
        await a.client.get("/items")
        assert (await a.client.get("/items")).json() == {"version": 1}
        await b.client.post("/items")
        await asyncio.sleep(0.05)
        # Within the bound the stale copy may still answer (that is the documented window)...
        assert (await a.client.get("/items")).json() == {"version": 1}
        clock.advance(2.0)
        # ...and never past it: the counters are read from Redis again.
        assert (await a.client.get("/items")).json() == {"version": 2}
    finally:
        await a.aclose()
        await b.aclose()


async def test_bypassed_while_unsubscribed(redis_server: RedisServer) -> None:
    data = {"version": 1}
    prefix = unique_prefix()
    a = Instance(redis_server.url, prefix, data, NearCache())
    try:
        await a.subscribed()
        await a.client.get("/items")
        await a.client.get("/items")
        hits = a.near.hits
        a.near.subscribed = False  # as after a lost connection, before resubscribing
        response = await a.client.get("/items")
        assert response.headers["x-cache"] == "HIT"  # served, but from Redis
        assert a.near.hits == hits
    finally:
        await a.aclose()


async def test_clear_and_delete_reach_other_processes(pair: tuple[Instance, Instance, dict[str, int]]) -> None:
    a, b, _ = pair
    await a.client.get("/items")
    assert (await a.client.get("/items")).headers["x-cache"] == "HIT"
    assert await b.backend.clear() >= 1
    deadline = time.monotonic() + a.near.max_staleness
    while (await a.client.get("/items")).headers["x-cache"] == "HIT":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)


async def test_resubscribes_after_redis_restarts() -> None:
    data = {"version": 1}
    with RedisServer() as server:
        a = Instance(server.url, unique_prefix(), data, NearCache())
        try:
            await a.subscribed()
            server.kill()
            deadline = time.monotonic() + 5
            while a.near.subscribed:
                assert time.monotonic() < deadline, "a dead connection still counts as subscribed"
                await asyncio.sleep(0.02)
            server.restart()
            deadline = time.monotonic() + 10
            while not a.near.subscribed:
                assert time.monotonic() < deadline, "never resubscribed"
                await a.client.get("/items")
                await asyncio.sleep(0.05)
        finally:
            await a.aclose()


async def test_an_entry_put_is_served_from_process_memory(pair: tuple[Instance, Instance, dict[str, int]]) -> None:
    backend, near = pair[0].backend, pair[0].near
    counters = ["~g:s:put", "~g:n:put"]
    _, generations = await backend.fetch("GET:put", counters)  # the lookup of a miss
    await backend.put("GET:put", b"entry", 60, counters)  # its computed response
    before = near.hits
    assert await backend.fetch("GET:put", counters) == (b"entry", generations)
    assert near.hits == before + 1


async def test_a_bump_deletes_in_redis_and_drops_the_copies_everywhere(
    pair: tuple[Instance, Instance, dict[str, int]], redis_server: RedisServer
) -> None:
    a, b, _ = pair
    await a.client.get("/items")
    await b.client.get("/items")
    assert (await b.client.get("/items")).headers["x-cache"] == "HIT"
    raw = redis_server.client()
    try:
        assert raw.exists(a.backend.key_prefix + "~g:s:items") == 1
        await a.client.post("/items")
        assert raw.exists(a.backend.key_prefix + "~g:s:items") == 0
    finally:
        raw.close()
    deadline = time.monotonic() + 5  # guards against a hang only: the bound is tested above
    while "~g:s:items" in b.near._counters:
        assert time.monotonic() < deadline, "the invalidation message never reached the other process"
        await asyncio.sleep(0.005)
    assert (await b.client.get("/items")).json() == {"version": 2}


async def test_a_closed_backend_starts_no_subscription(redis_server: RedisServer) -> None:
    near = NearCache()
    backend = RedisBackend(redis_server.url, key_prefix=unique_prefix(), near_cache=near, **PATIENT)
    await backend.aclose()
    with pytest.raises(BackendUnavailable):
        await backend.fetch("GET:items", ["~g:s:items"])
    assert near._task is None
