"""Real Redis faults: down at start, killed, paused (SIGSTOP), pool exhaustion, a lost cluster primary,
error replies (which do not open the breaker) and closing with calls in flight. Redis at maxmemory
is in test_redis_oom.py.

Each test owns its redis-server (function scope) since it kills or pauses it.
The example app is driven in process through httpx's ASGI transport. The only
timing assertions are latency bounds several times the configured socket
timeout: bounded latency is the behaviour under test.
"""

import asyncio
import dataclasses
import gc
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.exceptions
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from example_app.main import create_app
from intelligent_cache import BackendUnavailable, CachedRoute, CacheManager, cache_config
from intelligent_cache.backends.redis import CircuitBreaker, RedisBackend, RedisClusterBackend
from intelligent_cache.testing import FakeClock, cache_state
from tests.conftest import unique_prefix
from tests.redis_servers import RedisCluster, RedisServer, require_redis_server

SOCKET_TIMEOUT = 0.2
RECOVERY = 0.5
# A request makes a handful of backend calls, each bounded by the socket timeout
# (waiting for a pooled connection is bounded by it too).
REQUEST_BOUND = 5 * SOCKET_TIMEOUT + 1.0
ADMIN = {"X-Admin-Token": "secret"}


def spoon(i: int) -> dict[str, Any]:
    return {"name": f"Spoon {i}", "price": 1.5 * i, "id": i, "space_id": 1}


