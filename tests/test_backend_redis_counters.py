"""How invalidation counters, the stats hash and the key secret live in Redis and Redis Cluster.

Counters created by a lookup are provisional (``provisional_ttl``), a store
extends the counters of its entry to the entry's lifetime, a bump deletes them.
Garbage under any of the namespace's keys is repaired instead of disabling the
cache. Checked on the physical keys with raw clients of the private servers.
"""

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from intelligent_cache import CacheManager, ConfigurationError, cache_config
from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend
from intelligent_cache.testing import cache_state
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import RedisServer
from tests.test_redis_backend import KINDS, Target

pytestmark = pytest.mark.redis

COUNTERS = ["~g:s:spaces", "~g:s:spaces:1", "~g:s:spaces:1:items", "~g:n:spaces:1:items", "~g:t:kitchen"]
# The namespace's own keys: one each, whatever the traffic.
FIXED = ("~k:secret", "~s:stats")


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    instance = Target(request.param, request)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
async def backend(target: Target) -> Any:
    instance = target.backend(unique_prefix(), provisional_ttl=30)
    try:
        yield instance
    finally:
        await instance.aclose()


@pytest.fixture
def raw(target: Target) -> Iterator[Any]:
    client = target.raw()
    try:
        yield client
    finally:
        client.close()


def physical(backend: RedisBackend | RedisClusterBackend, name: str) -> str:
    return backend._physical(name)


# -- provisional counters, extended by put, deleted by bump ------------------------------------------------------


async def test_counters_created_by_a_lookup_are_provisional(backend: Any, raw: Any) -> None:
    assert backend.provisional_ttl == 30
    await backend.fetch("GET:spaces:1:items", COUNTERS)
    for name in COUNTERS:
        assert 25_000 < raw.pttl(physical(backend, name)) <= 30_000, name


async def test_put_keeps_the_counters_at_least_as_long_as_the_entry(backend: Any, raw: Any) -> None:
    await backend.fetch("GET:spaces:1:items", COUNTERS)
    await backend.put("GET:spaces:1:items", b"entry", 600, COUNTERS)
    assert 590_000 < raw.pttl(physical(backend, "GET:spaces:1:items")) <= 600_000
    entry = raw.pexpiretime(physical(backend, "GET:spaces:1:items"))  # the deadline, in ms since the epoch
    for name in COUNTERS:
        assert raw.pexpiretime(physical(backend, name)) >= entry, name
    # A shorter entry never shortens them (another entry needs them that long).
    await backend.put("GET:spaces:1:items:page=2", b"short", 5, COUNTERS)
    for name in COUNTERS:
        assert raw.pttl(physical(backend, name)) > 590_000, name
    # And a plain set (no counters named) leaves them as they are.
    await backend.set("GET:spaces:1:items", b"entry", 900)
    assert raw.pttl(physical(backend, COUNTERS[0])) <= 600_000


async def test_generation_ttl_caps_what_a_put_extends(target: Target, raw: Any) -> None:
    backend = target.backend(unique_prefix(), generation_ttl=100)
    try:
        assert backend.provisional_ttl == 60
        await backend.fetch("GET:spaces:1:items", COUNTERS)
        await backend.put("GET:spaces:1:items", b"entry", 10_000, COUNTERS)
        assert 9_990_000 < raw.pttl(physical(backend, "GET:spaces:1:items")) <= 10_000_000
        for name in COUNTERS:
            assert 90_000 < raw.pttl(physical(backend, name)) <= 100_000, name
    finally:
        await backend.aclose()


async def test_provisional_ttl_never_exceeds_generation_ttl(target: Target, raw: Any) -> None:
    backend = target.backend(unique_prefix(), generation_ttl=1)
    try:
        assert backend.provisional_ttl == 1
        await backend.fetch("GET:items", ["~g:s:items"])
        assert 0 < raw.pttl(physical(backend, "~g:s:items")) <= 1000
    finally:
        await backend.aclose()


