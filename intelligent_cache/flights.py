"""Single-flight: concurrent misses of one key compute once per process.

The first request for a key becomes the leader and computes; the others wait
for its outcome (bounded by a timeout). A flight is keyed by the cache key
*and* the invalidation counters read before computing, so a request that
arrives after a write never joins a computation that started before it.
"""

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Flight", "FlightGroup"]

T = TypeVar("T")


class Flight(Generic[T]):
    """One computation in progress; waiters share its outcome."""

    __slots__ = ("_done", "_future", "_outcome")

    def __init__(self) -> None:
        # The future is made by the first waiter: most flights have none.
        self._future: asyncio.Future[T | None] | None = None
        self._outcome: T | None = None
        self._done = False

    async def wait(self, patience: float) -> T | None:
        """The leader's outcome, or ``None`` if it had none to share or took over ``patience`` seconds."""
        if self._done:
            return self._outcome
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(patience):
                # shield: a waiter that gives up must not cancel the shared future.
                return await asyncio.shield(self._future)
        except TimeoutError:
            return None

    def finish(self, outcome: T | None) -> None:
        if self._done:
            return
        self._done, self._outcome = True, outcome
        if self._future is not None and not self._future.done():
            self._future.set_result(outcome)


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
