"""Helpers for testing applications that use intelligent-cache.

::

    from intelligent_cache.testing import FakeClock, cache_state

    clock = FakeClock()
    manager = CacheManager(MemoryBackend(clock=clock), clock=clock)
    ...
    assert cache_state(client.get("/items")) == "MISS"
    clock.advance(61)                      # no sleeping: the entry is now expired
    assert cache_state(client.get("/items")) == "MISS"
"""

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["FakeClock", "cache_state"]


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
