"""Single-flight (checklist item 24): concurrent misses compute once per process, and once per
cluster when the backend provides a lock; waiters give up after ``lock_timeout`` and compute
without storing; a crashed lock holder frees the key within the lock's TTL.

"Another process" is a second app with its own CacheManager (own in-memory flights) and its
own Redis client on the same key namespace, as a second worker would have.
"""

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from intelligent_cache import CacheManager, MemoryBackend, build_key, cache_config
from intelligent_cache.testing import FakeClock
from tests.conftest import make_backend

REDIS_KINDS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def next(self) -> int:
        self.count += 1
        return self.count


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def slow_app(
    backend, clock: FakeClock, calls: Calls, *, delay: float = 0.05, **manager_options
) -> tuple[FastAPI, CacheManager]:
    """GET /slow sleeps ``delay`` seconds and answers the call number (shared ``calls``: one origin)."""
    app = FastAPI()
    manager = CacheManager(backend, clock=clock, **manager_options)
    manager.init_app(app)

    @app.get("/slow")
    @cache_config(ttl_seconds=60)
    async def slow():
        number = calls.next()
        await asyncio.sleep(delay)
        return JSONResponse({"call": number})

    return app, manager


async def second_worker_backend(backend, kind: str, request: pytest.FixtureRequest):
    """Another Redis client on the same namespace as ``backend``: what a second worker process has."""
    from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend

    timeouts = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}  # as conftest.make_backend's
    if kind == "redis":
        return RedisBackend(request.getfixturevalue("redis_server").url, key_prefix=backend.key_prefix, **timeouts)
    return RedisClusterBackend(
        startup_nodes=request.getfixturevalue("redis_cluster").startup_nodes, key_prefix=backend.key_prefix, **timeouts
    )


async def warm(*backends) -> None:
    """One command per client before a burst, so that the burst measures the cache, not connection set-up.

    redis-py 8.1's asyncio RedisCluster used cold by many coroutines at once failed some of them
    (``'NoneType' object has no attribute 'writelines'``, "Connection closed by server") until
    RedisClusterBackend started discovering the cluster once before its first command.
    """
    for backend in backends:
        await backend.get("~warm")


async def lock_expired(backend, name: str) -> None:
    """Return once Redis has expired the lock ``name`` (the deadline only guards against a hang)."""
    async with asyncio.timeout(10):
        while True:
            if await backend.get(name) is None:
                return
            await asyncio.sleep(0.02)  # polled: Redis expiry has no event to wait on


# -- once per process -------------------------------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("memory", id="memory"), *REDIS_KINDS[:1]])
async def patient_backend(request: pytest.FixtureRequest, clock: FakeClock):
    """Memory, and Redis with the default pool of 50 whose callers wait for a connection.

    With the default 0.5 s wait, 1,000 simultaneous lookups exhaust the pool and fail open;
    that case is test_item_24_pool_exhaustion_during_a_stampede_still_computes_once. Here the
    backend keeps up, so the test measures single-flight alone.
    """
    options = {} if request.param == "memory" else {"socket_timeout": 30.0, "socket_connect_timeout": 30.0}
    instance = await make_backend(request.param, request, clock, **options)
    try:
        yield instance
    finally:
        await instance.aclose()


async def test_item_24_thousand_concurrent_misses_compute_once(patient_backend, clock):
    calls = Calls()
    app, manager = slow_app(patient_backend, clock, calls)
    await warm(patient_backend)
    async with client_for(app) as client:
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(1000)))
    assert manager.stats.errors == 0
    assert calls.count == 1
    assert {response.status_code for response in responses} == {200}
    assert {response.content for response in responses} == {b'{"call":1}'}
    states = [response.headers["x-cache"] for response in responses]
    assert states.count("MISS") == 1
    assert states.count("HIT") == 999
    collapsed = [response for response in responses if "collapsed" in response.headers["cache-status"]]
    if isinstance(patient_backend, MemoryBackend):
        # Memory lookups never yield to the loop: every request joins the flight before the leader is done.
        assert len(collapsed) == 999
    else:
        # Over Redis, a request whose lookup returns after the leader stored is a plain HIT.
        assert len(collapsed) >= 1
    assert all(response.headers["x-cache"] == "HIT" and "age" in response.headers for response in collapsed)
    assert manager.stats.collapsed == len(collapsed)
    assert len(manager.flights) == 0


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_24_pool_exhaustion_during_a_stampede_still_computes_once(kind, request, clock):
    # A stampede is exactly when the connection pool runs dry. A lookup that cannot get a
    # connection fails open (the request is computed uncached, checklist item 26), but the
    # in-process single-flight needs no backend: the requests should still share one computation.
    if kind == "redis":
        # A pool of 2 whose callers wait 0.1 s. With the defaults (50, 0.5 s) 1,000 requests
        # exhausted it too in most runs here, but not in all.
        options, requests = {"max_connections": 2, "socket_timeout": 0.1}, 1000
    else:
        # The defaults: redis-py's cluster pool does not queue, so more than max_connections=50
        # concurrent commands on one node fail at once.
        options, requests = {}, 100
    backend = await make_backend(kind, request, clock, **options)
    calls = Calls()
    app, manager = slow_app(backend, clock, calls)
    try:
        await warm(backend)
        async with client_for(app) as client:
            responses = await asyncio.gather(*(client.get("/slow") for _ in range(requests)))
    finally:
        await backend.aclose()
    assert {response.status_code for response in responses} == {200}
    assert manager.stats.errors > 0  # the pool did run dry
    # Requests whose lookup failed at the same moment share one computation; nothing is
    # stored while the backend fails, so requests failing later compute again (serving an
    # older in-process result could hide another process's write).
    assert manager.stats.collapsed > 0
    assert calls.count < requests // 2


