"""The CacheBackend contract, run against every backend: memory, Redis and Redis Cluster.

Every test takes the parametrized ``backend`` fixture (a fresh namespace per
test). Where the backends legitimately differ (TTLs on a fake clock versus real
Redis expiry, per-process versus shared locks) the test says so explicitly.
"""

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock, cache_state
from tests.conftest import BACKEND_KINDS, PATIENT, make_backend

LOCK = "~l:GET:items"


@pytest.fixture(params=[kind for kind in BACKEND_KINDS if kind.id != "memory"])
async def shared_backend(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[CacheBackend]:
    """The backends shared between processes (Redis, Redis Cluster)."""
    instance = await make_backend(request.param, request, clock)
    try:
        yield instance
    finally:
        await instance.aclose()


def twin_of(backend: CacheBackend, request: pytest.FixtureRequest) -> CacheBackend:
    """Another process's backend on the same Redis namespace."""
    from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend

    if isinstance(backend, RedisClusterBackend):
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        return RedisClusterBackend(startup_nodes=nodes, key_prefix=backend.key_prefix, **PATIENT)
    assert isinstance(backend, RedisBackend)
    return RedisBackend(request.getfixturevalue("redis_server").url, key_prefix=backend.key_prefix, **PATIENT)


def is_redis(backend: CacheBackend) -> bool:
    return backend.name != "memory"


def glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


async def scan_all(backend: CacheBackend, pattern: str = "*", count: int = 100) -> tuple[list[str], int]:
    """Every key a full scan returns (duplicates kept) and the number of pages it took."""
    keys: list[str] = []
    cursor = 0
    for pages in range(1, 10_001):
        cursor, page = await backend.scan(pattern, cursor, count)
        keys.extend(key for key, _ in page)
        if cursor == 0:
            return keys, pages
    raise AssertionError("scan never returned cursor 0")


async def scan_ttls(backend: CacheBackend, pattern: str = "*") -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    cursor = 0
    while True:
        cursor, page = await backend.scan(pattern, cursor, 100)
        found.update(page)
        if cursor == 0:
            return found


async def wait_until_absent(backend: CacheBackend, key: str, patience: float = 5.0) -> None:
    deadline = time.monotonic() + patience
    while await backend.get(key) is not None:
        assert time.monotonic() < deadline, f"{key!r} still present {patience}s after its TTL"
        await asyncio.sleep(0.01)


# -- get / set / delete ------------------------------------------------------------------------------------


async def test_set_get_delete(backend: CacheBackend) -> None:
    assert await backend.get("GET:items") is None
    await backend.set("GET:items", b"one", 60)
    assert await backend.get("GET:items") == b"one"
    await backend.set("GET:items", b"two", 60)
    assert await backend.get("GET:items") == b"two"
    assert await backend.delete("GET:items") is True
    assert await backend.delete("GET:items") is False
    assert await backend.get("GET:items") is None


async def test_keys_are_independent(backend: CacheBackend) -> None:
    await backend.set("GET:a", b"A", 60)
    await backend.set("GET:b", b"B", 60)
    assert await backend.delete("GET:a") is True
    assert await backend.get("GET:a") is None
    assert await backend.get("GET:b") == b"B"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\xff", id="nul-ff"),
        pytest.param(bytes(range(256)), id="all-bytes"),
        pytest.param(b"\x93\xa3icr\x01" + b"\x00" * 10, id="msgpack-like"),
        pytest.param(os.urandom(1024 * 1024), id="1MiB-random"),
    ],
)
async def test_values_round_trip_as_raw_bytes(backend: CacheBackend, value: bytes) -> None:
    await backend.set("GET:blob", value, 60)
    got = await backend.get("GET:blob")
    assert type(got) is bytes
    assert got == value
    raw, _ = await backend.fetch("GET:blob", [])
    assert raw == value


async def test_ping_and_info(backend: CacheBackend) -> None:
    await backend.ping()
    assert backend.info()["backend"] == backend.name


# -- TTL ---------------------------------------------------------------------------------------------------


async def test_scan_reports_the_remaining_ttl(backend: CacheBackend, clock: FakeClock) -> None:
    await backend.set("GET:ttl", b"v", 30)
    if not is_redis(backend):
        clock.advance(10)
    ttls = await scan_ttls(backend)
    assert set(ttls) == {"GET:ttl"}
    ttl = ttls["GET:ttl"]
    assert ttl is not None
    upper = 20 if not is_redis(backend) else 30
    assert upper - 5 < ttl <= upper


