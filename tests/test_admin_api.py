"""Every admin endpoint against the memory and the Redis backend, through ASGI (one URL decoding, like a server)."""

import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.routing import APIRoute

from intelligent_cache import CacheBackend, CacheManager, ConfigurationError, MemoryBackend, cache_config
from intelligent_cache.stats import LATENCY_BUCKETS
from tests.conftest import BACKEND_KINDS, PATIENT, make_backend, unique_prefix

TOKEN = "admin-s3cret"
AUTH = {"X-Admin-Token": TOKEN}
PREFIX = "/api/cache"
KINDS = [param for param in BACKEND_KINDS if param.id in ("memory", "redis")]


def require_token(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def require_role(x_role: Annotated[str | None, Header()] = None) -> None:
    if x_role != "ops":
        raise HTTPException(status_code=403, detail="ops only")


def make_app(manager: CacheManager) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)

    @app.get("/items")
    @cache_config(tags=["catalog"])
    async def list_items(page: int = 1) -> dict[str, int]:
        return {"page": page}

    @app.get("/spaces/{space_id}")
    @cache_config
    async def get_space(space_id: int) -> dict[str, int]:
        return {"id": space_id}

    @app.get("/api")
    @cache_config
    async def api_root() -> dict[str, str]:
        return {"api": "root"}

    return app


def admin_manager(backend: CacheBackend, clock: Any, **options: Any) -> CacheManager:
    options.setdefault("admin_auth_dependency", require_token)
    return CacheManager(backend, clock=clock, include_admin_routes=True, **options)


def client_for(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers)


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, clock: Any) -> AsyncIterator[CacheBackend]:
    instance = await make_backend(request.param, request, clock)
    try:
        yield instance
    finally:
        await instance.aclose()


@pytest.fixture
def manager(backend: CacheBackend, clock: Any) -> CacheManager:
    return admin_manager(backend, clock)


@pytest.fixture
def app(manager: CacheManager) -> FastAPI:
    return make_app(manager)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
def foreign(request: pytest.FixtureRequest, backend: CacheBackend):
    """Check foreign keys planted in the backend's Redis database: a function telling whether they survived.

    The memory backend has no neighbours: the check is then trivially true.
    """
    if backend.name != "redis":
        yield lambda: True
        return
    raw = request.getfixturevalue("redis_server").client()
    planted = plant_foreign_keys(raw, backend.key_prefix)
    yield lambda: read_planted(raw, planted) == planted
    raw.delete(*planted)
    raw.close()


async def listed(
    client: httpx.AsyncClient, pattern: str = "*", *, limit: int = 100, prefix: str = PREFIX, headers=AUTH
) -> set[str]:
    """Every key the listing shows, walking the cursor: a page of a shared Redis may hold none of ours."""
    keys: list[str] = []
    cursor = 0
    for _ in range(100_000):
        params = {"pattern": pattern, "cursor": cursor, "limit": limit}
        response = await client.get(f"{prefix}/keys", params=params, headers=headers)
        assert response.status_code == 200, response.text
        keys.extend(item["key"] for item in response.json()["keys"])
        cursor = response.json()["cursor"]
        if cursor == 0:
            return set(keys)
    raise AssertionError("the cursor never came back to 0")


def key_url(key: str) -> str:
    return f"{PREFIX}/keys/" + quote(key, safe="")


async def cache_state(client: httpx.AsyncClient, url: str) -> str | None:
    response = await client.get(url)
    assert response.status_code == 200
    return response.headers.get("x-cache")


def plant_foreign_keys(raw: Any, prefix: str) -> dict[str, bytes]:
    """Keys of other applications, and look-alikes of ours, in the same Redis database."""
    token = uuid.uuid4().hex[:8]
    planted = {
        f"session:{token}": b"alice",
        f"other-app:GET:items:{token}": b"theirs",
        prefix[:-1] + f"GET:items:{token}": b"prefix-without-its-colon",
        f"x{prefix}GET:items:{token}": b"prefix-not-at-the-start",
        f"{prefix[:-1]}\\:GET:{token}": b"escaped-look-alike",
        f"GET:items:{token}": b"our-logical-key-without-prefix",
        f"~g:s:items:{token}": b"our-internal-key-without-prefix",
    }
    for key, value in planted.items():
        raw.set(key, value)
    return planted


def read_planted(raw: Any, planted: dict[str, bytes]) -> dict[str, bytes | None]:
    return {key: raw.get(key) for key in planted}


# -- keys ------------------------------------------------------------------------------------------------------


async def test_list_keys_pages_through_every_key_with_the_cursor(client, manager):
    expected = {f"report:{index:03d}" for index in range(57)}
    for key in expected:
        await manager.service().set(key, {"k": key}, ttl=60)
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        response = await client.get(f"{PREFIX}/keys", params={"cursor": cursor, "limit": 10}, headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"keys", "cursor"}
        assert isinstance(body["cursor"], int)
        assert body["cursor"] >= 0
        for item in body["keys"]:
            assert set(item) == {"key", "ttl"}
            assert 0 < item["ttl"] <= 60
        seen.extend(item["key"] for item in body["keys"])
        pages += 1
        cursor = body["cursor"]
        if cursor == 0 or pages > 100_000:
            break
    assert cursor == 0
    assert pages >= 2  # 57 keys do not fit one page of 10
    assert set(seen) == expected


