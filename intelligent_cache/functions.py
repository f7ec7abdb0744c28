"""``@cached``: the function cache, for what several endpoints (or a worker) compute alike.

::

    @cached(ttl_seconds=300, tags=["user:{user_id}"])
    async def load_profile(user_id: int, *, full: bool = False) -> dict: ...

The key is the function's qualified name and its bound arguments: defaults
applied, ordered by parameter name (``f(1, b=2)``, ``f(a=1, b=2)`` and
``f(b=2, a=1)`` are one entry), each value typed (``1``, ``1.0``, ``True`` and
``"1"`` are four) and encoded injectively; an argument of a type with no
stable value (an object, a connection) is a ``TypeError`` naming it, unless
``key=`` says what to key by. Entries live in the manager's backend, depend on
a counter of the function and one per tag, so ``CacheService.invalidate_tags``
and ``@invalidates(tags=...)`` reach them, and concurrent misses of one key
compute once per process. Outcomes are counted per function (``@cached
<name>`` in the stats, the admin API and the metrics).

Which manager: the ``manager=`` given to the decorator; else the one of the
request being served (``init_app`` sets it for every request of its app);
else one set for a scope with :func:`use_cache`. With none the function runs
uncached and says so once.

Sync functions are cached when called from a worker thread (FastAPI runs sync
endpoints and dependencies in one) or where no event loop runs (a script);
called on the event loop's own thread they run uncached, since waiting for the
backend there would block every other request.
"""

import asyncio
import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import inspect
import logging
import math
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.to_thread

from .config import Seconds, as_seconds, template_fields
from .entry import decode, encode_value
from .exceptions import ConfigurationError, CorruptEntryError
from .flights import FlightGroup
from .invalidation import tag_keys
from .keys import counter_name, escape
from .outcome import Outcome, count
from .scope import CURRENT_MANAGER

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["CachedFunction", "cached", "function_key", "use_cache"]

logger = logging.getLogger("intelligent_cache")

F = TypeVar("F", bound=Callable[..., Any])

# Keys start with "@fn:", which no route key can ("@" is escaped in every part of those).
_HEAD = "@fn:"
_FLIGHTS: "weakref.WeakKeyDictionary[CacheManager, FlightGroup[Any]]" = weakref.WeakKeyDictionary()
_MISSING = object()


@contextmanager
def use_cache(manager: "CacheManager") -> Iterator["CacheManager"]:
    """Use ``manager`` for ``@cached`` functions called in this block (a worker, a script, a test)."""
    token = CURRENT_MANAGER.set(manager)
    try:
        yield manager
    finally:
        CURRENT_MANAGER.reset(token)


# -- keys --------------------------------------------------------------------------------------------------


def _encode(value: Any, where: str) -> str:
    """A typed, injective text of ``value``: every part says its type and, where it could be ambiguous, its length."""
    if value is None:
        return "N"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, enum.Enum):
        return f"E{_text(type(value).__qualname__)}{_encode(value.value, where)}"
    if isinstance(value, int):
        return f"i{value};"
    if isinstance(value, float):
        return f"f{value!r};" if math.isfinite(value) else f"f{value};"
    if isinstance(value, str):
        return "s" + _text(value)
    if isinstance(value, bytes | bytearray):
        return "y" + _text(bytes(value).hex())
    if isinstance(value, decimal.Decimal):
        return "d" + _text(str(value))
    if isinstance(value, uuid.UUID):
        return "u" + value.hex
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return f"t{type(value).__name__[0]}" + _text(value.isoformat())
    if isinstance(value, list | tuple):
        return ("L" if isinstance(value, list) else "U") + f"{len(value)}[" + "".join(_encode(v, where) for v in value)
    if isinstance(value, set | frozenset):
        return f"S{len(value)}[" + "".join(sorted(_encode(v, where) for v in value))
    if isinstance(value, Mapping):
        items = sorted((_encode(k, where), _encode(v, where)) for k, v in value.items())
        return f"M{len(items)}[" + "".join(k + v for k, v in items)
    dump = getattr(value, "model_dump", None)  # a pydantic model: by its class and fields
    if callable(dump):
        return f"P{_text(type(value).__qualname__)}{_encode(dump(mode='python'), where)}"
    raise TypeError(
        f"{where}: an argument of type {type(value).__name__} cannot be keyed (it has no stable value); "
        "pass key=... to @cached to say what to key by"
    )


