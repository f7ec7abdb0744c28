import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend
from intelligent_cache.testing import FakeClock
from tests.redis_servers import RedisCluster, RedisServer, require_redis_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def manager(memory_backend: MemoryBackend, clock: FakeClock) -> CacheManager:
    return CacheManager(memory_backend, clock=clock)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session; tests isolate by key prefix."""
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-primary Redis Cluster for the whole session."""
    require_redis_server(cli=True)
    with RedisCluster(primaries=3) as cluster:
        yield cluster


def unique_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}:"


# Generous timeouts: tests about behaviour, not about a Redis slowed down by a
# shared, loaded machine (fault tests set their own, short ones).
PATIENT = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}

BACKEND_KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


async def make_backend(kind: str, request: pytest.FixtureRequest, clock: FakeClock, **options: object) -> CacheBackend:
    if kind == "memory":
        return MemoryBackend(clock=clock, **options)  # type: ignore[arg-type]
    options = {**PATIENT, "key_prefix": unique_prefix(), **options}
    if kind == "redis":
        from intelligent_cache.backends.redis import RedisBackend

        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisBackend(server.url, **options)  # type: ignore[arg-type]
    from intelligent_cache.backends.redis import RedisClusterBackend

    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return RedisClusterBackend(startup_nodes=cluster.startup_nodes, **options)  # type: ignore[arg-type]


@pytest.fixture(params=BACKEND_KINDS)
async def backend(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[CacheBackend]:
    """Every backend kind: the contract suite runs against each."""
    instance = await make_backend(request.param, request, clock)
    try:
        yield instance
    finally:
        await instance.aclose()
