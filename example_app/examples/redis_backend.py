"""Entries in Redis: ``RedisBackend`` from ``IC_REDIS_URL``, a key prefix, shutdown, health.

Every key the cache writes lives under ``key_prefix`` (``IC_KEY_PREFIX``,
default ``rates:``), so several applications can share one Redis database and
clearing never touches the others' keys. ``init_app`` wraps the app's own
lifespan and closes the connection pool after it exits. ``GET /health``
answers 503 while Redis is down; meanwhile requests keep working, uncached
(``X-Cache: SKIP``, ``detail=backend-error``).

Run it::

    IC_REDIS_URL=redis://localhost:6379/0 uvicorn example_app.examples.redis_backend:app

    curl -si localhost:8000/rates/EUR | grep -i x-cache   # MISS, then HIT
    curl -s localhost:8000/health                         # {"status": "ok", "backend": "redis", ...}
"""

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from intelligent_cache import CacheManager, cache_config
from intelligent_cache.backends import RedisBackend


def create_app(redis_url: str | None = None, *, key_prefix: str | None = None) -> FastAPI:
    """The app on Redis; arguments default to ``IC_REDIS_URL`` and ``IC_KEY_PREFIX``."""
    url = redis_url or os.environ.get("IC_REDIS_URL", "redis://localhost:6379/0")
    backend = RedisBackend(url, key_prefix=key_prefix or os.environ.get("IC_KEY_PREFIX", "rates:"))
    rates: dict[str, dict[str, float]] = {"EUR": {"USD": 1.08, "GBP": 0.85}}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Open your own resources (database pools...) here. init_app() wraps this
        # lifespan: the cache's Redis pool is closed right after it exits.
        yield

    app = FastAPI(title="intelligent-cache: Redis", lifespan=lifespan)
    manager = CacheManager(backend, default_ttl=300).init_app(app)

    @app.get("/rates/{base}")
    @cache_config(ttl_seconds=600)
    async def get_rates(base: str) -> dict[str, Any]:
        if base not in rates:
            raise HTTPException(status_code=404, detail="unknown currency")
        return {"base": base, "rates": rates[base]}

    @app.put("/rates/{base}")
    async def set_rates(base: str, quotes: dict[str, float]) -> dict[str, Any]:
        rates[base] = quotes  # invalidates /rates/{base} in every process sharing this Redis
        return {"base": base, "rates": quotes}

    @app.get("/health", response_model=None)
    async def health() -> JSONResponse:
        # The same check as the admin API's GET /api/cache/health, without authentication.
        started = time.perf_counter()
        try:
            await manager.backend.ping()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", **manager.backend.info(), "reason": repr(exc)}, 503)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return JSONResponse({"status": "ok", **manager.backend.info(), "latency_ms": latency_ms})

    return app


app = create_app()
