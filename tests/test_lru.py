"""BoundedLRU: the one bounded store behind the memory backend, the near cache and the memos."""

from hypothesis import given
from hypothesis import strategies as st

from intelligent_cache.lru import BoundedLRU


def test_the_least_recently_used_item_goes_first():
    lru: BoundedLRU[str, int] = BoundedLRU(max_items=2, max_bytes=1000)
    lru.put("a", 1, 10)
    lru.put("b", 2, 10)
    assert lru.get("a") == 1  # "b" is now the least recently used
    lru.put("c", 3, 10)
    assert list(lru) == ["a", "c"]
    assert lru.peek("b") is None


def test_peek_does_not_touch_recency():
    lru: BoundedLRU[str, int] = BoundedLRU(max_items=2, max_bytes=1000)
    lru.put("a", 1, 10)
    lru.put("b", 2, 10)
    assert lru.peek("a") == 1
    lru.put("c", 3, 10)
    assert list(lru) == ["b", "c"]


def test_bytes_bound_evicts_until_the_new_item_fits_and_an_oversized_item_is_not_kept():
    evicted: list[str] = []
    lru: BoundedLRU[str, str] = BoundedLRU(max_bytes=100, on_evict=evicted.append)
    lru.put("a", "x", 40)
    lru.put("b", "y", 40)
    assert lru.put("c", "z", 50)
    assert evicted == ["a"] and lru.size_bytes == 90
    assert not lru.put("huge", "w", 101)
    assert "huge" not in lru and lru.size_bytes == 90


def test_replacing_and_popping_keep_the_byte_count_exact():
    lru: BoundedLRU[str, str] = BoundedLRU(max_bytes=100)
    lru.put("a", "x", 40)
    lru.put("a", "y", 30)
    assert lru.size_bytes == 30 and lru.get("a") == "y"
    assert lru.pop("a") == "y" and lru.pop("a") is None
    assert lru.size_bytes == 0 and len(lru) == 0


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 60), st.booleans())))
def test_bounds_always_hold_and_the_count_matches_the_items(operations):
    lru: BoundedLRU[str, int] = BoundedLRU(max_items=4, max_bytes=100)
    costs: dict[str, int] = {}
    for key, cost, remove in operations:
        if remove:
            lru.pop(key)
            costs.pop(key, None)
        elif lru.put(key, cost, cost):
            costs[key] = cost
        else:
            costs.pop(key, None)
        costs = {kept: costs[kept] for kept in lru}
        assert len(lru) <= 4
        assert lru.size_bytes == sum(costs.values()) <= 100
