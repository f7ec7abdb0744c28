"""The backend interface: a handful of async methods plus ``aclose``.

Implement :class:`CacheBackend` to store entries somewhere else. Keys are
``str`` (the cache's logical keys; a backend may prefix them with a namespace),
values are opaque ``bytes``. The cache calls nothing else.

Generation counters (see :mod:`intelligent_cache.invalidation`) are integers
stored beside the entries. ``fetch`` reads an entry together with the counters
it depends on and creates the missing ones with a random initial value, so a
counter that was evicted or expired can never come back with a value an old
entry remembers. A counter created by a lookup is provisional: it lives only
briefly unless :meth:`CacheBackend.put` stores an entry that depends on it, so
requests that store nothing leave no long-lived keys. ``bump`` makes every
entry depending on a counter unusable: a backend may increment the counter or
delete it (a deleted counter comes back with a new random value), whichever
cannot fail when the store is full.
"""

import abc
import random
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from ..keys import PING_KEY

__all__ = ["CacheBackend", "new_generation"]


def new_generation() -> int:
    """A random initial counter value, far from the small numbers increments give."""
    return random.getrandbits(62) | (1 << 32)


class CacheBackend(abc.ABC):
    """Where entries live. Every method may raise; the cache fails open on errors."""

    _secret: bytes | None = None

    #: Short name shown in stats and health (``"memory"``, ``"redis"``...).
    name: str = "custom"

    #: Whether several processes share this backend's entries. If so, concurrent
    #: misses are coordinated with :meth:`acquire_lock` across processes too.
    shared: bool = False

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None``."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (atomically with its TTL)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""

    @abc.abstractmethod
    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        """Read ``key`` and the current value of each generation counter.

        Missing counters are created with :func:`new_generation` (only if still
        absent) and their stored value is returned; a counter holding garbage
        counts as missing and is replaced. A backend whose counters expire
        creates them provisional (short-lived, see :meth:`put`).
        """

    @abc.abstractmethod
    async def bump(self, generation_keys: Sequence[str]) -> None:
        """Invalidate each generation counter: increment it, or delete it.

        Either way no entry that recorded the old value can match again.
        """

    async def put(self, key: str, value: bytes, ttl: float, generation_keys: Sequence[str] = ()) -> None:
        """Store an entry that depends on ``generation_keys`` for ``ttl`` seconds.

        Besides storing the value (as :meth:`set` does), a backend whose
        counters expire keeps each of these counters for at least ``ttl``
        seconds, so an entry never outlives what it depends on. The default
        just calls :meth:`set`.
        """
        await self.set(key, value, ttl)

    async def generations(self, generation_keys: Sequence[str]) -> list[int | None]:
        """The current value of each counter, ``None`` where absent (or unreadable); creates nothing.

        Used to tell whether a listed entry is still valid. The default knows
        nothing (every value ``None``, read as "unknown").
        """
        return [None] * len(generation_keys)

    async def secret(self) -> bytes:
        """The deployment secret that keys digests of credentials in cache keys.

        Every process sharing this backend must get the same bytes, so that they
        build the same keys. The default, right for per-process backends, is
        random per backend instance; shared backends override it (the Redis
        backends keep one in the namespace, created on first use).
        """
        if self._secret is None:
            self._secret = secrets.token_bytes(32)
        return self._secret

    @abc.abstractmethod
    async def scan(
        self, pattern: str = "*", cursor: int = 0, count: int = 100
    ) -> tuple[int, list[tuple[str, float | None]]]:
        """One page of ``(key, seconds_left)`` pairs matching a glob.

        Returns the cursor for the next page, ``0`` when the iteration is done.
        A page may hold fewer or more than ``count`` keys.
        """

    @abc.abstractmethod
    async def clear(self, pattern: str | None = None) -> int:
        """Delete every key of this cache (or those matching ``pattern``); the count."""

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        """Take a lock shared by every process using this backend.

        Returns a token, or ``None`` if another holder has it. The lock frees
        itself after ``ttl`` seconds. The default suits per-process backends:
        it always grants (requests of one process already coalesce in memory).
        """
        return "local"

    async def release_lock(self, name: str, token: str) -> None:  # noqa: B027 - nothing to release by default
        """Release a lock if ``token`` still holds it."""

    async def add_counters(self, deltas: Mapping[str, int]) -> None:  # noqa: B027 - per-process by default
        """Add to the statistics counters shared by every process using this backend.

        The default keeps nothing: a per-process backend has per-process stats.
        """

    async def add_key_hits(self, hits: Mapping[str, int]) -> None:  # noqa: B027 - optional: no per-key hits
        """Add answers served from entries, by key, to what the backend keeps beside them.

        A count lives as long as its entry does (a backend may let it lapse
        sooner); the default keeps none, and :meth:`read_key_hits` says 0.
        """

    async def read_key_hits(self, keys: Sequence[str]) -> list[int]:
        """The hits kept for each of ``keys`` (0 for a key with none)."""
        return [0] * len(keys)

    async def read_counters(self) -> dict[str, int] | None:
        """The shared statistics counters, or ``None`` if this backend shares none."""
        return None

    async def ping(self) -> None:
        """Raise if the backend cannot serve requests. The default reads a key."""
        await self.get(PING_KEY)

    def info(self) -> dict[str, Any]:
        """What health and stats show about this backend (name, breaker state...)."""
        return {"backend": self.name}

    def reopen(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Accept calls again after :meth:`aclose`: called when an app using the backend starts.

        A backend may refuse calls once closed (so that a late call opens no
        connection nobody would close); an app started again reopens it.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Called on application shutdown."""
