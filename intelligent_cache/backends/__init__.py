"""Storage backends. ``RedisBackend`` is imported lazily, so ``redis`` stays optional."""

from typing import TYPE_CHECKING, Any

from .base import CacheBackend
from .memory import MemoryBackend

if TYPE_CHECKING:
    from .redis import RedisBackend

__all__ = ["CacheBackend", "MemoryBackend", "RedisBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
