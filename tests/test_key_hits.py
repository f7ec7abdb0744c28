"""Hits per cache key: counted on every HIT and STALE answer, kept by the backend beside the entry.

The admin API (``GET /keys?with_state=true``, ``GET /keys/{key}``) and the
dashboard show them. A process counts in memory and hands its counts to the
backend at each stats flush; on Redis every process sharing the namespace adds
to one count per key, which expires with its entry.
"""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config, stats
from intelligent_cache.keys import hits_name
from tests.conftest import BACKEND_KINDS, make_backend
from tests.test_admin_api import AUTH, PREFIX, admin_manager, key_url

SHARED_KINDS = [param for param in BACKEND_KINDS if param.id != "memory"]


def make_app(manager: CacheManager) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)

    @app.get("/items/{item_id}")
    @cache_config(ttl_seconds=60)
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/greeting")
    @cache_config(ttl_seconds=60)
    async def greeting(accept_language: str = Header("en")) -> dict[str, str]:
        return {"lang": accept_language}

    return app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def listing(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every item of ``GET /keys?with_state=true``, walking the cursor (a shared Redis holds other tests' keys)."""
    items: list[dict[str, Any]] = []
    cursor = 0
    while True:
        params = {"with_state": "true", "limit": 1000, "cursor": cursor}
        page = await client.get(f"{PREFIX}/keys", params=params, headers=AUTH)
        assert page.status_code == 200, page.text
        items.extend(page.json()["keys"])
        cursor = page.json()["cursor"]
        if cursor == 0:
            return items


async def hits_of(client: httpx.AsyncClient, key: str) -> tuple[int | None, int | None]:
    """The key's hits as the detail route and the listing give them."""
    detail = await client.get(key_url(key), headers=AUTH)
    assert detail.status_code == 200, detail.text
    listed = {item["key"]: item for item in await listing(client)}
    return detail.json().get("hits"), listed[key].get("hits")


@pytest.fixture(params=[param for param in BACKEND_KINDS if param.id in ("memory", "redis")])
async def backend(request: pytest.FixtureRequest, clock: Any):
    instance = await make_backend(request.param, request, clock)
    try:
        yield instance
    finally:
        await instance.aclose()


async def test_hits_are_counted_per_key_and_survive_the_flush(backend: CacheBackend, clock: Any) -> None:
    manager = admin_manager(backend, clock)
    async with client_for(make_app(manager)) as client:
        assert (await client.get("/items/1")).headers["x-cache"] == "MISS"
        for _ in range(3):
            assert (await client.get("/items/1")).headers["x-cache"] == "HIT"
        assert (await client.get("/items/2")).headers["x-cache"] == "MISS"
        assert await hits_of(client, "GET:items:1") == (3, 3)  # unflushed: this process's own count
        await manager.flush_stats()
        assert manager.stats.key_hits == {}
        assert await hits_of(client, "GET:items:1") == (3, 3)  # now the backend's: not counted twice
        assert await hits_of(client, "GET:items:2") == (0, 0)
        await client.get("/items/1")
        await manager.flush_stats()
        assert await hits_of(client, "GET:items:1") == (4, 4)
        assert not [item for item in await listing(client) if item["key"].startswith("~")]  # counts stay hidden


async def test_a_varying_response_counts_under_its_variant(backend: CacheBackend, clock: Any) -> None:
    manager = admin_manager(backend, clock)
    async with client_for(make_app(manager)) as client:
        for language, times in (("fr", 3), ("de", 2)):
            for _ in range(times):
                await client.get("/greeting", headers={"Accept-Language": language})
        await manager.flush_stats()
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for item in await listing(client):
            by_kind.setdefault(item["kind"], []).append(item)
        assert sorted(item["hits"] for item in by_kind["response"]) == [1, 2]
        assert all("hits" not in item for item in by_kind.get("vary", []))


async def test_a_failed_flush_keeps_the_counts_for_the_next(backend: CacheBackend, clock: Any, monkeypatch) -> None:
    manager = admin_manager(backend, clock)
    async with client_for(make_app(manager)) as client:
        await client.get("/items/1")
        await client.get("/items/1")

        async def down(hits: Any) -> None:
            raise ConnectionError("backend down")

        with monkeypatch.context() as patched:
            patched.setattr(backend, "add_key_hits", down)
            await manager.flush_stats()  # logged and counted, never raised
        assert manager.stats.key_hits == {"GET:items:1": 1}
        assert manager.stats.errors >= 1
        await manager.flush_stats()
        assert await hits_of(client, "GET:items:1") == (1, 1)


def test_a_process_counts_a_bounded_number_of_keys(monkeypatch) -> None:
    monkeypatch.setattr(stats, "MAX_TRACKED_KEYS", 2)
    counts = stats.CacheStats()
    for key in ("a", "b", "c", "a"):
        counts.key_hit(key)
    assert counts.key_hits == {"a": 2, "b": 1}  # "c" came when the table was full: not counted per key
    taken = counts.take_key_hits()
    counts.key_hit("d")
    counts.return_key_hits(taken)  # a failed flush gives them back, within the same bound
    assert counts.key_hits == {"d": 1, "a": 2}


async def test_memory_counts_go_with_their_keys(clock: Any) -> None:
    backend = MemoryBackend(clock=clock, max_entries=2)
    await backend.set("GET:a", b"1", 60)
    await backend.set("GET:b", b"2", 60)
    await backend.add_key_hits({"GET:a": 2, "GET:b": 1, "GET:absent": 5})
    assert await backend.read_key_hits(["GET:a", "GET:b", "GET:absent"]) == [2, 1, 0]
    await backend.set("GET:a", b"1 again", 60)  # stored again: the key keeps its count
    assert await backend.read_key_hits(["GET:a"]) == [2]
    await backend.set("GET:c", b"3", 60)  # evicts GET:b, the least recently used
    assert await backend.read_key_hits(["GET:b"]) == [0]
    await backend.delete("GET:a")
    assert await backend.read_key_hits(["GET:a"]) == [0]
    await backend.add_key_hits({"GET:c": 1})
    await backend.clear()
    assert await backend.read_key_hits(["GET:c"]) == [0]
    assert backend._hits == {}  # nothing left behind for keys that are gone


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_shared_counts_add_up_and_expire_with_their_entry(
    kind: str, request: pytest.FixtureRequest, clock: Any
) -> None:
    one = await make_backend(kind, request, clock)
    two = await make_backend(kind, request, clock, key_prefix=one.key_prefix)  # a second process, same namespace
    try:
        await one.set("GET:spaces:1:items", b"entry", 30)
        await one.add_key_hits({"GET:spaces:1:items": 3, "GET:gone": 7, "~g:s:spaces": 1})
        await two.add_key_hits({"GET:spaces:1:items": 2})
        assert await two.read_key_hits(["GET:spaces:1:items", "GET:gone"]) == [5, 0]  # no entry: no count
        client = one._client  # the count's lifetime is the entry's remaining one, never longer
        entry_ttl = await client.pttl(one._physical("GET:spaces:1:items"))
        count_ttl = await client.pttl(one._physical(hits_name("GET:spaces:1:items")))
        assert 0 < count_ttl <= entry_ttl <= 30_000
        assert await client.exists(one._physical(hits_name("~g:s:spaces"))) == 0  # internal names are not counted
        await one.clear()
        assert await one.read_key_hits(["GET:spaces:1:items"]) == [0]
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.parametrize("garbage", ["text", "hash"])
async def test_garbage_under_a_shared_count_is_replaced(
    garbage: str, request: pytest.FixtureRequest, clock: Any
) -> None:
    backend = await make_backend("redis", request, clock)
    try:
        await backend.set("GET:items", b"entry", 30)
        name = backend._physical(hits_name("GET:items"))
        if garbage == "text":
            await backend._client.set(name, b"not a number")
        else:
            await backend._client.hset(name, "field", 1)
        assert await backend.read_key_hits(["GET:items"]) == [0]  # unreadable counts read as none
        await backend.add_key_hits({"GET:items": 4})  # no error: this process's count starts it again
        assert await backend.read_key_hits(["GET:items"]) == [4]
        assert 0 < await backend._client.pttl(name) <= 30_000
    finally:
        await backend.aclose()


@pytest.mark.parametrize("key", ["GET:spaces:1:items", "GET:", "example.org:GET:spaces:2", "fn:module.load:a=1"])
def test_a_count_lives_in_its_entrys_cluster_slot(key: str) -> None:
    from intelligent_cache.keys import slot_tag

    assert slot_tag(hits_name(key)) == slot_tag(key)
