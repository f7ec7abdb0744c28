"""A bounded in-process LRU with TTLs: the embedded default backend."""

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from ..exceptions import ConfigurationError
from ..globs import compile_glob
from ..keys import is_internal
from ..lru import ENTRY_OVERHEAD, BoundedLRU
from .base import CacheBackend, new_generation

__all__ = ["ENTRY_OVERHEAD", "MemoryBackend"]
# Rough cost of one counter besides its name (the str and int objects, the ordered-dict node).
GENERATION_COST = 200


class MemoryBackend(CacheBackend):
    """Entries in this process only, bounded by count and by bytes.

    Least recently used entries are evicted first once either bound would be
    exceeded; expired entries are dropped when met. Invalidation counters are
    kept beside the entries, at most ``max_entries`` of them and within an
    eighth of ``max_bytes`` (losing one only turns entries into misses). Nothing is shared between
    workers: use :class:`~intelligent_cache.backends.RedisBackend` for that.

    Args:
        max_entries: most entries kept at once.
        max_bytes: most bytes of keys and values (plus a small fixed overhead
            per entry) kept at once.
        clock: monotonic time source in seconds; inject a fake one in tests.
    """

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive integer, got {max_entries!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        # Insertion numbers, in insertion order (reads do not move them): scan
        # pages by number, so a key present throughout a walk is always listed.
        self._sequence: dict[str, int] = {}
        self._next_sequence = 1
        self._data: BoundedLRU[str, tuple[bytes, float]] = BoundedLRU(
            max_items=max_entries, max_bytes=max_bytes, on_evict=self._forget
        )
        # Answers served from each kept key (see add_key_hits): gone with the key.
        self._hits: dict[str, int] = {}
        # Counters live apart from entries, in an LRU of their own. Losing one is
        # safe (a missing counter reads as a miss), so a bound is enough: as many
        # counters as entries, and at most an eighth of max_bytes for them (names
        # included: a tag filled from a path parameter may be long).
        self._generations: OrderedDict[str, int] = OrderedDict()
        self._max_generations = max(64, min(max_entries, max_bytes // 8 // GENERATION_COST))
        self._max_generation_bytes = max(64 * GENERATION_COST, max_bytes // 8)
        self._generation_bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes currently budgeted."""
        return self._data.size_bytes

    def __len__(self) -> int:
        return len(self._data)

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    def _lookup(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at <= self._clock():
            self._remove(key)
            return None
        return value

    def _remove(self, key: str) -> bool:
        self._forget(key)
        return self._data.pop(key) is not None

    def _forget(self, key: str) -> None:
        self._sequence.pop(key, None)
        self._hits.pop(key, None)

    async def get(self, key: str) -> bytes | None:
        return self._lookup(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        hits = self._hits.get(key)
        self._remove(key)
        if ttl <= 0 or not self._data.put(key, (value, self._clock() + ttl), self._cost(key, value)):
            return
        if hits is not None:
            self._hits[key] = hits  # a key stored again keeps its count
        self._sequence[key] = self._next_sequence
        self._next_sequence += 1

    async def delete(self, key: str) -> bool:
        return self._remove(key)

    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        return self._lookup(key), [self._generation(name) for name in generation_keys]

    def _generation(self, name: str) -> int:
        generations = self._generations
        value = generations.get(name)
        if value is None:
            value = generations[name] = new_generation()
            self._generation_bytes += len(name) + GENERATION_COST
            while len(generations) > 1 and (
                len(generations) > self._max_generations or self._generation_bytes > self._max_generation_bytes
            ):
                oldest, _ = generations.popitem(last=False)
                self._generation_bytes -= len(oldest) + GENERATION_COST
        else:
            generations.move_to_end(name)
        return value

    async def bump(self, generation_keys: Sequence[str]) -> None:
        # In process nothing can refuse an increment, so counters are incremented
        # (a missing one is created first, from a random value, then incremented).
        for name in generation_keys:
            self._generations[name] = self._generation(name) + 1

    async def generations(self, generation_keys: Sequence[str]) -> list[int | None]:
        # A plain read: it neither creates counters nor refreshes their LRU position.
        return [self._generations.get(name) for name in generation_keys]

    async def add_key_hits(self, hits: Mapping[str, int]) -> None:
        for key, amount in hits.items():
            if key in self._data:
                self._hits[key] = self._hits.get(key, 0) + amount

    async def read_key_hits(self, keys: Sequence[str]) -> list[int]:
        return [self._hits.get(key, 0) for key in keys]

    async def scan(
        self, pattern: str = "*", cursor: int = 0, count: int = 100
    ) -> tuple[int, list[tuple[str, float | None]]]:
        # The cursor is the insertion number to resume from: keys inserted (or
        # rewritten) during the walk may be listed or not, like Redis SCAN.
        regex = compile_glob(pattern)
        now = self._clock()
        start = max(1, cursor)
        page: list[tuple[str, float | None]] = []
        for key, number in self._sequence.items():
            if number < start:
                continue
            if len(page) >= count:
                return number, page
            item = self._data.peek(key)
            if item is not None and item[1] > now and regex.fullmatch(key):
                page.append((key, item[1] - now))
        return 0, page

    async def clear(self, pattern: str | None = None) -> int:
        if pattern is None:
            count = sum(1 for key in self._data if not is_internal(key))
            self._data.clear()
            self._sequence.clear()
            self._hits.clear()
            self._generations.clear()
            self._generation_bytes = 0
            return count
        regex = compile_glob(pattern)
        matched = [key for key in self._data if regex.fullmatch(key)]
        for key in matched:
            self._remove(key)
        for name in [name for name in self._generations if regex.fullmatch(name)]:
            del self._generations[name]
            self._generation_bytes -= len(name) + GENERATION_COST
        return sum(1 for key in matched if not is_internal(key))
