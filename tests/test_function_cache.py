"""``@cached``: the function cache, driven as users drive it (in requests, in workers, sync and async)."""

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from intelligent_cache import CacheManager, ConfigurationError, MemoryBackend, cached, invalidates, use_cache
from intelligent_cache.functions import function_key
from intelligent_cache.testing import FakeClock
from tests.conftest import PATIENT, unique_prefix


@pytest.fixture
def manager(clock: FakeClock) -> CacheManager:
    return CacheManager(MemoryBackend(clock=clock), clock=clock)


def counting() -> tuple[list[tuple[object, ...]], object]:
    calls: list[tuple[object, ...]] = []

    async def load(user_id: int, *, full: bool = False) -> dict[str, object]:
        calls.append((user_id, full))
        return {"user": user_id, "full": full}

    return calls, load


async def test_a_second_call_is_served_from_the_cache_and_arguments_are_bound(manager: CacheManager) -> None:
    calls, load = counting()
    profile = cached(ttl_seconds=60, manager=manager)(load)
    assert await profile(1) == {"user": 1, "full": False}
    assert await profile(user_id=1) == {"user": 1, "full": False}  # the same bound arguments
    assert await profile(1, full=False) == {"user": 1, "full": False}  # defaults applied
    assert await profile(1, full=True) == {"user": 1, "full": True}
    assert calls == [(1, False), (1, True)]
    assert profile.__name__ == "load" and profile.__wrapped__ is load


async def test_keyword_order_never_matters_and_types_always_do(manager: CacheManager) -> None:
    seen: list[object] = []

    @cached(manager=manager)
    async def echo(a: object, b: object = None) -> str:
        seen.append((a, b))
        return repr((a, b))

    await echo(a=1, b=2)
    await echo(b=2, a=1)
    for value in (1, 1.0, True, "1", b"1", Decimal("1"), (1,), [1], {1}, {"1": 1}, None):
        await echo(value)
    assert len(seen) == 12  # (1, 2) once, then every value of another type its own entry


def test_keys_are_injective_across_types_and_separators() -> None:
    arguments = [
        {"a": "x:y", "b": ""},
        {"a": "x", "b": ":y"},
        {"a": ["x", "y"]},
        {"a": ("x", "y")},
        {"a": "['x', 'y']"},
        {"a": {"k": "v"}},
        {"a": [["k", "v"]]},
        {"a": uuid.UUID(int=1)},
        {"a": str(uuid.UUID(int=1))},
    ]
    keys = {function_key("f", item) for item in arguments}
    assert len(keys) == len(arguments)
    assert all(key.startswith("@fn:f:") and len(key) < 100 for key in keys)
    assert function_key("f", {"a": "x" * 1_000_000}).startswith("@fn:f:")  # bounded whatever the input


async def test_an_argument_without_a_stable_value_is_refused_unless_key_says_what_to_key_by(
    manager: CacheManager,
) -> None:
    @dataclass
    class Connection:
        dsn: str

    @cached(manager=manager)
    async def fetch(db: Connection, user_id: int) -> int:
        return user_id

    with pytest.raises(TypeError, match="type Connection cannot be keyed"):
        await fetch(Connection("pg://"), 1)
    calls: list[int] = []

    @cached(manager=manager, key=lambda db, user_id: user_id)
    async def fetch_by_id(db: Connection, user_id: int) -> int:
        calls.append(user_id)
        return user_id

    assert [await fetch_by_id(Connection("a"), 7), await fetch_by_id(Connection("b"), 7)] == [7, 7]
    assert calls == [7]


async def test_tags_with_argument_templates_are_invalidated_by_the_service_and_by_writes(
    manager: CacheManager,
) -> None:
    calls, load = counting()
    profile = cached(tags=["user:{user_id}"], manager=manager)(load)
    await profile(7)
    await profile(8)
    await manager.service().invalidate_tags("user:7")
    await profile(7)
    await profile(8)
    assert calls == [(7, False), (8, False), (7, False)]

    app = FastAPI()
    manager.init_app(app)

    @app.post("/users/{user_id}/rename")
    @invalidates("user:{user_id}")
    async def rename(user_id: int) -> dict[str, bool]:
        return {"ok": True}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/users/8/rename")).status_code == 200
    await profile(8)
    assert calls[-1] == (8, False) and len(calls) == 4


async def test_invalidate_one_call_or_every_call(manager: CacheManager) -> None:
    calls, load = counting()
    profile = cached(manager=manager)(load)
    await profile(1)
    await profile(2)
    assert await profile.invalidate(1) is True
    await profile(1)
    await profile(2)
    assert calls == [(1, False), (2, False), (1, False)]
    await profile.invalidate_all()
    await profile(1)
    await profile(2)
    assert len(calls) == 5


async def test_concurrent_misses_compute_once(manager: CacheManager) -> None:
    started = 0

    @cached(manager=manager)
    async def slow(x: int) -> int:
        nonlocal started
        started += 1
        await asyncio.sleep(0.05)
        return x * 2

    assert await asyncio.gather(*(slow(21) for _ in range(50))) == [42] * 50
    assert started == 1


async def test_stats_are_kept_per_function(manager: CacheManager) -> None:
    _, load = counting()
    profile = cached(manager=manager, name="profiles.load")(load)
    await profile(1)
    await profile(1)
    stats = await manager.service().get_stats()
    assert stats["routes"]["@cached profiles.load"]["hits"] == 1
    assert stats["routes"]["@cached profiles.load"]["misses"] == 1