KITCHEN = {"id": 1, "name": "Kitchen", "item_count": 30}
GARAGE = {"id": 2, "name": "Garage", "item_count": 1}
EXPECTED: dict[str, Any] = {
    "/spaces": [KITCHEN, GARAGE],
    "/spaces/1": KITCHEN,
    "/spaces/2": GARAGE,
    "/spaces/1/items?page=2": [spoon(i) for i in range(11, 21)],
    "/spaces/1/items/7": spoon(7),
    "/spaces/2/items/1": {"name": "Hammer", "price": 12.0, "id": 1, "space_id": 2},
}
URLS = list(EXPECTED)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private server, not started: each test decides when it runs."""
    require_redis_server()
    instance = RedisServer()
    try:
        yield instance
    finally:
        instance.stop()


def fault_backend(url: str, **options: Any) -> RedisBackend:
    settings: dict[str, Any] = {
        "key_prefix": unique_prefix(),
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "failure_threshold": 3,
        "recovery_timeout": RECOVERY,
    }
    settings.update(options)
    return RedisBackend(url, **settings)


def manager_of(app: Any) -> CacheManager:
    manager = app.state.intelligent_cache
    assert isinstance(manager, CacheManager)
    return manager


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30)


@dataclasses.dataclass
class Outcome:
    url: str
    status: int
    x_cache: str | None
    body: Any
    elapsed: float


async def get(client: httpx.AsyncClient, url: str) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.get(url)
    except Exception as exc:  # an exception escaping the app is a 500 as far as a client is concerned
        return Outcome(url, 599, None, repr(exc), time.monotonic() - started)
    body = response.json() if response.headers.get("content-type") == "application/json" else response.text
    return Outcome(url, response.status_code, cache_state(response), body, time.monotonic() - started)


def check_correct(outcomes: list[Outcome]) -> None:
    """Every response a 200 with the right body: the cache never turned a fault into an error."""
    wrong = [o for o in outcomes if o.status != 200 or o.body != EXPECTED[o.url]]
    assert wrong == [], f"{len(wrong)} wrong responses, first: {wrong[:3]}"


def check_bounded(outcomes: list[Outcome], bound: float = REQUEST_BOUND) -> None:
    slowest = max(outcomes, key=lambda o: o.elapsed)
    assert slowest.elapsed < bound, f"a request took {slowest.elapsed:.2f}s (bound {bound:.2f}s): {slowest}"


async def traffic(client: httpx.AsyncClient, stop: asyncio.Event, outcomes: list[Outcome], workers: int = 4) -> None:
    async def worker(offset: int) -> None:
        index = offset
        while not stop.is_set():
            outcomes.append(await get(client, URLS[index % len(URLS)]))
            index += 1
            await asyncio.sleep(0.002)

    await asyncio.gather(*(worker(n) for n in range(workers)))


async def wait_for_hits(client: httpx.AsyncClient, patience: float = 10.0) -> list[Outcome]:
    """Poll every URL until each is served from the cache again."""
    deadline = time.monotonic() + patience
    seen: list[Outcome] = []
    while True:
        round_ = [await get(client, url) for url in URLS]
        seen.extend(round_)
        if all(o.x_cache == "HIT" for o in round_):
            return seen
        assert time.monotonic() < deadline, f"cache did not recover: {[(o.url, o.x_cache) for o in round_]}"
        await asyncio.sleep(0.05)


async def warm_up(client: httpx.AsyncClient) -> None:
    for url in URLS:
        assert (await get(client, url)).x_cache == "MISS"
    for url in URLS:
        assert (await get(client, url)).x_cache == "HIT"


# -- (a) Redis down from the start ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["not-started", "stopped", "paused"])
async def test_redis_down_at_start_serves_uncached_and_opens_the_circuit(server: RedisServer, state: str) -> None:
    if state == "stopped":
        server.start()
        server.stop()  # connections are refused
    if state == "paused":
        server.start()
        server.pause()  # connections are accepted by the kernel, replies never come
    backend = fault_backend(server.url)
    app = create_app(backend, admin_token="secret")
    manager = manager_of(app)
    async with http(app) as client:
        first = [await get(client, URLS[i % len(URLS)]) for i in range(3)]
        check_correct(first)
        assert {o.x_cache for o in first} == {"SKIP"}
        check_bounded(first)
        assert backend.breaker.state == "open"
        assert backend.breaker.times_opened == 1

        started = time.monotonic()
        batch = [await get(client, URLS[i % len(URLS)]) for i in range(50)]
        elapsed = time.monotonic() - started
    await backend.aclose()
    check_correct(batch)
    assert {o.x_cache for o in batch} == {"SKIP"}
    # Without the breaker each of these would wait for Redis (50 x socket timeout = 10 s).
    assert elapsed < 50 * SOCKET_TIMEOUT / 4, f"50 requests with the circuit open took {elapsed:.2f}s"
    assert manager.stats.errors >= 53
    assert manager.stats.snapshot()["skip_reasons"] == {"backend-error": 53}
    assert manager.stats.hits == manager.stats.misses == 0
    assert manager.degraded


# -- (b) killed mid-traffic, then restarted ---------------------------------------------------------------------


async def test_kill_mid_traffic_then_restart(server: RedisServer) -> None:
    server.start()
    backend = fault_backend(server.url)
    app = create_app(backend, admin_token="secret")
    manager = manager_of(app)
    outcomes: list[Outcome] = []
    async with http(app) as client:
        await warm_up(client)
        stop = asyncio.Event()
        flow = asyncio.create_task(traffic(client, stop, outcomes))
        await asyncio.sleep(0.3)
        server.kill()
        killed_at = len(outcomes)
        await asyncio.sleep(0.8)
        during = outcomes[killed_at:]
        await asyncio.to_thread(server.restart)
        await asyncio.sleep(RECOVERY)
        stop.set()
        await flow
        recovered = await wait_for_hits(client)
    await backend.aclose()
    check_correct(outcomes)
    check_correct(recovered)
    assert "SKIP" in {o.x_cache for o in during}  # the outage was seen...
    assert backend.breaker.times_opened >= 1
    assert manager.stats.errors > 0
    assert backend.breaker.state == "closed"  # ...and is over
    assert not manager.degraded


# -- (c) paused (SIGSTOP) longer than the socket timeout ----------------------------------------------------------


async def test_pause_longer_than_socket_timeout(server: RedisServer) -> None:
    server.start()
    backend = fault_backend(server.url)
    app = create_app(backend, admin_token="secret")
    manager = manager_of(app)
    outcomes: list[Outcome] = []
    async with http(app) as client:
        await warm_up(client)
        stop = asyncio.Event()
        flow = asyncio.create_task(traffic(client, stop, outcomes, workers=6))
        await asyncio.sleep(0.1)
        server.pause()
        paused_at = len(outcomes)
        await asyncio.sleep(5 * SOCKET_TIMEOUT)
        during = outcomes[paused_at:]
        server.resume()
        await asyncio.sleep(RECOVERY)
        stop.set()
        await flow
        recovered = await wait_for_hits(client)
    await backend.aclose()
    check_correct(outcomes)
    check_correct(recovered)
    check_bounded(outcomes)
    assert "SKIP" in {o.x_cache for o in during}
    assert manager.stats.errors > 0
    assert backend.breaker.state == "closed"


# -- (d) writes while Redis is down ---------------------------------------------------------------------------------


async def test_writes_during_an_outage_succeed_and_count_invalidation_errors(server: RedisServer) -> None:
    server.start()
    backend = fault_backend(server.url)
    app = create_app(backend, admin_token="secret")
    manager = manager_of(app)
    async with http(app) as client:
        await warm_up(client)
        assert manager.stats.invalidation_errors == 0
        server.kill()
        responses = [
            await client.post("/spaces/1/items", json={"name": "Fork", "price": 2.0}),
            await client.patch("/spaces/1/items/1", json={"name": "Big spoon", "price": 3.0}),
            await client.delete("/spaces/1/items/2"),
            await client.post("/spaces/2/items", json={"name": "Saw", "price": 20.0}),
        ]
        after = await client.get("/spaces/1/items")
    await backend.aclose()
    assert [r.status_code for r in responses] == [201, 200, 204, 201]
    assert responses[0].json() == {"name": "Fork", "price": 2.0, "id": 31, "space_id": 1}
    assert manager.stats.invalidation_errors == 4
    assert manager.stats.invalidations == 0
    # Reads during the outage are computed, so they see the writes.
    assert after.status_code == 200
    assert cache_state(after) == "SKIP"
    assert [item["name"] for item in after.json()[:2]] == ["Big spoon", "Spoon 3"]


# -- (e) the circuit breaker on a fake clock -------------------------------------------------------------------------


def breaker_logs(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for record in caplog.records if record.name == "intelligent_cache" and text in record.getMessage())


def test_breaker_opens_after_threshold_and_probes_once(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=5, clock=clock)
    assert breaker.state == "closed"
    for _ in range(2):
        breaker.before_call()
        breaker.failed(ConnectionError("refused"))
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failed(ConnectionError("refused"))
    assert breaker.state == "open"
    assert breaker.times_opened == 1
    assert breaker_logs(caplog, "circuit opened") == 1

    for _ in range(100):
        with pytest.raises(BackendUnavailable, match=r"open.*refused"):
            breaker.before_call()
    clock.advance(4.99)
    with pytest.raises(BackendUnavailable):
        breaker.before_call()
    clock.advance(0.01)
    breaker.before_call()  # the probe
    assert breaker.state == "half-open"
    for _ in range(10):  # exactly one probe at a time
        with pytest.raises(BackendUnavailable, match="half-open"):
            breaker.before_call()

    breaker.failed(TimeoutError("still down"))  # failed probe: open again, for a full period
    assert breaker.state == "open"
    clock.advance(4.99)
    with pytest.raises(BackendUnavailable, match="still down"):
        breaker.before_call()
    clock.advance(0.01)
    breaker.before_call()
    assert breaker.state == "half-open"
    breaker.succeeded()
    assert breaker.state == "closed"
    assert breaker.failures == 0
    for _ in range(10):
        breaker.before_call()
    assert breaker_logs(caplog, "circuit opened") == 1
    assert breaker_logs(caplog, "circuit closed") == 1
    assert breaker.times_opened == 1

    # A second outage is logged again, once.
    for _ in range(3):
        breaker.failed(ConnectionError("refused"))
    for _ in range(5):
        breaker.failed(ConnectionError("late failures of calls started before opening"))
    assert breaker.state == "open"
    assert breaker_logs(caplog, "circuit opened") == 2
    assert breaker.times_opened == 2


def test_breaker_success_resets_the_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=5, clock=clock)
    for _ in range(5):
        breaker.failed(ConnectionError())
        breaker.failed(ConnectionError())
        breaker.succeeded()
    assert breaker.state == "closed"


def test_breaker_rejects_bad_settings() -> None:
    from intelligent_cache import ConfigurationError

    with pytest.raises(ConfigurationError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ConfigurationError):
        CircuitBreaker(recovery_timeout=0)


class FlakyClient:
    """Stands in for redis.asyncio.Redis: counts calls, fails on demand, can hang."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = True
        self.gate: asyncio.Event | None = None

    async def get(self, key: str) -> bytes:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise redis.ConnectionError("Connection refused")
        return b"value"