@pytest.mark.parametrize("value", [0, 0.5, -1, math.nan, math.inf, True, "60", None])
def test_provisional_ttl_is_validated(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="provisional_ttl"):
        RedisBackend("redis://127.0.0.1:1", key_prefix="p:", provisional_ttl=value)
    with pytest.raises(ConfigurationError, match="provisional_ttl"):
        RedisClusterBackend("redis://127.0.0.1:1", key_prefix="p:", provisional_ttl=value)


async def test_bump_deletes_the_counters(backend: Any, raw: Any) -> None:
    _, before = await backend.fetch("GET:spaces:1:items", COUNTERS)
    await backend.bump(["~g:s:spaces:1:items", "~g:t:kitchen", "~g:n:never-created"])
    present = {name: bool(raw.exists(physical(backend, name))) for name in COUNTERS}
    assert present == {
        "~g:s:spaces": True,
        "~g:s:spaces:1": True,
        "~g:s:spaces:1:items": False,
        "~g:n:spaces:1:items": True,
        "~g:t:kitchen": False,
    }
    assert not raw.exists(physical(backend, "~g:n:never-created"))  # a bump creates nothing
    _, after = await backend.fetch("GET:spaces:1:items", COUNTERS)
    assert [a == b for a, b in zip(after, before, strict=True)] == [True, True, False, True, False]


@pytest.mark.parametrize("lost_by", ["expiry", "bump"])
async def test_a_counter_lost_between_lookup_and_put_is_not_revived(backend: Any, raw: Any, lost_by: str) -> None:
    """The lookup's snapshot is taken, the counter goes (expiry of a provisional
    counter, a write's bump), then the computed entry is stored: the put must not
    bring the counter back, and its next value must differ from the snapshot."""
    _, snapshot = await backend.fetch("GET:spaces:1:items", COUNTERS)
    name = "~g:s:spaces:1:items"
    if lost_by == "expiry":
        assert raw.delete(physical(backend, name)) == 1  # what expiry does, without waiting for it
    else:
        await backend.bump([name])
    await backend.put("GET:spaces:1:items", b"computed before", 600, COUNTERS)
    assert not raw.exists(physical(backend, name))
    assert await backend.generations(COUNTERS) == [*snapshot[:2], None, *snapshot[3:]]
    raw_value, current = await backend.fetch("GET:spaces:1:items", COUNTERS)
    assert raw_value == b"computed before"
    assert current[2] != snapshot[2]
    assert current != snapshot  # so the stored entry never matches: a miss


async def test_generations_creates_nothing(backend: Any, target: Target) -> None:
    assert await backend.generations(COUNTERS) == [None] * len(COUNTERS)
    assert target.physical_keys(backend.key_prefix) == set()
    _, values = await backend.fetch("GET:spaces:1:items", COUNTERS)
    # Path counters share a slot, the tag counter has its own: read across slots.
    assert await backend.generations(COUNTERS) == values


# -- garbage under the namespace's keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", ["string", "hash"])
async def test_a_garbage_counter_is_repaired_by_a_lookup(backend: Any, raw: Any, garbage: str) -> None:
    name = physical(backend, "~g:s:spaces:1:items")
    if garbage == "string":
        raw.set(name, "not-a-number")
    else:
        raw.hset(name, mapping={"not": "a counter"})
    assert await backend.generations(COUNTERS) == [None] * len(COUNTERS)  # unreadable: unknown
    _, values = await backend.fetch("GET:spaces:1:items", COUNTERS)
    assert raw.type(name) == b"string"
    assert int(raw.get(name)) == values[2]
    assert 0 < raw.pttl(name) <= 30_000
    assert (await backend.fetch("GET:spaces:1:items", COUNTERS))[1] == values
    assert backend.breaker.failures == 0


