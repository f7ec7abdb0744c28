"""``CacheManager(startup_check=...)``: a misconfigured backend is reported when the app starts, with Redis's own words.

Every Redis case runs against private ``redis-server`` processes the tests start: one whose password
is set, the session's server asked for database 99 (it has 16), a port nothing listens on, a paused
server (timeouts), and a Redis Cluster backend pointed at a single server. The apps are driven as users
drive them: their lifespan, then requests over ``httpx.ASGITransport``; one case runs real uvicorn.
"""

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from intelligent_cache import (
    BackendUnavailable,
    CacheBackend,
    CacheManager,
    ConfigurationError,
    MemoryBackend,
    cache_config,
)
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import RedisServer, require_redis_server

TOKEN = "startup-s3cret"
AUTH = {"X-Admin-Token": TOKEN}
PASSWORD = "right-horse-battery"
WRONG_PASSWORD = "hunter2-not-it"


def require_token(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def make_app(backend: CacheBackend, **options: Any) -> FastAPI:
    app = FastAPI()
    CacheManager(backend, include_admin_routes=True, admin_auth_dependency=require_token, **options).init_app(app)

    @app.get("/items")
    @cache_config(ttl_seconds=60)
    async def items() -> dict[str, int]:
        return {"items": 3}

    return app


@contextlib.asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan (start-up checks included), then a client over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "intelligent_cache" and r.levelno >= logging.WARNING]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens on it once closed


# -- the servers ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    """A private server with a password. Set once it runs: the helper's readiness probe is an unauthenticated PING."""
    require_redis_server()
    with RedisServer() as server:
        server.client().config_set("requirepass", PASSWORD)
        yield server


@pytest.fixture
def paused_server() -> Iterator[RedisServer]:
    """A private server stopped with SIGSTOP: connections are accepted, nothing answers."""
    require_redis_server()
    with RedisServer() as server:
        server.pause()
        try:
            yield server
        finally:
            server.resume()


@dataclass(frozen=True)
class Misconfiguration:
    """A backend that cannot work, and what the start-up check must say about it."""

    make: Callable[[pytest.FixtureRequest], CacheBackend]
    error: str  # in the error text: redis-py's exception type and Redis's message
    hint: str  # in the advice


def redis_backend(url: str, **options: Any) -> CacheBackend:
    from intelligent_cache.backends.redis import RedisBackend

    return RedisBackend(url, key_prefix=unique_prefix(), **{**PATIENT, **options})


def cluster_backend(url: str) -> CacheBackend:
    from intelligent_cache.backends.redis import RedisClusterBackend

    return RedisClusterBackend(url, key_prefix=unique_prefix(), **PATIENT)


def locked(request: pytest.FixtureRequest) -> RedisServer:
    server: RedisServer = request.getfixturevalue("locked_server")
    return server


def shared(request: pytest.FixtureRequest) -> RedisServer:
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


MISCONFIGURATIONS = [
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(locked(request).url, password=WRONG_PASSWORD),
            "AuthenticationError: invalid username-password pair",
            "check the password",
        ),
        id="wrong-password",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(f"redis://app:{WRONG_PASSWORD}@127.0.0.1:{locked(request).port}/0"),
            "AuthenticationError: invalid username-password pair",
            "check the password",
        ),
        id="wrong-password-in-the-url",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(locked(request).url),
            # redis-py 8: "HELLO must be called with the client already authenticated..."; 5: "Authentication required".
            "AuthenticationError: ",
            "check the password",
        ),
        id="no-password",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(f"redis://127.0.0.1:{shared(request).port}/99"),
            "ResponseError: DB index is out of range",
            "check the database number",
        ),
        id="db-index-99-of-16",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(f"redis://127.0.0.1:{shared(request).port}", db=99),
            "ResponseError: DB index is out of range",
            "check the database number",
        ),
        id="db-99-argument",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(f"redis://127.0.0.1:{closed_port()}/0"),
            "ConnectionError: Error 111 connecting to 127.0.0.1:",
            "check the host and port",
        ),
        id="closed-port",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: redis_backend(
                request.getfixturevalue("paused_server").url, socket_timeout=0.5, socket_connect_timeout=0.5
            ),
            "TimeoutError: Timeout reading from 127.0.0.1:",
            "check the host and port",
        ),
        id="server-not-answering",
    ),
    pytest.param(
        Misconfiguration(
            lambda request: cluster_backend(f"redis://127.0.0.1:{shared(request).port}"),
            "RedisClusterException: Redis Cluster cannot be connected. Please provide at least one reachable node: "
            "Cluster mode is not enabled on this node",
            "not a Redis Cluster node: use RedisBackend",
        ),
        id="cluster-backend-at-a-single-server",
    ),
]


