"""The admin API mounted by ``CacheManager(include_admin_routes=True, ...)``."""

import asyncio
import logging
from typing import Annotated
from urllib.parse import quote

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from intelligent_cache import CacheManager, ConfigurationError, MemoryBackend, cache_config

TOKEN = "s3cret"
AUTH = {"X-Admin-Token": TOKEN}


def require_admin(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def forbid_non_admin(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=403, detail="admins only")


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

    return app


@pytest.fixture
def admin_manager(memory_backend, clock) -> CacheManager:
    return CacheManager(
        memory_backend,
        clock=clock,
        include_admin_routes=True,
        admin_dependencies=[Depends(require_admin)],
    )


@pytest.fixture
def client(admin_manager) -> TestClient:
    return TestClient(make_app(admin_manager))


def set_value(manager: CacheManager, key: str, value=1, ttl: float = 60) -> None:
    asyncio.run(manager.service().set(key, value, ttl=ttl))


def all_keys(manager: CacheManager) -> list[str]:
    return sorted(asyncio.run(manager.service().list_keys()))


# -- mounting ----------------------------------------------------------------------------------------------


def test_refuses_to_mount_without_authentication(memory_backend, clock):
    manager = CacheManager(memory_backend, clock=clock, include_admin_routes=True)
    with pytest.raises(ConfigurationError):
        manager.init_app(FastAPI())


def test_mounts_without_authentication_when_explicitly_allowed(memory_backend, clock, caplog):
    manager = CacheManager(memory_backend, clock=clock, include_admin_routes=True, allow_unauthenticated_admin=True)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        app = make_app(manager)
    assert any("WITHOUT authentication" in record.getMessage() for record in caplog.records)
    assert TestClient(app).get("/api/cache/stats").status_code == 200


def test_no_admin_routes_unless_asked(manager):
    client = TestClient(make_app(manager))
    assert client.get("/api/cache/stats").status_code == 404


def test_custom_prefix_and_single_auth_dependency(memory_backend, clock):
    manager = CacheManager(
        memory_backend,
        clock=clock,
        include_admin_routes=True,
        admin_auth_dependency=forbid_non_admin,
        admin_prefix="/internal/cache",
    )
    client = TestClient(make_app(manager))
    assert client.get("/internal/cache/stats").status_code == 403
    assert client.get("/internal/cache/stats", headers=AUTH).status_code == 200
    assert client.get("/api/cache/stats", headers=AUTH).status_code == 404


# -- authentication ----------------------------------------------------------------------------------------

ADMIN_CALLS = [
    pytest.param("GET", "/api/cache/keys", None, id="list-keys"),
    pytest.param("GET", "/api/cache/keys/GET:items:page=1", None, id="get-key"),
    pytest.param("DELETE", "/api/cache/keys/GET:items:page=1", None, id="delete-key"),
    pytest.param("POST", "/api/cache/clear", None, id="clear"),
    pytest.param("POST", "/api/cache/clear?pattern=GET:*", None, id="clear-pattern"),
    pytest.param("POST", "/api/cache/invalidate", {"path": "/items"}, id="invalidate"),
    pytest.param("GET", "/api/cache/stats", None, id="stats"),
    pytest.param("GET", "/api/cache/health", None, id="health"),
]


@pytest.mark.parametrize(("method", "url", "body"), ADMIN_CALLS)
@pytest.mark.parametrize("headers", [{}, {"X-Admin-Token": "wrong"}, {"Authorization": f"Bearer {TOKEN}"}])
def test_every_admin_route_requires_authentication(client, admin_manager, method, url, body, headers):
    client.get("/items?page=1")
    response = client.request(method, url, json=body, headers=headers)
    assert response.status_code == 401
    assert all_keys(admin_manager) == ["GET:items:page=1"]  # nothing was deleted
    assert client.get("/items?page=1").headers["x-cache"] == "HIT"  # nothing was invalidated


@pytest.mark.parametrize(("method", "url", "body"), ADMIN_CALLS)
def test_every_admin_route_answers_when_authenticated_and_is_never_cached(client, method, url, body):
    client.get("/items?page=1")
    response = client.request(method, url, json=body, headers=AUTH)
    assert response.status_code == 200
    assert "x-cache" not in response.headers


def test_admin_reads_are_not_cached(client):
    for _ in range(2):
        response = client.get("/api/cache/stats", headers=AUTH)
        assert "x-cache" not in response.headers
    client.get("/items")
    assert client.get("/api/cache/stats", headers=AUTH).json()["misses"] == 1


# -- keys --------------------------------------------------------------------------------------------------


def test_list_keys_pages_with_a_cursor(client, admin_manager):
    expected = sorted(f"report:{index:02d}" for index in range(25))
    for key in expected:
        set_value(admin_manager, key)
    seen: list[str] = []
    cursor = 0
    for _ in range(100):
        response = client.get("/api/cache/keys", params={"cursor": cursor, "limit": 10}, headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert len(body["keys"]) <= 10
        seen.extend(item["key"] for item in body["keys"])
        cursor = body["cursor"]
        if cursor == 0:
            break
    assert sorted(seen) == expected
    assert len(seen) == len(set(seen))


def test_list_keys_reports_ttls_and_filters_by_pattern(client, admin_manager, clock):
    client.get("/items?page=1")
    client.get("/items?page=2")
    client.get("/spaces/1")
    set_value(admin_manager, "report", ttl=30)
    clock.advance(10)
    response = client.get("/api/cache/keys", params={"pattern": "GET:items:*"}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["cursor"] == 0
    assert sorted(item["key"] for item in body["keys"]) == ["GET:items:page=1", "GET:items:page=2"]
    every = client.get("/api/cache/keys", headers=AUTH).json()["keys"]
    assert {item["key"]: item["ttl"] for item in every}["report"] == pytest.approx(20)
    assert not [item for item in every if item["key"].startswith("~")]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 5000}, {"limit": -1}, {"limit": "abc"}, {"cursor": -1}, {"cursor": "x"}, {"pattern": ""}],
)
def test_list_keys_rejects_invalid_parameters(client, params):
    assert client.get("/api/cache/keys", params=params, headers=AUTH).status_code == 422


