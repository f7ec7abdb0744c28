"""RedisBackend and RedisClusterBackend against real private servers.

Namespacing (foreign keys survive every kind of clear), the physical layout of
keys and values, connection ownership and shutdown, the optional ``redis``
import, and Sentinel. Raw clients only ever touch the private servers of the
fixtures.
"""

import asyncio
import contextlib
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from intelligent_cache import CachedResponse, CacheManager, ConfigurationError, cache_config
from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend
from intelligent_cache.entry import decode
from intelligent_cache.testing import cache_state
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import HOST, RedisCluster, RedisServer, _free_port, redis_server_binary

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent

KINDS = [
    pytest.param("redis", id="redis"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
]


def glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class Target:
    """One Redis deployment seen two ways: a backend factory and raw per-node clients."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        if kind == "redis":
            self.server: RedisServer = request.getfixturevalue("redis_server")
            self.nodes = [self.server]
        else:
            self.cluster: RedisCluster = request.getfixturevalue("redis_cluster")
            self.nodes = self.cluster.nodes
        self.raw_clients = [node.client() for node in self.nodes]

    def backend(self, key_prefix: str, **options: Any) -> RedisBackend | RedisClusterBackend:
        if self.kind == "redis":
            return RedisBackend(self.server.url, key_prefix=key_prefix, **{**PATIENT, **options})
        return RedisClusterBackend(
            startup_nodes=self.cluster.startup_nodes, key_prefix=key_prefix, **{**PATIENT, **options}
        )

    def raw(self) -> "redis.Redis | redis.RedisCluster":
        """A raw client that routes keys (plain on one server, cluster-aware on a cluster)."""
        if self.kind == "redis":
            return self.server.client()
        return self.cluster.client()

    def physical_keys(self, prefix: str) -> set[str]:
        """Every physical key starting with ``prefix``, on every node."""
        found: set[str] = set()
        for client in self.raw_clients:
            found.update(key.decode() for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
        return found

    def client_ids(self) -> set[tuple[int, int]]:
        return {
            (index, int(info["id"])) for index, client in enumerate(self.raw_clients) for info in client.client_list()
        }

    def close(self) -> None:
        for client in self.raw_clients:
            client.close()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    instance = Target(request.param, request)
    try:
        yield instance
    finally:
        instance.close()


def build_app(manager: CacheManager) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)

    @app.get("/items")
    @cache_config(ttl_seconds=60)
    async def list_items(page: int = 1) -> dict[str, object]:
        return {"page": page, "items": [f"item-{page}-{i}" for i in range(3)]}

    @app.get("/spaces/{space_id}/items")
    @cache_config(ttl_seconds=60, tags=["space-{space_id}"])
    async def space_items(space_id: int, page: int = 1) -> dict[str, object]:
        return {"space": space_id, "page": page}

    @app.get("/")
    @cache_config(ttl_seconds=60)
    async def root() -> dict[str, str]:
        return {"hello": "world"}

    return app


def http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# -- namespacing ---------------------------------------------------------------------------------------------


def plant_foreign_keys(raw: Any, prefix: str) -> dict[str, Any]:
    """Keys of other applications (and look-alikes of ours) in the same database."""
    token = uuid.uuid4().hex[:8]
    strings = {
        f"session:{token}": b"alice",
        f"other-app:GET:items:{token}": b"theirs",
        f"{{items}}GET:items:{token}": b"cluster-layout-without-prefix",
        prefix[:-1] + f"GET:items:{token}": b"prefix-without-its-colon",
        f"x{prefix}GET:items:{token}": b"prefix-not-at-the-start",
    }
    if "[" in prefix:  # the prefix has glob characters: an unescaped glob would match this
        strings[prefix.replace("[ab]", "a").replace("*", "ZZZ") + f"GET:items:{token}"] = b"glob-look-alike"
    for key, value in strings.items():
        raw.set(key, value)
    raw.rpush(f"queue:jobs:{token}", b"job-1", b"job-2")
    raw.hset(f"user:{token}", mapping={"name": "bob"})
    expected: dict[str, Any] = dict(strings)
    expected[f"queue:jobs:{token}"] = [b"job-1", b"job-2"]
    expected[f"user:{token}"] = {b"name": b"bob"}
    return expected


def read_foreign_keys(raw: Any, expected: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in expected.items():
        if isinstance(value, list):
            found[key] = raw.lrange(key, 0, -1)
        elif isinstance(value, dict):
            found[key] = raw.hgetall(key)
        else:
            found[key] = raw.get(key)
    return found


CLEARS = ["clear_all", "clear_pattern_star", "clear_pattern_get", "admin_clear", "admin_clear_star"]


@pytest.mark.parametrize("how", CLEARS)
@pytest.mark.parametrize("glob_prefix", [False, True], ids=["plain-prefix", "glob-prefix"])
async def test_clearing_never_touches_foreign_keys(
    target: Target, how: str, glob_prefix: bool, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"t[ab]*-{uuid.uuid4().hex[:8]}:" if glob_prefix else unique_prefix()
    raw = target.raw()
    foreign = plant_foreign_keys(raw, prefix)
    backend = target.backend(prefix)
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    manager = CacheManager(backend, include_admin_routes=True, allow_unauthenticated_admin=True)
    app = build_app(manager)
    assert any("WITHOUT authentication" in record.getMessage() for record in caplog.records)
    try:
        async with http(app) as client:
            for url in ["/items?page=1", "/items?page=2", "/spaces/1/items", "/"]:
                assert cache_state(await client.get(url)) == "MISS"
                assert cache_state(await client.get(url)) == "HIT"
            await manager.service().set("manual", {"v": 1})
            ours_before = target.physical_keys(prefix)
            assert len(ours_before) > 5  # entries and their counters

            if how == "clear_all":
                deleted = await manager.service().clear_all()
            elif how == "clear_pattern_star":
                deleted = await manager.service().clear_pattern("*")
            elif how == "clear_pattern_get":
                deleted = await manager.service().clear_pattern("GET:*")
            else:
                params = {"pattern": "*"} if how == "admin_clear_star" else {}
                response = await client.post("/api/cache/clear", params=params)
                assert response.status_code == 200
                deleted = response.json()["deleted"]
                assert response.json()["pattern"] == params.get("pattern")

            left = await manager.service().list_keys()
            if how == "clear_pattern_get":
                assert deleted == 4
                assert left == ["manual"]
                assert any("~g:" in key for key in target.physical_keys(prefix))  # counters are not entries
            else:
                assert deleted == 5
                assert left == []
                # Only the namespace's own keys stay: its key secret and the shared stats.
                kept = {backend._physical("~k:secret"), backend._physical("~s:stats")}
                assert target.physical_keys(prefix) <= kept
            # The cache still works afterwards.
            assert cache_state(await client.get("/items?page=1")) == "MISS"
    finally:
        await backend.aclose()
        survivors = read_foreign_keys(raw, foreign)
        for key in foreign:
            raw.delete(key)
        raw.close()
    assert survivors == foreign


# -- physical layout -----------------------------------------------------------------------------------------


async def test_entries_are_raw_msgpack_stored_with_their_ttl(target: Target) -> None:
    prefix = unique_prefix()
    backend = target.backend(prefix)
    app = build_app(CacheManager(backend))
    raw = target.raw()
    try:
        async with http(app) as client:
            response = await client.get("/items?page=2")
            assert cache_state(response) == "MISS"
            physical = prefix + ("{items}" if target.kind == "cluster" else "") + "GET:items:page=2"
            # The TTL is set with the value, atomically: there is no moment without one.
            pttl = raw.pttl(physical)
            value = raw.get(physical)
    finally:
        await backend.aclose()
        raw.close()
    assert 0 < pttl <= 60_000
    assert isinstance(value, bytes)
    assert value[0] in range(0x90, 0xA0) or value[0] in (0xDC, 0xDD)  # a msgpack array
    assert msgpack.unpackb(value)[0] == "icr"
    entry = decode(value)
    assert isinstance(entry, CachedResponse)
    assert entry.status == 200
    assert entry.body == response.content
    assert entry.path == "/items"


async def test_cluster_keys_share_the_slot_of_their_first_path_segment(redis_cluster: RedisCluster) -> None:
    prefix = unique_prefix()
    backend = RedisClusterBackend(startup_nodes=redis_cluster.startup_nodes, key_prefix=prefix, **PATIENT)
    app = build_app(CacheManager(backend))
    target_nodes = [node.client() for node in redis_cluster.nodes]
    router = redis_cluster.client()
    try:
        async with http(app) as client:
            assert cache_state(await client.get("/items?page=3")) == "MISS"
            assert cache_state(await client.get("/spaces/7/items?page=2")) == "MISS"
            assert cache_state(await client.get("/")) == "MISS"
        keys_by_node = [
            {key.decode() for key in node.scan_iter(match=glob_escape(prefix) + "*")} for node in target_nodes
        ]
    finally:
        await backend.aclose()
    every_key = set().union(*keys_by_node)
    expected_groups = {
        "{items}": ["GET:items:page=3", "~g:s:items", "~g:n:items"],
        "{spaces}": [
            "GET:spaces:7:items:page=2",
            "~g:s:spaces",
            "~g:s:spaces:7",
            "~g:s:spaces:7:items",
            "~g:n:spaces:7:items",
        ],
        "{/}": ["GET:", "~g:n"],
    }
    for tag, logical_keys in expected_groups.items():
        physical = [f"{prefix}{tag}{key}" for key in logical_keys]
        assert set(physical) <= every_key, f"missing {set(physical) - every_key}"
        slots = {router.keyslot(key) for key in physical}
        server_slots = {int(target_nodes[0].execute_command("CLUSTER KEYSLOT", key)) for key in physical}
        assert len(slots) == 1
        assert server_slots == slots
        # So they all live on one node, and one MGET reads an entry with its counters.
        holders = [index for index, keys in enumerate(keys_by_node) if set(physical) & keys]
        assert len(holders) == 1
    # Tag counters get a slot of their own.
    assert f"{prefix}{{t:space-7}}~g:t:space-7" in every_key
    router.close()
    for client in target_nodes:
        client.close()


async def test_cluster_tagged_route_reads_across_slots(redis_cluster: RedisCluster) -> None:
    backend = RedisClusterBackend(startup_nodes=redis_cluster.startup_nodes, key_prefix=unique_prefix(), **PATIENT)
    manager = CacheManager(backend)
    app = build_app(manager)
    try:
        async with http(app) as client:
            assert cache_state(await client.get("/spaces/3/items")) == "MISS"
            assert cache_state(await client.get("/spaces/3/items")) == "HIT"
            await manager.service().invalidate_tags("space-3")
            assert cache_state(await client.get("/spaces/3/items")) == "MISS"
            assert cache_state(await client.get("/spaces/3/items")) == "HIT"
    finally:
        await backend.aclose()
    assert manager.stats.errors == 0


async def test_cold_cluster_backend_serves_a_concurrent_burst_without_errors(redis_cluster: RedisCluster) -> None:
    """The first requests after start-up arrive together; a healthy cluster must not fail them."""
    backend = RedisClusterBackend(startup_nodes=redis_cluster.startup_nodes, key_prefix=unique_prefix(), **PATIENT)
    manager = CacheManager(backend)
    app = build_app(manager)
    try:
        async with http(app) as client:
            responses = await asyncio.gather(*(client.get(f"/items?page={i % 4}") for i in range(20)))
    finally:
        await backend.aclose()
    assert [r.status_code for r in responses] == [200] * 20
    assert manager.stats.errors == 0
    assert backend.breaker.state == "closed"
    assert "SKIP" not in {cache_state(r) for r in responses}


# -- invalidation counters in Redis -------------------------------------------------------------------------------


async def test_evicted_counter_recreated_by_a_write_does_not_revive_old_entries(redis_server: RedisServer) -> None:
    """Redis may evict a counter (maxmemory) or expire it while an entry survives.

    1. a write creates the counters of /spaces/1/items by INCR, 2. a read caches
    the list with those values, 3. Redis evicts one counter, 4. another write
    recreates it, 5. the next read must not be served the pre-write list.
    """
    prefix = unique_prefix()
    backend = RedisBackend(redis_server.url, key_prefix=prefix, **PATIENT)
    app = FastAPI()
    CacheManager(backend).init_app(app)
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
        async with http(app) as client:
            assert (await client.post("/spaces/1/items", params={"name": "fork"})).status_code == 201
            first = await client.get("/spaces/1/items")
            assert cache_state(first) == "MISS"
            assert first.json() == ["spoon", "fork"]
            assert cache_state(await client.get("/spaces/1/items")) == "HIT"

            assert raw.delete(prefix + "~g:s:spaces:1:items") == 1  # what eviction does

            assert (await client.post("/spaces/1/items", params={"name": "knife"})).status_code == 201
            after = await client.get("/spaces/1/items")
    finally:
        await backend.aclose()
        raw.close()
    assert after.json() == ["spoon", "fork", "knife"], f"served {cache_state(after)} pre-write data"


async def test_an_expired_counter_turns_its_entries_into_misses(redis_server: RedisServer) -> None:
    """A counter created by a lookup lives provisional_ttl (capped by generation_ttl, 1 s
    here) unless a put extends it; when it goes, what depended on it is recomputed (never
    served with a counter value it did not see)."""
    backend = RedisBackend(redis_server.url, key_prefix=unique_prefix(), generation_ttl=1, **PATIENT)
    try:
        await backend.set("GET:items", b"entry", 60)
        _, first = await backend.fetch("GET:items", ["~g:s:items"])
        physical = backend.key_prefix + "~g:s:items"
        raw = redis_server.client()
        try:
            assert 0 < raw.pttl(physical) <= 1000
            deadline = time.monotonic() + 5
            while raw.exists(physical):
                assert time.monotonic() < deadline, "the provisional counter outlived generation_ttl"
                await asyncio.sleep(0.05)
        finally:
            raw.close()
        value, second = await backend.fetch("GET:items", ["~g:s:items"])
    finally:
        await backend.aclose()
    assert value == b"entry"
    assert second != first, "a re-created counter must not repeat a value an entry may remember"


async def test_sub_second_generation_ttl_is_rejected_or_works(redis_server: RedisServer) -> None:
    try:
        backend = RedisBackend(redis_server.url, key_prefix=unique_prefix(), generation_ttl=0.5, **PATIENT)
    except ConfigurationError:
        return
    try:
        _, (value,) = await backend.fetch("GET:items", ["~g:s:items"])
        await backend.bump(["~g:s:items"])
        assert (await backend.fetch("GET:items", ["~g:s:items"]))[1] == [value + 1]
    finally:
        await backend.aclose()


# -- connections: borrowed client, shutdown ------------------------------------------------------------------------


async def test_borrowed_client_is_used_and_not_closed(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        connection_id = await client.client_id()
        prefix = unique_prefix()
        backend = RedisBackend(client=client, key_prefix=prefix)
        await backend.set("GET:borrowed", b"v", 60)
        assert await client.get(prefix + "GET:borrowed") == b"v"
        assert await backend.get("GET:borrowed") == b"v"
        await backend.aclose()
        # Still the very same connection: the backend did not disconnect it.
        assert await client.client_id() == connection_id
        assert await client.get(prefix + "GET:borrowed") == b"v"
    finally:
        await client.aclose()


async def test_aclose_disconnects_an_owned_pool(redis_server: RedisServer) -> None:
    raw = redis_server.client()
    raw.ping()
    before = {int(c["id"]) for c in raw.client_list()}
    backend = RedisBackend(redis_server.url, key_prefix=unique_prefix(), **PATIENT)
    await asyncio.gather(*(backend.get(f"GET:k{i}") for i in range(5)))
    opened = {int(c["id"]) for c in raw.client_list()} - before
    assert opened  # the pool holds connections
    await backend.aclose()
    try:
        await wait_until_gone(lambda: {int(c["id"]) for c in raw.client_list()}, opened)
    finally:
        raw.close()


async def wait_until_gone(current: Callable[[], set[Any]], opened: set[Any], patience: float = 5.0) -> None:
    deadline = time.monotonic() + patience
    while lingering := current() & opened:
        assert time.monotonic() < deadline, f"connections still open on the server: {lingering}"
        await asyncio.sleep(0.02)


def test_lifespan_closes_the_backend(target: Target) -> None:
    """With TestClient as a context manager the app's lifespan runs; on exit the
    backend's connections are closed (seen from the server: CLIENT LIST)."""
    before = target.client_ids()
    backend = target.backend(unique_prefix())
    app = build_app(CacheManager(backend))
    with TestClient(app) as client:
        assert cache_state(client.get("/items")) == "MISS"
        assert cache_state(client.get("/items")) == "HIT"
        opened = target.client_ids() - before
        assert opened
    deadline = time.monotonic() + 5
    while lingering := target.client_ids() & opened:
        assert time.monotonic() < deadline, f"backend connections survived shutdown: {lingering}"
        time.sleep(0.02)


# -- redis stays optional -----------------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_importing_the_package_does_not_import_redis() -> None:
    result = run_python(
        """
        import sys
        import intelligent_cache
        import intelligent_cache.admin, intelligent_cache.testing, intelligent_cache.backends
        from intelligent_cache import CacheManager, MemoryBackend
        CacheManager(MemoryBackend())
        assert "redis" not in sys.modules, sorted(m for m in sys.modules if m.startswith("redis"))
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_redis_backend_without_redis_py_names_the_extra() -> None:
    result = run_python(
        """
        import sys

        class NoRedis:
            def find_spec(self, name, path=None, target=None):
                if name == "redis" or name.startswith("redis."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoRedis())
        import intelligent_cache
        from intelligent_cache import CacheManager, MemoryBackend
        CacheManager(MemoryBackend())
        try:
            from intelligent_cache.backends import RedisBackend
        except ImportError as exc:
            print(type(exc).__name__)
            print(exc)
        else:
            print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    kind, message = result.stdout.strip().split("\n", 1)
    assert kind == "ImportError"
    assert "fastapi-intelligent-cache[redis]" in message


# -- Sentinel ------------------------------------------------------------------------------------------------------


class Sentinel:
    """A real ``redis-server --sentinel`` monitoring a private server."""

    def __init__(self, master: RedisServer, directory: Path) -> None:
        self.master = master
        self.port = _free_port()
        self.directory = directory
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            "protected-mode no\n"
            "daemonize no\n"
            f"dir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor mymaster {HOST} {master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 60000\n"
        )
        binary = redis_server_binary()
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, str(config), "--sentinel"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=directory
        )
        self.client = redis.Redis(host=HOST, port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                address = self.client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
                if address and int(address[1]) == master.port:
                    break
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log_file = directory / "sentinel.log"
                log = log_file.read_text(errors="replace") if log_file.exists() else ""
                raise RuntimeError(f"sentinel did not come up: {log[-2000:]}")
            time.sleep(0.02)

    def other_client_ids(self) -> set[int]:
        own = self.client.client_id()
        return {int(c["id"]) for c in self.client.client_list()} - {own}

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Sentinel]:
    with RedisServer() as master:
        instance = Sentinel(master, tmp_path)
        try:
            yield instance
        finally:
            instance.stop()


