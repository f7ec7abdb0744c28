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
        "NearCache",
        "NoCacheManager",
        "RedisBackend",
        "RedisClusterBackend",
        "__version__",
        "build_key",
        "cache_config",
        "cached",
        "get_cache_service",
        "invalidates",
        "use_cache",
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


def test_the_redis_backends_import_from_the_top_lazily():
    import subprocess
    import sys

    code = (
        "import sys, intelligent_cache\n"
        "assert 'redis' not in sys.modules, 'importing the package imported redis'\n"
        "from intelligent_cache import NearCache, RedisBackend, RedisClusterBackend\n"
        "from intelligent_cache.backends.redis import RedisBackend as Direct\n"
        "assert RedisBackend is Direct and RedisClusterBackend.__name__ == 'RedisClusterBackend'\n"
        "assert NearCache.__module__ == 'intelligent_cache.backends.near'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        intelligent_cache.Nope  # noqa: B018