async def test_backend_breaker_lets_exactly_one_probe_through(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    client = FlakyClient()
    backend = RedisBackend(client=client, key_prefix="p:", clock=clock, failure_threshold=3, recovery_timeout=5)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(redis.ConnectionError):
            await backend.get("GET:k")
    assert backend.breaker.state == "open"
    for _ in range(20):
        with pytest.raises(BackendUnavailable):
            await backend.get("GET:k")
    assert client.calls == 3  # an open circuit does not call Redis at all

    clock.advance(5)
    client.gate = asyncio.Event()
    probe = asyncio.create_task(backend.get("GET:k"))
    await asyncio.sleep(0)
    assert client.calls == 4
    others = await asyncio.gather(*(backend.get("GET:k") for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, BackendUnavailable) for result in others)
    assert client.calls == 4  # exactly one probe while it is in flight

    client.failing = False
    client.gate.set()
    assert await probe == b"value"
    assert backend.breaker.state == "closed"
    client.gate = None
    assert await asyncio.gather(*(backend.get("GET:k") for _ in range(5))) == [b"value"] * 5
    assert client.calls == 9
    assert breaker_logs(caplog, "circuit opened") == 1
    assert breaker_logs(caplog, "circuit closed") == 1


async def test_backend_breaker_reopens_when_the_probe_fails(clock: FakeClock) -> None:
    client = FlakyClient()
    backend = RedisBackend(client=client, key_prefix="p:", clock=clock, failure_threshold=2, recovery_timeout=5)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(redis.ConnectionError):
            await backend.get("GET:k")
    clock.advance(5)
    with pytest.raises(redis.ConnectionError):
        await backend.get("GET:k")  # the probe fails
    assert backend.breaker.state == "open"
    with pytest.raises(BackendUnavailable):
        await backend.get("GET:k")
    assert client.calls == 3


async def test_cancelled_probe_lets_the_next_call_probe(clock: FakeClock) -> None:
    client = FlakyClient()
    backend = RedisBackend(client=client, key_prefix="p:", clock=clock, failure_threshold=1, recovery_timeout=5)  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError):
        await backend.get("GET:k")
    clock.advance(5)
    client.gate = asyncio.Event()
    probe = asyncio.create_task(backend.get("GET:k"))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # The cancelled probe proved nothing: the next call probes at once, the clock unchanged.
    client.gate = None
    client.failing = False
    assert await backend.get("GET:k") == b"value"
    assert backend.breaker.state == "closed"


