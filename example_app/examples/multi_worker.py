"""Several uvicorn workers (or machines) sharing one Redis: entries, invalidations, stats.

Each worker process imports this module and builds its app from
``IC_REDIS_URL`` (default ``redis://localhost:6379/0``) and ``IC_KEY_PREFIX``
(default ``quotes:``). A response computed by one worker is a HIT in every
other; a write through any worker invalidates it everywhere. The data lives in
Redis too (a hash standing in for your database), so every worker reads the
same. ``computed_by`` in the body names the worker that computed an entry,
the ``X-Served-By`` header the one that answered. ``GET /stats`` adds up the
counters of every worker: each one flushes its counts every
``stats_flush_interval`` seconds.

Run it::

    IC_REDIS_URL=redis://localhost:6379/0 uvicorn example_app.examples.multi_worker:app --workers 4

    curl -s -X PUT 'localhost:8000/quotes/ACME?price=12.5'
    curl -si localhost:8000/quotes/ACME | grep -iE '^x-(cache|served-by)'   # MISS, then HITs from any worker
    curl -s localhost:8000/stats                                            # "scope": "shared"
"""

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request, Response

from intelligent_cache import CacheManager, cache_config
from intelligent_cache.backends import RedisBackend


def create_app(
    redis_url: str | None = None, *, key_prefix: str | None = None, stats_flush_interval: float = 1.0
) -> FastAPI:
    """One worker's app; arguments default to ``IC_REDIS_URL`` and ``IC_KEY_PREFIX``."""
    url = redis_url or os.environ.get("IC_REDIS_URL", "redis://localhost:6379/0")
    prefix = key_prefix or os.environ.get("IC_KEY_PREFIX", "quotes:")
    db: Any = aioredis.Redis.from_url(url, decode_responses=True)  # your database, shared by the workers
    prices = f"db:{prefix}prices"  # outside the cache's namespace: clearing the cache keeps it
    worker = f"{os.getpid()}-{secrets.token_hex(2)}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await db.aclose()  # then init_app's wrapper flushes the stats and closes the cache's pool

    app = FastAPI(title="intelligent-cache: several workers", lifespan=lifespan)
    manager = CacheManager(RedisBackend(url, key_prefix=prefix), stats_flush_interval=stats_flush_interval)
    manager.init_app(app)

    @app.middleware("http")
    async def served_by(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["x-served-by"] = worker
        return response

    @app.get("/quotes/{symbol}")
    @cache_config(ttl_seconds=30)
    async def get_quote(symbol: str) -> dict[str, Any]:
        price = await db.hget(prices, symbol)
        if price is None:
            raise HTTPException(status_code=404, detail="unknown symbol")
        return {"symbol": symbol, "price": float(price), "computed_by": worker}

    @app.put("/quotes/{symbol}")
    async def set_quote(symbol: str, price: float) -> dict[str, Any]:
        await db.hset(prices, symbol, str(price))  # then every worker's entry for /quotes/{symbol} is invalid
        return {"symbol": symbol, "price": price}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        # Every worker's counters (admin API: GET /api/cache/stats, behind authentication).
        summary = await manager.service().get_stats()
        return {name: summary[name] for name in ("scope", "hits", "misses", "skips", "invalidations", "hit_rate")}

    return app


app = create_app()
