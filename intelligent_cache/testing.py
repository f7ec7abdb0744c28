"""Helpers for testing applications that use intelligent-cache.

::

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from intelligent_cache import cache_config
    from intelligent_cache.testing import FakeClock, assert_cache, cache_disabled, clear_cache, memory_manager

    clock = FakeClock()
    app = FastAPI()
    memory_manager(clock).init_app(app)  # MemoryBackend and manager on one fake clock


    @app.get("/items")
    @cache_config(ttl_seconds=60)
    async def items():
        return ["a"]


    with TestClient(app) as client:
        assert_cache(client.get("/items"), "MISS")
        assert_cache(client.get("/items"), "HIT")
        clock.advance(61)                      # no sleeping: the entry is now expired
        assert_cache(client.get("/items"), "MISS")
        with cache_disabled(app):              # every cached route passes through
            assert_cache(client.get("/items"), "SKIP")
        assert client.portal.call(clear_cache, app) == 1  # ``await clear_cache(app)`` in async tests
        assert_cache(client.get("/items"), "MISS")
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, Protocol

from fastapi import FastAPI

from .backends.memory import MemoryBackend
from .exceptions import NoCacheManager
from .manager import STATE_ATTRIBUTE, CacheManager

__all__ = [
    "CacheOutcome",
    "FakeClock",
    "assert_cache",
    "cache_disabled",
    "cache_state",
    "clear_cache",
    "memory_manager",
]

#: The values of ``X-Cache``.
CacheOutcome = Literal["HIT", "MISS", "STALE", "SKIP"]
_OUTCOMES = frozenset({"HIT", "MISS", "STALE", "SKIP"})


class FakeClock:
    """A clock that only moves when told to; pass it as ``clock=`` to the
    manager and to :class:`~intelligent_cache.MemoryBackend`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, Any]: ...


def cache_state(response: _HasHeaders) -> str | None:
    """The ``X-Cache`` value of a response (``"HIT"``, ``"MISS"``, ``"SKIP"``), or ``None``."""
    value = response.headers.get("x-cache")
    return None if value is None else str(value)


def assert_cache(response: _HasHeaders, expected: CacheOutcome) -> None:
    """Assert that ``response`` has ``X-Cache: <expected>``.

    Works with the responses of ``TestClient`` and ``httpx``. The failure
    message shows ``X-Cache``, ``Cache-Status`` (whose ``detail=`` says why a
    response was skipped) and the status code.

    Raises:
        AssertionError: the response says something else, or nothing.
        ValueError: ``expected`` is not HIT, MISS, STALE or SKIP.
    """
    __tracebackhide__ = True  # pytest shows the caller's line
    if expected not in _OUTCOMES:
        raise ValueError(f"expected is one of {sorted(_OUTCOMES)}, got {expected!r}")
    state = cache_state(response)
    if state != expected:
        status = response.headers.get("cache-status")
        code = getattr(response, "status_code", "?")
        raise AssertionError(
            f"expected X-Cache: {expected}, got X-Cache: {state} (Cache-Status: {status}; HTTP status {code})"
        )


def _manager(app: FastAPI | CacheManager) -> CacheManager:
    if isinstance(app, CacheManager):
        return app
    manager = getattr(app.state, STATE_ATTRIBUTE, None)
    if not isinstance(manager, CacheManager):
        raise NoCacheManager("no CacheManager on this app: call CacheManager(...).init_app(app) first")
    return manager


@contextmanager
def cache_disabled(app: FastAPI | CacheManager) -> Iterator[CacheManager]:
    """Turn caching off for the app's manager inside the block, then restore it.

    Cached routes pass through (``X-Cache: SKIP``, ``detail=disabled``);
    successful writes still invalidate. Yields the manager.

    Raises:
        NoCacheManager: the app has no cache manager (a ``LookupError``).
    """
    manager = _manager(app)
    previous = manager.enabled
    manager.enabled = False
    try:
        yield manager
    finally:
        manager.enabled = previous


def memory_manager(clock: FakeClock | None = None, **options: Any) -> CacheManager:
    """A :class:`CacheManager` on a fresh :class:`MemoryBackend`, both on one :class:`FakeClock`.

    ``clock`` defaults to a new ``FakeClock`` (reachable as ``manager.clock``);
    ``options`` go to the manager (``default_ttl=``, ``soft_purge=``...).
    """
    clock = FakeClock() if clock is None else clock
    return CacheManager(MemoryBackend(clock=clock), clock=clock, **options)


async def clear_cache(app: FastAPI | CacheManager) -> int:
    """Delete every entry (and counter) of the app's cache; the number of entries deleted.

    Raises:
        NoCacheManager: the app has no cache manager (a ``LookupError``).
        BackendError: the backend failed.
    """
    return await _manager(app).service().clear_all()
