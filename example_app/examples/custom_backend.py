"""A complete custom backend: entries in a dict, at most ``max_entries``, oldest evicted first.

It implements the protocol of ``intelligent_cache/backends/base.py``. Counters
live apart from entries: ``fetch`` creates missing ones with
``new_generation()`` (random, so a lost counter never returns with a value an
old entry remembers), ``bump`` adds one. ``scan`` pages by insertion number (a
key present for the whole walk is listed once); ``clear`` counts no ``~`` keys.

Run it: ``uvicorn example_app.examples.custom_backend:app``, then
``curl -si localhost:8000/colors`` twice (``X-Cache: MISS``, then ``HIT``).
"""

import itertools
import time
from collections.abc import Callable, Sequence

from fastapi import FastAPI

from intelligent_cache import CacheBackend, CacheManager, cache_config
from intelligent_cache.backends.base import new_generation
from intelligent_cache.globs import compile_glob  # Redis-style globs, as clear_pattern and the admin API pass


class DictBackend(CacheBackend):
    name = "dict"

    def __init__(self, max_entries: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self._clock = max_entries, clock
        self._entries: dict[str, tuple[bytes, float, int]] = {}  # key: (value, expires_at, insertion number)
        self._counters: dict[str, int] = {}
        self._numbers = itertools.count(1)

    def _live(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is not None and item[1] <= self._clock():
            del self._entries[key]
            return None
        return None if item is None else item[0]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._entries.pop(key, None)  # re-inserted last: insertion order stays numbering order
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (value, self._clock() + ttl, next(self._numbers))

    async def delete(self, key: str) -> bool:
        return self._live(key) is not None and self._entries.pop(key, None) is not None

    def _counter(self, name: str) -> int:
        if name not in self._counters:
            if len(self._counters) >= 4 * self.max_entries:  # losing a counter is safe: a miss
                del self._counters[next(iter(self._counters))]
            self._counters[name] = new_generation()
        return self._counters[name]

    async def fetch(self, key: str, generation_keys: Sequence[str]) -> tuple[bytes | None, list[int]]:
        return self._live(key), [self._counter(name) for name in generation_keys]

    async def bump(self, generation_keys: Sequence[str]) -> None:
        for name in generation_keys:
            self._counters[name] = self._counter(name) + 1

    async def scan(
        self, pattern: str = "*", cursor: int = 0, count: int = 100
    ) -> tuple[int, list[tuple[str, float | None]]]:
        regex, now = compile_glob(pattern), self._clock()
        later = [(number, key, expires) for key, (_, expires, number) in self._entries.items() if number > cursor]
        page = later[:count]
        matched: list[tuple[str, float | None]] = [
            (key, expires - now) for _, key, expires in page if expires > now and regex.fullmatch(key)
        ]
        return (page[-1][0] if len(later) > count else 0), matched

    async def clear(self, pattern: str | None = None) -> int:
        regex, now = compile_glob("*" if pattern is None else pattern), self._clock()
        matched = {key: item[1] for key, item in self._entries.items() if regex.fullmatch(key)}
        for key in matched:
            del self._entries[key]
        self._counters = {name: value for name, value in self._counters.items() if not regex.fullmatch(name)}
        return sum(1 for key, expires in matched.items() if expires > now and not key.startswith("~"))


def create_app(backend: CacheBackend | None = None) -> FastAPI:
    """The app; ``backend`` defaults to a ``DictBackend``."""
    app = FastAPI(title="intelligent-cache: custom backend")
    CacheManager(backend if backend is not None else DictBackend(max_entries=500)).init_app(app)
    colors = ["red", "green"]

    @app.get("/colors")
    @cache_config(ttl_seconds=60)
    async def list_colors() -> list[str]:
        return colors

    @app.post("/colors", status_code=201)
    async def add_color(name: str) -> list[str]:
        colors.append(name)  # invalidates /colors
        return colors

    return app


app = create_app()
