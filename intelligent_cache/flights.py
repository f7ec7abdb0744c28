"""Single-flight: concurrent misses of one key compute once per process.

The first request for a key becomes the leader and computes; the others wait
for its outcome (bounded by a timeout). A flight is keyed by the cache key
*and* the invalidation counters read before computing, so a request that
arrives after a write never joins a computation that started before it.
"""

from collections.abc import Hashable
from typing import Generic, TypeVar

import anyio

__all__ = ["Flight", "FlightGroup"]

T = TypeVar("T")


class Flight(Generic[T]):
    """One computation in progress; waiters share its outcome."""

    __slots__ = ("_done", "_event", "_outcome")

    def __init__(self) -> None:
        # The event is made by the first waiter: most flights have none. anyio's, so that
        # flights work on whatever loop FastAPI runs on (asyncio or trio).
        self._event: anyio.Event | None = None
        self._outcome: T | None = None
        self._done = False

    async def wait(self, patience: float) -> T | None:
        """The leader's outcome, or ``None`` if it had none to share or took over ``patience`` seconds."""
        if not self._done:
            if self._event is None:
                self._event = anyio.Event()
            with anyio.move_on_after(patience):  # a waiter giving up leaves the others waiting
                await self._event.wait()
        return self._outcome if self._done else None

    def finish(self, outcome: T | None) -> None:
        if self._done:
            return
        self._done, self._outcome = True, outcome
        if self._event is not None:
            self._event.set()


class FlightGroup(Generic[T]):
    """The flights of one manager."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[T]] = {}

    def join(self, key: Hashable) -> tuple[Flight[T], bool]:
        """The flight for ``key`` and whether the caller leads it."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = self._flights[key] = Flight()
        return flight, True

    def land(self, key: Hashable, flight: Flight[T], outcome: T | None) -> None:
        """End a flight led by the caller and hand ``outcome`` to its waiters."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.finish(outcome)

    def __len__(self) -> int:
        return len(self._flights)
