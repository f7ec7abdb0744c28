"""CacheService, the manual API: ``manager.service()`` and ``Depends(get_cache_service)``."""

import dataclasses
import math
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from intelligent_cache import (
    BackendError,
    CachedResponse,
    CacheManager,
    CacheService,
    MemoryBackend,
    NoCacheManager,
    cache_config,
    get_cache_service,
)


def make_app(manager: CacheManager) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)

    @app.get("/items")
    @cache_config
    async def list_items(page: int = 1):
        return {"page": page}

    @app.get("/spaces/{space_id}")
    @cache_config
    async def get_space(space_id: int):
        return {"id": space_id}

    @app.get("/users")
    @cache_config
    async def list_users(page: int = 1):
        return {"users": page}

    return app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
def service(manager) -> CacheService:
    return manager.service()


# -- values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"total": 3}, [1, "two", None], "text", 7, 2.5, b"\x00bytes", True])
async def test_set_and_get_plain_values(service, value):
    await service.set("report:today", value, ttl=30)
    assert await service.get("report:today") == value


async def test_get_of_an_absent_key_is_none(service):
    assert await service.get("nothing:here") is None


async def test_value_expires_after_its_ttl(service, clock):
    await service.set("k", "v", ttl=30)
    clock.advance(29)
    assert await service.get("k") == "v"
    clock.advance(2)
    assert await service.get("k") is None


async def test_value_without_ttl_uses_the_default(clock):
    manager = CacheManager(MemoryBackend(clock=clock), clock=clock, default_ttl=10)
    service = manager.service()
    await service.set("k", "v")
    clock.advance(9)
    assert await service.get("k") == "v"
    clock.advance(2)
    assert await service.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, "10", True])
async def test_invalid_ttl_raises(service, ttl):
    with pytest.raises(ValueError):
        await service.set("k", "v", ttl=ttl)
    assert await service.get("k") is None


async def test_unencodable_value_raises_type_error(service):
    with pytest.raises(TypeError):
        await service.set("k", object(), ttl=10)


async def test_delete_returns_whether_the_key_existed(service):
    await service.set("k", "v", ttl=10)
    assert await service.delete("k") is True
    assert await service.delete("k") is False
    assert await service.get("k") is None


@pytest.mark.parametrize("key", ["~g:s", "~g:n:items", "~g:t:tag"])
async def test_reserved_keys_are_rejected(service, key):
    with pytest.raises(ValueError):
        await service.set(key, 1, ttl=10)
    with pytest.raises(ValueError):
        await service.get(key)
    with pytest.raises(ValueError):
        await service.delete(key)


@pytest.mark.parametrize("key", ["", "x" * 4097])
async def test_invalid_keys_are_rejected(service, key):
    with pytest.raises(ValueError):
        await service.get(key)


async def test_returned_values_are_independent_of_the_cache(service):
    await service.set("k", {"a": [1]}, ttl=60)
    first = await service.get("k")
    first["a"].append(2)
    first["b"] = "changed by the caller"
    assert await service.get("k") == {"a": [1]}


# -- cached responses --------------------------------------------------------------------------------------


async def test_get_of_a_cached_response_returns_the_entry(manager, service):
    app = make_app(manager)
    async with client_for(app) as client:
        response = await client.get("/items?page=2")
    entry = await service.get("GET:items:page=2")
    assert isinstance(entry, CachedResponse)
    assert entry.status == 200
    assert entry.body == response.content
    assert entry.path == "/items"
    assert entry.route == "/items"
    assert (b"content-type", b"application/json") in entry.headers


async def test_a_response_set_by_hand_round_trips(service, clock):
    entry = CachedResponse(
        status=200,
        headers=((b"content-type", b"application/json"), (b"content-length", b"10")),
        body=b'{"page":5}',
        stored_at=clock(),
        ttl=60,
    )
    await service.set("GET:items:page=5", entry, ttl=60)
    assert await service.get("GET:items:page=5") == entry


