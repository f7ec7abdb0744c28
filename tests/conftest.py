import pytest

from intelligent_cache import CacheManager, MemoryBackend
from intelligent_cache.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def manager(memory_backend: MemoryBackend, clock: FakeClock) -> CacheManager:
    return CacheManager(memory_backend, clock=clock)
