"""fastapi-cache2 0.2.2 on the same endpoint. PEER_BACKEND=memory|redis, IC_REDIS_URL."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_cache import FastAPICache
from fastapi_cache.backends.inmemory import InMemoryBackend
from fastapi_cache.decorator import cache

from .common import Item, Limit, Page, make_items


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if os.environ.get("PEER_BACKEND") == "redis":
        from fastapi_cache.backends.redis import RedisBackend
        from redis.asyncio import Redis

        FastAPICache.init(RedisBackend(Redis.from_url(os.environ["IC_REDIS_URL"])), prefix="bench-fc2")
    else:
        FastAPICache.init(InMemoryBackend(), prefix="bench-fc2")
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/items", response_model=list[Item])
@cache(expire=3600)
async def items(page: int = Page, limit: int = Limit) -> list[Item]:
    return make_items(page, limit)