# -- "log", the default: one warning, the app starts and fails open ------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("case", MISCONFIGURATIONS)
async def test_log_warns_once_with_the_error_and_a_hint_then_serves_uncached(request, caplog, case):
    backend = case.make(request)
    app = make_app(backend)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        async with started(app) as client:
            at_start = cache_warnings(caplog)
            served = await client.get("/items")
            health = await client.get("/api/cache/health", headers=AUTH)
            last_error = app.state.intelligent_cache.io.last_error
            stats = (await client.get("/api/cache/stats", headers=AUTH)).json()

    assert len(at_start) == 1, at_start
    (warning,) = at_start
    assert f"cache backend {backend.name} failed its start-up check: {case.error}" in warning
    assert case.hint in warning
    assert "requests run uncached" in warning
    assert WRONG_PASSWORD not in warning and PASSWORD not in warning

    # Failing open: the app answers, uncached.
    assert (served.status_code, served.json(), served.headers["x-cache"]) == (200, {"items": 3}, "SKIP")
    assert stats["degraded"] is True and stats["errors"] >= 1

    # The health check answers 503, and keeps the error's text for whoever looks later.
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable"
    assert body["last_error"] == last_error  # the latest failure (the request's, by now)
    assert body["reason"].startswith(case.error.split(":")[0] + ": ")  # the ping's error, with its message
    assert WRONG_PASSWORD not in health.text and PASSWORD not in health.text


# -- "raise": the app refuses to start -----------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("case", MISCONFIGURATIONS)
async def test_raise_refuses_to_start_naming_the_backend_and_the_error(request, case):
    backend = case.make(request)
    app = make_app(backend, startup_check="raise")
    with pytest.raises(ConfigurationError) as raised:
        async with started(app):
            pytest.fail("the app started")
    message = str(raised.value)
    assert message.startswith(f"cache backend {backend.name} failed its start-up check: {case.error}")
    assert case.hint in message
    assert WRONG_PASSWORD not in message
    assert raised.value.__cause__ is not None  # the backend's own exception, for the traceback
    with pytest.raises(BackendUnavailable, match="closed"):  # closed on the way out: no connection left behind
        await backend.get("anything")


@pytest.mark.redis
def test_raise_makes_uvicorn_exit_before_serving():
    app = make_app(redis_backend(f"redis://127.0.0.1:{closed_port()}/0"), startup_check="raise")
    # log_config=None: uvicorn's own config would stop its records before pytest's handler.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_config=None, log_level="error")
    server = uvicorn.Server(config)
    # On uvicorn's own logger, at its level: another test's uvicorn run may have set both otherwise.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    uvicorn_logger = logging.getLogger("uvicorn.error")
    uvicorn_logger.addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exited:
            server.run()
    finally:
        uvicorn_logger.removeHandler(handler)
    assert exited.value.code == 3  # uvicorn: "Application startup failed. Exiting."
    assert not server.started
    logged = "\n".join(record.getMessage() for record in records)
    assert "ConfigurationError: cache backend redis failed its start-up check: ConnectionError: Error 111" in logged