async def test_item_24_backend_down_during_a_stampede_computes_once(clock):
    class Down(MemoryBackend):
        async def fetch(self, key, generation_keys):
            raise ConnectionError("backend unreachable")

    calls = Calls()
    app, manager = slow_app(Down(clock=clock), clock, calls)
    async with client_for(app) as client:
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(1000)))
    assert {response.status_code for response in responses} == {200}
    assert calls.count == 1
    assert {response.json()["call"] for response in responses} == {1}
    assert {response.headers["x-cache"] for response in responses} == {"SKIP"}
    assert all("detail=backend-error" in response.headers["cache-status"] for response in responses)
    assert manager.stats.collapsed == 999


async def test_item_24_waiters_time_out_and_compute_without_storing(backend, clock):
    calls = Calls()
    app, manager = slow_app(backend, clock, calls, delay=1.0, lock_timeout=0.2)
    await warm(backend)
    async with client_for(app) as client:
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(5)))
        after = await client.get("/slow")
    assert calls.count == 5
    by_state: dict[str, list[httpx.Response]] = {}
    for response in responses:
        by_state.setdefault(response.headers["x-cache"], []).append(response)
    assert len(by_state["MISS"]) == 1
    assert len(by_state["SKIP"]) == 4
    assert all("detail=lock-timeout" in response.headers["cache-status"] for response in by_state["SKIP"])
    leader = by_state["MISS"][0]
    # Only the leader stored: the next request gets exactly its body.
    assert after.headers["x-cache"] == "HIT"
    assert after.json() == leader.json()
    assert manager.stats.stores == 1


async def test_item_24_a_request_after_a_write_never_joins_an_earlier_flight(backend, clock):
    app = FastAPI()
    CacheManager(backend, clock=clock).init_app(app)
    data = {"version": "before"}
    entered, release = asyncio.Event(), asyncio.Event()
    calls = Calls()

    @app.get("/doc")
    @cache_config
    async def read():
        number = calls.next()
        seen = data["version"]
        if number == 1:  # the first computation is slow: it is still running when the write lands
            entered.set()
            await release.wait()
        return {"version": seen}

    @app.put("/doc")
    async def write(request: Request):
        data["version"] = "after"
        return {"ok": True}

    async with client_for(app) as client:
        early = asyncio.create_task(client.get("/doc"))
        await entered.wait()
        assert (await client.put("/doc")).status_code == 200
        late = await client.get("/doc")
        release.set()
        early_response = await early
        final = await client.get("/doc")
    assert early_response.json() == {"version": "before"}  # what it read before the write
    assert late.json() == {"version": "after"}
    assert "collapsed" not in late.headers["cache-status"]
    assert final.json() == {"version": "after"}
    assert calls.count >= 2


# -- once per cluster: the lock in the backend ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_24_two_workers_compute_once_with_the_backend_lock(kind, request, clock):
    backend = await make_backend(kind, request, clock)
    twin = await second_worker_backend(backend, kind, request)
    calls = Calls()
    first, _ = slow_app(backend, clock, calls, delay=0.2)
    second, _ = slow_app(twin, clock, calls, delay=0.2)
    try:
        await warm(backend, twin)
        async with client_for(first) as one, client_for(second) as two:
            # 20 per worker: well within the pool, so this measures the lock (pool exhaustion is tested above).
            responses = await asyncio.gather(*(client.get("/slow") for _ in range(20) for client in (one, two)))
    finally:
        await backend.aclose()
        await twin.aclose()
    assert calls.count == 1
    assert {response.content for response in responses} == {b'{"call":1}'}
    assert sorted(response.headers["x-cache"] for response in responses) == ["HIT"] * 39 + ["MISS"]


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_24_worker_waiting_on_another_workers_lock_gets_its_vary_entry(kind, request, clock):
    # The entry of a response with Vary lands under a key extended by the varying request
    # headers, with an index under the plain key. A worker waiting on another worker's lock
    # must find that entry, not wait out lock_timeout and compute again.
    backend = await make_backend(kind, request, clock)
    twin = await second_worker_backend(backend, kind, request)
    app = FastAPI()
    CacheManager(backend, clock=clock, lock_timeout=2.0).init_app(app)
    calls, entered, release = Calls(), asyncio.Event(), asyncio.Event()

    @app.get("/negotiated")
    @cache_config
    async def negotiated(request: Request):
        calls.next()
        entered.set()
        await release.wait()
        return JSONResponse({"language": request.headers.get("accept-language")}, headers={"Vary": "Accept-Language"})

    second = FastAPI()
    CacheManager(twin, clock=clock, lock_timeout=2.0).init_app(second)
    second.get("/negotiated")(negotiated)
    lock_refused = asyncio.Event()
    acquire = twin.acquire_lock

    async def observed_acquire(name, ttl):
        token = await acquire(name, ttl)
        if token is None:
            lock_refused.set()
        return token

    twin.acquire_lock = observed_acquire
    english = {"Accept-Language": "en"}
    try:
        await warm(backend, twin)
        async with client_for(app) as one, client_for(second) as two:
            leader = asyncio.create_task(one.get("/negotiated", headers=english))
            await entered.wait()
            waiter = asyncio.create_task(two.get("/negotiated", headers=english))
            await lock_refused.wait()
            release.set()
            leader_response, waiter_response = await leader, await waiter
    finally:
        await backend.aclose()
        await twin.aclose()
    assert leader_response.headers["x-cache"] == "MISS"
    assert waiter_response.json() == {"language": "en"}
    assert waiter_response.headers["x-cache"] == "HIT", waiter_response.headers["cache-status"]
    assert calls.count == 1


