"""Many requests at once on one event loop (httpx.AsyncClient over ASGITransport)."""

import asyncio
import random
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI, Request

from intelligent_cache import CacheManager, cache_config


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def yield_a_few(rng: random.Random) -> None:
    for _ in range(rng.randrange(4)):
        await asyncio.sleep(0)


def read_app(manager: CacheManager, calls: Counter[str]) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)
    rng = random.Random(7)

    @app.middleware("http")
    async def identify(request: Request, call_next):
        user = request.headers.get("x-user")
        if user is not None:
            request.state.user_id = user
        return await call_next(request)

    @app.get("/items")
    @cache_config(ttl_seconds=600)
    async def list_items(i: int = 0):
        calls["items"] += 1
        await yield_a_few(rng)
        return {"i": i, "items": [f"item-{i}-{n}" for n in range(20)]}

    @app.get("/sync-items")
    @cache_config(ttl_seconds=600)
    def list_items_sync(i: int = 0):
        calls["sync"] += 1
        return {"i": i}

    @app.get("/me")
    @cache_config(vary_by=["user_id"])
    async def me(request: Request):
        calls["me"] += 1
        await yield_a_few(rng)
        return {"user": request.state.user_id}

    return app


async def test_200_simultaneous_gets_on_one_key(manager):
    calls: Counter[str] = Counter()
    app = read_app(manager, calls)
    expected = {"i": 3, "items": [f"item-3-{n}" for n in range(20)]}
    async with client_for(app) as client:
        responses = await asyncio.gather(*(client.get("/items?i=3") for _ in range(200)))
        assert [r.status_code for r in responses] == [200] * 200
        assert all(r.json() == expected for r in responses)
        assert {r.headers["x-cache"] for r in responses} <= {"MISS", "HIT", "SKIP"}
        assert 1 <= calls["items"] <= 200
        after = await client.get("/items?i=3")
        assert after.headers["x-cache"] == "HIT"
        assert after.json() == expected
    stats = manager.stats
    assert stats.hits + stats.misses + stats.skips == 201


async def test_200_simultaneous_gets_on_different_keys(manager):
    calls: Counter[str] = Counter()
    app = read_app(manager, calls)
    async with client_for(app) as client:
        responses = await asyncio.gather(*(client.get(f"/items?i={i}") for i in range(200)))
        for i, response in enumerate(responses):
            assert response.status_code == 200
            assert response.json()["i"] == i
            assert response.json()["items"][0] == f"item-{i}-0"
            assert response.headers["x-cache"] == "MISS"
        assert calls["items"] == 200
        again = await asyncio.gather(*(client.get(f"/items?i={i}") for i in range(200)))
        assert [r.json()["i"] for r in again] == list(range(200))
        assert {r.headers["x-cache"] for r in again} == {"HIT"}
    assert len(await manager.service().list_keys()) == 200


async def test_200_simultaneous_gets_on_a_few_keys_including_sync_endpoints(manager):
    calls: Counter[str] = Counter()
    app = read_app(manager, calls)
    urls = [f"/items?i={n % 7}" if n % 2 else f"/sync-items?i={n % 5}" for n in range(200)]
    async with client_for(app) as client:
        responses = await asyncio.gather(*(client.get(url) for url in urls))
    for url, response in zip(urls, responses, strict=True):
        assert response.status_code == 200
        assert response.json()["i"] == int(url.rsplit("=", 1)[1])


async def test_simultaneous_users_never_receive_each_others_entries(manager):
    calls: Counter[str] = Counter()
    app = read_app(manager, calls)
    users = [f"user-{n % 10}" for n in range(200)]
    async with client_for(app) as client:
        for _ in range(2):
            responses = await asyncio.gather(*(client.get("/me", headers={"X-User": user}) for user in users))
            for user, response in zip(users, responses, strict=True):
                assert response.status_code == 200
                assert response.json() == {"user": user}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_reads_never_return_data_older_than_a_completed_write(manager, seed):
    rng = random.Random(seed)
    app = FastAPI()
    manager.init_app(app)
    state = {"value": 0}

    @app.get("/counter")
    @cache_config(ttl_seconds=3600)
    async def read_counter():
        value = state["value"]
        await yield_a_few(rng)  # the value may change while this response is being built
        return {"value": value}

    @app.post("/counter")
    async def increment():
        await yield_a_few(rng)
        state["value"] += 1
        value = state["value"]
        await yield_a_few(rng)
        return {"value": value}

    completed = {"value": 0}  # the highest value whose write response has been received
    violations: list[tuple[int, int]] = []
    hits = Counter[str]()

    async with client_for(app) as client:

        async def writer() -> None:
            for _ in range(10):
                response = await client.post("/counter")
                assert response.status_code == 200
                completed["value"] = max(completed["value"], response.json()["value"])
                await yield_a_few(rng)

        async def reader() -> None:
            for _ in range(20):
                floor = completed["value"]
                response = await client.get("/counter")
                assert response.status_code == 200
                hits[response.headers["x-cache"]] += 1
                if response.json()["value"] < floor:
                    violations.append((response.json()["value"], floor))
                await yield_a_few(rng)

        await asyncio.gather(*(writer() for _ in range(10)), *(reader() for _ in range(40)))

        assert violations == []
        assert state["value"] == completed["value"] == 100
        final = await client.get("/counter")
        assert final.json() == {"value": 100}
        assert (await client.get("/counter")).headers["x-cache"] == "HIT"
    assert hits["HIT"] > 0  # the cache was actually used while writes went on


async def test_writes_below_a_path_invalidate_concurrent_reads_of_its_ancestors(manager):
    rng = random.Random(11)
    app = FastAPI()
    manager.init_app(app)
    items: dict[int, int] = {1: 0, 2: 0}

    @app.get("/spaces")
    @cache_config(ttl_seconds=3600)
    async def list_spaces():
        total = sum(items.values())
        await yield_a_few(rng)
        return {"total": total}

    @app.get("/spaces/{space_id}")
    @cache_config(ttl_seconds=3600)
    async def get_space(space_id: int):
        count = items[space_id]
        await yield_a_few(rng)
        return {"count": count}

    @app.post("/spaces/{space_id}/items")
    async def add_item(space_id: int):
        await yield_a_few(rng)
        items[space_id] += 1
        return {"count": items[space_id], "total": sum(items.values())}

    floors = {"total": 0, 1: 0, 2: 0}
    violations: list[str] = []

    async with client_for(app) as client:

        async def writer(space_id: int) -> None:
            for _ in range(15):
                body = (await client.post(f"/spaces/{space_id}/items")).json()
                floors[space_id] = max(floors[space_id], body["count"])
                floors["total"] = max(floors["total"], body["total"])

        async def reader(space_id: int) -> None:
            for _ in range(25):
                total_floor, count_floor = floors["total"], floors[space_id]
                total, count = await asyncio.gather(client.get("/spaces"), client.get(f"/spaces/{space_id}"))
                if total.json()["total"] < total_floor:
                    violations.append(f"/spaces {total.json()} < {total_floor}")
                if count.json()["count"] < count_floor:
                    violations.append(f"/spaces/{space_id} {count.json()} < {count_floor}")
                await yield_a_few(rng)

        await asyncio.gather(*(writer(s) for s in (1, 2, 1, 2)), *(reader(s) for s in (1, 2) * 10))
        assert violations == []
        assert (await client.get("/spaces")).json() == {"total": 60}
        assert (await client.get("/spaces/1")).json() == {"count": 30}
