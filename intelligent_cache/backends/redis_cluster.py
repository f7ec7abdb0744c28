"""The Redis Cluster backend."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..exceptions import ConfigurationError
from ..globs import compile_glob
from ..keys import is_internal, slot_tag
from ._redis_common import (
    BATCH,
    AsyncRedisCluster,
    ClusterNode,
    LookupConnection,
    NoBackoff,
    RedisBase,
    RedisConnectionError,
    ResponseError,
    Retry,
    node_cursor,
)

__all__ = ["RedisClusterBackend"]

T = TypeVar("T")

# Replies that mean the slot is served elsewhere, or not yet: redis-py's client handles them.
_REDIRECTED = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class RedisClusterBackend(RedisBase):
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
        provisional_ttl: float = 60,
        failure_threshold: int = 3,
        recovery_timeout: float = 5.0,
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
        if "{" in key_prefix or "}" in key_prefix:
            raise ConfigurationError("a cluster key_prefix cannot contain '{' or '}': they pick the hash slot")
        self._owns_client = client is None
        # Auto-pipelined lookups (see .lookups), one connection per primary and event loop.
        self._lookups: dict[tuple[str, int], LookupConnection] = {}
        self._timeouts = (socket_timeout, socket_connect_timeout)
        self._initialized = False
        self._initializing = asyncio.Lock()
        if client is not None:
            self._client = client
            return
        if not startup_nodes and not url:
            raise ConfigurationError("RedisClusterBackend needs a url or startup_nodes")
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "max_connections": max_connections,
            "decode_responses": False,
            "retry": Retry(NoBackoff(), 0),
        }
        if password is not None:
            options["password"] = password
        self._settings = (url or "", list(startup_nodes or ()), options)
        self._client = self._connect(*self._settings)

    @staticmethod
    def _connect(url: str, startup_nodes: list[tuple[str, int]], options: dict[str, Any]) -> Any:
        if startup_nodes:
            return AsyncRedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in startup_nodes], **options)
        return AsyncRedisCluster.from_url(url, **options)

    def _new_client(self) -> Any | None:
        return self._connect(*self._settings) if self._owns_client else None

    def _replaced_client(self) -> None:
        self._initialized = False  # the new client discovers the cluster again
        self._initializing = asyncio.Lock()

    def _physical(self, key: str) -> str:
        tag = slot_tag(key)
        if tag is None:
            return self.key_prefix + key
        return f"{self.key_prefix}{{{tag}}}{key}"

    def _logical(self, physical: bytes | str) -> str:
        text = super()._logical(physical)
        if text.startswith("{"):
            end = text.find("}")
            # Strip only a tag this backend put there: the rest must map back to it.
            if end != -1 and slot_tag(text[end + 1 :]) == text[1:end]:
                return text[end + 1 :]
        return text

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        self._check_open()
        self._follow_loop()  # before discovery: a new loop's client discovers the cluster itself
        if not self._initialized:
            await self._initialize()
        return await super()._guard(call)

    async def _initialize(self) -> None:
        # redis-py discovers the cluster lazily; concurrent first commands would
        # race that discovery and drop each other's connections. Do it once, first.
        async with self._initializing:
            if not self._initialized:
                await super()._guard(self._client.initialize)
                self._initialized = True

    async def _mget(self, names: list[str]) -> list[Any]:
        slots = {self._client.keyslot(name) for name in names}
        if len(slots) != 1:
            return list(await self._client.mget_nonatomic(names))
        lookups = self._lookups_of(slots.pop())
        if lookups is not None:
            try:
                return await lookups.mget(names)
            except ResponseError as exc:
                if not str(exc).startswith(_REDIRECTED):
                    raise
            except RedisConnectionError:
                pass  # the primary may be gone: redis-py's client finds the slot's new owner
        # Through redis-py, which follows MOVED and ASK and refreshes the slot map
        # that the next lookup reads.
        return list(await self._client.mget(names))

    def _lookups_of(self, slot: int) -> "LookupConnection | None":
        """The lookup connection of the primary serving ``slot`` (per redis-py's slot map)."""
        if LookupConnection is None or not self._owns_client:
            return None
        try:
            node = self._client.nodes_manager.get_node_from_slot(slot)
        except Exception:  # no owner known (yet): redis-py's client will say why
            return None
        found = self._lookups.get((node.host, node.port))
        if found is None:
            options = node.connection_kwargs
            found = self._lookups[node.host, node.port] = LookupConnection(
                host=node.host,
                port=node.port,
                username=options.get("username"),
                password=options.get("password"),
                socket_timeout=self._timeouts[0],
                socket_connect_timeout=self._timeouts[1],
            )
        return found

    async def _disconnect(self, client: Any) -> None:
        for lookups in self._lookups.values():
            lookups.close()
        await client.aclose()

    def _primaries(self) -> list[Any]:
        return sorted(self._client.get_primaries(), key=lambda node: (node.host, node.port))

    async def scan(
        self, pattern: str = "*", cursor: int = 0, count: int = 100
    ) -> tuple[int, list[tuple[str, float | None]]]:
        # The cursor packs the node index (low 8 bits) and that node's own cursor.
        regex = compile_glob(pattern)

        async def run() -> tuple[int, list[tuple[str, float | None]]]:
            nodes = self._primaries()
            index, position = cursor & 0xFF, cursor >> 8
            if index >= len(nodes):
                return 0, []
            node = nodes[index]
            next_node_cursor, keys = await self._client.scan(
                cursor=position, match=self._glob_prefix + "*", count=count, target_nodes=node
            )
            matched = [
                key for key in keys if self.logical_or_none(key) is not None and regex.fullmatch(self._logical(key))
            ]
            page = await self._ttls(self._client, matched)
            next_node_cursor = node_cursor(next_node_cursor)
            if next_node_cursor:
                return (next_node_cursor << 8) | index, page
            return (index + 1 if index + 1 < len(nodes) else 0), page

        return await self._guard(run)

    async def clear(self, pattern: str | None = None) -> int:
        regex = compile_glob("*" if pattern is None else pattern)

        async def run() -> int:
            deleted = 0
            for node in self._primaries():
                position = 0
                while True:
                    position, keys = await self._client.scan(
                        cursor=position, match=self._glob_prefix + "*", count=BATCH, target_nodes=node
                    )
                    doomed = [key for key in keys if self.clearable(key) and regex.fullmatch(self._logical(key))]
                    if doomed:
                        # The cluster client splits a multi-key UNLINK by slot.
                        await self._client.unlink(*doomed)
                        deleted += sum(1 for key in doomed if not is_internal(self._logical(key)))
                    position = node_cursor(position)
                    if not position:
                        break
            return deleted

        return await self._guard(run)

    async def aclose(self) -> None:
        """Close the connections (a borrowed ``client`` stays open).

        As for :meth:`RedisBackend.aclose`: calls in flight finish first, since
        one cut off would make the cluster client rediscover the cluster and
        open connections behind the close; after :meth:`reopen` it rediscovers it.
        """
        await self._stop_calls()
        if self._owns_client:
            await self._disconnect(self._client)
        self._initialized = False
