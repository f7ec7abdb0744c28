"""The auto-pipelined lookup connection of RedisBackend, attacked: order, cancellation, outages, auth.

Every request's lookup (the entry and its counters, one MGET) shares one
connection per event loop with the other lookups of its loop iteration, and
replies are matched to requests by order. A reply handed to the wrong request
would serve one caller another's entry, so these tests try to break the order.
"""

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from intelligent_cache import RedisBackend
from intelligent_cache.backends.lookups import LookupConnection, pack
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import RedisServer, require_redis_server

pytestmark = pytest.mark.redis


@pytest.fixture
def server():
    """A private server this module may pause, kill and reconfigure."""
    require_redis_server()
    with RedisServer() as private:
        yield private


def lookups_of(server: RedisServer, **options) -> LookupConnection:
    return LookupConnection(host=server.host, port=server.port, **{"socket_timeout": 5.0, **options})


def test_pack_is_resp() -> None:
    assert pack(b"MGET", b"a", b"") == b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$0\r\n\r\n"


async def test_concurrent_lookups_each_get_their_own_values(server: RedisServer) -> None:
    raw = server.client()
    raw.mset({f"k{i}": f"v{i}".encode() * (i % 7 + 1) for i in range(500)})
    lookups = lookups_of(server)
    try:
        names = [[f"k{i}", f"absent{i}", f"k{(i * 7) % 500}"] for i in range(500)]
        results = await asyncio.gather(*(lookups.mget(n) for n in names))
        for i, values in enumerate(results):
            j = (i * 7) % 500
            assert values == [f"v{i}".encode() * (i % 7 + 1), None, f"v{j}".encode() * (j % 7 + 1)]
    finally:
        lookups.close()
        raw.close()


async def test_a_cancelled_lookup_does_not_shift_the_replies(server: RedisServer) -> None:
    raw = server.client()
    raw.mset({f"k{i}": str(i) for i in range(200)})
    lookups = lookups_of(server)
    try:
        tasks = [asyncio.create_task(lookups.mget([f"k{i}"])) for i in range(200)]
        await asyncio.sleep(0)  # every lookup is written (or about to be)
        for task in tasks[::3]:
            task.cancel()  # their replies still arrive: they must be read and dropped
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(done):
            if i % 3 == 0:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == [str(i).encode()]
        assert await lookups.mget(["k5"]) == [b"5"]  # still in step
    finally:
        lookups.close()
        raw.close()


async def test_huge_and_odd_names_round_trip(server: RedisServer) -> None:
    raw = server.client()
    names = ["GET:" + "x" * 1_000_000, "GET:\r\n*1\r\n$4\r\nPING", "GET:é:\udcff"]
    for name in names:
        raw.set(name.encode("utf-8", "surrogateescape"), name.encode("utf-8", "surrogateescape")[:64])
    lookups = lookups_of(server)
    try:
        assert await lookups.mget(names) == [n.encode("utf-8", "surrogateescape")[:64] for n in names]
    finally:
        lookups.close()
        raw.close()


async def test_a_paused_server_times_lookups_out_and_they_work_after(server: RedisServer) -> None:
    server.client().set("k", "v")
    lookups = lookups_of(server, socket_timeout=0.3)
    try:
        assert await lookups.mget(["k"]) == [b"v"]
        server.pause()
        started = time.monotonic()
        results = await asyncio.gather(*(lookups.mget(["k"]) for _ in range(20)), return_exceptions=True)
        assert all(isinstance(result, RedisTimeoutError) for result in results)
        assert time.monotonic() - started < 3  # bounded by the timeout, not by the pause
        server.resume()
        assert await lookups.mget(["k"]) == [b"v"]  # a new connection: the old one was out of step
    finally:
        if server.is_paused:
            server.resume()
        lookups.close()