async def test_entries_expire_after_their_ttl(backend: CacheBackend, clock: FakeClock) -> None:
    if is_redis(backend):
        await backend.set("GET:short", b"v", 0.05)
        await backend.set("GET:long", b"v", 60)
        await wait_until_absent(backend, "GET:short")
        assert await backend.delete("GET:short") is False
    else:
        await backend.set("GET:short", b"v", 10)
        await backend.set("GET:long", b"v", 60)
        clock.advance(9.9)
        assert await backend.get("GET:short") == b"v"
        clock.advance(0.2)
        assert await backend.get("GET:short") is None
    assert await backend.get("GET:long") == b"v"
    keys, _ = await scan_all(backend)
    assert keys == ["GET:long"]


async def test_overwrite_replaces_the_ttl(backend: CacheBackend, clock: FakeClock) -> None:
    await backend.set("GET:k", b"old", 3600)
    await backend.set("GET:k", b"new", 20)
    if not is_redis(backend):
        clock.advance(5)
    ttl = (await scan_ttls(backend))["GET:k"]
    assert ttl is not None
    assert ttl <= 20


# -- generation counters ---------------------------------------------------------------------------------------


async def test_fetch_of_absent_key_creates_counters(backend: CacheBackend) -> None:
    counters = ["~g:s:spaces", "~g:s:spaces:1", "~g:n:spaces:1"]
    raw, generations = await backend.fetch("GET:spaces:1", counters)
    assert raw is None
    assert len(generations) == 3
    assert all(type(value) is int for value in generations)
    # Random initial values: distinct counters do not share one.
    assert len(set(generations)) == 3
    for _ in range(3):
        assert await backend.fetch("GET:spaces:1", counters) == (None, generations)
    # Storing the entry does not touch the counters.
    await backend.set("GET:spaces:1", b"entry", 60)
    assert await backend.fetch("GET:spaces:1", counters) == (b"entry", generations)


async def test_fetch_without_counters(backend: CacheBackend) -> None:
    assert await backend.fetch("GET:nothing", []) == (None, [])
    await backend.set("GET:nothing", b"x", 60)
    assert await backend.fetch("GET:nothing", []) == (b"x", [])


async def test_concurrent_first_fetches_agree(backend: CacheBackend) -> None:
    # Warm the client up first: a cold cluster client under a concurrent burst is
    # tested on its own in test_redis_backend.py.
    await backend.get("GET:warm-up")
    results = await asyncio.gather(*(backend.fetch("GET:race", ["~g:s:race", "~g:n:race"]) for _ in range(20)))
    assert len({tuple(generations) for _, generations in results}) == 1
    assert await backend.fetch("GET:race", ["~g:s:race", "~g:n:race"]) == results[0]


async def test_bump_changes_exactly_the_bumped_counters(backend: CacheBackend) -> None:
    """base.py: a bump makes every entry that recorded the old value unusable. Memory
    increments, Redis deletes (the next lookup draws a new value): either way the
    value changes, to one never seen before, and the other counters stay."""
    counters = ["~g:s:items", "~g:n:items"]
    _, (subtree, node) = await backend.fetch("GET:items", counters)
    seen = {subtree}
    await backend.bump(["~g:s:items"])
    _, (subtree, same) = await backend.fetch("GET:items", counters)
    assert subtree not in seen
    assert same == node
    seen.add(subtree)
    await backend.bump(["~g:s:items", "~g:n:items"])
    await backend.bump(["~g:s:items"])
    _, (subtree, changed) = await backend.fetch("GET:items", counters)
    assert subtree not in seen
    assert changed != node
    # Stable until the next bump.
    assert (await backend.fetch("GET:items", counters))[1] == [subtree, changed]


async def test_bump_of_absent_counters(backend: CacheBackend) -> None:
    await backend.bump(["~g:s:fresh"])
    await backend.bump([])
    _, (created,) = await backend.fetch("GET:fresh", ["~g:s:fresh"])
    assert type(created) is int
    await backend.bump(["~g:s:fresh"])
    (after,) = (await backend.fetch("GET:fresh", ["~g:s:fresh"]))[1]
    assert after != created


