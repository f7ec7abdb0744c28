"""Every backend call of the request path, failing open.

The request path never sees a backend exception: a failed read is a miss
(``None``), a failed write is ``False``, a failed lock is granted (computing
is always safe), a corrupt value decodes as ``None``. Failures are counted and
logged once per change of state. Two things are kept so that failing open never
serves stale data: invalidations that failed are replayed until they land, and
no lookup is answered while one is pending; locks whose release failed are
freed before this process waits on them.
"""

import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any

import anyio

from ..entry import CachedResponse, VaryIndex, decode, encode
from ..exceptions import CorruptEntryError
from ..lru import ENTRY_OVERHEAD, BoundedLRU
from ..stats import CacheStats
from ..tasks import Background
from .base import CacheBackend
from .breaker import probing

__all__ = ["FailOpenBackend", "describe_error"]

logger = logging.getLogger("intelligent_cache")

# Bounds of the decoded-entry memo: values of at most this size, at most this many
# bytes of them in all (each costs about twice its size: the bytes and the entry).
_DECODED_MAX_SIZE = 64 * 1024
_DECODED_MAX_BYTES = 1024 * 1024
_HEADER_COST = 160  # a decoded header line: its tuple and two bytes objects
# Failed invalidations kept for replay, and how often the replay is tried.
_MAX_PENDING = 10_000
_REPLAY_INTERVAL = 0.25
# redis-py's annotation of a failed pipeline command: its name, then its arguments.
_PIPELINE_COMMAND = re.compile(r"(Command # \d+ \()(\S*)(?: .*)?(\) of pipeline caused error)", re.DOTALL)


