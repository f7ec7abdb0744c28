"""Redis backends: a single server (optionally found through Sentinel) and Redis Cluster.

Both use redis-py's asyncio client with one connection pool. Every key lives
under ``key_prefix`` (default ``"ic:"``); clearing scans that namespace with
``SCAN`` and deletes with ``UNLINK`` in batches, so other applications' keys in
the same database are never touched. Values are the raw msgpack bytes of the
entries; TTLs are set in the same command as the value. How invalidation
counters live and die (provisional on lookup, extended by stores, deleted by
writes) is described in :mod:`._redis_common`.

A circuit breaker (:mod:`.breaker`) guards every call: after ``failure_threshold`` consecutive
failures to reach Redis it stops calling it for ``recovery_timeout`` seconds (requests run
uncached at full speed instead of each waiting for a socket timeout), then lets
one probe through and closes again once Redis answers. Error replies (``OOM``
at maxmemory, ``WRONGTYPE``...) fail their call but do not count: Redis is up.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigurationError
from ..keys import INVALIDATION_CHANNEL, is_internal
from ._redis_common import (
    BATCH,
    LookupConnection,
    NoBackoff,
    RedisBase,
    RedisConnectionError,
    ResponseError,
    Retry,
    Sentinel,
    aioredis,
)
from .breaker import CircuitBreaker
from .near import DIRECT, NearCache
from .redis_cluster import RedisClusterBackend

__all__ = ["CircuitBreaker", "NearCache", "RedisBackend", "RedisClusterBackend"]


class RedisBackend(RedisBase):
    """Entries in one Redis server (or the primary behind Sentinel).

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://`` for TLS,
            ``unix:///path.sock``, or ``redis+sentinel://host:port[,host:port]/service[/db]``.
        db: database number; overrides the URL's.
        password: overrides the URL's.
        max_connections: size of the connection pool; callers beyond it wait up
            to ``socket_timeout`` for a connection, then the request runs uncached.
        socket_timeout: seconds to wait for a reply before the call fails.
        socket_connect_timeout: seconds to wait for a connection.
        key_prefix: the namespace of every key this cache writes.
        client: an existing ``redis.asyncio.Redis`` to use instead (the backend
            will not close it; its own timeouts apply).
        generation_ttl: the longest a store extends an invalidation counter's
            life (seconds, at least 1; 7 days by default). A counter lives as
            long as the longest-lived entry depending on it, up to this; an
            entry kept longer reads as a miss after it and is computed again.
        provisional_ttl: seconds a counter created by a lookup lives unless an
            entry depending on it is stored (at least 1, at most
            ``generation_ttl``; 60 by default), so that traffic which stores
            nothing (404s, errors) leaves no long-lived keys behind. Longer
            than a response takes to compute: an entry whose counter expired
            before it was stored reads as a miss.
        failure_threshold: consecutive failures that open the circuit breaker.
        recovery_timeout: seconds the breaker stays open before probing.
        near_cache: an in-process :class:`NearCache` in front of Redis: HITs
            found there cost no round trip, at the price of a bounded window in
            which another process's write may go unseen (off by default; read
            the :mod:`~intelligent_cache.backends.near` docstring first).
        clock: monotonic clock of the breaker (for tests).
    """

    name = "redis"

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        db: int | None = None,
        password: str | None = None,
        max_connections: int = 50,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
        key_prefix: str = "ic:",
        client: "aioredis.Redis | None" = None,
        generation_ttl: float = 7 * 24 * 3600,
        provisional_ttl: float = 60,
        failure_threshold: int = 3,
        recovery_timeout: float = 5.0,
        near_cache: NearCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            key_prefix=key_prefix,
            generation_ttl=generation_ttl,
            provisional_ttl=provisional_ttl,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            clock=clock,
        )
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        self.near = near_cache
        self._near = DIRECT if near_cache is None else near_cache
        self._channel = key_prefix + INVALIDATION_CHANNEL
        self._owns_client = client is None
        self._sentinel: Sentinel | None = None
        self._lookups: LookupConnection | None = None
        if client is not None:
            self._client = client
            return
        self._settings = (url, db, password, max_connections, socket_timeout, socket_connect_timeout)
        self._client = self._connect(*self._settings)
        self._lookups = self._lookup_connection(self._client.connection_pool)

    def _lookup_connection(self, pool: Any) -> "LookupConnection | None":
        """The auto-pipelined lookup connection (see :mod:`.lookups`), for plain TCP and Unix sockets.

        TLS, Sentinel and a client of your own look up through redis-py's pool.
        """
        if LookupConnection is None or self._sentinel is not None:
            return None
        kwargs = pool.connection_kwargs
        common = {
            "db": int(kwargs.get("db") or 0),
            "username": kwargs.get("username"),
            "password": kwargs.get("password"),
            "socket_timeout": self._settings[4],
            "socket_connect_timeout": self._settings[5],
        }
        if pool.connection_class is aioredis.Connection:
            return LookupConnection(host=kwargs.get("host", "localhost"), port=int(kwargs.get("port", 6379)), **common)
        if pool.connection_class is aioredis.UnixDomainSocketConnection:
            return LookupConnection(path=kwargs["path"], **common)
        return None

    def _connect(
        self,
        url: str,
        db: int | None,
        password: str | None,
        max_connections: int,
        socket_timeout: float,
        socket_connect_timeout: float,
    ) -> Any:
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            # One immediate retry on a dropped connection, none on a timeout.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "decode_responses": False,
        }
        if password is not None:
            options["password"] = password
        if url.startswith("redis+sentinel://"):
            return self._from_sentinel(url, db, max_connections, options)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout, **options
        )
        # redis-py lets the URL's database and password win over keyword arguments; ours win.
        if db is not None:
            pool.connection_kwargs["db"] = db
        if password is not None:
            pool.connection_kwargs["password"] = password
        return aioredis.Redis(connection_pool=pool)

    def _new_client(self) -> Any | None:
        return self._connect(*self._settings) if self._owns_client else None

    async def _disconnect(self, client: Any) -> None:
        if self.near is not None:  # its subscription first: it reads on one of the client's connections
            await self.near.aclose()
        if self._lookups is not None:
            self._lookups.close()
        await client.aclose()
        pool = client.connection_pool
        if pool is not None:
            await pool.disconnect()
        sentinels = getattr(pool, "sentinel_manager", None)  # a redis+sentinel:// client's own sentinels
        for sentinel in getattr(sentinels, "sentinels", ()):
            await sentinel.aclose()

    # -- the near cache layer (DIRECT when there is none) ------------------------------

    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        self._check_open()  # a closed backend starts no subscription
        self._follow_loop()  # the subscription listens on this loop's client
        self._near.listen(self._client, self._channel)
        return await self._near.fetch(key, generation_keys, super().fetch)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await super().set(key, value, ttl)
        self._near.written(key, value)

    async def put(self, key: str, value: bytes, ttl: float, generation_keys: Sequence[str] = ()) -> None:
        await super().put(key, value, ttl, generation_keys)
        self._near.written(key, value)

    async def bump(self, generation_keys: Sequence[str]) -> None:
        try:
            await super().bump(generation_keys)
        finally:
            message = self._near.counters_bumped(generation_keys)
        await self._publish(message)

    async def delete(self, key: str) -> bool:
        deleted = await super().delete(key)
        await self._publish(self._near.key_deleted(key))
        return deleted

    async def clear(self, pattern: str | None = None) -> int:
        try:
            return await self._clear(pattern)
        finally:
            await self._publish(self._near.cleared())

    async def _publish(self, message: bytes | None) -> None:
        if message is not None:
            await self._guard(lambda: self._client.publish(self._channel, message))

    def info(self) -> dict[str, Any]:
        info = super().info()
        if self.near is not None:
            info["near_cache"] = self.near.info()
        return info

    def _from_sentinel(self, url: str, db: int | None, max_connections: int, options: dict[str, Any]) -> Any:
        parts = urlsplit(url)
        hosts: list[tuple[str, int]] = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            if not host:
                host, port = port, "26379"
            hosts.append((host, int(port)))
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path:
            raise ConfigurationError("a redis+sentinel:// URL names the service: redis+sentinel://host:26379/mymaster")
        service = path[0]
        if db is None and len(path) > 1:
            db = int(path[1])
        if parts.password and "password" not in options:
            options["password"] = unquote(parts.password)
        sentinel_options = {
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        }
        self._sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
        return self._sentinel.master_for(service, db=db or 0, max_connections=max_connections)

    async def _mget(self, names: list[str]) -> list[Any]:
        # The lookup of every request: one MGET, auto-pipelined with the other
        # lookups of this loop iteration; over TLS on a pooled connection, without
        # the client's per-command machinery (retries are the breaker's job).
        if self._lookups is not None:
            return await self._lookups.mget(names)
        pool = self._client.connection_pool
        if self._owns_client and self._sentinel is None:
            for attempt in (1, 2):
                connection = await pool.get_connection()
                try:
                    await connection.send_packed_command(connection.pack_command("MGET", *names), check_health=False)
                    return list(await connection.read_response())
                except ResponseError:
                    raise  # an error reply: the connection is still in step
                except RedisConnectionError:
                    await connection.disconnect()
                    # A pooled connection the server closed (restart, idle timeout)
                    # fails once: retry on a fresh one rather than fail the request.
                    if attempt == 2:
                        raise
                except BaseException:
                    await connection.disconnect()
                    raise
                finally:
                    await pool.release(connection)
        return list(await self._client.mget(names))

    async def scan(
        self, pattern: str = "*", cursor: int = 0, count: int = 100
    ) -> tuple[int, list[tuple[str, float | None]]]:
        async def run() -> tuple[int, list[tuple[str, float | None]]]:
            next_cursor, keys = await self._client.scan(
                cursor=cursor, match=self._physical_pattern(pattern), count=count
            )
            return int(next_cursor), await self._ttls(self._client, list(keys))

        return await self._guard(run)

    async def _clear(self, pattern: str | None) -> int:
        physical = self._physical_pattern("*" if pattern is None else pattern)

        async def run() -> int:
            deleted = 0
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=physical, count=BATCH):
                if not self.clearable(key):
                    continue
                batch.append(key)
                if len(batch) >= BATCH:
                    deleted += await self._unlink(batch)
                    batch = []
            if batch:
                deleted += await self._unlink(batch)
            return deleted

        return await self._guard(run)

    async def _unlink(self, keys: list[bytes]) -> int:
        entries = sum(1 for key in keys if not is_internal(self._logical(key)))
        await self._client.unlink(*keys)
        return entries

    async def aclose(self) -> None:
        """Close the connections (a borrowed ``client`` stays open).

        Calls in flight are let finish first, briefly, so that none reconnects
        behind the close; calls made afterwards (a late background refresh)
        raise :class:`BackendUnavailable` rather than open connections nobody
        would close, until :meth:`reopen` (the app starting again) allows them.
        """
        await self._stop_calls()
        if self._owns_client:
            await self._disconnect(self._client)
        elif self.near is not None:
            await self.near.aclose()
