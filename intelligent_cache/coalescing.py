"""Concurrent misses of one key compute once: in this process, and across processes.

One mechanism in two layers. In process, the first request for a key and its
counters leads a :class:`~intelligent_cache.flights.Flight` and the others wait
for its entry. Across processes sharing a backend, the leader also takes a lock
keyed by key *and* counters (a request that arrives after a write never waits
for a computation that started before it); a leader that finds the lock taken
waits for the other process's entry instead, or takes the lock over once it is
free. When the backend is down, the flight still coalesces but nothing is
locked or stored: the computed entry is only handed to this process's waiters.
"""

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .entry import CachedResponse, VaryIndex
from .flights import Flight
from .keys import fill_lock_name

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["Claim", "claim", "release"]


@dataclass(slots=True, eq=False)
class Claim:
    """What a request holds while it computes a key.

    Attributes:
        entry: an entry another request computed; serve it instead of computing.
        store: whether this request may store what it computes (it holds the
            lock, or the backend has no locks to take).
        reason: why it may not store (``lock-timeout``, ``backend-error``).
    """

    entry: CachedResponse | None = None
    store: bool = False
    reason: str = "lock-timeout"
    _flight: tuple[Hashable, Flight[CachedResponse]] | None = None
    _lock: tuple[str, str] | None = None


async def claim(
    manager: "CacheManager",
    key: str,
    generations: list[int] | None,
    *,
    credentials: bool,
    matches: Callable[[CachedResponse], bool],
    variant: Callable[[tuple[str, ...]], str],
) -> Claim:
    """Join the computation of ``key``: wait for another one, or lead it.

    ``generations`` is ``None`` when the backend is down. ``matches`` says
    whether an entry computed for another request answers this one (its
    ``Vary`` values); ``variant(names)`` is this request's key under a response
    that varies on ``names``. Always pair with :func:`release`.
    """
    flight_key = (key, "unavailable" if generations is None else tuple(generations), credentials)
    flight, leader = manager.flights.join(flight_key)
    if not leader:
        entry = await flight.wait(manager.lock_timeout)
        if entry is not None and matches(entry):
            return Claim(entry=entry)
        # Nothing shareable (or too slow): compute for ourselves, without storing.
        return Claim(reason="backend-error" if generations is None else "lock-timeout")
    held = Claim(_flight=(flight_key, flight))
    if generations is None:
        held.reason = "backend-error"
        return held
    # One process alone needs no lock name: its flight is the whole story.
    lock = fill_lock_name(key, generations) if manager.io.backend.shared else key
    token = await manager.io.acquire_lock(lock)
    if token is None:
        waited, token = await _await_other_process(manager, key, generations, lock, variant)
        if waited is not None:
            held.entry = waited
            return held
    if token is not None:
        held.store, held._lock = True, (lock, token)
    return held


async def release(manager: "CacheManager", held: Claim, entry: CachedResponse | None) -> None:
    """Hand ``entry`` (or nothing) to the waiters and free the lock."""
    try:
        if held._lock is not None:
            await manager.io.release_lock(*held._lock)
    finally:
        if held._flight is not None:
            manager.flights.land(held._flight[0], held._flight[1], entry if entry is not None else held.entry)


async def _await_other_process(
    manager: "CacheManager",
    key: str,
    generations: list[int],
    lock: str,
    variant: Callable[[tuple[str, ...]], str],
) -> tuple[CachedResponse | None, str | None]:
    """Another process computes this key: wait for its entry, or for its lock to free.

    Returns the entry it stored, or the lock once this request could take it
    over (the holder finished without storing, or died and the lock expired).
    ``(None, None)`` after ``lock_timeout``: compute without storing.
    """
    deadline = time.monotonic() + manager.lock_timeout
    delay = 0.005
    while time.monotonic() < deadline:
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)
        raw = await manager.io.read(key)
        found = None if raw is None else manager.io.decode(raw)
        if isinstance(found, VaryIndex):  # the entry lives under this request's variant key
            raw = await manager.io.read(variant(found.names))
            found = None if raw is None else manager.io.decode(raw)
        if isinstance(found, CachedResponse) and list(found.generations) == generations:
            return found, None
        token = await manager.io.acquire_lock(lock)
        if token is not None:
            return None, token
    return None, None