# -- (f) the admin health endpoint ------------------------------------------------------------------------------------


async def test_health_reports_redis_state(server: RedisServer) -> None:
    server.start()
    backend = fault_backend(server.url)
    app = create_app(backend, admin_token="secret")
    async with http(app) as client:
        assert (await client.get("/api/cache/health")).status_code == 401
        up = await client.get("/api/cache/health", headers=ADMIN)
        assert up.status_code == 200
        assert up.json()["status"] == "ok"
        assert up.json()["backend"] == "redis"
        assert isinstance(up.json()["latency_ms"], int | float)
        assert up.json()["latency_ms"] >= 0

        server.pause()
        started = time.monotonic()
        paused = await client.get("/api/cache/health", headers=ADMIN)
        elapsed = time.monotonic() - started
        server.resume()
        assert paused.status_code == 503
        assert paused.json()["status"] == "unavailable"
        assert "Timeout" in paused.json()["reason"]
        assert elapsed < REQUEST_BOUND

        again = await client.get("/api/cache/health", headers=ADMIN)
        assert again.status_code == 200

        server.kill()
        down = await client.get("/api/cache/health", headers=ADMIN)
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable"
        assert down.json()["reason"]
        assert "latency_ms" not in down.json()
    await backend.aclose()


# -- (g) pool exhaustion ----------------------------------------------------------------------------------------------