async def test_mutating_a_returned_entry_does_not_change_what_is_served(manager, service):
    app = make_app(manager)
    async with client_for(app) as client:
        original = await client.get("/items?page=4")
        assert (await client.get("/items?page=4")).headers["x-cache"] == "HIT"
        entry = await service.get("GET:items:page=4")
        assert isinstance(entry, CachedResponse)
        # Entries are immutable: what one caller holds cannot change what others are served.
        with pytest.raises(dataclasses.FrozenInstanceError):
            entry.body = b"tampered"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            entry.headers.append((b"x-tampered", b"1"))  # type: ignore[attr-defined]
        hit = await client.get("/items?page=4")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == original.content
    assert "x-tampered" not in hit.headers


# -- listing and clearing ----------------------------------------------------------------------------------


async def warm(app: FastAPI) -> None:
    async with client_for(app) as client:
        for url in ("/items?page=1", "/items?page=2", "/items", "/users?page=1", "/spaces/1", "/spaces/2"):
            assert (await client.get(url)).headers["x-cache"] == "MISS"


async def test_list_keys(manager, service):
    await warm(make_app(manager))
    keys = await service.list_keys()
    assert sorted(keys) == [
        "GET:items",
        "GET:items:page=1",
        "GET:items:page=2",
        "GET:spaces:1",
        "GET:spaces:2",
        "GET:users:page=1",
    ]
    assert sorted(await service.list_keys("GET:items:*")) == ["GET:items:page=1", "GET:items:page=2"]
    assert len(await service.list_keys(limit=2)) == 2


async def test_list_keys_pages_through_many_keys(service):
    for index in range(2500):
        await service.set(f"k:{index}", index, ttl=60)
    assert sorted(await service.list_keys(limit=5000)) == sorted(f"k:{index}" for index in range(2500))
    assert len(await service.list_keys(limit=1500)) == 1500


async def test_list_keys_hides_internal_keys(manager, memory_backend, service):
    await warm(make_app(manager))
    await memory_backend.set("~g:s:items", b"\x01", 60)
    await memory_backend.set("~g:n:items", b"\x01", 60)
    keys = await service.list_keys()
    assert keys
    assert not [key for key in keys if key.startswith("~")]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
async def test_list_keys_rejects_invalid_limits(service, limit):
    with pytest.raises(ValueError):
        await service.list_keys(limit=limit)


async def test_clear_pattern_removes_only_matching_keys(manager, service):
    app = make_app(manager)
    await warm(app)
    assert await service.clear_pattern("GET:items:*") == 2
    assert sorted(await service.list_keys()) == ["GET:items", "GET:spaces:1", "GET:spaces:2", "GET:users:page=1"]
    async with client_for(app) as client:
        assert (await client.get("/items?page=1")).headers["x-cache"] == "MISS"
        assert (await client.get("/items")).headers["x-cache"] == "HIT"
        assert (await client.get("/users?page=1")).headers["x-cache"] == "HIT"


@pytest.mark.parametrize("pattern", ["", "x" * 1025])
async def test_clear_pattern_rejects_invalid_patterns(service, pattern):
    with pytest.raises(ValueError):
        await service.clear_pattern(pattern)


async def test_clear_all(manager, service):
    app = make_app(manager)
    await warm(app)
    await service.set("report", 1, ttl=60)
    assert await service.clear_all() == 7
    assert await service.list_keys() == []
    async with client_for(app) as client:
        assert (await client.get("/items?page=1")).headers["x-cache"] == "MISS"


# -- invalidation ------------------------------------------------------------------------------------------


async def test_invalidate_path(manager, service):
    app = make_app(manager)
    await warm(app)
    await service.invalidate_path("/spaces/1")
    async with client_for(app) as client:
        assert (await client.get("/spaces/1")).headers["x-cache"] == "MISS"
        assert (await client.get("/spaces/2")).headers["x-cache"] == "HIT"
        assert (await client.get("/items?page=1")).headers["x-cache"] == "HIT"


async def test_invalidate_path_covers_queries_of_the_path(manager, service):
    app = make_app(manager)
    await warm(app)
    await service.invalidate_path("/items")
    async with client_for(app) as client:
        for url in ("/items", "/items?page=1", "/items?page=2"):
            assert (await client.get(url)).headers["x-cache"] == "MISS", url
        assert (await client.get("/users?page=1")).headers["x-cache"] == "HIT"


