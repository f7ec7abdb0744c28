"""Redis backends: a single server (optionally found through Sentinel) and Redis Cluster.

Both use redis-py's asyncio client with one connection pool. Every key lives
under ``key_prefix`` (default ``"ic:"``); clearing scans that namespace with
``SCAN`` and deletes with ``UNLINK`` in batches, so other applications' keys in
the same database are never touched. Values are the raw msgpack bytes of the
entries; TTLs are set in the same command as the value.

A circuit breaker guards every call: after ``failure_threshold`` consecutive
failures it stops calling Redis for ``recovery_timeout`` seconds (requests run
uncached at full speed instead of each waiting for a socket timeout), then lets
one probe through and closes again once Redis answers.
"""

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("RedisBackend needs redis-py: pip install 'fastapi-intelligent-cache[redis]'") from exc

from ..exceptions import BackendUnavailable, ConfigurationError
from ..keys import glob_to_regex
from .base import CacheBackend, new_generation

__all__ = ["CircuitBreaker", "RedisBackend", "RedisClusterBackend"]

logger = logging.getLogger("intelligent_cache")

T = TypeVar("T")

_BATCH = 500
_INTERNAL_PREFIX = "~"
_STATS_KEY = "~s:stats"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class CircuitBreaker:
    """Stops calling a failing backend for a while, then probes it.

    ``closed``: calls go through. ``open``: calls fail at once with
    :class:`BackendUnavailable` until ``recovery_timeout`` has passed.
    ``half-open``: one probe call goes through; success closes the breaker,
    failure opens it again. State changes are logged once each.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        recovery_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError("failure_threshold must be at least 1")
        if recovery_timeout <= 0:
            raise ConfigurationError("recovery_timeout must be positive")
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self._clock = clock
        self._name = name
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.last_error = ""
        self.times_opened = 0

    def before_call(self) -> None:
        """Raise :class:`BackendUnavailable` if the call must not be made."""
        if self.state == "closed":
            return
        if self.state == "open" and self._clock() - self.opened_at >= self.recovery_timeout:
            self.state = "half-open"
            return
        raise BackendUnavailable(f"{self._name} circuit is {self.state}: {self.last_error}")

    def succeeded(self) -> None:
        if self.state != "closed":
            logger.warning("%s answers again: circuit closed", self._name)
        self.state = "closed"
        self.failures = 0

    def abandoned(self) -> None:
        """The call was cancelled: it proved nothing, so let the next call probe."""
        if self.state == "half-open":
            self.state = "open"
            self.opened_at = self._clock() - self.recovery_timeout

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = repr(exc)
        if self.state == "half-open" or (self.state == "closed" and self.failures >= self.failure_threshold):
            if self.state == "closed":
                logger.warning(
                    "%s failed %d times in a row, circuit opened for %.1fs: %r",
                    self._name,
                    self.failures,
                    self.recovery_timeout,
                    exc,
                )
                self.times_opened += 1
            self.state = "open"
            self.opened_at = self._clock()

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "times_opened": self.times_opened,
            "last_error": self.last_error,
        }


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _node_cursor(cursor: Any) -> int:
    # redis-py's cluster SCAN with target_nodes answers {node_name: cursor}.
    if isinstance(cursor, dict):
        return int(next(iter(cursor.values()), 0))
    return int(cursor)


def _generation(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _RedisBase(CacheBackend):
    """What the single-server and the Cluster backends share."""

    _client: Any

    def __init__(
        self,
        *,
        key_prefix: str,
        generation_ttl: float,
        failure_threshold: int,
        recovery_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ConfigurationError("key_prefix must be a non-empty string: it is the cache's namespace")
        if generation_ttl <= 0:
            raise ConfigurationError("generation_ttl must be positive")
        self.key_prefix = key_prefix
        self._glob_prefix = _glob_escape(key_prefix)
        self.generation_ttl = int(generation_ttl)
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold, recovery_timeout=recovery_timeout, clock=clock, name=self.name
        )

    # -- keys -------------------------------------------------------------------

    def _physical(self, key: str) -> str:
        return self.key_prefix + key

    def _logical(self, physical: bytes | str) -> str:
        text = physical.decode("utf-8", "surrogateescape") if isinstance(physical, bytes) else physical
        return text[len(self.key_prefix) :]

    def _physical_pattern(self, pattern: str) -> str:
        return self._glob_prefix + pattern

    # -- the breaker around every call -------------------------------------------

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        self.breaker.before_call()
        try:
            result = await call()
        except Exception as exc:
            self.breaker.failed(exc)
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        if self.breaker.state != "closed" or self.breaker.failures:
            self.breaker.succeeded()
        return result

    # -- CacheBackend ---------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = await self._guard(lambda: self._client.get(self._physical(key)))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = max(1, int(ttl * 1000))
        await self._guard(lambda: self._client.set(self._physical(key), value, px=milliseconds))

    async def delete(self, key: str) -> bool:
        return bool(await self._guard(lambda: self._client.unlink(self._physical(key))))

    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        names = [self._physical(key), *(self._physical(name) for name in generation_keys)]
        values = await self._guard(lambda: self._mget(names))
        raw = values[0] if isinstance(values[0], bytes) else None
        generations = [_generation(value) for value in values[1:]]
        missing = [index for index, value in enumerate(generations) if value is None]
        if missing:
            created = await self._guard(lambda: self._create_generations([names[i + 1] for i in missing]))
            for index, value in zip(missing, created, strict=True):
                generations[index] = value
        return raw, [g for g in generations if g is not None]

    async def _create_generations(self, names: list[str]) -> list[int]:
        # SET NX GET: create the counter only if still absent and learn the value
        # that won, so concurrent first readers agree on one snapshot.
        async with self._client.pipeline(transaction=False) as pipe:
            proposals = [new_generation() for _ in names]
            for name, proposal in zip(names, proposals, strict=True):
                pipe.set(name, proposal, ex=self.generation_ttl, nx=True, get=True)
            results = await pipe.execute()
        values: list[int] = []
        repair: list[tuple[str, int]] = []
        for name, proposal, previous in zip(names, proposals, results, strict=True):
            if previous is None:
                values.append(proposal)
                continue
            existing = _generation(previous)
            if existing is None:  # garbage under a counter key: replace it
                repair.append((name, proposal))
                values.append(proposal)
            else:
                values.append(existing)
        if repair:
            async with self._client.pipeline(transaction=False) as pipe:
                for name, proposal in repair:
                    pipe.set(name, proposal, ex=self.generation_ttl)
                await pipe.execute()
        return values

    async def bump(self, generation_keys: Sequence[str]) -> None:
        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for name in generation_keys:
                    physical = self._physical(name)
                    pipe.incr(physical)
                    pipe.expire(physical, self.generation_ttl, nx=True)
                await pipe.execute()

        await self._guard(run)

    async def add_counters(self, deltas: Mapping[str, int]) -> None:
        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for name, amount in deltas.items():
                    pipe.hincrby(self._physical(_STATS_KEY), name, amount)
                await pipe.execute()

        await self._guard(run)

    async def read_counters(self) -> dict[str, int] | None:
        raw = await self._guard(lambda: self._client.hgetall(self._physical(_STATS_KEY)))
        return {name.decode("utf-8", "replace"): int(value) for name, value in raw.items()}

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        milliseconds = max(1, int(ttl * 1000))
        taken = await self._guard(lambda: self._client.set(self._physical(name), token, px=milliseconds, nx=True))
        return token if taken else None

    async def release_lock(self, name: str, token: str) -> None:
        # Delete only if we still hold it: after a timeout someone else may.
        await self._guard(lambda: self._client.eval(_RELEASE, 1, self._physical(name), token))

    async def _ttls(self, node_client: Any, keys: list[bytes]) -> list[tuple[str, float | None]]:
        if not keys:
            return []
        async with node_client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pttl(key)
            ttls = await pipe.execute()
        page: list[tuple[str, float | None]] = []
        for key, ttl in zip(keys, ttls, strict=True):
            if ttl == -2:  # deleted since the scan
                continue
            page.append((self._logical(key), None if ttl < 0 else ttl / 1000))
        return page

    async def ping(self) -> None:
        # Not guarded: health checks must see Redis itself, not the breaker.
        await self._client.ping()

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "key_prefix": self.key_prefix, "breaker": self.breaker.snapshot()}

    async def _mget(self, names: list[str]) -> list[Any]:
        raise NotImplementedError


class RedisBackend(_RedisBase):
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
        generation_ttl: seconds an invalidation counter lives without use.
        failure_threshold: consecutive failures that open the circuit breaker.
        recovery_timeout: seconds the breaker stays open before probing.
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
        failure_threshold: int = 3,
        recovery_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            key_prefix=key_prefix,
            generation_ttl=generation_ttl,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            clock=clock,
        )
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        self._owns_client = client is None
        self._sentinel: Sentinel | None = None
        if client is not None:
            self._client = client
            return
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
        }
        if password is not None:
            options["password"] = password
        if url.startswith("redis+sentinel://"):
            self._client = self._from_sentinel(url, db, max_connections, options)
            return
        if db is not None:
            options["db"] = db
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout, **options
        )
        self._client = aioredis.Redis(connection_pool=pool)

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
        # The lookup of every request: one MGET on a pooled connection, without
        # the client's per-command machinery (retries are the breaker's job).
        pool = self._client.connection_pool
        if self._owns_client and self._sentinel is None:
            connection = await pool.get_connection()
            try:
                await connection.send_packed_command(connection.pack_command("MGET", *names), check_health=False)
                values = await connection.read_response()
            except BaseException:
                await connection.disconnect()
                raise
            finally:
                await pool.release(connection)
            return list(values)
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

    async def clear(self, pattern: str | None = None) -> int:
        physical = self._physical_pattern("*" if pattern is None else pattern)

        async def run() -> int:
            deleted = 0
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=physical, count=_BATCH):
                batch.append(key)
                if len(batch) >= _BATCH:
                    deleted += await self._unlink(batch)
                    batch = []
            if batch:
                deleted += await self._unlink(batch)
            return deleted

        return await self._guard(run)

    async def _unlink(self, keys: list[bytes]) -> int:
        entries = sum(1 for key in keys if not self._logical(key).startswith(_INTERNAL_PREFIX))
        await self._client.unlink(*keys)
        return entries

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
            if self._client.connection_pool is not None:
                await self._client.connection_pool.disconnect()


def _slot_tag(key: str) -> str | None:
    """The hash tag that keeps an entry and its path counters in one cluster slot.

    It is the first path segment: ``GET:spaces:1:items`` and ``~g:s:spaces:1``
    both map to ``spaces`` (the root path maps to ``/``). Tag counters get
    ``t:<tag>``; other keys (manual values) get none.
    """
    parts = key.split(":", 3)
    if parts[0] == "~g":
        if len(parts) < 2:
            return None
        if parts[1] == "t":
            return key[3:]
        return parts[2] if len(parts) > 2 and parts[2] else "/"
    if parts[0] == "GET":
        return (parts[1] if len(parts) > 1 else "") or "/"
    if len(parts) > 2 and parts[1] == "GET":
        return parts[2] or "/"
    return None


class RedisClusterBackend(_RedisBase):
    """Entries spread over a Redis Cluster.

    Keys are laid out as ``<key_prefix>{<first path segment>}<logical key>``, so
    an entry and the invalidation counters of its path share one hash slot and
    a lookup is a single ``MGET`` on one node. Pattern clears and key listing
    walk every primary.

    Args:
        url: ``redis://host:port`` of any node (or give ``startup_nodes``).
        startup_nodes: ``(host, port)`` pairs to discover the cluster from.
        max_connections: connections per node.
        Other arguments as for :class:`RedisBackend`.
    """

    name = "redis-cluster"

    def __init__(
        self,
        url: str | None = None,
        *,
        startup_nodes: Sequence[tuple[str, int]] | None = None,
        password: str | None = None,
        max_connections: int = 50,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
        key_prefix: str = "ic:",
        client: "AsyncRedisCluster | None" = None,
        generation_ttl: float = 7 * 24 * 3600,
        failure_threshold: int = 3,
        recovery_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            key_prefix=key_prefix,
            generation_ttl=generation_ttl,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            clock=clock,
        )
        if "{" in key_prefix or "}" in key_prefix:
            raise ConfigurationError("a cluster key_prefix cannot contain '{' or '}': they pick the hash slot")
        self._owns_client = client is None
        if client is not None:
            self._client = client
            return
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "max_connections": max_connections,
            "decode_responses": False,
            "retry": Retry(NoBackoff(), 0),
        }
        if password is not None:
            options["password"] = password
        if startup_nodes:
            nodes = [ClusterNode(host, port) for host, port in startup_nodes]
            self._client = AsyncRedisCluster(startup_nodes=nodes, **options)
        elif url:
            self._client = AsyncRedisCluster.from_url(url, **options)
        else:
            raise ConfigurationError("RedisClusterBackend needs a url or startup_nodes")

    def _physical(self, key: str) -> str:
        tag = _slot_tag(key)
        if tag is None:
            return self.key_prefix + key
        return f"{self.key_prefix}{{{tag}}}{key}"

    def _logical(self, physical: bytes | str) -> str:
        text = super()._logical(physical)
        if text.startswith("{"):
            end = text.find("}")
            if end != -1:
                return text[end + 1 :]
        return text

    async def _mget(self, names: list[str]) -> list[Any]:
        slots = {self._client.keyslot(name) for name in names}
        if len(slots) == 1:
            return list(await self._client.mget(names))
        return list(await self._client.mget_nonatomic(names))

    def _primaries(self) -> list[Any]:
        return sorted(self._client.get_primaries(), key=lambda node: (node.host, node.port))

    async def scan(
        self, pattern: str = "*", cursor: int = 0, count: int = 100
    ) -> tuple[int, list[tuple[str, float | None]]]:
        # The cursor packs the node index (low 8 bits) and that node's own cursor.
        regex = glob_to_regex(pattern)

        async def run() -> tuple[int, list[tuple[str, float | None]]]:
            nodes = self._primaries()
            index, node_cursor = cursor & 0xFF, cursor >> 8
            if index >= len(nodes):
                return 0, []
            node = nodes[index]
            next_node_cursor, keys = await self._client.scan(
                cursor=node_cursor, match=self._glob_prefix + "*", count=count, target_nodes=node
            )
            matched = [key for key in keys if regex.fullmatch(self._logical(key))]
            page = await self._ttls_cluster(matched)
            next_node_cursor = _node_cursor(next_node_cursor)
            if next_node_cursor:
                return (next_node_cursor << 8) | index, page
            return (index + 1 if index + 1 < len(nodes) else 0), page

        return await self._guard(run)

    async def _ttls_cluster(self, keys: list[bytes]) -> list[tuple[str, float | None]]:
        return await self._ttls(self._client, keys)

    async def clear(self, pattern: str | None = None) -> int:
        regex = glob_to_regex("*" if pattern is None else pattern)

        async def run() -> int:
            deleted = 0
            for node in self._primaries():
                node_cursor = 0
                while True:
                    node_cursor, keys = await self._client.scan(
                        cursor=node_cursor, match=self._glob_prefix + "*", count=_BATCH, target_nodes=node
                    )
                    doomed = [key for key in keys if regex.fullmatch(self._logical(key))]
                    if doomed:
                        # The cluster client splits a multi-key UNLINK by slot.
                        await self._client.unlink(*doomed)
                        deleted += sum(1 for key in doomed if not self._logical(key).startswith(_INTERNAL_PREFIX))
                    node_cursor = _node_cursor(node_cursor)
                    if not node_cursor:
                        break
            return deleted

        return await self._guard(run)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
