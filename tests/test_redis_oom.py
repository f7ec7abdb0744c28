"""Redis at ``maxmemory`` with ``noeviction``, shared by two app instances.

Redis then refuses every command that may use memory (``SET``, ``INCR``,
``HINCRBY``...) and still serves reads and deletions. Invalidation must not
depend on the refused kind: a write acknowledged through instance A must never
be followed by pre-write data from instance B. Nothing may turn into a 5xx, and
the breaker stays closed (Redis is up; valid entries are still served).

Each test owns its servers. Memory is filled with another application's keys
until Redis refuses a write, then ``maxmemory`` is pinned just below what is
used, so that the tests' own deletions cannot bring Redis back under the limit.
"""

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.exceptions
from fastapi import FastAPI

from intelligent_cache import CacheManager, cache_config
from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend
from intelligent_cache.testing import cache_state
from tests.conftest import unique_prefix
from tests.redis_servers import RedisCluster, RedisServer, require_redis_server

pytestmark = pytest.mark.redis

JUNK = b"j" * 64 * 1024
NOEVICTION = {"maxmemory": "16mb", "maxmemory-policy": "noeviction"}


def fill(client: redis.Redis) -> int:
    """Write junk keys until Redis refuses one; pin maxmemory below usage. The keys written."""
    written = 0
    while True:
        try:
            client.set(f"junk:{written}", JUNK)
        except redis.exceptions.OutOfMemoryError:
            break
        written += 1
        assert written < 10_000, "Redis never refused a write"
    pin_full(client)
    return written


def pin_full(client: Any, *, probe: bool = True) -> None:
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", max(512 * 1024, used - 256 * 1024))
    if probe:  # (a cluster node would answer MOVED for most keys)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("junk:probe", b"x")


def release(client: Any) -> None:
    client.config_set("maxmemory", 0)


class Instance:
    """One app instance (a worker process, in production) on the shared namespace."""

    def __init__(self, backend: RedisBackend | RedisClusterBackend, db: dict[int, list[str]]) -> None:
        self.backend = backend
        self.app = FastAPI()
        self.manager = CacheManager(backend).init_app(self.app)

        @self.app.get("/spaces/{space_id}/items")
        @cache_config(ttl_seconds=300)
        async def list_items(space_id: int) -> list[str]:
            return list(db[space_id])

        @self.app.post("/spaces/{space_id}/items", status_code=201)
        async def add_item(space_id: int, name: str) -> str:
            db[space_id].append(name)
            return name

        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://app")
        self.statuses: list[int] = []

    async def get(self, url: str) -> tuple[Any, str | None]:
        response = await self.client.get(url)
        self.statuses.append(response.status_code)
        assert response.status_code == 200, response.text
        return response.json(), cache_state(response)

    async def post(self, url: str, **params: str) -> int:
        response = await self.client.post(url, params=params)
        self.statuses.append(response.status_code)
        return response.status_code

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.backend.aclose()


@pytest.fixture
def full_server() -> Iterator[RedisServer]:
    require_redis_server()
    with RedisServer(config=NOEVICTION) as server:
        yield server


@pytest.fixture
async def pair(full_server: RedisServer) -> AsyncIterator[tuple[Instance, Instance, dict[int, list[str]]]]:
    db = {1: ["spoon"], 2: ["hammer"]}
    prefix = unique_prefix()
    a = Instance(RedisBackend(full_server.url, key_prefix=prefix), db)
    b = Instance(RedisBackend(full_server.url, key_prefix=prefix), db)
    try:
        yield a, b, db
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_write_through_a_is_seen_by_b_while_redis_is_full(
    full_server: RedisServer, pair: tuple[Instance, Instance, dict[int, list[str]]]
) -> None:
    a, b, _ = pair
    raw = full_server.client()
    try:
        assert await a.get("/spaces/1/items") == (["spoon"], "MISS")
        assert await b.get("/spaces/1/items") == (["spoon"], "HIT")
        assert await b.get("/spaces/2/items") == (["hammer"], "MISS")
        assert fill(raw) > 0

        # Full: valid entries are still served, by both.
        assert await b.get("/spaces/1/items") == (["spoon"], "HIT")
        assert await a.get("/spaces/2/items") == (["hammer"], "HIT")

        assert await a.post("/spaces/1/items", name="fork") == 201
        assert a.manager.stats.invalidation_errors == 0  # the write's deletions were accepted
        for _ in range(3):
            body, state = await b.get("/spaces/1/items")
            assert body == ["spoon", "fork"], f"B served pre-write data ({state}) at maxmemory"
            assert state in {"SKIP", "MISS"}
            assert (await a.get("/spaces/1/items"))[0] == ["spoon", "fork"]
        # A path the write did not touch is still a HIT: the refused lookups did not open the breaker.
        assert await b.get("/spaces/2/items") == (["hammer"], "HIT")
        for instance in (a, b):
            assert instance.backend.breaker.state == "closed"
            assert instance.backend.breaker.times_opened == 0

        # A second write, through B this time, still at maxmemory.
        assert await b.post("/spaces/1/items", name="knife") == 201
        assert (await a.get("/spaces/1/items"))[0] == ["spoon", "fork", "knife"]

        release(raw)  # memory again: the cache recovers by itself
        assert await b.get("/spaces/1/items") == (["spoon", "fork", "knife"], "MISS")
        assert await a.get("/spaces/1/items") == (["spoon", "fork", "knife"], "HIT")
    finally:
        raw.close()
    assert [s for s in a.statuses + b.statuses if s >= 500] == []
    assert a.manager.stats.invalidation_errors == b.manager.stats.invalidation_errors == 0
    assert a.manager.stats.invalidations == b.manager.stats.invalidations == 1


