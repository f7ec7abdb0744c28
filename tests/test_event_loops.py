"""A Redis backend on more than one event loop: Starlette's ``TestClient`` used without ``with``.

FastAPI's docs write ``client = TestClient(app)`` at module level and call it
directly: every request then runs on a new event loop, closed afterwards.
redis-py's pooled connections belong to the loop that opened them, so the
backend opens a client per loop and closes each loop's connections when that
loop shuts down: no ``Event loop is closed``, no SKIP, no leaked sockets.
"""

import gc
import logging

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from intelligent_cache import CacheManager, NearCache, RedisBackend, RedisClusterBackend, cache_config
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis


def make_app(backend: object) -> tuple[FastAPI, dict[str, int]]:
    app = FastAPI()
    CacheManager(backend).init_app(app)  # type: ignore[arg-type]
    data = {"version": 1}

    @app.get("/items/{item_id}")
    @cache_config(ttl_seconds=60)
    async def read(item_id: int) -> dict[str, int]:
        return {"item": item_id, "version": data["version"]}

    @app.put("/items/{item_id}")
    async def write(item_id: int) -> dict[str, int]:
        data["version"] += 1
        return {"item": item_id, "version": data["version"]}

    return app, data


def drive(client: TestClient) -> list[tuple[str | None, int]]:
    """Read, read, write, read, read: each call on a loop of its own."""
    seen = []
    for method in ("get", "get", "put", "get", "get"):
        response = getattr(client, method)("/items/1")
        assert response.status_code == 200
        if method == "get":
            seen.append((response.headers.get("x-cache"), response.json()["version"]))
    return seen


def connected_clients(url: str) -> int:
    with redis.Redis.from_url(url) as admin:
        return int(admin.info("clients")["connected_clients"])


@pytest.mark.parametrize("near", [False, True], ids=["plain", "near-cache"])
def test_test_client_without_with_on_redis(
    redis_server: RedisServer, near: bool, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisBackend(
        redis_server.url, key_prefix=unique_prefix(), near_cache=NearCache() if near else None, **PATIENT
    )
    app, _ = make_app(backend)
    client = TestClient(app)  # no `with`: no lifespan, a new event loop per request
    before = connected_clients(redis_server.url)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        seen = drive(client)
        seen += drive(client)
    # Write-through invalidation still holds across loops: the read after a write is fresh.
    assert seen == [("MISS", 1), ("HIT", 1), ("MISS", 2), ("HIT", 2), ("HIT", 2), ("HIT", 2), ("MISS", 3), ("HIT", 3)]
    assert [r.getMessage() for r in caplog.records] == []  # no "Event loop is closed", no breaker
    # Each loop's connections closed with it: ten loops leave no sockets behind.
    assert connected_clients(redis_server.url) <= before + 1


def test_test_client_without_with_on_cluster(redis_cluster: RedisCluster, caplog: pytest.LogCaptureFixture) -> None:
    backend = RedisClusterBackend(startup_nodes=redis_cluster.startup_nodes, key_prefix=unique_prefix(), **PATIENT)
    app, _ = make_app(backend)
    client = TestClient(app)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        seen = drive(client)
    assert seen == [("MISS", 1), ("HIT", 1), ("MISS", 2), ("HIT", 2)]
    assert [r.getMessage() for r in caplog.records] == []


def test_with_blocks_one_after_another(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    # Each `with TestClient(app)` runs the lifespan on a loop of its own: start, close, start again.
    backend = RedisBackend(redis_server.url, key_prefix=unique_prefix(), **PATIENT)
    app, _ = make_app(backend)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        for expected in ("MISS", "HIT"):
            with TestClient(app) as client:
                assert client.get("/items/1").headers["x-cache"] == expected
                assert client.get("/items/1").headers["x-cache"] == "HIT"
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_passed_client_on_a_new_loop_is_named_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A client the user built is theirs: the backend cannot rebuild it, so it says so, once.
    import redis.asyncio as aioredis

    backend = RedisBackend(client=aioredis.Redis.from_url(redis_server.url), key_prefix=unique_prefix())
    app, _ = make_app(backend)
    client = TestClient(app)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        for _ in range(3):
            assert client.get("/items/1").status_code == 200
    named = [r for r in caplog.records if "passed to RedisBackend is used on a new event loop" in r.getMessage()]
    assert len(named) == 1
    # The user's client kept connections of loops that are gone: collect them here, not in a later test.
    del client, app, backend
    gc.collect()