async def test_pool_exhaustion_against_a_paused_server(server: RedisServer) -> None:
    server.start()
    timeout = 0.3
    backend = fault_backend(server.url, max_connections=2, socket_timeout=timeout, socket_connect_timeout=timeout)
    app = create_app(backend, admin_token="secret")
    manager = manager_of(app)
    async with http(app) as client:
        await warm_up(client)
        server.pause()
        burst = await asyncio.gather(*(get(client, URLS[i % len(URLS)]) for i in range(50)))
        server.resume()
        check_correct(burst)
        check_bounded(burst, 5 * timeout + 1.0)
        assert manager.stats.errors > 0

        await asyncio.sleep(RECOVERY)
        recovered = await wait_for_hits(client)
        check_correct(recovered)
        errors = manager.stats.errors
        again = [await get(client, URLS[i % len(URLS)]) for i in range(20)]
        # No connection leaked by the timeouts: both slots of the pool can be taken
        # at once (a leaked one would make this wait, then raise "No connection available").
        pool = backend._client.connection_pool
        held = [await pool.get_connection() for _ in range(2)]
        for connection in held:
            await pool.release(connection)
    await backend.aclose()
    check_correct(again)
    assert {o.x_cache for o in again} == {"HIT"}
    assert manager.stats.errors == errors


# -- (h) Redis Cluster: a primary dies under traffic -------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_primary_killed_under_traffic() -> None:
    require_redis_server(cli=True)
    with RedisCluster(primaries=3, node_timeout_ms=1000) as cluster:
        backend = RedisClusterBackend(
            startup_nodes=cluster.startup_nodes,
            key_prefix=unique_prefix(),
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            failure_threshold=3,
            recovery_timeout=RECOVERY,
        )
        app = create_app(backend, admin_token="secret")
        manager = manager_of(app)
        outcomes: list[Outcome] = []
        async with http(app) as client:
            await warm_up(client)
            stop = asyncio.Event()
            flow = asyncio.create_task(traffic(client, stop, outcomes))
            await asyncio.sleep(0.3)
            cluster.kill_node(0)
            killed_at = len(outcomes)
            await asyncio.sleep(1.5)
            after_kill = len(outcomes) - killed_at
            await asyncio.to_thread(cluster.restart_node, 0)
            stop.set()
            await flow
            recovered = await wait_for_hits(client)
        await backend.aclose()
    check_correct(outcomes)
    check_correct(recovered)
    assert after_kill > 20  # traffic kept flowing, uncached, while the cluster was down
    assert manager.stats.errors > 0


# -- (i) error replies: Redis is up, the breaker stays closed ---------------------------------------------------