async def stampede_lock_of(backend, app: FastAPI, path: str) -> str:
    """The name of the lock a miss of ``path`` takes, learnt by watching one miss, whose entry is then dropped.

    The name depends on the key and on the invalidation counters, which no write changes here:
    it is the lock a worker computing that miss right now would hold.
    """
    names: list[str] = []
    acquire = backend.acquire_lock

    async def observed_acquire(name, ttl):
        names.append(name)
        return await acquire(name, ttl)

    backend.acquire_lock = observed_acquire
    try:
        async with client_for(app) as client:
            assert (await client.get(path)).headers["x-cache"] == "MISS"
    finally:
        del backend.acquire_lock
    await backend.delete(build_key("GET", path))
    (name,) = names
    return name


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_24_a_crashed_lock_holder_makes_waiters_compute_without_storing(kind, request, clock):
    backend = await make_backend(kind, request, clock)
    calls = Calls()
    app, manager = slow_app(backend, clock, calls, delay=0.0, lock_timeout=0.3)
    try:
        lock = await stampede_lock_of(backend, app, "/slow")
        # Another worker took the lock and died: nobody will ever store the entry, the lock outlives lock_timeout.
        assert await backend.acquire_lock(lock, 60) is not None
        async with client_for(app) as client:
            first = await client.get("/slow")
            second = await client.get("/slow")
        lock_still_held = await backend.acquire_lock(lock, 60) is None
    finally:
        await backend.aclose()
    assert (first.status_code, first.json()) == (200, {"call": 2})
    assert first.headers["x-cache"] == "SKIP"
    assert "detail=lock-timeout" in first.headers["cache-status"]
    assert (second.json(), second.headers["x-cache"]) == ({"call": 3}, "SKIP")
    assert lock_still_held
    assert manager.stats.stores == 1  # the learning miss only


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_24_a_waiter_takes_over_a_crashed_holders_lock_when_it_expires(kind, request, clock):
    backend = await make_backend(kind, request, clock)
    calls = Calls()
    app, _manager = slow_app(backend, clock, calls, delay=0.0, lock_timeout=5.0)
    try:
        lock = await stampede_lock_of(backend, app, "/slow")
        # A worker died holding the lock; the lock expires (Redis time) long before lock_timeout.
        assert await backend.acquire_lock(lock, 0.3) is not None
        async with client_for(app) as client:
            waited = await client.get("/slow")
            hit = await client.get("/slow")
    finally:
        await backend.aclose()
    assert (waited.json(), waited.headers["x-cache"]) == ({"call": 2}, "MISS")
    assert waited.headers["cache-status"] == "intelligent-cache; fwd=uri-miss; stored"
    assert (hit.json(), hit.headers["x-cache"]) == ({"call": 2}, "HIT")


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_24_a_crashed_lock_holder_frees_the_key_within_the_lock_ttl(kind, request, clock):
    backend = await make_backend(kind, request, clock)
    calls = Calls()
    app, manager = slow_app(backend, clock, calls, delay=0.0, lock_timeout=0.3)
    try:
        lock = await stampede_lock_of(backend, app, "/slow")
        # A worker died holding the lock, taken as the manager takes it: for lock_timeout seconds (Redis time).
        assert await backend.acquire_lock(lock, manager.lock_timeout) is not None
        await lock_expired(backend, lock)
        async with client_for(app) as client:
            stored = await client.get("/slow")
            hit = await client.get("/slow")
    finally:
        await backend.aclose()
    assert (stored.headers["x-cache"], stored.headers["cache-status"]) == (
        "MISS",
        "intelligent-cache; fwd=uri-miss; stored",
    )
    assert (hit.json(), hit.headers["x-cache"]) == ({"call": 2}, "HIT")
    assert calls.count == 2