@pytest.mark.parametrize("limit", [1, 1000])
async def test_list_keys_accepts_the_limit_bounds(client, manager, limit):
    for index in range(3):
        await manager.service().set(f"k{index}", index, ttl=60)
    response = await client.get(f"{PREFIX}/keys", params={"limit": limit}, headers=AUTH)
    assert response.status_code == 200
    assert len(response.json()["keys"]) <= limit
    assert await listed(client, limit=limit) == {"k0", "k1", "k2"}


@pytest.mark.parametrize("cursor", [0, 1, 2**63 - 1])
async def test_list_keys_accepts_any_cursor_in_range(client, manager, cursor):
    await manager.service().set("only", 1, ttl=60)
    response = await client.get(f"{PREFIX}/keys", params={"cursor": cursor}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["cursor"] >= 0


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": -1},
        {"limit": "abc"},
        {"limit": "1.5"},
        {"cursor": -1},
        {"cursor": 2**63},
        {"cursor": "abc"},
        {"pattern": ""},
        {"pattern": "x" * 1025},
    ],
)
async def test_list_keys_rejects_out_of_range_parameters(client, params):
    response = await client.get(f"{PREFIX}/keys", params=params, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", next(iter(params))]


async def test_list_keys_filters_by_pattern_and_hides_internal_keys(client, manager, backend):
    for url in ("/items?page=1", "/items?page=2", "/spaces/1", "/spaces/22"):
        assert await cache_state(client, url) == "MISS"
    await backend.set("~l:planted-lock", b"x", 60)
    assert await listed(client) == {"GET:items:page=1", "GET:items:page=2", "GET:spaces:1", "GET:spaces:22"}
    assert await listed(client, "GET:items:*") == {"GET:items:page=1", "GET:items:page=2"}
    assert await listed(client, "GET:spaces:?") == {"GET:spaces:1"}
    assert await listed(client, "GET:spaces:[2]*") == {"GET:spaces:22"}
    assert await listed(client, "~*") == set()
    assert await listed(client, "nothing*") == set()
    assert await listed(client, "x" * 1024) == set()


SPECIAL_KEYS = [
    "a/b",
    "GET:a/b:c",
    "/leading/slash",
    "trailing/",
    "double//slash",
    "what?is=this&x=1",
    "100%:done",
    "a%2Fb",
    "%",
    "spaced key",
    "x#fragment",
    "plus+sign;semi",
    "back\\slash",
    "unicode é✓",
]


@pytest.mark.parametrize("key", SPECIAL_KEYS)
async def test_get_and_delete_keys_with_special_characters(client, manager, key):
    await manager.service().set(key, {"v": 1}, ttl=60)
    await manager.service().set("bystander", 1, ttl=60)
    assert key in await listed(client)

    info = await client.get(key_url(key), headers=AUTH)
    assert info.status_code == 200
    assert info.json() == {"key": key, "kind": "value", "size": info.json()["size"]}
    assert info.json()["size"] > 0

    deleted = await client.delete(key_url(key), headers=AUTH)
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": key}
    assert await manager.service().list_keys() == ["bystander"]
    assert (await client.get(key_url(key), headers=AUTH)).status_code == 404
    assert (await client.delete(key_url(key), headers=AUTH)).status_code == 404


async def test_get_key_describes_a_cached_response(client, clock):
    assert await cache_state(client, "/items?page=3") == "MISS"
    clock.advance(5)
    info = await client.get(key_url("GET:items:page=3"), headers=AUTH)
    assert info.status_code == 200
    body = info.json()
    assert body["kind"] == "response"
    assert body["route"] == "/items"
    assert body["path"] == "/items"
    assert body["status"] == 200
    assert body["size"] == len(b'{"page":3}')
    assert body["ttl"] == 60
    assert body["age"] == pytest.approx(5)
    assert body["expires_in"] == pytest.approx(55)
    assert body["state"] == "fresh"
    assert body["valid"] in (True, None)  # None: a backend that cannot tell (see test_admin_validity.py)
    assert body["tags"] == ["catalog"]
    assert ["content-type", "application/json"] in body["headers"]
    assert "body" not in body


async def test_get_key_of_a_corrupt_value(client, backend):
    await backend.set("GET:broken", b"\xc1 not msgpack", 60)
    info = await client.get(key_url("GET:broken"), headers=AUTH)
    assert info.status_code == 200
    assert info.json() == {"key": "GET:broken", "kind": "corrupt", "size": 13}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_absent_and_internal_keys_are_404(client, backend, method):
    assert await cache_state(client, "/items") == "MISS"  # creates counters ~g:s:items, ~g:n:items
    await backend.set("~g:planted", b"\x01", 60)
    await backend.set("~l:planted", b"token", 60)
    for key in ("absent", "GET:items:page=9", "~g:planted", "~l:planted", "~g:s:items", "~"):
        response = await client.request(method, key_url(key), headers=AUTH)
        assert response.status_code == 404, key
        assert response.json() == {"detail": "no such key"}
    assert await backend.get("~g:planted") == b"\x01"
    assert await backend.get("~l:planted") == b"token"
    assert await cache_state(client, "/items") == "HIT"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_key_length_is_bounded(client, method):
    assert (await client.request(method, key_url("k" * 4097), headers=AUTH)).status_code == 422
    assert (await client.request(method, key_url("k" * 4096), headers=AUTH)).status_code == 404


# -- clear -----------------------------------------------------------------------------------------------------


async def test_clear_all_deletes_every_entry_and_nothing_else(client, manager, foreign):
    for url in ("/items?page=1", "/items?page=2", "/spaces/1"):
        assert await cache_state(client, url) == "MISS"
    await manager.service().set("report", 1, ttl=60)
    response = await client.post(f"{PREFIX}/clear", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"deleted": 4, "pattern": None}
    assert await listed(client) == set()
    assert await cache_state(client, "/items?page=1") == "MISS"
    assert foreign()


async def test_clear_pattern_deletes_only_the_matching_entries(client, manager, foreign):
    for url in ("/items?page=1", "/items?page=2", "/items", "/spaces/1"):
        assert await cache_state(client, url) == "MISS"
    response = await client.post(f"{PREFIX}/clear", params={"pattern": "GET:items:*"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"deleted": 2, "pattern": "GET:items:*"}
    assert await listed(client) == {"GET:items", "GET:spaces:1"}
    assert await cache_state(client, "/items") == "HIT"
    assert await cache_state(client, "/items?page=1") == "MISS"
    none = await client.post(f"{PREFIX}/clear", params={"pattern": "nothing:*"}, headers=AUTH)
    assert none.json() == {"deleted": 0, "pattern": "nothing:*"}
    assert foreign()


@pytest.mark.parametrize("pattern", ["", "x" * 1025])
async def test_clear_rejects_invalid_patterns(client, manager, pattern):
    await manager.service().set("keep", 1, ttl=60)
    assert (await client.post(f"{PREFIX}/clear", params={"pattern": pattern}, headers=AUTH)).status_code == 422
    assert await manager.service().list_keys() == ["keep"]


ESCAPES = ["*", "../*", "..\\*", "\\*", "*\\", "\\", "?*", "[a-z]*", "[^x]*", "[", "]*", "~*", "**", "*:*", "/*", "%2A"]


@pytest.mark.redis
@pytest.mark.parametrize("pattern", ESCAPES)
async def test_patterns_never_reach_outside_the_namespace(request, clock, pattern):
    from intelligent_cache.backends.redis import RedisBackend

    server = request.getfixturevalue("redis_server")
    ours = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
    neighbour = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
    raw = server.client()
    try:
        app = make_app(admin_manager(ours, clock))
        neighbour_manager = CacheManager(neighbour, clock=clock)
        await neighbour_manager.service().set("GET:items", {"theirs": True}, ttl=60)
        planted = plant_foreign_keys(raw, ours.key_prefix)
        async with client_for(app) as client:
            assert await cache_state(client, "/items") == "MISS"
            for key in await listed(client, pattern, limit=1000):
                assert raw.exists(ours.key_prefix + key), key  # a key of ours, by its logical name
            cleared = await client.post(f"{PREFIX}/clear", params={"pattern": pattern}, headers=AUTH)
            assert cleared.status_code == 200
        assert read_planted(raw, planted) == planted
        assert await neighbour_manager.service().get("GET:items") == {"theirs": True}
    finally:
        for key in planted:
            raw.delete(key)
        await ours.clear()
        await neighbour.clear()
        raw.close()
        await ours.aclose()
        await neighbour.aclose()


@pytest.mark.redis
async def test_a_non_utf8_key_in_the_namespace_does_not_break_listing(request, clock):
    """Redis keys are bytes: a stray binary key under the prefix (another writer, a redis-cli typo) must not
    turn the key browser into a 500 for every page that contains it."""
    from intelligent_cache.backends.redis import RedisBackend

    server = request.getfixturevalue("redis_server")
    backend = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
    raw = server.client()
    stray = backend.key_prefix.encode() + b"GET:\xff\xfe-binary"
    raw.set(stray, b"x")
    try:
        async with client_for(make_app(admin_manager(backend, clock))) as client:
            assert await cache_state(client, "/items") == "MISS"
            assert "GET:items" in await listed(client, limit=1000)
            assert (await client.post(f"{PREFIX}/clear", headers=AUTH)).json()["deleted"] == 2
    finally:
        raw.delete(stray)
        raw.close()
        await backend.aclose()


# -- invalidate ------------------------------------------------------------------------------------------------


async def test_invalidate_path(client):
    for url in ("/spaces/1", "/spaces/2", "/items"):
        assert await cache_state(client, url) == "MISS"
    response = await client.post(f"{PREFIX}/invalidate", json={"path": "/spaces/1"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"path": "/spaces/1", "tags": []}
    assert await cache_state(client, "/spaces/1") == "MISS"
    assert await cache_state(client, "/spaces/2") == "HIT"
    assert await cache_state(client, "/items") == "HIT"


async def test_invalidate_tags(client):
    for url in ("/items?page=1", "/items?page=2", "/spaces/1"):
        assert await cache_state(client, url) == "MISS"
    response = await client.post(f"{PREFIX}/invalidate", json={"tags": ["catalog", "unused"]}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"path": None, "tags": ["catalog", "unused"]}
    assert await cache_state(client, "/items?page=1") == "MISS"
    assert await cache_state(client, "/items?page=2") == "MISS"
    assert await cache_state(client, "/spaces/1") == "HIT"


async def test_invalidate_path_and_tags_together(client):
    for url in ("/items", "/spaces/1", "/spaces/2"):
        assert await cache_state(client, url) == "MISS"
    body = {"path": "/spaces/2", "tags": ["catalog"]}
    assert (await client.post(f"{PREFIX}/invalidate", json=body, headers=AUTH)).status_code == 200
    assert await cache_state(client, "/items") == "MISS"
    assert await cache_state(client, "/spaces/2") == "MISS"
    assert await cache_state(client, "/spaces/1") == "HIT"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tags": []},
        {"path": None},
        {"path": None, "tags": []},
        {"path": "spaces/1"},
        {"path": ""},
        {"path": "/" + "x" * 2048},
        {"path": 5},
        {"tags": [""]},
        {"tags": "catalog"},
        {"tags": ["x" * 257]},
        {"tags": [f"t{index}" for index in range(101)]},
        [],
        None,
    ],
)
async def test_invalidate_rejects_invalid_bodies(client, body):
    assert await cache_state(client, "/items") == "MISS"
    response = await client.post(f"{PREFIX}/invalidate", json=body, headers=AUTH)
    assert response.status_code == 422
    assert await cache_state(client, "/items") == "HIT"


async def test_invalidate_rejects_a_body_that_is_not_json(client):
    response = await client.post(
        f"{PREFIX}/invalidate", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_manual_invalidations_are_counted_in_stats(client):
    """The metrics document says ``invalidations`` counts "one per write or manual call"."""
    assert await cache_state(client, "/spaces/1") == "MISS"
    before = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()["invalidations"]
    assert (await client.post(f"{PREFIX}/invalidate", json={"path": "/spaces/1"}, headers=AUTH)).status_code == 200
    assert (await client.post(f"{PREFIX}/invalidate", json={"tags": ["catalog"]}, headers=AUTH)).status_code == 200
    after = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()["invalidations"]
    assert after == before + 2


# -- stats -----------------------------------------------------------------------------------------------------

STATS_TOTALS = {
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
}


async def test_stats_document(client, backend):
    for url in ("/items", "/items", "/items", "/spaces/1"):
        await client.get(url)
    await client.get("/items", headers={"cache-control": "no-cache"})
    stats = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
    assert set(stats) == {
        *STATS_TOTALS,
        "hit_rate",
        "skip_reasons",
        "routes",
        "scope",
        "backend",
        "enabled",
        "degraded",
    }
    for name in STATS_TOTALS:
        assert isinstance(stats[name], int), name
        assert stats[name] >= 0
    assert stats["hits"] == 2
    assert stats["misses"] == 2
    assert stats["skips"] == 1
    assert stats["skip_reasons"] == {"revalidate": 1}
    assert stats["stores"] == 3  # the revalidated response replaced the entry
    assert stats["hit_rate"] == 0.5
    assert stats["enabled"] is True
    assert stats["degraded"] is False
    assert stats["backend"]["backend"] == backend.name
    assert set(stats["routes"]) == {"/items", "/spaces/{space_id}"}
    for counts in stats["routes"].values():
        assert set(counts) == {"hits", "misses", "skips", "stale", "hit_rate"}
    assert stats["routes"]["/items"]["hits"] == 2
    assert stats["routes"]["/items"]["misses"] == 1
    assert stats["routes"]["/items"]["hit_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["routes"]["/spaces/{space_id}"]["hit_rate"] == 0.0
    assert sum(stats["skip_reasons"].values()) == stats["skips"]
    assert stats["scope"] == ("shared" if backend.name == "redis" else "process")


async def test_memory_stats_are_per_process(clock):
    first = admin_manager(MemoryBackend(clock=clock), clock)
    second = admin_manager(MemoryBackend(clock=clock), clock)
    async with client_for(make_app(first)) as one, client_for(make_app(second)) as two:
        for _ in range(3):
            await one.get("/items")
        await first.flush_stats()
        await second.flush_stats()
        stats_one = (await one.get(f"{PREFIX}/stats", headers=AUTH)).json()
        stats_two = (await two.get(f"{PREFIX}/stats", headers=AUTH)).json()
    assert stats_one["scope"] == stats_two["scope"] == "process"
    assert (stats_one["hits"], stats_one["misses"]) == (2, 1)
    assert (stats_two["hits"], stats_two["misses"]) == (0, 0)


@pytest.mark.redis
async def test_stats_add_up_across_app_instances_sharing_redis(request, clock):
    from intelligent_cache.backends.redis import RedisBackend

    server = request.getfixturevalue("redis_server")
    prefix = unique_prefix()
    first = admin_manager(RedisBackend(server.url, key_prefix=prefix, **PATIENT), clock)
    second = admin_manager(RedisBackend(server.url, key_prefix=prefix, **PATIENT), clock)
    try:
        async with client_for(make_app(first)) as one, client_for(make_app(second)) as two:
            assert await cache_state(one, "/items") == "MISS"
            assert await cache_state(one, "/items") == "HIT"
            assert await cache_state(two, "/items") == "HIT"  # the entry is shared
            assert await cache_state(two, "/spaces/1") == "MISS"
            await two.get("/items", headers={"cache-control": "no-cache"})
            await first.flush_stats()
            await second.flush_stats()
            stats_one = (await one.get(f"{PREFIX}/stats", headers=AUTH)).json()
            stats_two = (await two.get(f"{PREFIX}/stats", headers=AUTH)).json()
            # Counts not flushed yet are included by the instance that holds them.
            assert await cache_state(one, "/items") == "HIT"
            unflushed = (await one.get(f"{PREFIX}/stats", headers=AUTH)).json()
    finally:
        await first.backend.clear()
        await first.aclose()
        await second.aclose()
    assert stats_one == stats_two
    assert stats_one["scope"] == "shared"
    assert stats_one["hits"] == 2
    assert stats_one["misses"] == 2
    assert stats_one["hits"] + stats_one["misses"] + stats_one["skips"] + stats_one["stale"] == 5
    assert stats_one["routes"]["/items"]["hits"] == 2
    assert stats_one["routes"]["/items"]["misses"] == 1
    assert stats_one["routes"]["/spaces/{space_id}"]["misses"] == 1
    assert stats_one["hit_rate"] == 0.5
    assert unflushed["hits"] == 3


@pytest.mark.redis
async def test_stats_add_up_when_apps_run_their_lifespan(request, clock):
    """Apps run with their lifespan flush their counts on shutdown; a fresh instance then reads the sum."""
    from intelligent_cache.backends.redis import RedisBackend

    server = request.getfixturevalue("redis_server")
    prefix = unique_prefix()
    apps = [make_app(admin_manager(RedisBackend(server.url, key_prefix=prefix, **PATIENT), clock)) for _ in range(2)]
    for index, app in enumerate(apps):
        async with app.router.lifespan_context(app), client_for(app) as client:
            for _ in range(index + 2):
                await client.get(f"/spaces/{index}")
    reader = admin_manager(RedisBackend(server.url, key_prefix=prefix, **PATIENT), clock)
    try:
        async with client_for(make_app(reader)) as client:
            stats = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
    finally:
        await reader.backend.clear()
        await reader.aclose()
    assert stats["scope"] == "shared"
    assert (stats["hits"], stats["misses"], stats["stores"]) == (3, 2, 2)
    assert stats["routes"]["/spaces/{space_id}"]["hits"] == 3


async def test_clearing_the_cache_keeps_the_stats(client, manager):
    """Clearing entries is not resetting statistics (the memory backend keeps them; so must Redis)."""
    for url in ("/items", "/items", "/spaces/1"):
        await client.get(url)
    await manager.flush_stats()
    before = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
    assert (before["hits"], before["misses"]) == (1, 2)
    assert (await client.post(f"{PREFIX}/clear", headers=AUTH)).status_code == 200
    assert (await client.post(f"{PREFIX}/clear", params={"pattern": "*"}, headers=AUTH)).status_code == 200
    after = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
    assert (after["hits"], after["misses"]) == (1, 2)
    assert after["routes"] == before["routes"]


# -- metrics ---------------------------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = LABEL.match(text, position)
        assert match is not None, f"bad labels: {text!r}"
        name, value = match.group(1), match.group(2)
        assert name not in labels
        labels[name] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)
        position = match.end()
    return labels


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Families ({name: type}) and samples of a text-format 0.0.4 document; asserts its structure."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        assert line.strip() == line
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"HELP twice for {name}"
            helps.add(name)
            assert len(line.split(" ", 3)) == 4, "HELP has a text"
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"TYPE twice for {name}"
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            assert name in helps, "HELP comes before TYPE"
            types[name] = kind
        else:
            assert not line.startswith("#"), line
            match = SAMPLE.match(line)
            assert match is not None, f"bad sample line: {line!r}"
            name, labels, value = match.group(1), parse_labels(match.group(3) or ""), float(match.group(4))
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample {name} before its TYPE"
            if types[family] == "counter":
                assert name.endswith("_total")
                assert value >= 0
                assert value == int(value)
            samples.append((name, labels, value))
    return types, samples


async def test_metrics_is_valid_prometheus_text(client, backend):
    for url in ("/items", "/items", "/items?page=2", "/spaces/1", "/spaces/1", "/spaces/1"):
        await client.get(url)
    await client.get("/items", headers={"cache-control": "no-cache"})
    await client.post(f"{PREFIX}/invalidate", json={"path": "/spaces/1"}, headers=AUTH)
    response = await client.get(f"{PREFIX}/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "x-cache" not in response.headers
    types, samples = parse_prometheus(response.text)
    stats = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()

    assert types["intelligent_cache_requests_total"] == "counter"
    assert types["intelligent_cache_request_duration_seconds"] == "histogram"
    for name in ("stores", "errors", "corrupt", "invalidations", "invalidation_errors", "collapsed"):
        assert types[f"intelligent_cache_{name}_total"] == "counter"
        values = [value for sample, _, value in samples if sample == f"intelligent_cache_{name}_total"]
        assert values == [stats[name]], name

    requests = {
        (labels["route"], labels["outcome"]): value
        for name, labels, value in samples
        if name == "intelligent_cache_requests_total"
    }
    assert requests[("/items", "hit")] == 1
    assert requests[("/items", "miss")] == 2
    assert requests[("/spaces/{space_id}", "hit")] == 2
    assert sum(value for (_, outcome), value in requests.items() if outcome == "hit") == stats["hits"]
    assert sum(value for (_, outcome), value in requests.items() if outcome == "skip") == stats["skips"]
    skips = [value for name, _, value in samples if name == "intelligent_cache_skips_total"]
    assert sum(skips) == stats["skips"]

    histograms: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for name, labels, value in samples:
        if not name.startswith("intelligent_cache_request_duration_seconds_"):
            continue
        le = labels.pop("le", None)
        series = histograms.setdefault(tuple(sorted(labels.items())), {"buckets": []})
        if name.endswith("_bucket"):
            assert le is not None
            series["buckets"].append((math.inf if le == "+Inf" else float(le), value))
        else:
            assert le is None
            series[name.rsplit("_", 1)[1]] = value
    assert histograms, "requests were observed"
    bounds = [*LATENCY_BUCKETS, math.inf]
    for labels, series in histograms.items():
        assert {"route", "outcome"} == {name for name, _ in labels}
        assert [bound for bound, _ in series["buckets"]] == bounds, labels
        counts = [count for _, count in series["buckets"]]
        assert counts == sorted(counts), "buckets are cumulative"
        assert counts[-1] == series["count"], "the +Inf bucket is the count"
        assert series["sum"] >= 0
    observed = sum(series["count"] for series in histograms.values())
    assert observed == stats["hits"] + stats["misses"] + stats["skips"] + stats["stale"]

    up = [value for name, _, value in samples if name == "intelligent_cache_backend_up"]
    if backend.name == "redis":
        assert types["intelligent_cache_backend_up"] == "gauge"
        assert up == [1]
    else:
        assert up == []


async def test_metrics_escape_label_values(clock):
    manager = admin_manager(MemoryBackend(clock=clock), clock)
    app = make_app(manager)

    @app.get('/odd/"quoted"\\path')
    @cache_config
    async def odd() -> dict[str, int]:
        return {"odd": 1}

    async with client_for(app) as client:
        assert await cache_state(client, '/odd/"quoted"\\path') == "MISS"
        _, samples = parse_prometheus((await client.get(f"{PREFIX}/metrics", headers=AUTH)).text)
    routes = {labels.get("route") for name, labels, _ in samples if name == "intelligent_cache_requests_total"}
    assert '/odd/"quoted"\\path' in routes


# -- the memory budget and entry sizes (what the dashboard shows) ----------------------------------------------


async def test_the_memory_backend_reports_its_budget_in_stats_and_health(clock):
    backend = MemoryBackend(max_entries=50, max_bytes=200_000, clock=clock)
    async with client_for(make_app(admin_manager(backend, clock))) as client:
        for page in range(1, 4):
            await client.get(f"/items?page={page}")
        stats = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
        health = (await client.get(f"{PREFIX}/health", headers=AUTH)).json()
        assert (await client.post(f"{PREFIX}/clear", headers=AUTH)).status_code == 200
        emptied = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
    budget = {"entries": 3, "max_entries": 50, "bytes": stats["backend"]["bytes"], "max_bytes": 200_000}
    assert stats["backend"] == {"backend": "memory", **budget}
    assert 3 * len("GET:items:page=1") < budget["bytes"] < 200_000
    assert {name: health[name] for name in budget} == budget
    assert (emptied["backend"]["entries"], emptied["backend"]["bytes"]) == (0, 0)


@pytest.mark.redis
async def test_other_backends_have_no_budget_to_report(request, clock):
    backend = await make_backend("redis", request, clock)
    try:
        async with client_for(make_app(admin_manager(backend, clock))) as client:
            stats = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
            health = (await client.get(f"{PREFIX}/health", headers=AUTH)).json()
    finally:
        await backend.aclose()
    for document in (stats["backend"], health):
        assert not {"entries", "max_entries", "bytes", "max_bytes"} & set(document)


async def test_a_listing_with_state_gives_each_entry_size(client, manager):
    await client.get("/spaces/12345")
    await manager.service().set("report", {"rows": [1, 2, 3]}, ttl=60)
    items: dict[str, dict[str, Any]] = {}
    cursor = 0
    while True:  # every page: one of a shared Redis may hold none of this test's keys
        params = {"with_state": "true", "cursor": cursor, "limit": 1000}
        page = (await client.get(f"{PREFIX}/keys", params=params, headers=AUTH)).json()
        items.update((item["key"], item) for item in page["keys"])
        cursor = page["cursor"]
        if not cursor:
            break
    assert items["GET:spaces:12345"]["size"] == len(b'{"id":12345}')  # the body, as GET /keys/{key} says
    detail = (await client.get(key_url("GET:spaces:12345"), headers=AUTH)).json()
    assert detail["size"] == items["GET:spaces:12345"]["size"]
    assert items["report"]["size"] == (await client.get(key_url("report"), headers=AUTH)).json()["size"] > 0
    plain = (await client.get(f"{PREFIX}/keys", params={"limit": 1000}, headers=AUTH)).json()["keys"]
    assert all(set(item) == {"key", "ttl"} for item in plain)  # without with_state: unchanged


# -- health ----------------------------------------------------------------------------------------------------


async def test_health_ok(client, backend):
    response = await client.get(f"{PREFIX}/health", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["backend"] == backend.name
    assert isinstance(body["latency_ms"], float | int)
    assert body["latency_ms"] >= 0
    assert "reason" not in body
    assert body["last_error"] is None
    if backend.name == "redis":
        assert body["breaker"]["state"] == "closed"


def failing_ping_backend(kind: str, request: pytest.FixtureRequest, clock: Any) -> CacheBackend:
    async def ping(self: CacheBackend) -> None:
        raise ConnectionError("ping refused for the test")

    if kind == "memory":
        return type("PingFailsMemory", (MemoryBackend,), {"ping": ping})(clock=clock)
    from intelligent_cache.backends.redis import RedisBackend

    server = request.getfixturevalue("redis_server")
    return type("PingFailsRedis", (RedisBackend,), {"ping": ping})(server.url, key_prefix=unique_prefix())


@pytest.mark.parametrize("kind", KINDS)
async def test_health_is_503_with_a_reason_when_the_backend_fails(request, clock, kind):
    backend = failing_ping_backend(kind, request, clock)
    try:
        async with client_for(make_app(admin_manager(backend, clock))) as client:
            response = await client.get(f"{PREFIX}/health", headers=AUTH)
            assert (await client.get(f"{PREFIX}/health")).status_code == 401
    finally:
        await backend.aclose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["backend"] == kind
    assert "ping refused for the test" in body["reason"]
    assert "latency_ms" not in body


@pytest.mark.redis
async def test_health_is_503_when_redis_is_unreachable(clock):
    from intelligent_cache.backends.redis import RedisBackend

    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it once closed
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", key_prefix=unique_prefix())
    try:
        async with client_for(make_app(admin_manager(backend, clock))) as client:
            health = await client.get(f"{PREFIX}/health", headers=AUTH)
            keys = await client.get(f"{PREFIX}/keys", headers=AUTH)
            stats = await client.get(f"{PREFIX}/stats", headers=AUTH)
    finally:
        await backend.aclose()
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["reason"]
    assert health.json()["breaker"]["state"] in {"closed", "open", "half-open"}
    assert keys.status_code == 503
    assert stats.status_code == 200
    assert stats.json()["scope"] == "process"


# -- the dashboard page ----------------------------------------------------------------------------------------


def packaged_dashboard() -> str:
    return resources.files("intelligent_cache.admin").joinpath("dashboard.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("prefix", ["/api/cache", "/ops/internal/cache"])
async def test_dashboard_is_served_behind_the_auth_dependency(clock, prefix):
    app = make_app(admin_manager(MemoryBackend(clock=clock), clock, admin_prefix=prefix))
    async with client_for(app) as client:
        for url in (f"{prefix}/", f"{prefix}/dashboard"):
            page = await client.get(url, headers=AUTH)
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["cache-control"] == "no-store"
            assert "x-cache" not in page.headers
            assert page.text == packaged_dashboard()
            assert (await client.get(url)).status_code == 401
            assert (await client.get(url, headers={"X-Admin-Token": "wrong"})).status_code == 401
        assert (await client.get(f"{prefix}/dashboard/other", headers=AUTH)).status_code == 404
        assert (await client.post(f"{prefix}/dashboard", headers=AUTH)).status_code == 405


def test_dashboard_page_is_self_contained():
    html = packaged_dashboard()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert html.count("<script") == 1
    assert "<script>" in html  # inline, no src
    lowered = html.lower()
    for external in ("src=", "@import", "//cdn", "fonts.googleapis", '<link rel="stylesheet"'):
        assert external not in lowered, external
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", lowered)
    assert not re.search(r"""(href|src|action)\s*=\s*["']?(https?:)?//""", lowered)
    assert not re.search(r"""fetch\(\s*["'`]/""", html), "API calls are relative to the page's own URL"
    assert "location.pathname" in html
    assert "encodeURIComponent(key)" in html
    assert 'credentials: "same-origin"' in html
    assert "sessionStorage" in html
    assert "X-Admin-Token" in html
    for testid in (
        "token-input",
        "header-name-input",
        "health-status",
        "breaker-state",
        "backend-name",
        "kpis",
        "hit-rate-chart",
        "route-table",
        "pattern-input",
        "page-size",
        "next-page",
        "prev-page",
        "key-rows",
        "hide-invalidated",
        "key-detail",
        "clear-pattern-input",
        "invalidate-path-input",
        "clear-all-input",
        "messages",
        "memory-budget",
        "last-error",
    ):
        assert f'data-testid="{testid}"' in html, testid
    assert len(html.splitlines()) < 700  # one page, read at once


# -- admin routes never cache nor invalidate -------------------------------------------------------------------

ADMIN_CALLS = [
    ("GET", "/keys", None),
    ("GET", "/keys?pattern=GET:*&limit=5", None),
    ("GET", "/keys/absent", None),
    ("GET", "/keys/GET:api", None),
    ("DELETE", "/keys/absent", None),
    ("POST", "/clear?pattern=nothing:*", None),
    ("POST", "/invalidate", {"path": "/unrelated"}),
    ("POST", "/invalidate", {"tags": ["unrelated"]}),
    ("GET", "/stats", None),
    ("GET", "/metrics", None),
    ("GET", "/health", None),
    ("GET", "/", None),
    ("GET", "/dashboard", None),
]


async def test_admin_routes_never_carry_x_cache_nor_invalidate_user_routes(client, manager):
    for url in ("/api", "/items", "/spaces/1"):
        assert await cache_state(client, url) == "MISS"
    for _ in range(2):
        for method, path, body in ADMIN_CALLS:
            response = await client.request(method, PREFIX + path, json=body, headers=AUTH)
            assert response.status_code in (200, 404), (method, path)
            assert "x-cache" not in response.headers, (method, path)
            assert "cache-control" not in response.headers or path in ("/", "/dashboard"), (method, path)
    for url in ("/api", "/items", "/spaces/1"):
        assert await cache_state(client, url) == "HIT", url
    assert await listed(client) == {"GET:api", "GET:items", "GET:spaces:1"}  # no admin response was stored
    stats = (await client.get(f"{PREFIX}/stats", headers=AUTH)).json()
    assert set(stats["routes"]) == {"/api", "/items", "/spaces/{space_id}"}
    assert (stats["hits"], stats["misses"]) == (3, 3)


# -- authentication --------------------------------------------------------------------------------------------


def test_admin_refuses_to_mount_without_authentication(clock):
    manager = CacheManager(MemoryBackend(clock=clock), clock=clock, include_admin_routes=True)
    app = FastAPI()
    with pytest.raises(ConfigurationError, match="authentication"):
        manager.init_app(app)
    assert admin_routes(app, PREFIX) == []


async def test_unauthenticated_admin_when_explicitly_allowed_logs_a_warning(clock, caplog):
    manager = CacheManager(
        MemoryBackend(clock=clock), clock=clock, include_admin_routes=True, allow_unauthenticated_admin=True
    )
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        app = make_app(manager)
    warnings = [record for record in caplog.records if record.name == "intelligent_cache"]
    assert any("WITHOUT authentication" in record.getMessage() for record in warnings)
    assert all(record.levelno == logging.WARNING for record in warnings)
    async with client_for(app) as client:
        assert (await client.get(f"{PREFIX}/stats")).status_code == 200
        assert (await client.get(f"{PREFIX}/dashboard")).status_code == 200


def admin_routes(app: FastAPI, prefix: str) -> list[Any]:
    """The app's routes under ``prefix``, flattened (FastAPI >= 0.160 keeps included routers as one route)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: include_router copies every route into app.routes
        routes: list[Any] = [route for route in app.routes if isinstance(route, APIRoute)]
    else:
        routes = list(iter_route_contexts(app.routes))
    return [route for route in routes if (route.path or "").startswith(prefix + "/") and route.methods]


def concrete(path: str) -> str:
    return path.replace("{key:cache_key}", "GET:items")


def dependency_calls(route: Any) -> set[Callable[..., Any]]:
    calls: set[Callable[..., Any]] = set()
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is not None:
            calls.add(dependant.call)
        pending.extend(dependant.dependencies)
    return calls


EXPECTED_ADMIN_ROUTES = {
    ("GET", "/keys"),
    ("GET", "/keys/{key:cache_key}"),
    ("DELETE", "/keys/{key:cache_key}"),
    ("POST", "/clear"),
    ("POST", "/invalidate"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/health"),
    ("GET", "/"),
    ("GET", "/dashboard"),
}

AUTH_SETUPS = [
    pytest.param({"admin_auth_dependency": require_token}, AUTH, {require_token}, {401}, id="auth-dependency"),
    pytest.param(
        {"admin_auth_dependency": None, "admin_dependencies": [Depends(require_role)]},
        {"X-Role": "ops"},
        {require_role},
        {403},
        id="dependencies",
    ),
    pytest.param(
        {"admin_auth_dependency": require_token, "admin_dependencies": [Depends(require_role)]},
        {**AUTH, "X-Role": "ops"},
        {require_token, require_role},
        {401, 403},
        id="both",
    ),
]


@pytest.mark.parametrize(("options", "credentials", "required", "statuses"), AUTH_SETUPS)
@pytest.mark.parametrize("prefix", ["/api/cache", "/x"])
async def test_every_admin_route_enforces_the_auth_dependencies(
    backend, clock, options, credentials, required, statuses, prefix
):
    app = make_app(admin_manager(backend, clock, admin_prefix=prefix, **options))
    routes = admin_routes(app, prefix)
    found = {(method, route.path.removeprefix(prefix)) for route in routes for method in route.methods or ()}
    assert found == EXPECTED_ADMIN_ROUTES
    # Every credential missing, wrong, or (with two dependencies) only one of them given.
    attempts: list[dict[str, str]] = [{}, dict.fromkeys(credentials, "wrong")]
    if len(credentials) > 1:
        attempts += [{name: value} for name, value in credentials.items()]
    async with client_for(app) as client:
        assert await cache_state(client, "/items") == "MISS"
        for route in routes:
            assert required <= dependency_calls(route), route.path
            for method in route.methods or ():
                url = concrete(route.path)
                body = {"path": "/items"} if url.endswith("/invalidate") else None
                for headers in attempts:
                    denied = await client.request(method, url, json=body, headers=headers)
                    assert denied.status_code in statuses, (method, url, headers)
                    assert "x-cache" not in denied.headers
        assert await cache_state(client, "/items") == "HIT"  # nothing was cleared nor invalidated
        assert await listed(client, limit=1000, prefix=prefix, headers=credentials) == {"GET:items"}
        for route in routes:
            for method in route.methods or ():
                url = concrete(route.path)
                if method == "DELETE" or url.endswith("/clear"):
                    continue
                body = {"path": "/unrelated"} if url.endswith("/invalidate") else None
                allowed = await client.request(method, url, json=body, headers=credentials)
                assert allowed.status_code == 200, (method, url)
