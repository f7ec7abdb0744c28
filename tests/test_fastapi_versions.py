"""Behaviour that depends on how FastAPI includes routers, which changed in 0.137.

FastAPI <= 0.136 copies every route into a new instance (prefixed path, merged dependencies) on
``include_router``; 0.137+ keeps the original route and carries a per-inclusion context. Every test here
must pass on both (run with /work/venv-old, FastAPI 0.136.3, and /work/venv-new, FastAPI 0.165).
"""

import asyncio
from collections import Counter
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from intelligent_cache import CachedResponse, CachedRoute, ConfigurationError, cache_config


def spaces_router(calls: Counter[str]) -> APIRouter:
    router = APIRouter(route_class=CachedRoute)

    @router.get("/spaces/{space_id}")
    @cache_config
    async def get_space(space_id: int):
        calls["endpoint"] += 1
        return {"id": space_id}

    @router.get("/spaces/{space_id}/items")
    @cache_config
    def list_items(space_id: int, page: int = 1):
        calls["items"] += 1
        return {"space": space_id, "page": page}

    @router.post("/spaces/{space_id}/items")
    async def add_item(space_id: int):
        calls["write"] += 1
        return {"added": space_id}

    return router


def counting(calls: Counter[str], name: str):
    def dependency() -> None:
        calls[name] += 1

    return dependency


def test_include_router_with_prefix_and_router_dependency(manager):
    calls: Counter[str] = Counter()
    app = FastAPI()
    manager.init_app(app)
    app.include_router(spaces_router(calls), prefix="/v1", dependencies=[Depends(counting(calls, "dependency"))])
    client = TestClient(app)

    miss = client.get("/v1/spaces/3")
    assert miss.status_code == 200
    assert miss.json() == {"id": 3}
    assert miss.headers["x-cache"] == "MISS"
    assert calls["dependency"] == 1  # the router-level dependency runs on a MISS
    assert calls["endpoint"] == 1

    hit = client.get("/v1/spaces/3")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content
    assert calls["endpoint"] == 1
    # On a HIT the route's dependencies (router-level ones included) run again before the stored response is
    # replayed, on 0.136 and 0.165 alike: the counter moves. (The README's "What a HIT skips" section still
    # says dependencies do not run on a HIT; the code changed in 645f1a0, see skip_dependencies_on_hit.)
    assert calls["dependency"] == 2

    assert client.get("/spaces/3").status_code == 404  # the route only exists under its prefix
    assert sorted(asyncio.run(manager.service().list_keys())) == ["GET:v1:spaces:3"]


def test_router_dependency_rejecting_a_request_protects_the_cached_entry(manager):
    calls: Counter[str] = Counter()

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        calls["auth"] += 1
        if x_api_key not in ("k1", "k2"):
            raise HTTPException(status_code=401, detail="bad key")

    app = FastAPI()
    manager.init_app(app)
    app.include_router(spaces_router(calls), prefix="/v1", dependencies=[Depends(require_key)])
    client = TestClient(app)

    assert client.get("/v1/spaces/1").status_code == 401
    assert calls["endpoint"] == 0
    assert asyncio.run(manager.service().list_keys()) == []  # a rejected request stores nothing

    assert client.get("/v1/spaces/1", headers={"X-API-Key": "k1"}).json() == {"id": 1}
    assert client.get("/v1/spaces/1", headers={"X-API-Key": "k1"}).headers["x-cache"] == "HIT"
    # With the entry warm, a caller the dependency rejects still gets its 401 and not the cached body.
    for headers in ({}, {"X-API-Key": "wrong"}):
        rejected = client.get("/v1/spaces/1", headers=headers)
        assert rejected.status_code == 401
        assert b'"id"' not in rejected.content
    assert calls["endpoint"] == 1