@pytest.mark.parametrize("created_by", ["fetch", "bump"])
async def test_a_lost_counter_never_comes_back_with_a_value_seen_before(backend: CacheBackend, created_by: str) -> None:
    """base.py: "a counter that was evicted or expired can never come back with a
    value an old entry remembers". Losing a counter (eviction, expiry, clear) and
    recreating it (by a read or by a write's bump) must not repeat an old value,
    or an entry computed before a write would be served after it."""
    counter = "~g:s:lost"
    seen: list[int] = []
    for _ in range(3):
        if created_by == "bump":
            await backend.bump([counter])
        _, (value,) = await backend.fetch("GET:lost", [counter])
        seen.append(value)
        await backend.clear(glob_escape(counter))  # the counter is lost
    assert len(set(seen)) == len(seen), f"recreated counter repeated a value: {seen}"


# -- put, generations, secret -------------------------------------------------------------------------------------


async def test_put_stores_an_entry_and_leaves_its_counters_alone(backend: CacheBackend) -> None:
    counters = ["~g:s:spaces", "~g:s:spaces:1", "~g:n:spaces:1", "~g:t:kitchen"]
    raw, generations = await backend.fetch("GET:spaces:1", counters)
    assert raw is None
    await backend.put("GET:spaces:1", b"entry", 60, counters)
    assert await backend.get("GET:spaces:1") == b"entry"
    assert await backend.fetch("GET:spaces:1", counters) == (b"entry", generations)
    await backend.put("GET:spaces:1", b"again", 60, counters)
    assert await backend.fetch("GET:spaces:1", counters) == (b"again", generations)
    # Without counters it is a plain set.
    await backend.put("GET:plain", b"plain", 60)
    assert await backend.get("GET:plain") == b"plain"
    keys, _ = await scan_all(backend)
    assert sorted(key for key in keys if not key.startswith("~")) == ["GET:plain", "GET:spaces:1"]


async def test_put_after_a_bump_cannot_make_the_old_snapshot_current(backend: CacheBackend) -> None:
    """The race of every cache: a response computed before a write is stored after it.
    Its snapshot must stay behind: put never restores or recreates a bumped counter."""
    counters = ["~g:s:items", "~g:n:items"]
    _, before = await backend.fetch("GET:items", counters)
    await backend.bump(["~g:s:items"])  # the write lands while the response is computed
    await backend.put("GET:items", b"pre-write", 60, counters)
    assert await backend.generations(counters[:1]) != before[:1]
    raw, after = await backend.fetch("GET:items", counters)
    assert raw == b"pre-write"  # stored, but...
    assert after[0] != before[0]  # ...its recorded snapshot never matches again
    assert after[1] == before[1]


async def test_generations_reads_without_creating(backend: CacheBackend) -> None:
    counters = ["~g:s:gen", "~g:n:gen", "~g:t:gen"]
    assert await backend.generations([]) == []
    assert await backend.generations(counters) == [None, None, None]
    assert await backend.generations(counters) == [None, None, None]  # the first read created nothing
    _, values = await backend.fetch("GET:gen", counters[:2])
    assert await backend.generations(counters) == [*values, None]
    await backend.bump(counters[:1])
    current = await backend.generations(counters)
    assert current[0] != values[0]  # bumped: gone (Redis) or incremented (memory)
    assert current[1:] == [values[1], None]
    _, again = await backend.fetch("GET:gen", counters[:1])
    assert await backend.generations(counters[:1]) == again


async def test_secret_is_stable_and_survives_clear(backend: CacheBackend) -> None:
    secret = await backend.secret()
    assert isinstance(secret, bytes)
    assert len(secret) >= 16
    assert await backend.secret() == secret
    await backend.set("GET:entry", b"v", 60)
    assert await backend.clear() == 1  # the secret is not an entry: not counted...
    assert await backend.secret() == secret
    # ...and never listed as one (the manual API and the admin skip "~" keys).
    keys, _ = await scan_all(backend)
    assert [key for key in keys if not key.startswith("~")] == []


async def test_per_process_backends_have_one_secret_each(clock: FakeClock) -> None:
    one, two = MemoryBackend(clock=clock), MemoryBackend(clock=clock)
    assert await one.secret() == await one.secret()
    assert await one.secret() != await two.secret()


async def test_a_shared_backend_has_one_secret_for_every_process(
    shared_backend: CacheBackend, request: pytest.FixtureRequest
) -> None:
    twins = [twin_of(shared_backend, request) for _ in range(8)]
    try:
        # Every process asks at once on first use: one creates it, all agree on it.
        values = await asyncio.gather(*(twin.secret() for twin in twins))
        assert len(set(values)) == 1
        assert await shared_backend.secret() == values[0]
        await shared_backend.clear()
        late = twin_of(shared_backend, request)  # a process started after the clear
        twins.append(late)
        assert await late.secret() == values[0]
    finally:
        for twin in twins:
            await twin.aclose()