async def test_a_refused_store_never_puts_the_response_in_logs_or_health(
    full_server: RedisServer,
    pair: tuple[Instance, Instance, dict[int, list[str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """redis-py quotes a failed pipeline command with its arguments: the entry, a response body."""
    a, _, db = pair
    db[1] = ["alice-private-note-7f3a"]
    # The key secret and the path's counters are in Redis; only the new entry needs memory.
    assert await a.get("/spaces/1/items?page=1") == (["alice-private-note-7f3a"], "MISS")
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    fill(full_server.client())
    assert await a.get("/spaces/1/items") == (["alice-private-note-7f3a"], "SKIP")
    assert a.manager.io.last_error is not None
    assert "OutOfMemoryError" in a.manager.io.last_error
    shown = [a.manager.io.last_error, *(record.getMessage() for record in caplog.records)]
    # Not one byte of the entry (it starts with the stored response's headers).
    assert not [text for text in shown if "alice-private-note" in text or "content-length" in text], shown


async def test_backend_calls_at_maxmemory(full_server: RedisServer) -> None:
    """What each backend call does when Redis refuses to use more memory."""
    backend = RedisBackend(full_server.url, key_prefix=unique_prefix(), failure_threshold=2)
    raw = full_server.client()
    counters = ["~g:s:items", "~g:n:items"]
    try:
        await backend.put("GET:items", b"entry", 300, counters)
        _, snapshot = await backend.fetch("GET:items", counters)
        secret = await backend.secret()
        fill(raw)

        assert await backend.fetch("GET:items", counters) == (b"entry", snapshot)  # reads are served
        assert await backend.generations(counters) == snapshot
        assert await backend.secret() == secret
        twin = RedisBackend(full_server.url, key_prefix=backend.key_prefix)
        try:
            assert await twin.secret() == secret  # a process starting now reads the existing secret
        finally:
            await twin.aclose()

        await backend.bump(counters[:1])  # deletions are accepted
        assert await backend.generations(counters) == [None, snapshot[1]]
        for _ in range(5):  # recreating the counter is refused: the lookup fails, the request runs uncached
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                await backend.fetch("GET:items", counters)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            await backend.put("GET:other", b"entry", 300, counters)
        assert await backend.delete("GET:items") is True
        assert backend.breaker.state == "closed"
        assert backend.breaker.failures == 0

        release(raw)
        _, after = await backend.fetch("GET:items", counters)
        assert after[0] != snapshot[0]
        assert after[1] == snapshot[1]
    finally:
        raw.close()
        await backend.aclose()


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_write_through_a_is_seen_by_b_while_every_primary_is_full() -> None:
    require_redis_server(cli=True)
    db = {1: ["spoon"], 2: ["hammer"]}
    with RedisCluster(primaries=3, config={"maxmemory-policy": "noeviction"}) as cluster:
        prefix = unique_prefix()
        a = Instance(RedisClusterBackend(startup_nodes=cluster.startup_nodes, key_prefix=prefix), db)
        b = Instance(RedisClusterBackend(startup_nodes=cluster.startup_nodes, key_prefix=prefix), db)
        nodes = [node.client() for node in cluster.nodes]
        try:
            assert await a.get("/spaces/1/items") == (["spoon"], "MISS")
            assert await b.get("/spaces/1/items") == (["spoon"], "HIT")
            for node in nodes:
                # An empty node uses ~1-2 MB: pinning below that is "full" without filling.
                pin_full(node, probe=False)
            router = cluster.client()
            try:
                for slot_tag in ("spaces", "items", "other"):
                    with pytest.raises(redis.exceptions.OutOfMemoryError):
                        router.set(f"junk:{{{slot_tag}}}", b"x")
            finally:
                router.close()
            assert await b.get("/spaces/1/items") == (["spoon"], "HIT")
            assert await a.post("/spaces/1/items", name="fork") == 201
            body, state = await b.get("/spaces/1/items")
            assert body == ["spoon", "fork"], f"B served pre-write data ({state}) at maxmemory"
            assert b.backend.breaker.state == "closed"
        finally:
            for node in nodes:
                release(node)
                node.close()
            await a.aclose()
            await b.aclose()
    assert [s for s in a.statuses + b.statuses if s >= 500] == []
    assert a.manager.stats.invalidation_errors == 0