async def test_inside_a_request_the_apps_manager_is_used(clock: FakeClock) -> None:
    backend = MemoryBackend(clock=clock)
    calls: list[str] = []

    @cached(ttl_seconds=60)
    async def price(sku: str) -> int:
        calls.append(sku)
        return 100

    app = FastAPI()
    CacheManager(backend, clock=clock).init_app(app)

    @app.get("/a")
    async def a() -> dict[str, int]:
        return {"price": await price("x")}

    @app.get("/b")
    async def b() -> dict[str, int]:
        return {"price": await price("x")}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/a")).json() == (await client.get("/b")).json() == {"price": 100}
    assert calls == ["x"]
    assert any(key.startswith("@fn:") for key, _ in (await backend.scan())[1])


async def test_without_a_manager_it_runs_uncached_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    calls, load = counting()
    profile = cached(load)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        await profile(1)
        await profile(1)
    assert calls == [(1, False), (1, False)]
    assert [record.getMessage() for record in caplog.records].count(
        f"@cached {load.__module__}.{load.__qualname__} runs uncached: no CacheManager "
        "(pass manager=, call it in a request, or use_cache)"
    ) == 1


async def test_use_cache_sets_the_manager_for_a_worker_scope(manager: CacheManager) -> None:
    calls, load = counting()
    profile = cached(load)
    with use_cache(manager):
        await profile(3)
        await profile(3)
    assert calls == [(3, False)]


async def test_a_result_that_cannot_be_stored_is_returned_and_not_cached(
    manager: CacheManager, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[object] = []

    @cached(manager=manager)
    async def make(n: int) -> object:
        made.append(object())
        return made[-1]

    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        first, second = await make(1), await make(1)
    assert first is made[0] and second is made[1]
    assert any("cannot be stored" in record.getMessage() for record in caplog.records)


def test_a_sync_function_is_cached_in_fastapis_threadpool(clock: FakeClock) -> None:
    from fastapi.testclient import TestClient

    calls: list[tuple[int, str]] = []

    @cached
    def report(n: int) -> dict[str, int]:
        calls.append((n, threading.current_thread().name))
        return {"n": n}

    app = FastAPI()
    CacheManager(MemoryBackend(clock=clock), clock=clock).init_app(app)

    @app.get("/report")
    def endpoint() -> dict[str, int]:  # sync: FastAPI runs it in a worker thread
        return report(5)

    with TestClient(app) as client:
        assert client.get("/report").json() == client.get("/report").json() == {"n": 5}
    assert len(calls) == 1


def test_a_sync_function_in_a_script_is_cached(manager: CacheManager) -> None:
    calls: list[int] = []

    @cached(manager=manager)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert (square(4), square(4)) == (16, 16)
    assert calls == [4]


async def test_a_sync_function_called_on_the_event_loop_runs_uncached(
    manager: CacheManager, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @cached(manager=manager)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        assert (square(3), square(3)) == (9, 9)
    assert calls == [3, 3]
    assert any("called on the event loop" in record.getMessage() for record in caplog.records)


@pytest.mark.redis
async def test_two_processes_on_one_redis_share_results_and_invalidations(request: pytest.FixtureRequest) -> None:
    from intelligent_cache import RedisBackend

    server = request.getfixturevalue("redis_server")
    prefix = unique_prefix()
    first = CacheManager(RedisBackend(server.url, key_prefix=prefix, **PATIENT))
    second = CacheManager(RedisBackend(server.url, key_prefix=prefix, **PATIENT))
    calls: list[int] = []

    @cached(tags=["n:{n}"])
    async def compute(n: int) -> int:
        calls.append(n)
        return n + 1

    try:
        with use_cache(first):
            assert await compute(1) == 2
        with use_cache(second):
            assert await compute(1) == 2  # computed by the other process
            await second.service().invalidate_tags("n:1")
        with use_cache(first):
            assert await compute(1) == 2
        assert calls == [1, 1]
    finally:
        await first.backend.clear()
        await first.backend.aclose()
        await second.backend.aclose()


@pytest.mark.parametrize(
    "options",
    [{"tags": ["user:{nobody}"]}, {"tags": "user"}, {"ttl_seconds": 0}, {"ttl_seconds": -1}, {"ttl_seconds": "1"}],
)
def test_settings_that_cannot_work_are_refused(options: dict[str, object]) -> None:
    async def load(user_id: int) -> int:
        return user_id

    with pytest.raises(ConfigurationError):
        cached(**options)(load)  # type: ignore[arg-type]


async def test_invalidates_may_name_query_parameters(manager: CacheManager) -> None:
    calls, load = counting()
    profile = cached(tags=["user:{user_id}"], manager=manager)(load)
    app = FastAPI()
    manager.init_app(app)

    @app.post("/rename")
    @invalidates("user:{user_id}")
    async def rename(user_id: int) -> dict[str, bool]:  # a query parameter
        return {"ok": True}

    await profile(4)
    await profile(5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/rename", params={"user_id": 4})).status_code == 200
    await profile(4)
    await profile(5)
    assert calls == [(4, False), (5, False), (4, False)]


def test_invalidates_naming_no_parameter_of_the_write_is_refused_at_set_up() -> None:
    app = FastAPI()
    CacheManager().init_app(app)
    with pytest.raises(ConfigurationError, match="not its path or query parameters"):

        @app.post("/rename")
        @invalidates("user:{nobody}")
        async def rename(user_id: int) -> None: ...
