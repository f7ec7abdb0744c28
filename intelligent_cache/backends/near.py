"""``NearCache``: an in-process copy of hot entries and counters in front of Redis.

A HIT that finds its entry and every invalidation counter here costs no round
trip. Coherence across processes comes from Redis pub/sub: every bump,
delete and clear is published on the namespace's channel, and every process
drops what it holds for those names as the message arrives.

The staleness this allows is bounded and opt-in (``RedisBackend(near_cache=...)``):

- the writer's own process never serves pre-write data (it drops its copies
  before the write's response is sent);
- another process may, until the invalidation message reaches it: typically
  well under a millisecond on a LAN, and never longer than ``max_staleness``,
  because a counter copy older than that is read from Redis again whatever the
  messages said;
- while the subscription is down (connection lost, not yet subscribed) the near
  cache is bypassed entirely and every lookup goes to Redis.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..exceptions import ConfigurationError
from ..lru import ENTRY_OVERHEAD, BoundedLRU
from .failopen import describe_error

__all__ = ["DIRECT", "Direct", "NearCache"]

logger = logging.getLogger("intelligent_cache")

Load = Callable[[str, Sequence[str]], Awaitable[tuple[bytes | None, list[int]]]]


def _names(message: bytes) -> list[str]:
    return [name.decode("utf-8", "surrogateescape") for name in message.split(b"\0") if name]


def _message(kind: bytes, names: Sequence[str]) -> bytes:
    return kind + b"\0".join(name.encode("utf-8", "surrogateescape") for name in names)


class Direct:
    """No near cache: every lookup reads Redis, and nothing is published.

    The layer a :class:`RedisBackend` uses when it has no :class:`NearCache`;
    both answer the same five hooks, so the backend has one code path.
    """

    def listen(self, client: Any, channel: str) -> None:
        """Make sure invalidations on ``channel`` are heard (before a lookup)."""

    async def fetch(self, key: str, names: Sequence[str], load: Load) -> tuple[bytes | None, list[int]]:
        """The entry and counters of ``key``: read through ``load`` (Redis)."""
        return await load(key, names)

    def written(self, key: str, value: bytes) -> None:
        """This process stored ``value`` under ``key``."""

    def counters_bumped(self, names: Sequence[str]) -> bytes | None:
        """This process bumped ``names``: the message to publish, if any."""
        return None

    def key_deleted(self, key: str) -> bytes | None:
        """This process deleted ``key``: the message to publish, if any."""
        return None

    def cleared(self) -> bytes | None:
        """This process cleared entries: the message to publish, if any."""
        return None


DIRECT = Direct()


class NearCache(Direct):
    """Settings and state of the near cache of one :class:`RedisBackend`.

    Args:
        max_entries: most entries kept in process.
        max_bytes: most bytes of keys and values kept in process.
        max_staleness: seconds a counter copy is trusted without hearing from
            Redis; the bound on how long another process's write can go unseen.
        clock: monotonic time source (for tests).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        max_staleness: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ConfigurationError("near cache bounds must be positive")
        if not 0 < max_staleness <= 60:
            raise ConfigurationError("max_staleness must be between 0 and 60 seconds")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_staleness = max_staleness
        self._clock = clock
        self._entries: BoundedLRU[str, bytes] = BoundedLRU(max_items=max_entries, max_bytes=max_bytes)
        self._counters: dict[str, tuple[int, float]] = {}
        # Bumped by every invalidation seen: a Redis read that started before an
        # invalidation must not repopulate what the invalidation removed.
        self.epoch = 0
        self.subscribed = False
        self.hits = 0
        self._task: asyncio.Task[None] | None = None

    # -- the hooks of the backend -----------------------------------------------

    async def fetch(self, key: str, names: Sequence[str], load: Load) -> tuple[bytes | None, list[int]]:
        """The entry and counters from here when trusted, else from ``load`` (Redis), remembered."""
        found = self.lookup(key, names)
        if found is not None:
            return found
        epoch = self.epoch
        raw, generations = await load(key, names)
        self.remember(epoch, key, raw, names, generations)
        return raw, generations

    def written(self, key: str, value: bytes) -> None:
        self.keep(key, value)

    def counters_bumped(self, names: Sequence[str]) -> bytes:
        # This process never serves what its own write invalidated; others hear it.
        self.drop_counters(names)
        return _message(b"c", names)

    def key_deleted(self, key: str) -> bytes:
        self.drop_key(key)
        return _message(b"k", [key])

    def cleared(self) -> bytes:
        self.drop_all()
        return b"*"

    # -- reads ------------------------------------------------------------------

    def lookup(self, key: str, names: Sequence[str]) -> tuple[bytes, list[int]] | None:
        """The entry and counters if all are held and trusted, else ``None``."""
        if not self.subscribed:
            return None
        value = self._entries.get(key)
        if value is None:
            return None
        deadline = self._clock() - self.max_staleness
        counters = self._counters
        generations: list[int] = []
        for name in names:
            item = counters.get(name)
            if item is None or item[1] <= deadline:
                return None
            generations.append(item[0])
        self.hits += 1
        return value, generations

    def remember(
        self, epoch: int, key: str, value: bytes | None, names: Sequence[str], generations: Sequence[int]
    ) -> None:
        """Keep what a Redis read returned, unless an invalidation arrived meanwhile."""
        if epoch != self.epoch or not self.subscribed:
            return
        now = self._clock()
        for name, generation in zip(names, generations, strict=True):
            self._counters[name] = (generation, now)
        if len(self._counters) > 4 * self.max_entries:
            self._counters.clear()
        if value is not None:
            self.keep(key, value)

    def keep(self, key: str, value: bytes) -> None:
        """Keep an entry (written or read by this process)."""
        self._entries.put(key, value, len(key) + len(value) + ENTRY_OVERHEAD)

    # -- invalidation ---------------------------------------------------------------

    def drop_counters(self, names: Sequence[str]) -> None:
        self.epoch += 1
        for name in names:
            self._counters.pop(name, None)

    def drop_key(self, key: str) -> None:
        self._entries.pop(key)

    def drop_all(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._counters.clear()

    def apply(self, message: bytes) -> None:
        """Apply one invalidation message: ``c<names>`` counters, ``k<keys>`` entries, ``*`` everything."""
        kind, body = message[:1], message[1:]
        names = _names(body)
        if kind == b"c":
            self.drop_counters(names)
        elif kind == b"k":
            self.epoch += 1
            for name in names:
                self.drop_key(name)
        else:
            self.drop_all()

    # -- the subscription ---------------------------------------------------------------

    def listen(self, client: Any, channel: str) -> None:
        """Listen for invalidations in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(client, channel))

    async def _listen(self, client: Any, channel: str) -> None:
        delay = 0.05
        while True:
            pubsub = client.pubsub()
            # A connection can die without a word (a NAT or load balancer forgetting it): when
            # it has been silent this long, PING it; no PONG as long again means it is down.
            silence = max(0.05, min(1.0, self.max_staleness / 4))
            loop = asyncio.get_running_loop()
            try:
                await pubsub.subscribe(channel)
                heard, pinged = loop.time(), None
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=silence)
                    now = loop.time()
                    if message is None:
                        if pinged is not None and now - pinged > silence:
                            raise ConnectionError("the subscription stopped answering PING")
                        if pinged is None and now - heard > silence:
                            await pubsub.ping()
                            pinged = now
                        continue
                    heard, pinged = now, None
                    if message["type"] == "subscribe":
                        # Whatever was held may have missed messages while unsubscribed.
                        self.drop_all()
                        self.subscribed = True
                        delay = 0.05
                    elif message["type"] == "message":
                        self.apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed:
                    logger.warning(
                        "near cache unsubscribed, reading Redis directly until it is back: %s", describe_error(exc)
                    )
                self.subscribed = False
                self.drop_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):  # the connection may already be gone
                    await pubsub.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.subscribed = False
        self.drop_all()

    def info(self) -> dict[str, Any]:
        return {
            "subscribed": self.subscribed,
            "entries": len(self._entries),
            "bytes": self._entries.size_bytes,
            "counters": len(self._counters),
            "hits": self.hits,
            "max_staleness": self.max_staleness,
        }