# -- scan ----------------------------------------------------------------------------------------------------


async def test_scan_paginates_over_every_key_exactly_once(backend: CacheBackend) -> None:
    expected = {f"GET:page:n={i:03d}" for i in range(250)}
    for key in expected:
        await backend.set(key, b"v", 60)
    keys, pages = await scan_all(backend, "*", count=50)
    duplicates = [key for key, seen in Counter(keys).items() if seen > 1]
    assert duplicates == []
    assert set(keys) == expected
    assert pages > 1


async def test_scan_of_an_empty_namespace(backend: CacheBackend) -> None:
    # Redis may need several (empty) pages to walk a database holding other keys.
    assert (await scan_all(backend))[0] == []


async def test_scan_filters_by_pattern(backend: CacheBackend) -> None:
    for key in ["GET:items:page=1", "GET:items:page=2", "GET:items", "GET:itemsx:1", "GET:other:x", "GET:other:y"]:
        await backend.set(key, b"v", 60)
    assert sorted((await scan_all(backend, "GET:items:*"))[0]) == ["GET:items:page=1", "GET:items:page=2"]
    assert sorted((await scan_all(backend, "GET:other:*"))[0]) == ["GET:other:x", "GET:other:y"]
    assert sorted((await scan_all(backend, "GET:items"))[0]) == ["GET:items"]
    assert sorted((await scan_all(backend, "GET:item?:*"))[0]) == ["GET:items:page=1", "GET:items:page=2"]
    assert (await scan_all(backend, "POST:*"))[0] == []


SPECIAL_KEYS = [
    "GET:ünïcødé:日本語",
    "GET:with space:x y",
    "GET:{braces}:x",
    "GET:a{b}c:d",
    "GET:100%:x%20y",
    "GET:glob*?[x]\\:z",
    "manual:{42}:profile",
    "{tagged}manual",
]


async def test_special_characters_round_trip_through_scan(backend: CacheBackend) -> None:
    for index, key in enumerate(SPECIAL_KEYS):
        await backend.set(key, b"value-%d" % index, 60)
    keys, _ = await scan_all(backend)
    assert sorted(keys) == sorted(SPECIAL_KEYS)
    for index, key in enumerate(SPECIAL_KEYS):
        # Every listed key can be used as is: read, matched exactly, deleted.
        assert await backend.get(key) == b"value-%d" % index
        assert (await scan_all(backend, glob_escape(key)))[0] == [key]
    for key in SPECIAL_KEYS:
        assert await backend.delete(key) is True
    assert (await scan_all(backend))[0] == []


# -- clear -------------------------------------------------------------------------------------------------


async def test_clear_pattern_deletes_only_matching_keys(backend: CacheBackend) -> None:
    for key in ["GET:items:page=1", "GET:items:page=2", "GET:items:page=3", "GET:other:x", "GET:itemsx"]:
        await backend.set(key, b"v", 60)
    assert await backend.clear("GET:items:*") == 3
    assert sorted((await scan_all(backend))[0]) == ["GET:itemsx", "GET:other:x"]
    assert await backend.get("GET:other:x") == b"v"
    assert await backend.clear("GET:items:*") == 0
    assert await backend.clear("GET:nothing*") == 0


async def test_clear_pattern_does_not_count_internal_keys(backend: CacheBackend) -> None:
    await backend.set("GET:items:1", b"v", 60)
    await backend.set("GET:items:2", b"v", 60)
    await backend.fetch("GET:items:1", ["~g:s:items", "~g:n:items"])
    assert await backend.clear("*") == 2
    assert (await scan_all(backend))[0] == []


async def test_clear_all_empties_the_namespace(backend: CacheBackend) -> None:
    for key in ["GET:items:1", "GET:spaces:1", "manual"]:
        await backend.set(key, b"v", 60)
    counters = ["~g:s:spaces", "~g:n:spaces"]
    _, before = await backend.fetch("GET:spaces:1", counters)
    token = await backend.acquire_lock(LOCK, 30)
    assert token is not None
    assert await backend.clear() == 3
    assert (await scan_all(backend))[0] == []
    for key in ["GET:items:1", "GET:spaces:1", "manual"]:
        assert await backend.get(key) is None
    # The counters went too: they are created afresh.
    _, after = await backend.fetch("GET:spaces:1", counters)
    assert after != before
    # And so did the lock.
    assert await backend.acquire_lock(LOCK, 30) is not None
    assert await backend.clear() == 0


