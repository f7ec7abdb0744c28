"""Serving stale (checklist items 21-23): stale-while-revalidate, stale-if-error and soft purge.

Freshness and the stale windows are measured on the manager's clock (the ``clock`` fixture);
the background refresh is a real task on the test's event loop, so tests let the loop run
until the refresh has stored its entry (``settle``), with a deadline that only guards against
a hang. A refresh that must still be running while requests arrive is held on an Event.
"""

import asyncio

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse

from intelligent_cache import CacheManager, cache_config
from intelligent_cache.testing import FakeClock
from tests.conftest import make_backend

TTL = 10
WINDOW = 30

REDIS_KINDS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


class Origin:
    """The endpoint behind the cache: counts calls, can fail in several ways, can be held."""

    def __init__(self) -> None:
        self.calls = 0
        self.mode = "ok"
        self.cache_control: str | None = None
        self.gate: asyncio.Event | None = None  # when set up, computations wait for it

    async def respond(self):
        self.calls += 1
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        mode = self.mode
        if mode == "raise":
            raise RuntimeError("origin down")
        if mode == "timeout":
            raise TimeoutError("origin timed out")
        if mode.startswith("http"):
            raise HTTPException(status_code=int(mode.removeprefix("http")))
        if mode.startswith("status"):
            return PlainTextResponse(f"error {number}", status_code=int(mode.removeprefix("status")))
        response = PlainTextResponse(f"call {number}")
        if self.cache_control is not None:
            response.headers["cache-control"] = self.cache_control
        return response


