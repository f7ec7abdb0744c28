"""Settings validation: ``@cache_config``, ``CacheConfig``, ``CacheManager`` and ``MemoryBackend`` arguments."""

import dataclasses
import math
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from intelligent_cache import (
    CacheConfig,
    CacheManager,
    ConfigurationError,
    IntelligentCacheError,
    MemoryBackend,
    cache_config,
)
from intelligent_cache.config import VarySource, get_config


def make_app(manager: CacheManager) -> tuple[FastAPI, dict[str, int]]:
    app = FastAPI()
    manager.init_app(app)
    return app, {}


# -- the decorator -----------------------------------------------------------------------------------------


def test_bare_decorator_returns_the_same_function():
    async def endpoint():
        return {}

    assert cache_config(endpoint) is endpoint
    assert get_config(endpoint) == CacheConfig()


def test_decorator_with_options_returns_the_same_function():
    def endpoint():
        return {}

    decorated = cache_config(ttl_seconds=5, vary_by=["user_id", "header:X-Tenant"], key_prefix="p")(endpoint)
    assert decorated is endpoint
    config = get_config(endpoint)
    assert config is not None
    assert config.ttl_seconds == 5
    assert config.key_prefix == "p"
    assert config.vary_by == (VarySource("state", "user_id"), VarySource("header", "x-tenant"))


def test_undecorated_function_has_no_config():
    def endpoint():
        return {}

    assert get_config(endpoint) is None


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CacheConfig().ttl_seconds = 5  # type: ignore[misc]


def declare(app: FastAPI, position: str, calls: dict[str, int]) -> None:
    if position == "above":

        @cache_config(ttl_seconds=60)
        @app.get("/route")
        async def above():
            calls["n"] = calls.get("n", 0) + 1
            return {"route": "above"}

    elif position == "below":

        @app.get("/route")
        @cache_config(ttl_seconds=60)
        async def below():
            calls["n"] = calls.get("n", 0) + 1
            return {"route": "below"}

    elif position == "bare-below":

        @app.get("/route")
        @cache_config
        def bare_below():
            calls["n"] = calls.get("n", 0) + 1
            return {"route": "bare-below"}

    else:

        @cache_config
        @app.get("/route")
        def bare_above():
            calls["n"] = calls.get("n", 0) + 1
            return {"route": "bare-above"}


@pytest.mark.parametrize("position", ["below", "above", "bare-below", "bare-above"])
def test_decorator_works_above_and_below_the_route_decorator(manager, position):
    app, calls = make_app(manager)
    declare(app, position, calls)
    client = TestClient(app)
    first = client.get("/route")
    second = client.get("/route")
    assert first.json() == second.json() == {"route": position}
    assert first.headers.get("x-cache") == "MISS"
    assert second.headers.get("x-cache") == "HIT"
    assert calls["n"] == 1
    # HEAD is answered from the same entry on a cached route, whichever order the decorators are in.
    assert client.head("/route").status_code == 200


def test_bare_decorator_uses_the_default_ttl(clock, memory_backend):
    manager = CacheManager(memory_backend, clock=clock, default_ttl=10)
    app, _ = make_app(manager)

    @app.get("/bare")
    @cache_config
    async def bare():
        return {}

    client = TestClient(app)
    assert client.get("/bare").headers["x-cache"] == "MISS"
    clock.advance(9)
    assert client.get("/bare").headers["x-cache"] == "HIT"
    clock.advance(2)
    assert client.get("/bare").headers["x-cache"] == "MISS"


def test_decorating_a_non_callable_raises():
    with pytest.raises(ConfigurationError):
        cache_config(ttl_seconds=5)("not a function")  # type: ignore[type-var]


# -- invalid options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, -1, -0.5, math.nan, math.inf, -math.inf, "10", True, False, [10]])
def test_invalid_ttl_raises(ttl):
    with pytest.raises(ConfigurationError) as excinfo:
        cache_config(ttl_seconds=ttl)
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, IntelligentCacheError)


@pytest.mark.parametrize("ttl", [0.001, 1, 3600, 1.5])
def test_valid_ttl_is_accepted(ttl):
    def endpoint():
        return {}

    cache_config(ttl_seconds=ttl)(endpoint)
    config = get_config(endpoint)
    assert config is not None
    assert config.ttl_seconds == ttl


@pytest.mark.parametrize("ttl", [0, -1, math.nan, "10", True])
def test_cache_config_dataclass_validates_too(ttl):
    with pytest.raises(ConfigurationError):
        CacheConfig(ttl_seconds=ttl)


@pytest.mark.parametrize(
    "vary_by",
    [
        [""],
        ["   "],
        ["header:"],
        ["cookie:"],
        ["query:page"],
        ["user id"],
        ["header:X Tenant"],
        ["1user"],
        ["user_id:"],
        [5],
        [None],
        [b"user_id"],
        ["user_id", "user_id"],
        ["header:X-Tenant", "header:x-tenant"],
    ],
)
def test_invalid_vary_by_items_raise(vary_by):
    with pytest.raises(ConfigurationError):
        cache_config(vary_by=vary_by)