def test_skip_dependencies_on_hit_opt_out(manager):
    calls: Counter[str] = Counter()
    router = APIRouter(route_class=CachedRoute)

    @router.get("/public/{name}")
    @cache_config(skip_dependencies_on_hit=True)
    async def public(name: str):
        calls["endpoint"] += 1
        return {"name": name}

    app = FastAPI()
    manager.init_app(app)
    app.include_router(router, prefix="/v1", dependencies=[Depends(counting(calls, "dependency"))])
    client = TestClient(app)
    assert client.get("/v1/public/a").headers["x-cache"] == "MISS"
    assert client.get("/v1/public/a").headers["x-cache"] == "HIT"
    assert calls == Counter({"endpoint": 1, "dependency": 1})


def test_router_included_twice_keeps_entries_and_dependencies_apart(manager):
    calls: Counter[str] = Counter()
    router = spaces_router(calls)
    app = FastAPI()
    manager.init_app(app)
    app.include_router(router, prefix="/v1", dependencies=[Depends(counting(calls, "v1-dependency"))])
    app.include_router(router, prefix="/v2", dependencies=[Depends(counting(calls, "v2-dependency"))])
    client = TestClient(app)

    assert client.get("/v1/spaces/1").headers["x-cache"] == "MISS"
    assert (calls["v1-dependency"], calls["v2-dependency"]) == (1, 0)
    assert client.get("/v2/spaces/1").headers["x-cache"] == "MISS"
    assert (calls["v1-dependency"], calls["v2-dependency"]) == (1, 1)
    assert calls["endpoint"] == 2

    assert client.get("/v1/spaces/1").headers["x-cache"] == "HIT"
    assert client.get("/v2/spaces/1").headers["x-cache"] == "HIT"
    # Each inclusion runs its own dependency only, never the other one's.
    assert calls["v1-dependency"] == calls["v2-dependency"]
    assert calls["endpoint"] == 2
    assert sorted(asyncio.run(manager.service().list_keys())) == ["GET:v1:spaces:1", "GET:v2:spaces:1"]


def test_per_route_stats_use_the_full_template(manager):
    calls: Counter[str] = Counter()
    router = spaces_router(calls)
    app = FastAPI()
    manager.init_app(app)
    app.include_router(router, prefix="/v1")
    app.include_router(router, prefix="/v2")
    client = TestClient(app)

    client.get("/v1/spaces/1")
    client.get("/v1/spaces/1")
    client.get("/v1/spaces/2")
    client.get("/v2/spaces/1")
    client.get("/v2/spaces/1/items?page=2")

    routes = manager.stats.snapshot()["routes"]
    assert routes["/v1/spaces/{space_id}"] == {**routes["/v1/spaces/{space_id}"], "hits": 1, "misses": 2}
    assert routes["/v2/spaces/{space_id}"] == {**routes["/v2/spaces/{space_id}"], "hits": 0, "misses": 1}
    assert routes["/v2/spaces/{space_id}/items"]["misses"] == 1
    assert set(routes) == {"/v1/spaces/{space_id}", "/v2/spaces/{space_id}", "/v2/spaces/{space_id}/items"}


def test_stored_entries_record_the_full_template(manager):
    calls: Counter[str] = Counter()
    app = FastAPI()
    manager.init_app(app)
    app.include_router(spaces_router(calls), prefix="/v1")
    TestClient(app).get("/v1/spaces/9/items?page=3")
    entry = asyncio.run(manager.service().get("GET:v1:spaces:9:items:page=3"))
    assert isinstance(entry, CachedResponse)
    assert entry.route == "/v1/spaces/{space_id}/items"
    assert entry.path == "/v1/spaces/9/items"