async def test_a_killed_server_fails_lookups_then_they_reconnect(server: RedisServer) -> None:
    server.client().set("k", "v")
    lookups = lookups_of(server, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        assert await lookups.mget(["k"]) == [b"v"]
        server.kill()
        with pytest.raises(RedisConnectionError, match=f"connecting to 127.0.0.1:{server.port}"):
            await lookups.mget(["k"])
        server.restart()  # empty: no persistence
        assert await lookups.mget(["k"]) == [None]
    finally:
        lookups.close()


async def test_a_connection_the_server_closed_is_retried_once_unseen(server: RedisServer) -> None:
    raw = server.client()
    raw.set("k", "v")
    lookups = lookups_of(server)
    try:
        assert await lookups.mget(["k"]) == [b"v"]
        raw.client_kill_filter(_type="normal", skipme=True)  # an idle timeout, a proxy restart...
        assert await lookups.mget(["k"]) == [b"v"]
    finally:
        lookups.close()
        raw.close()


async def test_an_error_reply_fails_that_lookup_only() -> None:
    require_redis_server()
    with RedisServer() as server:
        raw = server.client()
        raw.set("k", "v")
        raw.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@all", "-mget")
        denied = lookups_of(server, username="reader", password="pw")
        allowed = lookups_of(server, username="default", password=None)
        try:
            with pytest.raises(ResponseError, match="NOPERM"):
                await denied.mget(["k"])
            with pytest.raises(ResponseError, match="NOPERM"):  # the connection stayed in step
                await denied.mget(["k"])
            assert await allowed.mget(["k"]) == [b"v"]
        finally:
            denied.close()
            allowed.close()
            raw.close()


async def test_password_and_database_are_sent_on_connect() -> None:
    require_redis_server()
    with RedisServer() as server:
        raw = server.client(db=3)
        raw.set("k", "in db 3")
        raw.config_set("requirepass", "s3cret")  # after the start-up check of the test server
        try:
            right = lookups_of(server, password="s3cret", db=3)
            assert await right.mget(["k"]) == [b"in db 3"]
            right.close()
            wrong = lookups_of(server, password="wrong")
            with pytest.raises(ResponseError, match=r"WRONGPASS|invalid password"):
                await wrong.mget(["k"])
            wrong.close()
        finally:
            raw.close()


async def test_a_unix_socket_url_looks_up_on_the_socket(tmp_path) -> None:
    require_redis_server()
    path = tmp_path / "redis.sock"
    with RedisServer(config={"unixsocket": str(path), "unixsocketperm": "700"}) as server:
        raw = server.client()
        raw.set("ic:GET:items", b"entry")
        backend = RedisBackend(f"unix://{path}", **PATIENT)
        try:
            assert backend._lookups is not None and backend._lookups.path == str(path)
            raw_entry, _ = await backend.fetch("GET:items", [])
            assert raw_entry == b"entry"
        finally:
            await backend.aclose()
            raw.close()


def test_tls_sentinel_and_passed_clients_look_up_through_redis_py() -> None:
    import redis.asyncio as aioredis

    assert RedisBackend("rediss://127.0.0.1:6380/0")._lookups is None
    assert RedisBackend("redis+sentinel://127.0.0.1:26379/mymaster")._lookups is None
    assert RedisBackend(client=aioredis.Redis())._lookups is None
    backend = RedisBackend("redis://user:pw@127.0.0.1:6390/4", db=5, password="other")
    assert backend._lookups is not None
    assert backend._lookups._handshake == [pack(b"AUTH", b"user", b"other"), pack(b"SELECT", b"5")]


async def test_two_backends_on_one_server_never_see_each_others_entries(server: RedisServer) -> None:
    one = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
    two = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
    try:
        await one.set("GET:me", b"alice", 60)
        await two.set("GET:me", b"bob", 60)
        found = await asyncio.gather(*(backend.fetch("GET:me", ["~g:s:me"]) for backend in (one, two) * 50))
        assert [raw for raw, _ in found] == [b"alice", b"bob"] * 50
    finally:
        await one.aclose()
        await two.aclose()


def test_on_uvloop_the_loop_uvicorn_picks_when_installed(server: RedisServer) -> None:
    # uvloop's transports are no asyncio.Transport subclass: the lookups must work on them too.
    import uvloop

    async def scenario() -> None:
        backend = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
        try:
            await backend.set("GET:a", b"alpha", 60)
            await backend.set("GET:b", b"beta", 60)
            tasks = [asyncio.create_task(backend.fetch(key, ["~g:s:x"])) for key in ("GET:a", "GET:b") * 100]
            await asyncio.sleep(0)
            for task in tasks[::4]:
                task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for i, result in enumerate(done):
                if i % 4:
                    assert not isinstance(result, BaseException), result
                    assert result[0] == (b"alpha" if i % 2 == 0 else b"beta")
            assert backend.breaker.state == "closed"
        finally:
            await backend.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_stampede_on_a_cold_key_creates_its_counters_once(server: RedisServer, monkeypatch) -> None:
    # All lookups of a burst are answered together, every one finding the counters missing:
    # they share one creation (else the last ones would finish after the computation and redo it).
    backend = RedisBackend(server.url, key_prefix=unique_prefix(), **PATIENT)
    created = []
    original = backend._create_generations

    async def counted(names):
        created.append(names)
        return await original(names)

    monkeypatch.setattr(backend, "_create_generations", counted)
    try:
        found = await asyncio.gather(*(backend.fetch("GET:cold", ["~g:s:cold", "~g:n:cold"]) for _ in range(500)))
        assert len(created) == 1
        assert len({tuple(generations) for _, generations in found}) == 1  # one snapshot for all
        assert backend._creating == {}
    finally:
        await backend.aclose()


@pytest.mark.cluster
async def test_cluster_lookups_go_to_each_slots_primary(redis_cluster) -> None:
    from intelligent_cache import RedisClusterBackend

    backend = RedisClusterBackend(startup_nodes=redis_cluster.startup_nodes, key_prefix=unique_prefix(), **PATIENT)
    try:
        paths = [f"GET:space{i}:items" for i in range(60)]  # first segments spread over the slots
        for path in paths:
            await backend.set(path, path.encode(), 60)
        found = await asyncio.gather(*(backend.fetch(path, [f"~g:s:space{i}"]) for i, path in enumerate(paths)))
        assert [raw for raw, _ in found] == [path.encode() for path in paths]
        assert len(backend._lookups) == 3  # one lookup connection per primary
    finally:
        await backend.aclose()


@pytest.mark.cluster
async def test_a_stale_slot_map_is_redirected_through_redis_py(redis_cluster, monkeypatch) -> None:
    # After a failover or a resharding, a primary answers MOVED: the lookup is made again
    # through redis-py's client, which follows the redirection and refreshes the map.
    from intelligent_cache import RedisClusterBackend

    backend = RedisClusterBackend(startup_nodes=redis_cluster.startup_nodes, key_prefix=unique_prefix(), **PATIENT)
    try:
        await backend.set("GET:moved:items", b"entry", 60)
        manager = backend._client.nodes_manager
        owner = manager.get_node_from_slot(backend._client.keyslot(backend._physical("GET:moved:items")))
        wrong = next(node for node in backend._client.get_primaries() if node.name != owner.name)
        elsewhere = LookupConnection(host=wrong.host, port=wrong.port, socket_timeout=5.0)
        monkeypatch.setattr(backend, "_lookups_of", lambda slot: elsewhere)  # the map as it was before a move
        raw, _ = await backend.fetch("GET:moved:items", [])
        assert raw == b"entry"
        assert backend.breaker.state == "closed" and not backend.breaker.failures
        elsewhere.close()
    finally:
        await backend.aclose()