async def test_a_garbage_counter_does_not_fail_a_bump(backend: Any, raw: Any) -> None:
    raw.set(physical(backend, "~g:s:spaces:1:items"), "not-a-number")
    raw.hset(physical(backend, "~g:t:kitchen"), mapping={"x": "y"})
    await backend.bump(["~g:s:spaces:1:items", "~g:t:kitchen"])
    assert not raw.exists(physical(backend, "~g:s:spaces:1:items"))
    assert not raw.exists(physical(backend, "~g:t:kitchen"))


async def test_a_garbage_counter_and_one_write_do_not_disable_the_cache(redis_server: RedisServer) -> None:
    """Reproduction: a counter set to garbage, then one write. The write's bump used to
    INCR the garbage, fail, be kept for replay, and block every later lookup of the process."""
    prefix = unique_prefix()
    backend = RedisBackend(redis_server.url, key_prefix=prefix, **PATIENT)
    app = FastAPI()
    manager = CacheManager(backend).init_app(app)
    items = ["spoon"]

    @app.get("/spaces/{space_id}/items")
    @cache_config(ttl_seconds=300)
    async def list_items(space_id: int) -> list[str]:
        return list(items)

    @app.post("/spaces/{space_id}/items", status_code=201)
    async def add_item(space_id: int, name: str) -> str:
        items.append(name)
        return name

    raw = redis_server.client()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert cache_state(await client.get("/spaces/1/items")) == "MISS"
            raw.set(prefix + "~g:s:spaces:1:items", "not-a-number")
            assert (await client.post("/spaces/1/items", params={"name": "fork"})).status_code == 201
            states = []
            for _ in range(3):
                response = await client.get("/spaces/1/items")
                assert response.json() == ["spoon", "fork"]
                states.append(cache_state(response))
            assert cache_state(await client.get("/spaces/2/items")) == "MISS"
    finally:
        await backend.aclose()
        raw.close()
    assert states == ["MISS", "HIT", "HIT"]
    assert manager.stats.invalidation_errors == 0
    assert manager.stats.errors == 0


async def test_garbage_stats_fields_are_skipped_then_repaired(backend: Any, raw: Any) -> None:
    stats = physical(backend, "~s:stats")
    raw.hset(stats, mapping={"hits": "not-a-number", "misses": "7", "stores": "1.5"})
    assert await backend.read_counters() == {"misses": 7}
    await backend.add_counters({"hits": 2, "misses": 1, "stores": 1, "errors": 3})
    assert await backend.read_counters() == {"hits": 2, "misses": 8, "stores": 1, "errors": 3}
    await backend.add_counters({"hits": 1})
    assert (await backend.read_counters())["hits"] == 3
    raw.hset(stats, "errors", str(2**63 - 1))  # the next increment would overflow
    await backend.add_counters({"errors": 1, "hits": 1})
    assert await backend.read_counters() == {"hits": 4, "misses": 8, "stores": 1, "errors": 1}


async def test_a_stats_key_of_the_wrong_type_is_replaced(backend: Any, raw: Any) -> None:
    raw.set(physical(backend, "~s:stats"), "not a hash")
    assert await backend.read_counters() == {}
    await backend.add_counters({"hits": 2})
    await backend.add_counters({"hits": 1, "misses": 1})
    assert await backend.read_counters() == {"hits": 3, "misses": 1}


