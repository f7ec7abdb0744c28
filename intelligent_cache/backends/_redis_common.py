"""What the Redis backends share: the redis-py import, key mapping, the breaker guard.

Generation counters in Redis (see :mod:`intelligent_cache.invalidation`):

- a lookup (``fetch``) reads them with the entry in one ``MGET`` and creates
  the missing ones with ``SET NX GET``: a random value, *provisional*
  (``provisional_ttl``, 60 s by default), so that requests which store nothing
  (404s, errors, anonymous scans of ids) leave nothing long-lived behind;
- ``put`` stores an entry and, in the same pipeline, extends each of its
  counters with ``PEXPIRE ... GT`` to the entry's lifetime (at most
  ``generation_ttl``): a counter lives as long as the longest entry depending
  on it, never much longer;
- ``bump`` deletes them (``UNLINK``). Redis accepts deletions when it is out of
  memory (``maxmemory`` with ``noeviction``) where it refuses ``INCR``, so an
  acknowledged write always invalidates; the next lookup recreates the counter
  with a fresh random value, which no stored entry remembers.

Why no pre-write entry can become a HIT: an entry records the counter values
a lookup saw *before* its computation read any data. A write bumps after it
changed the data, so the value the entry recorded is deleted after the entry's
data was read; from then on the counter is absent or holds a value drawn after
the deletion, and such values are random 62-bit numbers, not continuations. A
counter that expires or is evicted between the lookup and the ``put`` is the
same case: ``PEXPIRE`` does not recreate it, and its next value is new.
"""

import asyncio
import contextlib
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff
    from redis.exceptions import ClusterDownError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("RedisBackend needs redis-py: pip install 'fastapi-intelligent-cache[redis]'") from exc

from ..exceptions import BackendUnavailable, ConfigurationError
from ..keys import NAMESPACE_PREFIXES, SECRET_KEY, STATS_KEY, hits_name, is_internal
from .base import CacheBackend, new_generation
from .breaker import CircuitBreaker

try:
    from .lookups import LookupConnection
except ImportError:  # hiredis missing (it comes with the redis extra): lookups use redis-py's pool
    LookupConnection = None  # type: ignore[assignment,misc]

logger = logging.getLogger("intelligent_cache")

_CLOSED_BY_ACLOSE = "closed by aclose"

__all__ = [
    "AsyncRedisCluster",
    "ClusterNode",
    "LookupConnection",
    "NoBackoff",
    "RedisConnectionError",
    "ResponseError",
    "Retry",
    "Sentinel",
    "aioredis",
]

T = TypeVar("T")