def test_nested_routers(manager):
    calls: Counter[str] = Counter()
    parent = APIRouter(prefix="/api")
    parent.include_router(spaces_router(calls), prefix="/v1", dependencies=[Depends(counting(calls, "inner"))])
    app = FastAPI()
    manager.init_app(app)
    app.include_router(parent, dependencies=[Depends(counting(calls, "outer"))])
    client = TestClient(app)

    assert client.get("/api/v1/spaces/5").json() == {"id": 5}
    assert client.get("/api/v1/spaces/5").headers["x-cache"] == "HIT"
    assert calls["endpoint"] == 1
    # Both levels of include-time dependencies ran, once per request (MISS, then HIT).
    assert calls["inner"] == calls["outer"] == 2
    assert "/api/v1/spaces/{space_id}" in manager.stats.snapshot()["routes"]
    assert asyncio.run(manager.service().list_keys()) == ["GET:api:v1:spaces:5"]


def test_writes_through_an_included_router_invalidate_by_full_path(manager):
    calls: Counter[str] = Counter()
    router = spaces_router(calls)
    app = FastAPI()
    manager.init_app(app)
    app.include_router(router, prefix="/v1")
    app.include_router(router, prefix="/v2")
    client = TestClient(app)
    urls = ["/v1/spaces/1", "/v1/spaces/1/items?page=2", "/v1/spaces/2", "/v2/spaces/1", "/v2/spaces/1/items?page=2"]
    for url in urls:
        client.get(url)

    assert client.post("/v1/spaces/1/items").status_code == 200
    states = {url: client.get(url).headers["x-cache"] for url in urls}
    assert states == {
        "/v1/spaces/1": "MISS",
        "/v1/spaces/1/items?page=2": "MISS",
        "/v1/spaces/2": "HIT",
        "/v2/spaces/1": "HIT",
        "/v2/spaces/1/items?page=2": "HIT",
    }


def test_head_through_an_included_router(manager):
    calls: Counter[str] = Counter()
    app = FastAPI()
    manager.init_app(app)
    app.include_router(spaces_router(calls), prefix="/v1")
    client = TestClient(app)
    head = client.head("/v1/spaces/4")
    assert head.status_code == 200
    assert head.content == b""
    get = client.get("/v1/spaces/4")
    assert get.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == str(len(get.content))
    assert calls["endpoint"] == 1


def test_plain_router_included_into_a_cached_app_refuses_to_serve(manager):
    # include_router never applies the parent's route class: a plain APIRouter keeps
    # APIRoute, which the cache cannot see. Never silently uncached.
    calls: Counter[str] = Counter()
    router = APIRouter()

    @router.get("/plain")
    @cache_config
    async def plain():
        calls["endpoint"] += 1
        return {}

    app = FastAPI()
    manager.init_app(app)
    app.include_router(router, prefix="/v1")
    with pytest.raises(ConfigurationError, match=r"GET /v1/plain .*route_class=CachedRoute"):
        TestClient(app).get("/v1/plain")
    with pytest.raises(ConfigurationError, match="/v1/plain"), TestClient(app):
        pass
    assert calls["endpoint"] == 0


async def test_included_routes_through_httpx(manager):
    calls: Counter[str] = Counter()
    app = FastAPI()
    manager.init_app(app)
    app.include_router(spaces_router(calls), prefix="/v1", dependencies=[Depends(counting(calls, "dependency"))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        responses = await asyncio.gather(*(client.get(f"/v1/spaces/{n % 3}") for n in range(30)))
    assert all(r.json() == {"id": n % 3} for n, r in enumerate(responses))
    assert 1 <= calls["endpoint"] <= 30
    # The router-level dependency runs for every request, computed or replayed.
    assert calls["dependency"] == 30


@pytest.mark.parametrize("prefix", ["/v1", "/deep/er/prefix"])
def test_prefix_segments_are_part_of_the_key(manager, prefix):
    calls: Counter[str] = Counter()
    app = FastAPI()
    manager.init_app(app)
    app.include_router(spaces_router(calls), prefix=prefix)
    TestClient(app).get(f"{prefix}/spaces/1")
    expected = "GET:" + ":".join(prefix.strip("/").split("/")) + ":spaces:1"
    assert asyncio.run(manager.service().list_keys()) == [expected]