@contextlib.asynccontextmanager
async def sentinel_backend(sentinel: Sentinel, prefix: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(f"redis+sentinel://{HOST}:{sentinel.port}/mymaster/0", key_prefix=prefix, **PATIENT)
    try:
        yield backend
    finally:
        await backend.aclose()
        # Whatever aclose() leaves open toward the sentinels is closed here, so a
        # leak fails only the test that checks for it (not, via ResourceWarning
        # at garbage collection, some later test).
        for client in getattr(backend._sentinel, "sentinels", []):
            await client.aclose()


async def test_sentinel_url_serves_set_get_fetch(sentinel: Sentinel) -> None:
    prefix = unique_prefix()
    raw = sentinel.master.client()
    try:
        async with sentinel_backend(sentinel, prefix) as backend:
            await backend.set("GET:items", b"\x00value\xff", 60)
            assert await backend.get("GET:items") == b"\x00value\xff"
            raw_value, generations = await backend.fetch("GET:items", ["~g:s:items", "~g:n:items"])
            assert raw_value == b"\x00value\xff"
            assert len(generations) == 2
            await backend.bump(["~g:s:items"])
            assert raw.exists(prefix + "~g:s:items") == 0  # a bump deletes
            bumped = (await backend.fetch("GET:items", ["~g:s:items", "~g:n:items"]))[1]
            assert bumped[0] != generations[0]
            assert bumped[1] == generations[1]
            await backend.ping()
            # It really went to the master the sentinel names.
            assert raw.get(prefix + "GET:items") == b"\x00value\xff"
            assert 0 < raw.pttl(prefix + "GET:items") <= 60_000
            assert await backend.clear() == 1
            assert raw.get(prefix + "GET:items") is None
    finally:
        raw.close()


async def test_sentinel_backend_aclose_closes_every_connection(sentinel: Sentinel) -> None:
    before = sentinel.other_client_ids()
    backend = RedisBackend(f"redis+sentinel://{HOST}:{sentinel.port}/mymaster/0", key_prefix=unique_prefix(), **PATIENT)
    try:
        await backend.set("GET:items", b"v", 60)
        opened = sentinel.other_client_ids() - before
        assert opened  # the backend asked the sentinel where the master is
        await backend.aclose()
        await wait_until_gone(sentinel.other_client_ids, opened, patience=1)
    finally:
        await backend.aclose()
        for client in backend._sentinel.sentinels if backend._sentinel else []:
            await client.aclose()


def test_sentinel_url_parsing() -> None:
    backend = RedisBackend(
        "redis+sentinel://:s3cr%40t@10.0.0.1:26379,sentinel-b:26380,sentinel-c/my%20master/3",
        key_prefix="p:",
        socket_timeout=0.25,
    )
    sentinel = backend._sentinel
    assert sentinel is not None
    hosts = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinel.sentinels
    ]
    assert hosts == [("10.0.0.1", 26379), ("sentinel-b", 26380), ("sentinel-c", 26379)]
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 0.25 for s in sentinel.sentinels)
    pool = backend._client.connection_pool
    assert pool.service_name == "my master"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "s3cr@t"
    assert pool.connection_kwargs["socket_timeout"] == 0.25

    overridden = RedisBackend("redis+sentinel://:url-pw@h:1/svc/3", db=5, password="explicit", key_prefix="p:")
    assert overridden._client.connection_pool.connection_kwargs["db"] == 5
    assert overridden._client.connection_pool.connection_kwargs["password"] == "explicit"

    with pytest.raises(ConfigurationError, match="service"):
        RedisBackend("redis+sentinel://h:26379", key_prefix="p:")


def test_db_and_password_arguments_override_the_url() -> None:
    backend = RedisBackend("redis://:url-pw@127.0.0.1:1/0", db=7, password="explicit", key_prefix="p:")
    kwargs = backend._client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (7, "explicit")
    plain = RedisBackend("redis://:url-pw@127.0.0.1:1/3", key_prefix="p:")
    kwargs = plain._client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (3, "url-pw")


async def test_the_db_argument_selects_that_database(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    backend = RedisBackend(redis_server.url, db=5, key_prefix=prefix, **PATIENT)
    try:
        await backend.set("GET:in-five", b"v", 60)
        assert redis_server.client(db=5).get(prefix + "GET:in-five") == b"v"
        assert redis_server.client().get(prefix + "GET:in-five") is None
    finally:
        await backend.clear()
        await backend.aclose()
