"""Several app instances (processes, in production) sharing one Redis or Redis Cluster.

Each instance is its own FastAPI app with its own CacheManager and its own
backend object; they share only the key prefix on the server, as separate
worker processes would. They also share the "database" (a dict), so that a write
through one instance is data the other must see.
"""

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from intelligent_cache import CacheBackend, CacheManager, cache_config
from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend
from intelligent_cache.testing import cache_state
from tests.conftest import unique_prefix

pytestmark = pytest.mark.redis

# Every computation of a slow endpoint, by any instance: (instance, path).
SLOW_CALLS: list[tuple[str, str]] = []

KINDS = [
    pytest.param("redis", id="redis"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
]


class Deployment:
    """Backends of one kind, all in the same namespace."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.prefix = unique_prefix()
        self.request = request
        self.backends: list[CacheBackend] = []

    def backend(self) -> CacheBackend:
        backend: CacheBackend
        # Generous timeouts, as conftest.make_backend's: 0.5 s ones time out on a loaded machine.
        timeouts = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
        if self.kind == "redis":
            server = self.request.getfixturevalue("redis_server")
            backend = RedisBackend(server.url, key_prefix=self.prefix, **timeouts)
        else:
            cluster = self.request.getfixturevalue("redis_cluster")
            backend = RedisClusterBackend(startup_nodes=cluster.startup_nodes, key_prefix=self.prefix, **timeouts)
        self.backends.append(backend)
        return backend


@pytest.fixture(params=KINDS)
async def deployment(request: pytest.FixtureRequest) -> Any:
    instance = Deployment(request.param, request)
    try:
        yield instance
    finally:
        for backend in instance.backends:
            await backend.aclose()


@pytest.fixture
def db() -> dict[int, list[str]]:
    return {1: ["spoon"], 2: ["hammer"]}


@pytest.fixture(autouse=True)
def _reset_slow_calls() -> Iterator[None]:
    SLOW_CALLS.clear()
    yield
    SLOW_CALLS.clear()


class Instance:
    """One app instance: its app, manager and an HTTP client for it."""

    def __init__(self, name: str, backend: CacheBackend, db: dict[int, list[str]], **options: Any) -> None:
        self.name = name
        self.app = FastAPI()
        self.manager = CacheManager(backend, **options).init_app(self.app)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")
        self.calls: list[str] = []
        app = self.app

        @app.get("/spaces/{space_id}")
        @cache_config(ttl_seconds=60)
        async def get_space(space_id: int) -> dict[str, Any]:
            self.calls.append(f"/spaces/{space_id}")
            return {"space": space_id, "count": len(db[space_id]), "computed_by": name}

        @app.get("/spaces/{space_id}/items")
        @cache_config(ttl_seconds=60)
        async def list_items(space_id: int) -> dict[str, Any]:
            self.calls.append(f"/spaces/{space_id}/items")
            return {"space": space_id, "items": list(db[space_id]), "computed_by": name}

        @app.post("/spaces/{space_id}/items", status_code=201)
        async def add_item(space_id: int, item: str) -> dict[str, Any]:
            db[space_id].append(item)
            return {"space": space_id, "item": item}

        @app.get("/slow/{token}")
        @cache_config(ttl_seconds=60)
        async def slow(token: str) -> dict[str, Any]:
            SLOW_CALLS.append((name, f"/slow/{token}"))
            await asyncio.sleep(0.3)
            return {"token": token, "computed_by": name, "nonce": uuid.uuid4().hex}

        @app.get("/slow-vary/{token}")
        @cache_config(ttl_seconds=60)
        async def slow_vary(token: str) -> Response:
            SLOW_CALLS.append((name, f"/slow-vary/{token}"))
            await asyncio.sleep(0.3)
            body = f'{{"token": "{token}", "computed_by": "{name}", "nonce": "{uuid.uuid4().hex}"}}'
            return Response(body, media_type="application/json", headers={"vary": "accept-language"})

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.get(url, **kwargs)
        assert response.status_code == 200, response.text
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture
async def pair(deployment: Deployment, db: dict[int, list[str]]) -> Any:
    a = Instance("A", deployment.backend(), db)
    b = Instance("B", deployment.backend(), db)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_miss_on_one_instance_is_a_hit_on_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    first = await a.get("/spaces/1/items")
    assert cache_state(first) == "MISS"
    second = await b.get("/spaces/1/items")
    assert cache_state(second) == "HIT"
    assert second.json() == first.json() == {"space": 1, "items": ["spoon"], "computed_by": "A"}
    assert second.headers["etag"] == first.headers["etag"]
    assert a.calls == ["/spaces/1/items"]
    assert b.calls == []
    assert a.manager.stats.misses == 1
    assert b.manager.stats.hits == 1


async def test_a_write_through_one_instance_invalidates_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    assert cache_state(await a.get("/spaces/1/items")) == "MISS"
    assert cache_state(await a.get("/spaces/2/items")) == "MISS"
    assert cache_state(await a.get("/spaces/1")) == "MISS"
    assert cache_state(await a.get("/spaces/1/items")) == "HIT"

    written = await b.client.post("/spaces/1/items", params={"item": "fork"})
    assert written.status_code == 201
    assert b.manager.stats.invalidations == 1

    after = await a.get("/spaces/1/items")
    assert cache_state(after) == "MISS"
    assert after.json() == {"space": 1, "items": ["spoon", "fork"], "computed_by": "A"}
    # The ancestor /spaces/1 was invalidated too; the sibling subtree was not.
    parent = await a.get("/spaces/1")
    assert cache_state(parent) == "MISS"
    assert parent.json()["count"] == 2
    assert cache_state(await a.get("/spaces/2/items")) == "HIT"
    # And B now reads what A recomputed.
    from_b = await b.get("/spaces/1/items")
    assert cache_state(from_b) == "HIT"
    assert from_b.json() == after.json()


async def test_manual_invalidation_from_a_third_manager(
    deployment: Deployment, pair: tuple[Instance, Instance]
) -> None:
    a, b = pair
    for instance in (a, b):
        for url in ["/spaces/1/items", "/spaces/1", "/spaces/2/items"]:
            await instance.get(url)
            assert cache_state(await instance.get(url)) == "HIT"

    # A script or worker: its own manager and backend, no app.
    await CacheManager(deployment.backend()).service().invalidate_path("/spaces/1")

    again_b = await b.get("/spaces/1/items")
    assert cache_state(again_b) == "MISS"
    assert again_b.json()["computed_by"] == "B"
    assert cache_state(await a.get("/spaces/1")) == "MISS"
    again_a = await a.get("/spaces/1/items")
    assert cache_state(again_a) == "HIT"
    assert again_a.json() == again_b.json()
    for instance in (a, b):
        assert cache_state(await instance.get("/spaces/2/items")) == "HIT"


@pytest.mark.parametrize("path", ["/slow", "/slow-vary"], ids=["plain", "vary"])
async def test_cold_key_stampede_over_two_instances_computes_once(
    deployment: Deployment, db: dict[int, list[str]], path: str
) -> None:
    """20 concurrent requests for one cold key, 10 on each instance: in-process
    single-flight leaves one computation per instance, and the lock in Redis
    makes the second instance wait for the first one's entry."""
    a = Instance("A", deployment.backend(), db, lock_timeout=1.0)
    b = Instance("B", deployment.backend(), db, lock_timeout=1.0)
    try:
        # Warm the clients up (connections, cluster topology) on another key.
        await a.get("/spaces/1")
        await b.get("/spaces/1")
        url = f"{path}/{uuid.uuid4().hex[:8]}"
        headers = {"accept-language": "fr"}
        responses = await asyncio.gather(*((a if i % 2 else b).get(url, headers=headers) for i in range(20)))
    finally:
        await a.aclose()
        await b.aclose()
    assert len(SLOW_CALLS) == 1, f"the endpoint ran {len(SLOW_CALLS)} times: {SLOW_CALLS}"
    assert len({r.content for r in responses}) == 1
    states = sorted(cache_state(r) or "" for r in responses)
    assert states == ["HIT"] * 19 + ["MISS"]
    assert a.manager.stats.errors == b.manager.stats.errors == 0
