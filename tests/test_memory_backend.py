"""MemoryBackend: LRU bounds by count and bytes, TTLs on the injected clock, scan, clear and generation counters."""

import random

import pytest

from intelligent_cache import CacheBackend, MemoryBackend
from intelligent_cache.backends.memory import ENTRY_OVERHEAD


def cost(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


async def all_keys(backend: MemoryBackend, pattern: str = "*", count: int = 100) -> list[str]:
    keys: list[str] = []
    cursor = 0
    for _ in range(10_000):
        cursor, page = await backend.scan(pattern, cursor, count)
        keys.extend(key for key, _ in page)
        if cursor == 0:
            return keys
    raise AssertionError("scan never finished")


def test_is_a_cache_backend(memory_backend):
    assert isinstance(memory_backend, CacheBackend)
    assert memory_backend.name == "memory"


async def test_set_get_delete(memory_backend):
    assert await memory_backend.get("k") is None
    await memory_backend.set("k", b"v", 10)
    assert await memory_backend.get("k") == b"v"
    await memory_backend.set("k", b"w", 10)
    assert await memory_backend.get("k") == b"w"
    assert len(memory_backend) == 1
    assert await memory_backend.delete("k") is True
    assert await memory_backend.delete("k") is False
    assert await memory_backend.get("k") is None


async def test_ping_and_aclose(memory_backend):
    await memory_backend.ping()
    await memory_backend.aclose()


# -- TTL ---------------------------------------------------------------------------------------------------


async def test_entries_expire_on_the_clock(memory_backend, clock):
    await memory_backend.set("k", b"v", 10)
    clock.advance(9.5)
    assert await memory_backend.get("k") == b"v"
    clock.advance(0.5)
    assert await memory_backend.get("k") is None
    assert len(memory_backend) == 0


async def test_overwrite_resets_the_ttl(memory_backend, clock):
    await memory_backend.set("k", b"v", 10)
    clock.advance(8)
    await memory_backend.set("k", b"w", 10)
    clock.advance(8)
    assert await memory_backend.get("k") == b"w"


@pytest.mark.parametrize("ttl", [0, -1])
async def test_non_positive_ttl_stores_nothing(memory_backend, ttl):
    await memory_backend.set("k", b"old", 10)
    await memory_backend.set("k", b"new", ttl)
    assert await memory_backend.get("k") is None


async def test_expired_entries_are_not_scanned(memory_backend, clock):
    await memory_backend.set("short", b"v", 5)
    await memory_backend.set("long", b"v", 50)
    clock.advance(10)
    assert await all_keys(memory_backend) == ["long"]
    _, page = await memory_backend.scan("*", 0, 10)
    assert page == [("long", pytest.approx(40))]


async def test_expired_entries_free_their_budget(clock):
    backend = MemoryBackend(clock=clock, max_entries=2)
    await backend.set("a", b"v", 1)
    await backend.set("b", b"v", 100)
    clock.advance(2)
    await backend.set("c", b"v", 100)
    assert await backend.get("b") == b"v"
    assert await backend.get("c") == b"v"


# -- bounds ------------------------------------------------------------------------------------------------


async def test_lru_eviction_by_count(clock):
    backend = MemoryBackend(clock=clock, max_entries=3)
    for key in ("a", "b", "c"):
        await backend.set(key, b"v", 100)
    assert await backend.get("a") == b"v"  # "a" is now the most recently used
    await backend.set("d", b"v", 100)
    assert len(backend) == 3
    assert await backend.get("b") is None
    assert {key: await backend.get(key) for key in ("a", "c", "d")} == {"a": b"v", "c": b"v", "d": b"v"}


async def test_overwriting_does_not_evict(clock):
    backend = MemoryBackend(clock=clock, max_entries=2)
    await backend.set("a", b"1", 100)
    await backend.set("b", b"1", 100)
    await backend.set("b", b"2", 100)
    assert await backend.get("a") == b"1"
    assert await backend.get("b") == b"2"


async def test_lru_eviction_by_bytes(clock):
    value = b"x" * 100
    backend = MemoryBackend(clock=clock, max_bytes=3 * cost("k0", value))
    for index in range(3):
        await backend.set(f"k{index}", value, 100)
    assert backend.size_bytes == 3 * cost("k0", value)
    await backend.get("k0")
    await backend.set("k3", value, 100)
    assert backend.size_bytes <= backend.max_bytes
    assert await backend.get("k1") is None
    assert await backend.get("k0") == value
    assert await backend.get("k3") == value


async def test_a_large_value_evicts_as_many_entries_as_needed(clock):
    backend = MemoryBackend(clock=clock, max_bytes=10 * cost("k0", b"x"))
    for index in range(10):
        await backend.set(f"k{index}", b"x", 100)
    big = b"y" * (5 * cost("k0", b"x"))
    await backend.set("big", big, 100)
    assert backend.size_bytes <= backend.max_bytes
    assert await backend.get("big") == big
    assert await backend.get("k9") == b"x"
    assert await backend.get("k0") is None


async def test_value_larger_than_the_budget_is_not_stored(clock):
    backend = MemoryBackend(clock=clock, max_bytes=1000)
    await backend.set("small", b"s", 100)
    await backend.set("huge", b"h" * 1000, 100)
    assert await backend.get("huge") is None
    assert await backend.get("small") == b"s"
    # An oversized overwrite still removes the previous value (it is no longer current).
    await backend.set("small", b"s" * 1000, 100)
    assert await backend.get("small") is None
    assert backend.size_bytes == 0


async def test_byte_budget_is_never_exceeded_and_accounted_exactly(clock):
    backend = MemoryBackend(clock=clock, max_entries=50, max_bytes=20_000)
    rng = random.Random(1234)
    for step in range(3000):
        key = f"key-{rng.randrange(120)}"
        action = rng.random()
        if action < 0.7:
            value = rng.randbytes(rng.choice([0, 10, 100, 1000, 5000, 25_000]))
            await backend.set(key, value, rng.choice([5, 50, 500]))
        elif action < 0.85:
            await backend.delete(key)
        elif action < 0.95:
            await backend.get(key)
        else:
            clock.advance(rng.choice([1, 10, 100]))
        assert backend.size_bytes <= backend.max_bytes, step
        assert len(backend) <= backend.max_entries, step
        assert backend.size_bytes >= 0, step
    # Reading every key drops the expired ones; what is left is accounted exactly.
    live = {key: await backend.get(key) for key in (f"key-{index}" for index in range(120))}
    assert backend.size_bytes == sum(cost(key, value) for key, value in live.items() if value is not None)
    assert len(backend) == sum(value is not None for value in live.values())


# -- scan --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 7, 100, 1000])
async def test_scan_returns_every_live_key_exactly_once(memory_backend, count):
    expected = [f"GET:items:page={index}" for index in range(250)]
    for key in expected:
        await memory_backend.set(key, b"v", 100)
    keys = await all_keys(memory_backend, "*", count)
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(set(keys))


async def test_scan_pages_respect_count(memory_backend):
    for index in range(30):
        await memory_backend.set(f"k{index}", b"v", 100)
    cursor, page = await memory_backend.scan("*", 0, 10)
    assert cursor != 0
    assert len(page) <= 10


async def test_scan_of_an_empty_backend(memory_backend):
    assert await memory_backend.scan("*", 0, 10) == (0, [])


async def test_scan_pattern_filters(memory_backend):
    for key in ("GET:items:page=1", "GET:items:page=2", "GET:items", "GET:users:page=1", "catalog:GET:items:page=1"):
        await memory_backend.set(key, b"v", 100)
    assert sorted(await all_keys(memory_backend, "GET:items:*", 2)) == ["GET:items:page=1", "GET:items:page=2"]
    assert sorted(await all_keys(memory_backend, "GET:items*")) == ["GET:items", "GET:items:page=1", "GET:items:page=2"]
    assert await all_keys(memory_backend, "catalog:*") == ["catalog:GET:items:page=1"]
    assert await all_keys(memory_backend, "GET:items:page=[2-9]") == ["GET:items:page=2"]
    assert await all_keys(memory_backend, "nothing*") == []


async def test_scan_reports_remaining_ttl(memory_backend, clock):
    await memory_backend.set("k", b"v", 30)
    clock.advance(10)
    _, page = await memory_backend.scan("k", 0, 10)
    assert page == [("k", pytest.approx(20))]


async def test_scan_does_not_change_lru_order(clock):
    backend = MemoryBackend(clock=clock, max_entries=2)
    await backend.set("a", b"v", 100)
    await backend.set("b", b"v", 100)
    await all_keys(backend)
    await backend.set("c", b"v", 100)
    assert await backend.get("a") is None
    assert await backend.get("b") == b"v"


# -- clear -------------------------------------------------------------------------------------------------


async def test_clear_all(memory_backend):
    for index in range(5):
        await memory_backend.set(f"k{index}", b"v", 100)
    assert await memory_backend.clear() == 5
    assert len(memory_backend) == 0
    assert memory_backend.size_bytes == 0
    assert await all_keys(memory_backend) == []
    assert await memory_backend.clear() == 0


async def test_clear_pattern(memory_backend):
    keys = ["GET:items:page=1", "GET:items:page=2", "GET:items", "GET:users:page=1"]
    for key in keys:
        await memory_backend.set(key, b"value", 100)
    assert await memory_backend.clear("GET:items:*") == 2
    assert sorted(await all_keys(memory_backend)) == ["GET:items", "GET:users:page=1"]
    assert memory_backend.size_bytes == cost("GET:items", b"value") + cost("GET:users:page=1", b"value")
    assert await memory_backend.clear("nothing:*") == 0


# -- generation counters -----------------------------------------------------------------------------------


async def test_fetch_creates_missing_counters_and_keeps_them(memory_backend):
    raw, first = await memory_backend.fetch("k", ["~g:a", "~g:b"])
    assert raw is None
    assert len(first) == 2
    assert all(isinstance(value, int) for value in first)
    raw, again = await memory_backend.fetch("other", ["~g:a", "~g:b"])
    assert again == first
    assert len(memory_backend) == 0  # counters are not entries


async def test_fetch_returns_the_entry_with_the_counters(memory_backend):
    await memory_backend.set("k", b"v", 10)
    raw, generations = await memory_backend.fetch("k", ["~g:a"])
    assert raw == b"v"
    assert len(generations) == 1
    raw, none = await memory_backend.fetch("k", [])
    assert (raw, none) == (b"v", [])


async def test_bump_changes_only_the_bumped_counters(memory_backend):
    _, before = await memory_backend.fetch("k", ["~g:a", "~g:b", "~g:c"])
    await memory_backend.bump(["~g:a", "~g:c"])
    _, after = await memory_backend.fetch("k", ["~g:a", "~g:b", "~g:c"])
    assert after[0] != before[0]
    assert after[1] == before[1]
    assert after[2] != before[2]
    await memory_backend.bump(["~g:a"])
    _, again = await memory_backend.fetch("k", ["~g:a"])
    assert again[0] not in (before[0], after[0])


async def test_bump_of_a_missing_counter_creates_it(memory_backend):
    await memory_backend.bump(["~g:new"])
    _, first = await memory_backend.fetch("k", ["~g:new"])
    _, second = await memory_backend.fetch("k", ["~g:new"])
    assert first == second


async def test_new_counters_are_random(clock):
    # A counter that was lost must not come back with a value an old entry remembers.
    values = set()
    for _ in range(20):
        backend = MemoryBackend(clock=clock)
        _, generations = await backend.fetch("k", ["~g:a"])
        values.add(generations[0])
    assert len(values) > 1


async def test_counters_survive_entry_eviction(clock):
    backend = MemoryBackend(clock=clock, max_entries=1)
    _, before = await backend.fetch("k", ["~g:a"])
    for index in range(10):
        await backend.set(f"k{index}", b"v", 100)
    _, after = await backend.fetch("k", ["~g:a"])
    assert after == before


async def test_bump_increments_by_exactly_one(memory_backend):
    # In process nothing refuses an increment (Redis deletes instead: test_backend_redis_counters.py).
    _, (a, b) = await memory_backend.fetch("k", ["~g:a", "~g:b"])
    await memory_backend.bump(["~g:a"])
    await memory_backend.bump(["~g:a", "~g:b"])
    assert (await memory_backend.fetch("k", ["~g:a", "~g:b"]))[1] == [a + 2, b + 1]


async def test_generations_reads_counters_without_creating_or_touching_them(clock):
    backend = MemoryBackend(clock=clock, max_entries=64)  # room for 64 counters
    assert await backend.generations(["~g:a", "~g:b"]) == [None, None]
    _, (a,) = await backend.fetch("k", ["~g:a"])
    assert await backend.generations(["~g:a", "~g:b"]) == [a, None]
    await backend.bump(["~g:a"])
    assert await backend.generations(["~g:a"]) == [a + 1]
    # A read does not refresh a counter's place in the LRU: listing entries cannot keep counters alive.
    for index in range(63):
        await backend.fetch("k", [f"~g:other{index}"])
        await backend.generations(["~g:a"])
    await backend.fetch("k", ["~g:last"])
    assert await backend.generations(["~g:a"]) == [None]


async def test_put_is_set_for_the_memory_backend(memory_backend, clock):
    await memory_backend.put("k", b"v", 10, ["~g:a"])
    assert await memory_backend.get("k") == b"v"
    clock.advance(10)
    assert await memory_backend.get("k") is None
    assert await memory_backend.generations(["~g:a"]) == [None]  # put creates no counter


async def test_secret_is_random_per_backend_and_kept_by_clear(clock):
    backend = MemoryBackend(clock=clock)
    secret = await backend.secret()
    assert len(secret) == 32
    await backend.clear()
    assert await backend.secret() == secret
    assert await MemoryBackend(clock=clock).secret() != secret