@pytest.mark.parametrize(
    "key",
    ["GET:items:page=1", "GET:a/b:c", "/leading/slash", "what?is=this", "100%:done", "a%2Fb", "spaced key", "x#y"],
)
async def test_get_and_delete_keys_with_special_characters(admin_manager, key):
    # httpx's ASGITransport, like a real server, decodes the path once (Starlette's TestClient decodes twice).
    await admin_manager.service().set(key, {"v": 1}, ttl=60)
    url = "/api/cache/keys/" + quote(key, safe="")
    transport = httpx.ASGITransport(app=make_app(admin_manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=AUTH) as client:
        info = await client.get(url)
        assert info.status_code == 200
        assert info.json()["key"] == key
        assert info.json()["kind"] == "value"

        deleted = await client.delete(url)
        assert deleted.status_code == 200
        assert deleted.json() == {"deleted": key}
        assert await admin_manager.service().list_keys() == []
        assert (await client.delete(url)).status_code == 404
        assert (await client.get(url)).status_code == 404


def test_get_key_describes_a_cached_response(client, clock):
    client.get("/spaces/7")
    clock.advance(5)
    info = client.get("/api/cache/keys/GET:spaces:7", headers=AUTH)
    assert info.status_code == 200
    body = info.json()
    assert body["kind"] == "response"
    assert body["status"] == 200
    assert body["path"] == "/spaces/7"
    assert body["route"] == "/spaces/{space_id}"
    assert body["size"] == len(b'{"id":7}')
    assert body["age"] == pytest.approx(5)
    assert "body" not in body


def test_get_key_of_a_corrupt_value(client, memory_backend):
    asyncio.run(memory_backend.set("GET:broken", b"garbage", 60))
    info = client.get("/api/cache/keys/GET:broken", headers=AUTH)
    assert info.status_code == 200
    assert info.json()["kind"] == "corrupt"


@pytest.mark.parametrize("key", ["absent", "GET:items:page=9"])
def test_absent_keys_are_404(client, key):
    assert client.get(f"/api/cache/keys/{quote(key, safe='')}", headers=AUTH).status_code == 404
    assert client.delete(f"/api/cache/keys/{quote(key, safe='')}", headers=AUTH).status_code == 404


def test_internal_keys_are_not_exposed(client, memory_backend):
    asyncio.run(memory_backend.set("~g:s:items", b"\x01", 60))
    url = "/api/cache/keys/" + quote("~g:s:items", safe="")
    assert client.get(url, headers=AUTH).status_code == 404
    assert client.delete(url, headers=AUTH).status_code == 404


def test_deleting_a_key_makes_the_next_read_a_miss(client):
    client.get("/items?page=1")
    assert client.delete("/api/cache/keys/GET:items:page=1", headers=AUTH).status_code == 200
    assert client.get("/items?page=1").headers["x-cache"] == "MISS"


# -- clear and invalidate ----------------------------------------------------------------------------------


def test_clear_all(client, admin_manager):
    for url in ("/items?page=1", "/items?page=2", "/spaces/1"):
        client.get(url)
    response = client.post("/api/cache/clear", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"deleted": 3, "pattern": None}
    assert all_keys(admin_manager) == []
    assert client.get("/items?page=1").headers["x-cache"] == "MISS"


def test_clear_pattern(client, admin_manager):
    for url in ("/items?page=1", "/items?page=2", "/items", "/spaces/1"):
        client.get(url)
    response = client.post("/api/cache/clear", params={"pattern": "GET:items:*"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"deleted": 2, "pattern": "GET:items:*"}
    assert all_keys(admin_manager) == ["GET:items", "GET:spaces:1"]


def test_clear_rejects_an_empty_pattern(client):
    assert client.post("/api/cache/clear", params={"pattern": ""}, headers=AUTH).status_code == 422


def test_invalidate_path(client):
    for url in ("/spaces/1", "/spaces/2", "/items"):
        client.get(url)
    response = client.post("/api/cache/invalidate", json={"path": "/spaces/1"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["path"] == "/spaces/1"
    assert client.get("/spaces/1").headers["x-cache"] == "MISS"
    assert client.get("/spaces/2").headers["x-cache"] == "HIT"
    assert client.get("/items").headers["x-cache"] == "HIT"


@pytest.mark.parametrize("body", [{}, {"path": "spaces/1"}, {"path": ""}, {"path": 5}, {"tags": []}, None])
def test_invalidate_rejects_invalid_bodies(client, body):
    assert client.post("/api/cache/invalidate", json=body, headers=AUTH).status_code == 422


# -- stats and health --------------------------------------------------------------------------------------


def test_stats(client):
    client.get("/items")
    client.get("/items")
    stats = client.get("/api/cache/stats", headers=AUTH).json()
    assert stats["hits"] == 1
    assert stats["misses"] == 1
    assert stats["hit_rate"] == 0.5
    assert stats["routes"]["/items"] == {**stats["routes"]["/items"], "hits": 1, "misses": 1}


def test_health(client):
    response = client.get("/api/cache/health", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["backend"] == "memory"


class DeadBackend(MemoryBackend):
    async def get(self, key):
        raise ConnectionError("connection refused")

    async def scan(self, pattern="*", cursor=0, count=100):
        raise ConnectionError("connection refused")

    async def clear(self, pattern=None):
        raise ConnectionError("connection refused")


def test_backend_failures_are_503_not_500(clock):
    manager = CacheManager(
        DeadBackend(clock=clock), clock=clock, include_admin_routes=True, admin_dependencies=[Depends(require_admin)]
    )
    client = TestClient(make_app(manager))
    health = client.get("/api/cache/health", headers=AUTH)
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert client.get("/api/cache/keys", headers=AUTH).status_code == 503
    assert client.get("/api/cache/keys/GET:items", headers=AUTH).status_code == 503
    assert client.post("/api/cache/clear", headers=AUTH).status_code == 503