@pytest.mark.parametrize("path", ["spaces/1", "", None])
async def test_invalidate_path_rejects_relative_paths(service, path):
    with pytest.raises(ValueError):
        await service.invalidate_path(path)


# -- stats -------------------------------------------------------------------------------------------------


async def test_get_stats(manager, service):
    app = make_app(manager)
    async with client_for(app) as client:
        await client.get("/items")
        await client.get("/items")
        await client.get("/items")
        await client.get("/items", headers={"Cache-Control": "no-store"})
    stats = await service.get_stats()
    assert stats["hits"] == 2
    assert stats["misses"] == 1
    assert stats["skips"] == 1
    assert stats["hit_rate"] == pytest.approx(2 / 3, abs=1e-3)
    # The backend is named either directly or in the backend's info() mapping (with breaker state etc.).
    assert stats["backend"] in ("memory", {"backend": "memory"})
    assert stats["enabled"] is True
    assert stats["degraded"] is False
    assert stats["routes"]["/items"]["hits"] == 2
    assert stats["routes"]["/items"]["misses"] == 1


async def test_stats_of_a_fresh_manager(service):
    stats = await service.get_stats()
    assert stats["hits"] == stats["misses"] == 0
    assert stats["hit_rate"] == 0.0


# -- backend failures --------------------------------------------------------------------------------------


class DownBackend(MemoryBackend):
    async def get(self, key):
        raise ConnectionError("down")

    async def set(self, key, value, ttl):
        raise ConnectionError("down")

    async def delete(self, key):
        raise ConnectionError("down")

    async def scan(self, pattern="*", cursor=0, count=100):
        raise ConnectionError("down")

    async def clear(self, pattern=None):
        raise ConnectionError("down")

    async def bump(self, generation_keys):
        raise ConnectionError("down")


async def test_service_raises_backend_error_when_the_backend_fails(clock):
    service = CacheManager(DownBackend(clock=clock), clock=clock).service()
    for call in (
        service.get("k"),
        service.set("k", 1, ttl=10),
        service.delete("k"),
        service.list_keys(),
        service.clear_pattern("GET:*"),
        service.clear_all(),
        service.invalidate_path("/items"),
    ):
        with pytest.raises(BackendError) as excinfo:
            await call
        assert isinstance(excinfo.value.__cause__, ConnectionError)


# -- as a dependency ---------------------------------------------------------------------------------------


def test_service_as_a_dependency(manager):
    app = make_app(manager)

    @app.post("/maintenance/flush-items")
    async def flush_items(cache: Annotated[CacheService, Depends(get_cache_service)]):
        await cache.set("report:today", {"total": 3}, ttl=30)
        return {
            "report": await cache.get("report:today"),
            "deleted": await cache.clear_pattern("GET:items:*"),
            "keys": sorted(await cache.list_keys()),
        }

    @app.get("/memo/{name}")
    async def memo(name: str, cache: Annotated[CacheService, Depends(get_cache_service)]):
        value = await cache.get(f"memo:{name}")
        if value is None:
            value = {"name": name, "computed": True}
            await cache.set(f"memo:{name}", value, ttl=60)
            return {"value": value, "from": "computed"}
        return {"value": value, "from": "cache"}

    client = TestClient(app)
    client.get("/items?page=1")
    client.get("/users")
    body = client.post("/maintenance/flush-items").json()
    assert body == {"report": {"total": 3}, "deleted": 1, "keys": ["GET:users", "report:today"]}
    assert client.get("/memo/a").json()["from"] == "computed"
    assert client.get("/memo/a").json() == {"value": {"name": "a", "computed": True}, "from": "cache"}


def test_dependency_without_a_manager_raises():
    app = FastAPI()

    @app.get("/needs-cache")
    async def needs_cache(cache: Annotated[CacheService, Depends(get_cache_service)]):
        return {}

    with pytest.raises(NoCacheManager, match="init_app"):
        TestClient(app).get("/needs-cache")