def test_vary_by_as_a_single_string_raises():
    with pytest.raises(ConfigurationError):
        cache_config(vary_by="user_id")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("user_id", VarySource("state", "user_id")),
        ("header:X-Tenant", VarySource("header", "x-tenant")),
        ("HEADER:Accept-Language", VarySource("header", "accept-language")),
        ("cookie:session", VarySource("cookie", "session")),
        ("state:user.id", VarySource("state", "user.id")),
    ],
)
def test_valid_vary_by_items(spec, expected):
    assert VarySource.parse(spec) == expected


@pytest.mark.parametrize("prefix", ["GET", "~x", "~", "", "x" * 65, 5])
def test_reserved_or_invalid_key_prefix_raises(prefix):
    with pytest.raises(ConfigurationError):
        cache_config(key_prefix=prefix)


@pytest.mark.parametrize("prefix", ["catalog", "v2", "x" * 64, "GETX", "get", "a-b.c_d"])
def test_valid_key_prefix_is_accepted(prefix):
    def endpoint():
        return {}

    cache_config(key_prefix=prefix)(endpoint)
    config = get_config(endpoint)
    assert config is not None
    assert config.key_prefix == prefix


def test_enabled_false_is_recorded():
    def endpoint():
        return {}

    cache_config(enabled=False)(endpoint)
    config = get_config(endpoint)
    assert config is not None
    assert config.enabled is False


# -- CacheManager ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("default_ttl", [0, -1, math.nan, math.inf, "60", True, None])
def test_manager_rejects_invalid_default_ttl(default_ttl):
    with pytest.raises(ConfigurationError):
        CacheManager(default_ttl=default_ttl)


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "100", None])
def test_manager_rejects_invalid_max_response_size(size):
    with pytest.raises(ConfigurationError):
        CacheManager(max_response_size=size)


@pytest.mark.parametrize("backend", [object(), {}, "memory", MemoryBackend])
def test_manager_rejects_a_non_backend(backend):
    with pytest.raises(ConfigurationError):
        CacheManager(backend)


@pytest.mark.parametrize("prefix", ["api/cache", "/api/cache/", "/"])
def test_manager_rejects_invalid_admin_prefix(prefix):
    with pytest.raises(ConfigurationError):
        CacheManager(admin_prefix=prefix)


def test_manager_defaults():
    manager = CacheManager()
    assert isinstance(manager.backend, MemoryBackend)
    assert manager.default_ttl == 60
    assert manager.enabled is True


def test_manager_errors_are_value_errors():
    with pytest.raises(ValueError):
        CacheManager(default_ttl=0)


def test_second_manager_on_the_same_app_raises(manager):
    app = FastAPI()
    manager.init_app(app)
    manager.init_app(app)  # the same manager again is fine
    with pytest.raises(ConfigurationError):
        CacheManager().init_app(app)


# -- MemoryBackend -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"max_entries": 0}, {"max_entries": -1}, {"max_entries": True}, {"max_entries": 1.5}]
)
def test_memory_backend_rejects_invalid_max_entries(kwargs):
    with pytest.raises(ConfigurationError):
        MemoryBackend(**kwargs)


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_bytes": -1}, {"max_bytes": True}, {"max_bytes": "1000"}])
def test_memory_backend_rejects_invalid_max_bytes(kwargs):
    with pytest.raises(ConfigurationError):
        MemoryBackend(**kwargs)


def test_durations_may_be_timedeltas_everywhere():
    import asyncio

    @cache_config(ttl_seconds=timedelta(minutes=5), stale_while_revalidate=timedelta(seconds=30))
    async def endpoint() -> None: ...

    config = get_config(endpoint)
    assert config is not None
    assert (config.ttl_seconds, config.stale_while_revalidate) == (300.0, 30.0)
    manager = CacheManager(default_ttl=timedelta(hours=1), lock_timeout=timedelta(seconds=2))
    assert (manager.default_ttl, manager.lock_timeout) == (3600.0, 2.0)

    async def store() -> float | None:
        await manager.service().set("k", 1, ttl=timedelta(seconds=90))
        (_, ttl), *_ = (await manager.backend.scan("k"))[1]
        return ttl

    assert 89 < (asyncio.run(store()) or 0) <= 90


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1)])
def test_a_non_positive_timedelta_is_refused_like_a_number(bad):
    with pytest.raises(ConfigurationError, match="ttl_seconds"):
        cache_config(ttl_seconds=bad)
    with pytest.raises(ConfigurationError, match="default_ttl"):
        CacheManager(default_ttl=bad)