def _text(text: str) -> str:
    return f"{len(text)}:{text}"


def function_key(name: str, arguments: Mapping[str, Any]) -> str:
    """The key of a call of the function named ``name`` with these bound ``arguments``."""
    encoded = "".join(_text(param) + _encode(value, name) for param, value in sorted(arguments.items()))
    digest = hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{_HEAD}{escape(name)}:{digest}"


# -- the decorator -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Settings:
    name: str
    ttl: float | None
    tags: tuple[str, ...]
    key: Callable[..., Any] | None
    manager: "CacheManager | None"


def _in_worker_thread() -> bool:
    """Whether this thread is one anyio runs sync code in for an event loop (FastAPI's threadpool)."""
    local = getattr(anyio.from_thread, "threadlocals", None)  # where anyio marks its worker threads
    return any(hasattr(local, name) for name in ("current_token", "current_async_backend", "current_async_module"))


class CachedFunction:
    """The cache of one function; the wrapper :func:`cached` returns carries it as ``.cache``."""

    def __init__(self, func: Callable[..., Any], settings: _Settings) -> None:
        self.__wrapped__ = func
        self._signature = inspect.signature(func)
        self._settings = settings
        self._warned: set[str] = set()

    # -- what a call depends on

    def _manager(self) -> "CacheManager | None":
        manager = self._settings.manager or CURRENT_MANAGER.get()
        if manager is None:
            self._warn(
                "no-manager", "runs uncached: no CacheManager (pass manager=, call it in a request, or use_cache)"
            )
        return manager if manager is not None and manager.enabled else None

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def key_of(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of ``self(*args, **kwargs)``."""
        arguments = self._bind(args, kwargs)
        chosen = self._settings.key
        if chosen is not None:
            arguments = {"key": chosen(*args, **kwargs)}
        return function_key(self._settings.name, arguments)

    def _counters(self, arguments: Mapping[str, Any], key: str) -> list[str]:
        tags = [tag.format_map({name: str(value) for name, value in arguments.items()}) for tag in self._settings.tags]
        return [counter_name("f", [escape(self._settings.name)]), self._call_counter(key), *tag_keys(tags)]

    def _call_counter(self, key: str) -> str:
        """The counter of one call's entry: ``invalidate(...)`` bumps it."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return counter_name("c", [escape(self._settings.name), digest])

    def _warn(self, code: str, message: str) -> None:
        if code not in self._warned:
            self._warned.add(code)
            logger.warning("@cached %s %s", self._settings.name, message)

    # -- calling

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call of a sync function: through the event loop of this worker thread, or a loop of its own."""
        if _in_worker_thread():
            return anyio.from_thread.run(self.call, args, kwargs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop here at all (a script): one for this call
            return anyio.run(self.call, args, kwargs)
        # On the event loop's own thread: waiting for the backend would block every other request.
        self._warn("on-loop", "is sync and called on the event loop: it runs uncached (call it from a thread)")
        return self.__wrapped__(*args, **kwargs)

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call: the stored result, or the computed one (stored when it may be)."""
        manager = self._manager()
        compute = self._compute(args, kwargs)
        if manager is None:
            return await compute()
        arguments = self._bind(args, kwargs)
        key = self.key_of(*args, **kwargs)
        counters = self._counters(arguments, key)
        raw, generations = await manager.io.lookup(key, counters)
        found = self._read(manager, raw, generations)
        if found is not _MISSING:
            count(manager.stats, self.label, Outcome.HIT)
            return found
        flights = _FLIGHTS.setdefault(manager, FlightGroup())
        flight_key = (key, None if generations is None else tuple(generations))
        flight, leader = flights.join(flight_key)
        if not leader:
            shared = await flight.wait(manager.lock_timeout)
            if shared is not None:
                count(manager.stats, self.label, Outcome.HIT)
                manager.stats.collapsed += 1
                return shared[0]
            return await compute()
        outcome: tuple[Any] | None = None
        try:
            value = await compute()
            outcome = (value,)
            await self._store(manager, key, value, generations, counters)
            return value
        finally:
            flights.land(flight_key, flight, outcome)

    def _compute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        func = self.__wrapped__
        if inspect.iscoroutinefunction(func):
            return lambda: cast(Awaitable[Any], func(*args, **kwargs))

        # In a worker thread, never on the event loop's (the caller's thread waits for this call).
        return lambda: anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))

    def _read(self, manager: "CacheManager", raw: bytes | None, generations: list[int] | None) -> Any:
        if raw is None or generations is None:
            return _MISSING
        try:
            record = decode(raw)
        except CorruptEntryError:
            manager.stats.corrupt += 1
            return _MISSING
        if not isinstance(record, dict) or record.get("g") != generations or "v" not in record:
            return _MISSING  # invalidated since (or not ours)
        return record["v"]

    async def _store(
        self, manager: "CacheManager", key: str, value: Any, generations: list[int] | None, counters: list[str]
    ) -> None:
        if generations is None:  # the backend is down: nothing is stored
            count(manager.stats, self.label, Outcome.SKIP, "backend-error")
            return
        try:
            data = encode_value({"g": generations, "v": value})
        except TypeError as exc:
            self._warn("unstorable", f"returns values that cannot be stored ({exc}): they are not cached")
            count(manager.stats, self.label, Outcome.SKIP, "unstorable")
            return
        ttl = manager.default_ttl if self._settings.ttl is None else self._settings.ttl
        try:
            await manager.io.backend.put(key, data, ttl, counters)
        except Exception as exc:
            manager.io.failed("store", exc)
            count(manager.stats, self.label, Outcome.SKIP, "backend-error")
            return
        count(manager.stats, self.label, Outcome.MISS)

    # -- invalidation

    @property
    def label(self) -> str:
        """How the stats name this function."""
        return f"@cached {self._settings.name}"

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Invalidate the entry of one call (a counter bump, like a write's).

        A computation of that call already under way cannot store its result for
        later calls. ``True`` once it landed; ``False`` if the backend failed (it is
        retried in the background, and this process reads nothing until it lands).
        """
        manager = self._manager()
        if manager is None:
            return False
        return await manager.io.invalidate([self._call_counter(self.key_of(*args, **kwargs))])

    async def invalidate_all(self) -> None:
        """Drop every entry of this function (one counter bump, whatever their number)."""
        manager = self._manager()
        if manager is not None:
            await manager.io.invalidate([counter_name("f", [escape(self._settings.name)])])


def cached(
    func: F | None = None,
    /,
    *,
    ttl_seconds: Seconds | None = None,
    tags: tuple[str, ...] | list[str] = (),
    key: Callable[..., Any] | None = None,
    manager: "CacheManager | None" = None,
    name: str | None = None,
) -> Any:
    """Cache a function's results (async or sync): usable bare (``@cached``) or with options.

    Args:
        ttl_seconds: seconds (or a :class:`datetime.timedelta`) a result is
            kept; default: the manager's ``default_ttl``.
        tags: invalidation tags; ``{param}`` is replaced by that argument
            (``"user:{user_id}"``), so ``invalidate_tags("user:7")`` drops the
            results for ``user_id=7``.
        key: a function taking the same arguments whose result (keyable as
            arguments are) is the key instead of all the arguments.
        manager: the manager to use; default: the request's, or
            :func:`use_cache`'s.
        name: the name in keys and stats; default: ``module.qualname``.

    Raises:
        ConfigurationError: an option is invalid (a tag naming no parameter...).
    """

    def decorate(target: F) -> F:
        if not callable(target):
            raise ConfigurationError("@cached decorates a function")
        parameters = inspect.signature(target).parameters
        for tag in tags:
            unknown = [field for field in template_fields(tag) if field not in parameters]
            if unknown:
                raise ConfigurationError(f"tag {tag!r} of @cached {target.__qualname__} names no parameter {unknown}")
        ttl = as_seconds(ttl_seconds)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf):
            raise ConfigurationError(f"ttl_seconds must be a positive number of seconds, got {ttl_seconds!r}")
        if isinstance(tags, str):
            raise ConfigurationError("tags takes a list of strings, not a single string")
        settings = _Settings(
            name=name or f"{target.__module__}.{target.__qualname__}",
            ttl=None if ttl is None else float(ttl),
            tags=tuple(tags),
            key=key,
            manager=manager,
        )
        cache = CachedFunction(target, settings)
        wrapper: Any
        if inspect.iscoroutinefunction(target):

            @functools.wraps(target)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await cache.call(args, kwargs)

        else:

            @functools.wraps(target)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return cache.call_sync(args, kwargs)

        wrapper.cache = cache
        wrapper.key_of = cache.key_of
        wrapper.invalidate = cache.invalidate
        wrapper.invalidate_all = cache.invalidate_all
        return cast(F, wrapper)

    return decorate(func) if func is not None else decorate