def stale_app(backend, clock: FakeClock, origin: Origin, **options) -> tuple[FastAPI, CacheManager]:
    """GET /r cached for TTL seconds with the given stale windows; POST /r is a write."""
    manager_options = {name: options.pop(name) for name in ("soft_purge", "lock_timeout") if name in options}
    app = FastAPI()
    manager = CacheManager(backend, clock=clock, **manager_options)
    manager.init_app(app)

    @app.get("/r")
    @cache_config(ttl_seconds=TTL, **options)
    async def read():
        return await origin.respond()

    @app.post("/r")
    async def write():
        return {"written": True}

    return app, manager


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def settle(condition) -> None:
    """Let background work run until ``condition()`` holds (the deadline only guards against a hang)."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.001)  # polled: a refresh has no event to wait on


def state(response: httpx.Response) -> tuple[int, str, str | None]:
    return response.status_code, response.text, response.headers.get("x-cache")


# -- 22. stale-while-revalidate -------------------------------------------------------------------------------


async def test_item_22_stale_is_served_at_once_while_one_refresh_runs(backend, clock):
    origin = Origin()
    app, manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        assert state(await client.get("/r")) == (200, "call 1", "MISS")
        clock.advance(TTL + 5)
        origin.gate = asyncio.Event()  # the refresh cannot finish until released
        stale = await client.get("/r")
        assert state(stale) == (200, "call 1", "STALE")
        assert stale.headers["age"] == str(TTL + 5)
        assert "fwd=stale" in stale.headers["cache-status"]
        await settle(lambda: origin.calls == 2)  # the refresh is running, held at the gate
        assert manager.stats.stores == 1
        origin.gate.set()
        await settle(lambda: manager.stats.stores == 2)
        fresh = await client.get("/r")
    assert state(fresh) == (200, "call 2", "HIT")
    assert fresh.headers["age"] == "0"
    assert origin.calls == 2


async def test_item_22_concurrent_stale_requests_run_exactly_one_refresh(backend, clock):
    origin = Origin()
    app, manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        origin.gate = asyncio.Event()
        responses = await asyncio.gather(*(client.get("/r") for _ in range(20)))
        more = await asyncio.gather(*(client.get("/r") for _ in range(5)))
        assert {state(response) for response in [*responses, *more]} == {(200, "call 1", "STALE")}
        origin.gate.set()
        await settle(lambda: manager.stats.stores == 2)
        after = await client.get("/r")
    assert state(after) == (200, "call 2", "HIT")
    assert origin.calls == 2


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        pytest.param(TTL - 1, (200, "call 1", "HIT"), id="fresh"),
        pytest.param(TTL, (200, "call 1", "STALE"), id="expiry"),
        pytest.param(TTL + WINDOW - 1, (200, "call 1", "STALE"), id="window-end"),
        pytest.param(TTL + WINDOW, (200, "call 2", "MISS"), id="after-window"),
        pytest.param(TTL + 10 * WINDOW, (200, "call 2", "MISS"), id="long-after"),
    ],
)
async def test_item_22_stale_only_within_the_window(backend, clock, elapsed, expected):
    origin = Origin()
    app, manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(elapsed)
        response = await client.get("/r")
        if expected[2] == "STALE":
            await settle(lambda: manager.stats.stores == 2)
    assert state(response) == expected


async def test_item_22_a_failed_refresh_keeps_the_old_entry_within_the_window(backend, clock):
    origin = Origin()
    app, manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        origin.mode = "raise"
        assert state(await client.get("/r")) == (200, "call 1", "STALE")
        await settle(lambda: manager.stats.refresh_errors == 1)
        clock.advance(1)
        again = await client.get("/r")
        await settle(lambda: manager.stats.refresh_errors == 2)
        origin.mode = "ok"
        clock.advance(WINDOW)
        after_window = await client.get("/r")
    assert state(again) == (200, "call 1", "STALE")
    assert origin.calls == 4
    assert state(after_window) == (200, "call 4", "MISS")


@pytest.mark.parametrize(
    "cache_control", ["max-age=10, must-revalidate", "max-age=10, proxy-revalidate", "max-age=10, s-maxage=10"]
)
async def test_item_22_no_stale_when_the_response_forbids_it(backend, clock, cache_control):
    origin = Origin()
    origin.cache_control = cache_control
    app, _manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        response = await client.get("/r")
    assert state(response) == (200, "call 2", "MISS")


@pytest.mark.parametrize(
    ("headers", "x_cache"),
    [({"Cache-Control": "no-cache"}, "SKIP"), ({"Cache-Control": "max-age=3600"}, "MISS")],
    ids=["no-cache", "max-age"],
)
async def test_item_22_no_stale_when_the_request_forbids_it(backend, clock, headers, x_cache):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        response = await client.get("/r", headers=headers)
    assert state(response) == (200, "call 2", x_cache)


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_item_22_one_refresh_across_workers(kind, request, clock):
    from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend

    backend = await make_backend(kind, request, clock)
    if kind == "redis":
        twin = RedisBackend(request.getfixturevalue("redis_server").url, key_prefix=backend.key_prefix)
    else:
        twin = RedisClusterBackend(
            startup_nodes=request.getfixturevalue("redis_cluster").startup_nodes, key_prefix=backend.key_prefix
        )
    origin = Origin()
    first, first_manager = stale_app(backend, clock, origin, stale_while_revalidate=WINDOW)
    second, _ = stale_app(twin, clock, origin, stale_while_revalidate=WINDOW)
    refused: list[str] = []
    acquire = twin.acquire_lock

    async def observed_acquire(name, ttl):
        token = await acquire(name, ttl)
        if token is None:
            refused.append(name)
        return token

    twin.acquire_lock = observed_acquire
    try:
        async with client_for(first) as one, client_for(second) as two:
            await one.get("/r")
            clock.advance(TTL + 1)
            origin.gate = asyncio.Event()
            assert state(await one.get("/r")) == (200, "call 1", "STALE")
            await settle(lambda: origin.calls == 2)  # worker one refreshes, held at the gate
            assert state(await two.get("/r")) == (200, "call 1", "STALE")
            await settle(lambda: bool(refused))  # worker two found worker one's refresh lock and gave up
            origin.gate.set()
            await settle(lambda: first_manager.stats.stores == 2)
            after = await two.get("/r")
    finally:
        await backend.aclose()
        await twin.aclose()
    assert state(after) == (200, "call 2", "HIT")
    assert origin.calls == 2
    assert all(name.startswith("~l:r:") for name in refused)


# -- 23. stale-if-error ----------------------------------------------------------------------------------------

FAILURES = ["raise", "timeout", "http500", "http503", "status500", "status502", "status503", "status504"]


@pytest.mark.parametrize("failure", FAILURES)
async def test_item_23_stale_if_error_serves_the_old_body_within_the_window(backend, clock, failure):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + WINDOW - 1)
        origin.mode = failure
        response = await client.get("/r")
    assert state(response) == (200, "call 1", "STALE")
    assert response.headers["age"] == str(TTL + WINDOW - 1)
    assert "detail=error" in response.headers["cache-status"]
    assert origin.calls == 2


def expected_error(failure: str) -> int:
    if failure in ("raise", "timeout"):
        return 500
    return int(failure.removeprefix("http").removeprefix("status"))


@pytest.mark.parametrize("failure", FAILURES)
async def test_item_23_outside_the_window_the_error_is_passed_on(backend, clock, failure):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + WINDOW)
        origin.mode = failure
        response = await client.get("/r")
    assert response.status_code == expected_error(failure)
    assert "call 1" not in response.text


@pytest.mark.parametrize("failure", ["raise", "http503", "status502"])
async def test_item_23_no_stale_if_error_for_a_request_with_no_cache(backend, clock, failure):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        origin.mode = failure
        response = await client.get("/r", headers={"Cache-Control": "no-cache"})
    assert response.status_code == expected_error(failure)
    assert "call 1" not in response.text


@pytest.mark.parametrize("failure", ["raise", "http503", "status500"])
async def test_item_23_must_revalidate_with_a_failing_origin_gives_504(backend, clock, failure):
    origin = Origin()
    origin.cache_control = "max-age=10, must-revalidate"
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        origin.mode = failure
        response = await client.get("/r")
    assert response.status_code == 504
    assert "call 1" not in response.text


@pytest.mark.parametrize("cache_control", ["max-age=10, proxy-revalidate", "max-age=10, s-maxage=10"])
async def test_item_23_proxy_revalidate_and_s_maxage_forbid_stale_if_error(backend, clock, cache_control):
    origin = Origin()
    origin.cache_control = cache_control
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        origin.mode = "status503"
        response = await client.get("/r")
    assert (response.status_code, response.text) == (503, "error 2")


@pytest.mark.parametrize("failure", ["status404", "http404", "status501"])
async def test_item_23_other_statuses_are_not_errors_for_stale_if_error(backend, clock, failure):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        origin.mode = failure
        response = await client.get("/r")
    assert response.status_code == expected_error(failure)
    assert "call 1" not in response.text


async def test_item_23_a_working_origin_replaces_the_expired_entry(backend, clock):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(TTL + 1)
        recomputed = await client.get("/r")
        origin.mode = "raise"
        hit = await client.get("/r")
    assert state(recomputed) == (200, "call 2", "MISS")
    assert state(hit) == (200, "call 2", "HIT")


# -- 21. soft purge ----------------------------------------------------------------------------------------------


async def test_item_21_soft_purge_serves_stale_after_a_write_and_refreshes(backend, clock):
    origin = Origin()
    app, manager = stale_app(backend, clock, origin, soft_purge=True, stale_while_revalidate=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        assert (await client.post("/r")).status_code == 200
        stale = await client.get("/r")
        await settle(lambda: manager.stats.stores == 2)
        after = await client.get("/r")
    assert state(stale) == (200, "call 1", "STALE")
    assert state(after) == (200, "call 2", "HIT")


async def test_item_21_soft_purge_keeps_stale_if_error_after_a_write(backend, clock):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, soft_purge=True, stale_if_error=WINDOW)
    async with client_for(app) as client:
        await client.get("/r")
        await client.post("/r")
        origin.mode = "status503"
        response = await client.get("/r")
    assert state(response) == (200, "call 1", "STALE")


@pytest.mark.parametrize(
    "windows",
    [
        {"stale_while_revalidate": WINDOW},
        {"stale_if_error": WINDOW},
        {"stale_while_revalidate": 5, "stale_if_error": 5},
    ],
    ids=["swr", "sie", "both"],
)
async def test_item_21_without_soft_purge_a_write_is_never_followed_by_pre_write_data(backend, clock, windows):
    origin = Origin()
    app, _manager = stale_app(backend, clock, origin, **windows)
    async with client_for(app) as client:
        await client.get("/r")
        await client.post("/r")
        after_write = await client.get("/r")
        await client.post("/r")
        origin.mode = "status503"
        failing = await client.get("/r")
    assert state(after_write) == (200, "call 2", "MISS")
    assert failing.status_code == 503
    assert "call" not in failing.text