class ReplyingClient:
    """Stands in for redis.asyncio.Redis: every GET fails with the error given."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = redis.exceptions.OutOfMemoryError(
            "command not allowed when used memory > 'maxmemory'."
        )

    async def get(self, key: str) -> bytes:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return b"value"


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.NoScriptError("No matching script."),
    ],
    ids=["oom", "wrongtype", "readonly", "noscript"],
)
async def test_error_replies_fail_the_call_but_do_not_open_the_breaker(clock: FakeClock, error: Exception) -> None:
    client = ReplyingClient()
    client.error = error
    backend = RedisBackend(client=client, key_prefix="p:", clock=clock, failure_threshold=3, recovery_timeout=5)  # type: ignore[arg-type]
    for _ in range(20):
        with pytest.raises(type(error)):
            await backend.get("GET:k")
    assert client.calls == 20  # every call reached Redis
    assert backend.breaker.state == "closed"
    assert backend.breaker.failures == 0
    assert backend.breaker.times_opened == 0


async def test_an_error_reply_proves_redis_reachable(clock: FakeClock) -> None:
    client = FlakyClient()
    backend = RedisBackend(client=client, key_prefix="p:", clock=clock, failure_threshold=3, recovery_timeout=5)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(redis.ConnectionError):
            await backend.get("GET:k")
    assert backend.breaker.failures == 2
    replying = ReplyingClient()
    backend._client = replying
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        await backend.get("GET:k")
    assert backend.breaker.failures == 0  # it answered: the count of unreachable calls starts again

    backend._client = client
    for _ in range(3):
        with pytest.raises(redis.ConnectionError):
            await backend.get("GET:k")
    assert backend.breaker.state == "open"
    clock.advance(5)
    backend._client = replying
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        await backend.get("GET:k")  # the probe: an error reply, from a server that is up
    assert backend.breaker.state == "closed"


async def test_clusterdown_counts_toward_opening_the_breaker(clock: FakeClock) -> None:
    client = ReplyingClient()
    client.error = redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down")
    backend = RedisBackend(client=client, key_prefix="p:", clock=clock, failure_threshold=3, recovery_timeout=5)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(redis.exceptions.ClusterDownError):
            await backend.get("GET:k")
    assert backend.breaker.state == "open"  # the cluster as a whole is not serving


async def test_wrongtype_under_a_key_does_not_open_the_breaker(server: RedisServer) -> None:
    server.start()
    backend = fault_backend(server.url)
    raw = server.client()
    try:
        raw.hset(backend.key_prefix + "GET:hash", mapping={"not": "an entry"})
        raw.set(backend.key_prefix + "GET:ok", b"fine")
        for _ in range(10):
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await backend.get("GET:hash")
        assert backend.breaker.state == "closed"
        assert await backend.get("GET:ok") == b"fine"
    finally:
        raw.close()
        await backend.aclose()


# -- (j) closing: nothing reconnects behind aclose() ---------------------------------------------------------------


async def test_a_closed_backend_refuses_calls_until_reopened(server: RedisServer) -> None:
    server.start()
    backend = fault_backend(server.url)
    raw = server.client()
    try:
        await backend.set("GET:k", b"v", 60)
        await backend.aclose()
        before = {int(c["id"]) for c in raw.client_list()}
        for call in (
            backend.get("GET:k"),
            backend.fetch("GET:k", ["~g:s:k"]),
            backend.bump(["~g:s:k"]),
            backend.secret(),
        ):
            with pytest.raises(BackendUnavailable, match="closed"):
                await call
        assert {int(c["id"]) for c in raw.client_list()} <= before  # nothing reconnected behind the close
        backend.reopen()
        assert await backend.get("GET:k") == b"v"  # new connections, same namespace
    finally:
        raw.close()
        await backend.aclose()


def test_an_app_started_twice_caches_both_times(server: RedisServer) -> None:
    """A suite entering ``with TestClient(app)`` once per test restarts the app each time:
    its backend, closed at each shutdown, must not leave the cache silently off."""
    server.start()
    app = FastAPI()
    CacheManager(fault_backend(server.url)).init_app(app)
    router = APIRouter(route_class=CachedRoute)

    @router.get("/twice")
    @cache_config(ttl_seconds=60)
    async def twice():
        return {"ok": True}

    app.include_router(router)
    seen = []
    for _ in range(2):
        with TestClient(app) as client:
            seen.append([client.get("/twice").headers["x-cache"] for _ in range(2)])
    assert seen == [["MISS", "HIT"], ["HIT", "HIT"]]


def _leaks(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("kind", ["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def test_a_call_in_flight_at_aclose_finishes_and_leaks_nothing(kind: str, request: pytest.FixtureRequest) -> None:
    """Cause of the flaky ``test_stale`` cluster cases: a background refresh's last call
    (releasing its lock) was still in flight when the test closed the backend. Cut off,
    it reconnected (the cluster client rediscovered the cluster) and left sockets open
    that a later test's garbage collection reported as ResourceWarnings."""
    backend: RedisBackend | RedisClusterBackend
    if kind == "redis":
        backend = RedisBackend(request.getfixturevalue("redis_server").url, key_prefix=unique_prefix())
    else:
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        backend = RedisClusterBackend(startup_nodes=nodes, key_prefix=unique_prefix())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        token = await backend.acquire_lock("~l:GET:items", 30)
        assert token is not None
        late = asyncio.create_task(backend.release_lock("~l:GET:items", token))
        await asyncio.sleep(0)  # the release is on the wire
        await backend.aclose()
        await late  # it finished, before the connections closed
        assert late.exception() is None
        del late, backend
        gc.collect()
    assert _leaks(caught) == []
