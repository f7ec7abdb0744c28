"""A least-recently-used map bounded by item count and by estimated bytes.

The one bounded store behind every in-process cache of the package: the
memory backend's entries, the near cache's entries, the per-route key and
counter memos and the decoded-entry memo. Each item carries the cost its
owner estimates for it; adding an item evicts the least recently used ones
until both bounds hold, and an item that alone exceeds the byte bound is not
kept at all.
"""

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["ENTRY_OVERHEAD", "BoundedLRU"]

# Rough per-item cost of the dict slot, the tuple and two object headers, so
# that many small items are budgeted honestly too.
ENTRY_OVERHEAD = 160

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """Items by key, at most ``max_items`` of them and ``max_bytes`` of cost in all.

    Args:
        max_bytes: bound on the sum of the items' costs.
        max_items: bound on the number of items (none by default).
        on_evict: called with the key of each item evicted to make room (not
            for :meth:`pop` or :meth:`clear`, which the owner calls itself).
    """

    __slots__ = ("_bytes", "_items", "_on_evict", "max_bytes", "max_items")

    def __init__(
        self,
        *,
        max_bytes: int,
        max_items: int | None = None,
        on_evict: Callable[[K], object] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._on_evict = on_evict
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """The sum of the kept items' costs."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(self._items)

    def get(self, key: K) -> V | None:
        """The value of ``key``, now the most recently used, or ``None``."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def peek(self, key: K) -> V | None:
        """The value of ``key`` without touching its recency, or ``None``."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V, cost: int) -> bool:
        """Keep ``value`` under ``key`` (replacing any), evicting as needed; ``False`` if it cannot fit."""
        self.pop(key)
        if cost > self.max_bytes:
            return False
        items = self._items
        limit = self.max_items
        while items and ((limit is not None and len(items) >= limit) or self._bytes + cost > self.max_bytes):
            oldest, (_, freed) = items.popitem(last=False)
            self._bytes -= freed
            if self._on_evict is not None:
                self._on_evict(oldest)
        items[key] = (value, cost)
        self._bytes += cost
        return True

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or ``None`` if it was not kept."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        """Remove every item."""
        self._items.clear()
        self._bytes = 0
