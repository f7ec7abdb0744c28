"""The public names of the package, pinned (as httpx does): adding or dropping one is a decision."""

import intelligent_cache


def test_all_is_pinned_and_sorted():
    assert intelligent_cache.__all__ == [
        "BackendError",
        "BackendUnavailable",
        "CacheBackend",
        "CacheConfig",
        "CacheManager",
        "CacheService",
        "CacheStats",
        "CachedResponse",
        "CachedRoute",
        "ConfigurationError",
        "CorruptEntryError",
        "IntelligentCacheError",
        "MemoryBackend",
        "NoCacheManager",
        "__version__",
        "build_key",
        "cache_config",
        "get_cache_service",
        "invalidates",
    ]
    assert intelligent_cache.__all__ == sorted(intelligent_cache.__all__)


def test_every_public_name_exists_and_says_where_it_lives():
    for name in intelligent_cache.__all__:
        value = getattr(intelligent_cache, name)
        if name != "__version__":
            assert value.__module__.startswith("intelligent_cache"), name


def test_the_no_manager_error_is_a_lookup_error_and_ours():
    assert issubclass(intelligent_cache.NoCacheManager, LookupError)
    assert issubclass(intelligent_cache.NoCacheManager, intelligent_cache.IntelligentCacheError)