def describe_error(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, at most 500 characters, with credentials in URLs masked.

    ``scheme://user:password@`` keeps the user; ``scheme://secret@`` may be a
    password alone, so it is masked whole. redis-py quotes the arguments of a
    failed pipeline command (``Command # 1 (SET <key> <entry>) of pipeline``):
    an entry holds a response body, so only the command's name is kept.
    """
    text = _PIPELINE_COMMAND.sub(r"\1\2 ...\3", str(exc)[:1000])  # bounded before the search, not only after
    text = re.sub(
        r"(?i)\b([a-z][a-z0-9+.-]*://)(?:([^\s/@:]*):)?[^\s/]*@",
        lambda match: f"{match[1]}{match[2] + ':' if match[2] is not None else ''}***@",
        text,
    )
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


class FailOpenBackend:
    """A :class:`CacheBackend` as the request path uses it: never raising.

    Args:
        backend: the backend.
        stats: where failures, stores and invalidations are counted.
        lock_timeout: seconds a cross-process lock is held at most.
        secret: the key secret, if the manager was given one.
    """

    def __init__(
        self, backend: CacheBackend, stats: CacheStats, *, lock_timeout: float, secret: bytes | None = None
    ) -> None:
        self.backend = backend
        self.stats = stats
        self.lock_timeout = lock_timeout
        self._secret = secret
        #: Keys the digests of keys that never leave this process (backend down).
        self.local_secret = secrets.token_bytes(32)
        self._degraded = False
        #: The last failure, as ``"<ExceptionType>: <message>"`` (credentials in URLs masked).
        self.last_error: str | None = None
        self._decoded: BoundedLRU[bytes, CachedResponse | VaryIndex] = BoundedLRU(max_bytes=_DECODED_MAX_BYTES)
        # Invalidations that failed (backend unreachable), in order, until they land.
        self._pending: dict[str, None] = {}
        self._pending_overflow = False
        self._replaying = False
        # Locks whose release failed: this process frees them before waiting on them.
        self._unreleased: dict[str, str] = {}
        self._tasks = Background()

    async def aclose(self) -> None:
        """Stop replaying pending invalidations."""
        await self._tasks.aclose()

    def failed(self, operation: str, exc: Exception, *, log: bool = True) -> None:
        """Count a failed backend call, keep its error text and log it once per change of state.

        ``last_error`` names the exception type and keeps its message (redis-py's
        ``repr`` drops it), passwords masked (:func:`describe_error`).
        ``log=False``: the caller reports the failure itself.
        """
        self.stats.errors += 1
        self.last_error = describe_error(exc)
        if not self._degraded:
            self._degraded = True
            if log:
                name, error = self.backend.name, self.last_error
                logger.warning("cache backend %s failed during %s, serving uncached: %s", name, operation, error)

    def _succeeded(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning("cache backend %s answers again", self.backend.name)

    @property
    def degraded(self) -> bool:
        """Whether the last backend call failed."""
        return self._degraded

    async def lookup(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int] | None]:
        """Read an entry and its counters; ``(None, None)`` if the backend failed.

        While an invalidation of this process has not landed, nothing is read:
        entries it should have invalidated may still be there.
        """
        try:
            if self._pending or self._pending_overflow:
                await self._land_pending()
            raw, generations = await self.backend.fetch(key, generation_keys)
        except Exception as exc:
            self.failed("lookup", exc)
            return None, None
        if self._degraded:
            self._succeeded()
        return raw, generations

    async def read(self, key: str) -> bytes | None:
        """Read a value; ``None`` (counted) if the backend failed."""
        try:
            return await self.backend.get(key)
        except Exception as exc:
            self.failed("lookup", exc)
            return None

    async def acquire_lock(self, name: str) -> str | None:
        """A cross-process lock held at most ``lock_timeout``; a token, or ``None`` if taken.

        A backend failure grants the lock: computing is always safe.
        """
        if not self.backend.shared:  # one process: its own single-flight is the whole story
            return "local"
        try:
            stale_token = self._unreleased.pop(name, None)
            if stale_token is not None:  # ours, left behind by a failed release
                await self.backend.release_lock(name, stale_token)
            return await self.backend.acquire_lock(name, self.lock_timeout)
        except Exception as exc:
            self.failed("lock", exc)
            return "unlocked"

    async def release_lock(self, name: str, token: str) -> None:
        """Release a lock taken with :meth:`acquire_lock`."""
        if not self.backend.shared:
            return
        try:
            await self.backend.release_lock(name, token)
        except Exception as exc:
            self.failed("unlock", exc)
            if len(self._unreleased) < _MAX_PENDING:
                self._unreleased[name] = token

    async def secret(self) -> bytes | None:
        """The key secret (see ``key_secret``); ``None`` (counted) if the backend failed to give one."""
        if self._secret is None:
            try:
                self._secret = await self.backend.secret()
            except Exception as exc:
                self.failed("secret", exc)
                return None
        return self._secret

    @property
    def known_secret(self) -> bytes | None:
        """The key secret if already known (the fast path cannot wait for the backend)."""
        return self._secret

    def decode(self, raw: bytes) -> Any:
        """Decode a stored value; a corrupt one counts and reads as ``None``.

        Recently decoded small values are remembered by their bytes: a hot entry
        is unpacked once, not on every HIT (equal bytes decode to equal values).
        """
        decoded = self._decoded.get(raw)
        if decoded is not None:
            return decoded
        try:
            decoded = decode(raw)
        except CorruptEntryError:
            self.stats.corrupt += 1
            return None
        # Only immutable results are shared; plain values (lists, dicts) are decoded each time.
        if len(raw) <= _DECODED_MAX_SIZE and isinstance(decoded, CachedResponse | VaryIndex):
            # What it keeps: the raw bytes, the decoded copy of them, and an object per header line.
            cost = 2 * len(raw) + ENTRY_OVERHEAD + _HEADER_COST * len(getattr(decoded, "headers", ()))
            self._decoded.put(raw, decoded, cost)
        return decoded

    async def store(
        self, key: str, entry: CachedResponse, keep_for: float | None = None, generation_keys: Sequence[str] = ()
    ) -> bool:
        """Store an entry for ``keep_for`` seconds (default: its TTL); ``False`` if the backend failed.

        ``generation_keys`` are the counters it depends on: the backend keeps
        them at least as long as the entry.
        """
        try:
            await self.backend.put(key, encode(entry), entry.ttl if keep_for is None else keep_for, generation_keys)
        except Exception as exc:
            self.failed("store", exc)
            return False
        self.stats.stores += 1
        return True

    async def store_raw(self, key: str, value: bytes, ttl: float) -> bool:
        """Store already-encoded bytes; ``False`` if the backend failed."""
        try:
            await self.backend.set(key, value, ttl)
        except Exception as exc:
            self.failed("store", exc)
            return False
        return True

    async def invalidate(self, generation_keys: Sequence[str]) -> bool:
        """Bump counters; ``False`` (logged and counted) if the backend failed.

        A bump that fails is not forgotten: this process retries it in the
        background, and lands it before it trusts the backend again for a lookup.
        """
        try:
            await self.backend.bump(generation_keys)
        except Exception as exc:
            self.stats.invalidation_errors += 1
            self.failed("invalidation", exc)
            self._keep_pending(generation_keys)
            return False
        self.stats.invalidations += 1
        return True

    def _keep_pending(self, generation_keys: Sequence[str]) -> None:
        for name in generation_keys:
            self._pending[name] = None
        if len(self._pending) > _MAX_PENDING:
            # Too many to replay one by one: drop the whole namespace instead.
            self._pending.clear()
            self._pending_overflow = True
        if not self._replaying:
            self._replaying = True
            self._tasks.spawn(self._replay_pending)

    async def _replay_pending(self) -> None:
        try:
            while self._pending or self._pending_overflow:
                await anyio.sleep(_REPLAY_INTERVAL)
                try:
                    await self._land_pending()
                except Exception:  # still unreachable; the next round tries again
                    continue
        finally:
            self._replaying = False

    async def _land_pending(self) -> None:
        """Land every invalidation that failed earlier (raises if the backend still fails)."""
        with probing():  # through an open breaker: the sooner they land, the sooner reads are right
            await self._land_pending_now()

    async def _land_pending_now(self) -> None:
        if self._pending_overflow:
            await self.backend.clear()
            self._pending_overflow = False
            self._pending.clear()
        if self._pending:
            names = list(self._pending)
            await self.backend.bump(names)
            for name in names:
                self._pending.pop(name, None)
            logger.warning("cache backend %s: %d delayed invalidations landed", self.backend.name, len(names))