# -- a backend that works, "off", and the option itself ------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["log", "raise"])
async def test_a_reachable_redis_passes_silently(redis_server, caplog, mode):
    app = make_app(redis_backend(redis_server.url), startup_check=mode)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        async with started(app) as client:
            assert cache_warnings(caplog) == []
            assert [(await client.get("/items")).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
            health = (await client.get("/api/cache/health", headers=AUTH)).json()
            await app.state.intelligent_cache.backend.clear()
    assert health["status"] == "ok"
    assert health["last_error"] is None


class CountingPings(MemoryBackend):
    def __init__(self, fails: Exception | None = None) -> None:
        super().__init__()
        self.pings = 0
        self.fails = fails

    async def ping(self) -> None:
        self.pings += 1
        if self.fails is not None:
            raise self.fails


@pytest.mark.parametrize("mode", ["log", "raise"])
async def test_the_memory_backend_passes(caplog, mode):
    backend = CountingPings()
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        async with started(make_app(backend, startup_check=mode)) as client:
            assert cache_warnings(caplog) == []
            assert backend.pings == 1
            assert (await client.get("/items")).headers["x-cache"] == "MISS"


async def test_off_does_not_ping(caplog):
    backend = CountingPings(fails=ConnectionError("would have been reported"))
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        async with started(make_app(backend, startup_check="off")) as client:
            assert (await client.get("/items")).headers["x-cache"] == "MISS"
            health = (await client.get("/api/cache/health", headers=AUTH)).json()
    assert backend.pings == 1  # the health check's own, none at start-up
    assert cache_warnings(caplog) == []
    assert health["last_error"] is None  # health pings do not count as request-path failures


async def test_the_check_runs_at_every_start(caplog):
    backend = CountingPings(fails=ConnectionError("down"))
    app = make_app(backend)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        for _ in range(2):
            async with started(app):
                pass
    warnings = [text for text in cache_warnings(caplog) if "start-up check" in text]
    assert len(warnings) == 2 and backend.pings == 2


@pytest.mark.parametrize("value", ["warn", "", None, True, "RAISE"])
def test_an_unknown_mode_is_a_configuration_error(value):
    with pytest.raises(ConfigurationError, match="startup_check"):
        CacheManager(startup_check=value)


# -- the last error: kept, typed, and never a password -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:hunter2@cache.internal:6379/0", "redis://app:***@cache.internal:6379/0"),
        ("rediss://:hunter2@cache.internal:6380", "rediss://:***@cache.internal:6380"),
        ("redis://hunter2@cache.internal", "redis://***@cache.internal"),
        ("redis+sentinel://:hunter2@s1:26379,s2:26379/mymaster", "redis+sentinel://:***@s1:26379,s2:26379/mymaster"),
        ("redis://app:hunter2@with@at@cache.internal/0", "redis://app:***@cache.internal/0"),
    ],
)
async def test_credentials_in_an_error_never_reach_health_logs_or_the_exception(caplog, url, shown):
    backend = CountingPings(fails=ConnectionError(f"cannot reach {url}: refused"))
    app = make_app(backend)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        async with started(app) as client:
            health = await client.get("/api/cache/health", headers=AUTH)
    assert health.json()["last_error"] == f"ConnectionError: cannot reach {shown}: refused"
    assert "hunter2" not in health.json()["last_error"]
    assert all("hunter2" not in text for text in cache_warnings(caplog))
    assert any(shown in text for text in cache_warnings(caplog))
    with pytest.raises(ConfigurationError) as raised:
        async with started(make_app(CountingPings(fails=ConnectionError(url)), startup_check="raise")):
            pass
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "annotated",
    [  # redis-py's pipeline annotation, standalone and cluster (which quotes the args tuple)
        "Command # 1 (SET app:GET:me \x82\xa6body\xa9alice-ssn) of pipeline caused error: OOM command not allowed",
        "Command # 2 (SET app:GET:me alice-ssn ) of pipeline caused error: ('OOM command not allowed',)",
        # an argument that spells the annotation's end itself
        "Command # 1 (SET k alice-ssn) of pipeline caused error: fake) of pipeline caused error: OOM not allowed",
    ],
)
async def test_a_failed_pipeline_command_shows_its_name_not_its_arguments(annotated):
    """An entry is a response: its bytes never reach ``last_error`` (``/health``) or the log."""
    async with started(make_app(CountingPings(fails=ConnectionError(annotated)))) as client:
        shown = (await client.get("/api/cache/health", headers=AUTH)).json()["last_error"]
    assert shown.startswith("ConnectionError: Command # ") and "(SET ...) of pipeline caused error" in shown, shown
    assert "alice-ssn" not in shown and "fake" not in shown, shown


async def test_the_last_error_of_the_request_path_is_shown_after_recovery():
    class FlakyFetch(MemoryBackend):
        failing = True

        async def fetch(self, key: str, generation_keys: Any) -> Any:
            if self.failing:
                raise TimeoutError("Timeout reading from 10.0.0.7:6379")
            return await super().fetch(key, generation_keys)

    backend = FlakyFetch()
    async with started(make_app(backend)) as client:
        assert (await client.get("/api/cache/health", headers=AUTH)).json()["last_error"] is None
        assert (await client.get("/items")).headers["x-cache"] == "SKIP"
        down = (await client.get("/api/cache/health", headers=AUTH)).json()
        backend.failing = False
        assert (await client.get("/items")).headers["x-cache"] == "MISS"
        recovered = (await client.get("/api/cache/health", headers=AUTH)).json()
    assert down["last_error"] == "TimeoutError: Timeout reading from 10.0.0.7:6379"
    assert (recovered["status"], recovered["last_error"]) == ("ok", down["last_error"])


async def test_an_error_without_a_message_is_its_type():
    async with started(make_app(CountingPings(fails=TimeoutError()))) as client:
        assert (await client.get("/api/cache/health", headers=AUTH)).json()["last_error"] == "TimeoutError"


@pytest.mark.redis
async def test_a_redis_that_dies_shows_its_error_in_health():
    require_redis_server()
    with RedisServer() as server:
        backend = redis_backend(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        async with started(make_app(backend)) as client:
            assert (await client.get("/items")).headers["x-cache"] == "MISS"
            server.kill()
            assert (await client.get("/items")).headers["x-cache"] == "SKIP"
            health = (await client.get("/api/cache/health", headers=AUTH)).json()
    assert health["status"] == "unavailable"
    assert health["last_error"].startswith("ConnectionError: ")
    assert f"127.0.0.1:{server.port}" in health["last_error"]
    assert health["reason"].startswith("ConnectionError: ")  # the message, not redis-py's bare "network:..." repr