BATCH = 500
SECRET_BYTES = 32
# A stored secret shorter than this is garbage (someone wrote the key by hand) and is replaced.
MIN_SECRET_BYTES = 16
# Longest wait, on close, for calls still in flight (each is bounded by the socket timeout anyway).
CLOSE_PATIENCE = 5.0

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Take over a lock that has no deadline (never one of the cache's): garbage.
_TAKE_ENDLESS = (
    "if redis.call('pttl', KEYS[1]) == -1 then "
    "redis.call('del', KEYS[1]) return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 end return 0"
)
# Replace a secret that is not a usable string, atomically, and return the one that holds.
_REPAIR_SECRET = """
if redis.call('type', KEYS[1])['ok'] == 'string' then
  local current = redis.call('get', KEYS[1])
  if string.len(current) >= tonumber(ARGV[2]) then return current end
end
redis.call('set', KEYS[1], ARGV[1])
return ARGV[1]
"""


def glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def node_cursor(cursor: Any) -> int:
    # redis-py's cluster SCAN with target_nodes answers {node_name: cursor}.
    if isinstance(cursor, dict):
        return int(next(iter(cursor.values()), 0))
    return int(cursor)


# What a counter (or a count) holds: a decimal int64, nothing else. int() would also take
# " 12 ", "1_2" and "+12", garbage that then never gets repaired.
_NUMBER = re.compile(rb"-?[0-9]{1,19}")


def _generation(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes) and _NUMBER.fullmatch(value):
        return int(value)
    return None


def answered(exc: BaseException) -> bool:
    """Whether an error is a reply of a reachable server (OOM, WRONGTYPE, NOSCRIPT...).

    Such a call failed, but Redis is up: opening the circuit would also stop the
    calls that still work (at maxmemory, reads of valid entries and the deletes
    that invalidate them). The breaker is about reachability, so these do not
    count toward opening it. ``CLUSTERDOWN`` is the exception: the cluster as a
    whole is not serving, which is what the breaker is for.
    """
    return isinstance(exc, ResponseError) and not isinstance(exc, ClusterDownError)


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        raise ConfigurationError(f"{name} must be a number of seconds, at least 1, got {value!r}")
    return float(value)


class RedisBase(CacheBackend):
    """What the single-server and the Cluster backends share."""

    shared = True

    _client: Any
    _owns_client: bool  # built from a url (not passed in): the backend may rebuild and close it

    def __init__(
        self,
        *,
        key_prefix: str,
        generation_ttl: float,
        provisional_ttl: float,
        failure_threshold: int,
        recovery_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ConfigurationError("key_prefix must be a non-empty string: it is the cache's namespace")
        self.key_prefix = key_prefix
        self._glob_prefix = glob_escape(key_prefix)
        self.generation_ttl = int(_seconds(generation_ttl, "generation_ttl"))
        # A provisional counter never outlives what a store could extend it to.
        self.provisional_ttl = min(_seconds(provisional_ttl, "provisional_ttl"), float(self.generation_ttl))
        self._generation_ms = self.generation_ttl * 1000
        self._provisional_ms = int(self.provisional_ttl * 1000)
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold, recovery_timeout=recovery_timeout, clock=clock, name=self.name
        )
        self._closed = False
        self._in_flight = 0
        self._drained: asyncio.Event | None = None
        # The event loop the client's connections belong to (see _follow_loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_watch: asyncio.Task[None] | None = None
        self._creating: dict[tuple[str, ...], asyncio.Future[list[int]]] = {}  # see _created
        self._watched = False  # whether _follow_loop has seen this loop since the last start or close
        self._warned_foreign_loop = False

    # -- keys -------------------------------------------------------------------

    def _physical(self, key: str) -> str:
        return self.key_prefix + key

    def _logical(self, physical: bytes | str) -> str:
        text = physical.decode("utf-8", "surrogateescape") if isinstance(physical, bytes) else physical
        return text[len(self.key_prefix) :]

    def _physical_pattern(self, pattern: str) -> str:
        return self._glob_prefix + pattern

    # -- the breaker around every call, and closing -----------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(f"{self.name} backend is closed")

    # -- the event loop the connections belong to ------------------------------------

    def _follow_loop(self) -> None:
        """Give the client connections of the running event loop, and close them when that loop ends.

        redis-py's connections and pool locks belong to the loop that opened
        them. An app served by uvicorn never changes loops, but Starlette's
        ``TestClient`` used without ``with`` (as FastAPI's docs use it) runs
        each request on a new loop and closes it afterwards: pooled
        connections would outlive their loop and fail the next request with
        ``Event loop is closed``. So the backend starts a new client on a new
        loop, and a task on each loop disconnects that loop's client when the
        loop shuts down (``asyncio.run`` and anyio cancel it then).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: redis-py's asyncio client does not run there
            return
        if loop is self._loop and self._watched:
            return
        previous, self._loop = self._loop, loop
        self._watched = True
        if previous is not None and previous is not loop:
            client = self._new_client()
            if client is None:
                if not self._warned_foreign_loop:
                    self._warned_foreign_loop = True
                    logger.warning(
                        "the redis client passed to %s is used on a new event loop; its connections may belong "
                        "to the last one (pass a url instead: the backend then opens connections per loop)",
                        type(self).__name__,
                    )
                return
            self._client = client
            self._replaced_client()
        if self._owns_client:
            self._loop_watch = loop.create_task(self._close_with_loop(self._client))

    async def _close_with_loop(self, client: Any) -> None:
        try:
            await asyncio.Event().wait()  # until the loop shuts down and cancels it
        except asyncio.CancelledError as exc:
            if exc.args != (_CLOSED_BY_ACLOSE,):  # aclose closes the connections itself, after its calls end
                with contextlib.suppress(Exception):
                    await self._disconnect(client)
            raise

    def _new_client(self) -> Any | None:
        """A new client with this backend's settings, or ``None`` for a client the user passed."""
        return None

    def _replaced_client(self) -> None:
        """Reset state tied to the client :meth:`_follow_loop` replaced."""

    async def _disconnect(self, client: Any) -> None:
        """Close the connections of ``client`` (this backend's own)."""
        await client.aclose()

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        self._check_open()
        self._follow_loop()
        self.breaker.before_call()
        self._in_flight += 1
        try:
            result = await call()
        except Exception as exc:
            if answered(exc):
                if self.breaker.state != "closed" or self.breaker.failures:
                    self.breaker.succeeded()
            else:
                self.breaker.failed(exc)
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()
        if self.breaker.state != "closed" or self.breaker.failures:
            self.breaker.succeeded()
        return result

    async def _stop_calls(self) -> None:
        """Refuse new calls and let those in flight finish (bounded) before connections close.

        A call still running when its connections are closed would reconnect
        (redis-py retries, the cluster client rediscovers the cluster) and leave
        sockets nobody closes.
        """
        self._closed = True
        if self._loop_watch is not None:
            self._loop_watch.cancel(_CLOSED_BY_ACLOSE)  # after a reopen, the next call watches again
            self._loop_watch = None
        self._watched = False
        if self._in_flight:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_PATIENCE):
                    await self._drained.wait()

    def reopen(self) -> None:
        """Accept calls again after :meth:`aclose` (they open new connections)."""
        self._closed = False
        self._drained = None

    # -- CacheBackend ---------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = await self._guard(lambda: self._client.get(self._physical(key)))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = max(1, int(ttl * 1000))
        await self._guard(lambda: self._client.set(self._physical(key), value, px=milliseconds))

    async def put(self, key: str, value: bytes, ttl: float, generation_keys: Sequence[str] = ()) -> None:
        milliseconds = max(1, int(ttl * 1000))
        if not generation_keys:
            await self._guard(lambda: self._client.set(self._physical(key), value, px=milliseconds))
            return
        # Executed after the SET, so the counter's deadline is never before the entry's
        # (unless capped by generation_ttl: such entries turn into misses after it).
        keep = min(milliseconds, self._generation_ms)

        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(self._physical(key), value, px=milliseconds)
                for name in generation_keys:
                    # GT: only ever lengthens (another entry may need it longer). An absent
                    # counter (bumped, expired) stays absent: its next value will be new.
                    # GT takes a counter without a deadline (written by something else)
                    # for one that never ends: NX gives it one.
                    physical = self._physical(name)
                    pipe.pexpire(physical, keep, nx=True)
                    pipe.pexpire(physical, keep, gt=True)
                await pipe.execute()

        await self._guard(run)

    async def delete(self, key: str) -> bool:
        return bool(await self._guard(lambda: self._client.unlink(self._physical(key))))

    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        names = [self._physical(key), *(self._physical(name) for name in generation_keys)]
        values = await self._guard(lambda: self._mget(names))
        raw = values[0] if isinstance(values[0], bytes) else None
        generations = [_generation(value) for value in values[1:]]
        missing = [index for index, value in enumerate(generations) if value is None]
        if missing:
            created = await self._created([names[i + 1] for i in missing])
            for index, value in zip(missing, created, strict=True):
                generations[index] = value
        return raw, [g for g in generations if g is not None]

    async def generations(self, generation_keys: Sequence[str]) -> list[int | None]:
        if not generation_keys:
            return []
        names = [self._physical(name) for name in generation_keys]
        values = await self._guard(lambda: self._mget(names))
        return [_generation(value) for value in values]

    async def _created(self, names: list[str]) -> list[int]:
        """The values of new counters ``names``: created once for every lookup of this process asking at once.

        A cold key under a stampede finds its counters missing in every lookup at
        once (they are answered together, auto-pipelined); creating them one
        request at a time through the pool would let the last ones through after
        the first computation ended, and compute again.
        """
        wanted = tuple(names)
        creating = self._creating.get(wanted)
        if creating is None:
            creating = asyncio.ensure_future(self._guard(lambda: self._create_generations(names)))
            self._creating[wanted] = creating
            creating.add_done_callback(lambda done: self._created_done(wanted, done))
        return list(await asyncio.shield(creating))

    def _created_done(self, wanted: tuple[str, ...], done: "asyncio.Future[list[int]]") -> None:
        self._creating.pop(wanted, None)
        if not done.cancelled():
            done.exception()  # seen here: every waiter may have been cancelled meanwhile

    async def _create_generations(self, names: list[str]) -> list[int]:
        # SET NX GET: create the counter only if still absent and learn the value
        # that won, so concurrent first readers agree on one snapshot. Refused when
        # Redis is out of memory: the lookup fails and the request runs uncached.
        async with self._client.pipeline(transaction=False) as pipe:
            proposals = [new_generation() for _ in names]
            for name, proposal in zip(names, proposals, strict=True):
                pipe.set(name, proposal, px=self._provisional_ms, nx=True, get=True)
            results = await pipe.execute(raise_on_error=False)
        values: list[int] = []
        repair: list[tuple[str, int]] = []
        for name, proposal, previous in zip(names, proposals, results, strict=True):
            if isinstance(previous, Exception):
                if "WRONGTYPE" not in str(previous):
                    raise previous
                previous = b"garbage"  # a hash or list under a counter's name: replace it
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
                    pipe.set(name, proposal, px=self._provisional_ms)
                await pipe.execute()
        return values

    async def bump(self, generation_keys: Sequence[str]) -> None:
        if not generation_keys:
            return
        names = [self._physical(name) for name in generation_keys]
        # Delete, never INCR: deletions are served at maxmemory (noeviction), where
        # INCR is refused while MGET still serves the entries it should invalidate.
        # Garbage under a counter's name cannot make it fail either.
        await self._guard(lambda: self._client.unlink(*names))

    async def secret(self) -> bytes:
        if self._secret is None:
            self._secret = await self._guard(self._shared_secret)
        return self._secret

    async def _shared_secret(self) -> bytes:
        # One per namespace, created by whichever process asks first; never expires,
        # and clear() keeps it (processes that cached it would otherwise disagree).
        name = self._physical(SECRET_KEY)
        proposal = secrets.token_bytes(SECRET_BYTES)
        try:
            # A plain GET first: it is served at maxmemory, where SET (even NX) is refused.
            previous = await self._client.get(name)
            if previous is None:
                previous = await self._client.set(name, proposal, nx=True, get=True)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            previous = b""
        if previous is None:
            return proposal
        if isinstance(previous, bytes) and len(previous) >= MIN_SECRET_BYTES:
            return previous
        held = await self._client.eval(_REPAIR_SECRET, 1, name, proposal, MIN_SECRET_BYTES)
        return held if isinstance(held, bytes) else str(held).encode()

    async def add_counters(self, deltas: Mapping[str, int]) -> None:
        if not deltas:
            return
        name = self._physical(STATS_KEY)

        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for field, amount in deltas.items():
                    pipe.hincrby(name, field, amount)
                results = await pipe.execute(raise_on_error=False)
            errors = [
                (field, result) for field, result in zip(deltas, results, strict=True) if isinstance(result, Exception)
            ]
            if not errors:
                return
            if any("WRONGTYPE" in str(error) for _, error in errors):
                # Not a hash at all: start it again (the counts it held are lost).
                await self._client.unlink(name)
                await self._client.hset(name, mapping=dict(deltas))
                return
            garbage = [field for field, error in errors if _garbage_field(error)]
            if len(garbage) < len(errors):  # OOM, or anything else: fail (and count) this flush
                raise next(error for field, error in errors if field not in garbage)
            # A field that is not an integer (or would overflow) would fail every flush
            # forever: overwrite it with this process's delta.
            await self._client.hset(name, mapping={field: deltas[field] for field in garbage})

        await self._guard(run)

    async def add_key_hits(self, hits: Mapping[str, int]) -> None:
        # Each count expires when its entry does (PEXPIRETIME: the same instant), never later.
        keys = [key for key in hits if not is_internal(key)]
        if not keys:
            return

        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pexpiretime(self._physical(key))
                deadlines = await pipe.execute()
            kept = [(key, at) for key, at in zip(keys, deadlines, strict=True) if isinstance(at, int) and at > 0]
            if not kept:
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for key, at in kept:
                    pipe.incrby(self._physical(hits_name(key)), hits[key])
                    pipe.pexpireat(self._physical(hits_name(key)), at)
                results = await pipe.execute(raise_on_error=False)
            failed = [
                (key, at, result)
                for (key, at), result in zip(kept, results[::2], strict=True)
                if isinstance(result, Exception)
            ]
            if any(not (_garbage_field(error) or "WRONGTYPE" in str(error)) for _, _, error in failed):
                raise next(error for _, _, error in failed)  # OOM, or anything else: fail (and count) the flush
            for key, at, _ in failed:  # garbage under a count would fail every flush: start it again
                name = self._physical(hits_name(key))
                await self._client.set(name, hits[key], pxat=at)

        await self._guard(run)

    async def read_key_hits(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        values = await self._guard(lambda: self._mget([self._physical(hits_name(key)) for key in keys]))
        return [max(0, _generation(value) or 0) for value in values]

    async def read_counters(self) -> dict[str, int] | None:
        try:
            raw = await self._guard(lambda: self._client.hgetall(self._physical(STATS_KEY)))
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            return {}  # garbage under the stats key; the next flush replaces it
        counters: dict[str, int] = {}
        for name, value in raw.items():
            number = _generation(value)
            if number is not None:  # a field someone set to garbage is skipped, then repaired
                counters[name.decode("utf-8", "replace")] = number
        return counters

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        milliseconds = max(1, int(ttl * 1000))
        physical = self._physical(name)
        taken = await self._guard(lambda: self._client.set(physical, token, px=milliseconds, nx=True))
        if not taken:
            # Held, or garbage: the cache's locks always expire, so one without a deadline
            # (of any type) would keep the key from being stored for as long as it lives.
            taken = await self._guard(lambda: self._client.eval(_TAKE_ENDLESS, 1, physical, token, milliseconds))
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
            logical = self.logical_or_none(key)
            if ttl == -2 or logical is None:  # deleted since the scan, or not one of ours
                continue
            page.append((logical, None if ttl < 0 else ttl / 1000))
        return page

    def logical_or_none(self, physical: bytes) -> str | None:
        """The logical key, or ``None`` for a key this cache cannot have written (not UTF-8)."""
        try:
            physical.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return self._logical(physical)

    def clearable(self, physical: bytes) -> bool:
        """Whether a clear may delete this key: everything in the namespace but the shared stats and secret."""
        return not self._logical(physical).startswith(NAMESPACE_PREFIXES)

    async def ping(self) -> None:
        # Not guarded: health checks must see Redis itself, not the breaker.
        self._check_open()
        self._follow_loop()
        await self._client.ping()

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "key_prefix": self.key_prefix, "breaker": self.breaker.snapshot()}

    async def _mget(self, names: list[str]) -> list[Any]:
        raise NotImplementedError


def _garbage_field(error: Exception) -> bool:
    text = str(error)
    return "not an integer" in text or "overflow" in text