# -- locks ---------------------------------------------------------------------------------------------------


async def test_acquire_lock_returns_a_token(backend: CacheBackend) -> None:
    token = await backend.acquire_lock(LOCK, 30)
    assert isinstance(token, str)
    assert token
    second = await backend.acquire_lock(LOCK, 30)
    if is_redis(backend):
        assert second is None  # shared across processes: held
    else:
        assert isinstance(second, str)  # per-process backend: always granted
    await backend.release_lock(LOCK, token)
    third = await backend.acquire_lock(LOCK, 30)
    assert isinstance(third, str)
    if is_redis(backend):
        assert third != token


async def test_release_with_a_wrong_token_does_not_release(backend: CacheBackend) -> None:
    token = await backend.acquire_lock(LOCK, 30)
    assert token is not None
    await backend.release_lock(LOCK, "not-the-token")
    if is_redis(backend):
        assert await backend.acquire_lock(LOCK, 30) is None
    await backend.release_lock(LOCK, token)
    assert await backend.acquire_lock(LOCK, 30) is not None


async def test_locks_are_independent(backend: CacheBackend) -> None:
    assert await backend.acquire_lock("~l:GET:a", 30) is not None
    assert await backend.acquire_lock("~l:GET:b", 30) is not None


async def test_lock_expires_after_its_ttl(shared_backend: CacheBackend) -> None:
    backend = shared_backend
    assert await backend.acquire_lock(LOCK, 0.3) is not None
    deadline = time.monotonic() + 5
    while (token := await backend.acquire_lock(LOCK, 30)) is None:
        assert time.monotonic() < deadline, "lock still held 5 s after its 0.3 s TTL"
        await asyncio.sleep(0.01)
    assert await backend.acquire_lock(LOCK, 30) is None
    await backend.release_lock(LOCK, token)


# -- through a FastAPI app -------------------------------------------------------------------------------------


def build_app(backend: CacheBackend, clock: FakeClock) -> tuple[FastAPI, CacheManager, Counter[int]]:
    app = FastAPI()
    manager = CacheManager(backend, clock=clock).init_app(app)
    calls: Counter[int] = Counter()
    items: dict[int, list[str]] = {1: ["spoon"], 2: ["hammer"]}

    @app.get("/spaces/{space_id}/items")
    @cache_config(ttl_seconds=60)
    async def list_items(space_id: int) -> dict[str, object]:
        calls[space_id] += 1
        return {"space": space_id, "items": items[space_id], "computed": calls[space_id]}

    @app.post("/spaces/{space_id}/items", status_code=201)
    async def add_item(space_id: int, name: str) -> dict[str, object]:
        items[space_id].append(name)
        return {"space": space_id, "name": name}

    return app, manager, calls


async def test_app_miss_then_hit(backend: CacheBackend, clock: FakeClock) -> None:
    app, manager, calls = build_app(backend, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        first = await client.get("/spaces/1/items")
        second = await client.get("/spaces/1/items")
    assert first.status_code == second.status_code == 200
    assert cache_state(first) == "MISS"
    assert cache_state(second) == "HIT"
    assert first.json() == second.json() == {"space": 1, "items": ["spoon"], "computed": 1}
    assert calls[1] == 1
    assert manager.stats.hits == 1
    assert manager.stats.misses == 1
    assert manager.stats.errors == 0


async def test_app_write_invalidates_only_its_subtree(backend: CacheBackend, clock: FakeClock) -> None:
    app, manager, calls = build_app(backend, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert cache_state(await client.get("/spaces/1/items")) == "MISS"
        assert cache_state(await client.get("/spaces/2/items")) == "MISS"
        assert cache_state(await client.get("/spaces/1/items")) == "HIT"

        created = await client.post("/spaces/1/items", params={"name": "fork"})
        assert created.status_code == 201

        after = await client.get("/spaces/1/items")
        assert cache_state(after) == "MISS"
        assert after.json() == {"space": 1, "items": ["spoon", "fork"], "computed": 2}
        assert cache_state(await client.get("/spaces/1/items")) == "HIT"

        other = await client.get("/spaces/2/items")
        assert cache_state(other) == "HIT"
        assert other.json() == {"space": 2, "items": ["hammer"], "computed": 1}
    assert calls == Counter({1: 2, 2: 1})
    assert manager.stats.invalidations == 1
    assert manager.stats.errors == 0