async def test_manager_stats_flush_survives_garbage(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    backend = RedisBackend(redis_server.url, key_prefix=prefix, **PATIENT)
    manager = CacheManager(backend)
    raw = redis_server.client()
    try:
        raw.hset(prefix + "~s:stats", mapping={"hits": "garbage"})
        for _ in range(2):
            manager.stats.hits += 5
            await manager.flush_stats()
        shared, is_shared = await manager.shared_counters()
    finally:
        await backend.aclose()
        raw.close()
    assert is_shared
    assert shared["hits"] == 10
    assert manager.stats.errors == 0


# -- the key secret -----------------------------------------------------------------------------------------------


async def test_the_secret_is_one_persistent_key(backend: Any, target: Target, raw: Any) -> None:
    secret = await backend.secret()
    name = physical(backend, "~k:secret")
    if target.kind == "cluster":
        assert name == backend.key_prefix + "{k:secret}~k:secret"  # a slot of its own, the same for every process
        assert raw.keyslot(name) == raw.keyslot("{k:secret}")
    else:
        assert name == backend.key_prefix + "~k:secret"
    assert raw.get(name) == secret
    assert raw.pttl(name) == -1  # never expires
    assert target.physical_keys(backend.key_prefix) == {name}
    for pattern in ["*", "~*", "~k:*"]:
        await backend.clear(pattern)
        assert raw.get(name) == secret
    await backend.clear()
    assert raw.get(name) == secret


@pytest.mark.parametrize("garbage", ["short", "hash"])
async def test_a_garbage_secret_is_replaced_once(backend: Any, target: Target, raw: Any, garbage: str) -> None:
    name = physical(backend, "~k:secret")
    if garbage == "short":
        raw.set(name, "x")
    else:
        raw.hset(name, mapping={"x": "y"})
    secret = await backend.secret()
    assert len(secret) >= 16
    assert raw.get(name) == secret
    other = target.backend(backend.key_prefix)
    try:
        assert await other.secret() == secret
    finally:
        await other.aclose()


async def test_the_secret_is_never_listed_as_an_entry(target: Target) -> None:
    backend = target.backend(unique_prefix())
    manager = CacheManager(backend, include_admin_routes=True, allow_unauthenticated_admin=True)
    app = FastAPI()
    manager.init_app(app)
    try:
        await backend.secret()
        await manager.service().set("manual", {"v": 1})
        assert await manager.service().list_keys() == ["manual"]
        assert await manager.service().clear_all() == 1
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            listed = await client.get("/api/cache/keys")
        assert listed.status_code == 200
        assert "secret" not in listed.text
    finally:
        await backend.aclose()


# -- anonymous traffic leaves no long-lived keys ------------------------------------------------------------------


def items_app(backend: Any) -> tuple[FastAPI, CacheManager]:
    app = FastAPI()
    manager = CacheManager(backend).init_app(app)

    @app.get("/items/{item_id}")
    @cache_config(ttl_seconds=600)
    async def get_item(item_id: int) -> dict[str, int]:
        if item_id >= 10:
            raise HTTPException(status_code=404)
        return {"id": item_id}

    return app, manager


async def test_anonymous_404s_leave_only_provisional_keys(redis_server: RedisServer) -> None:
    """Reproduction: 2,000 GETs of ids that do not exist (404, never stored) used to
    leave 4,001 counters for generation_ttl (7 days)."""
    prefix = unique_prefix()
    backend = RedisBackend(redis_server.url, key_prefix=prefix, provisional_ttl=30, **PATIENT)
    app, manager = items_app(backend)
    raw = redis_server.client()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            for item_id in range(1000, 3000):
                assert (await client.get(f"/items/{item_id}")).status_code == 404
            left = {key.decode(): raw.pttl(key) for key in raw.scan_iter(match=prefix + "*", count=1000)}
            long_lived = {key: ttl for key, ttl in left.items() if not 0 < ttl <= 30_000}
            assert {key.removeprefix(prefix) for key in long_lived} <= set(FIXED), long_lived
            assert manager.stats.stores == 0

            # An entry that is stored keeps its counters at least as long as itself.
            assert cache_state(await client.get("/items/3")) == "MISS"
            assert 590_000 < raw.pttl(prefix + "GET:items:3") <= 600_000
            entry = raw.pexpiretime(prefix + "GET:items:3")
            for name in ["~g:s:items", "~g:s:items:3", "~g:n:items:3"]:
                assert raw.pexpiretime(prefix + name) >= entry, name
            assert cache_state(await client.get("/items/3")) == "HIT"
    finally:
        await backend.aclose()
        raw.close()
