"""fastapi-intelligent-cache 0.1.5 (the predecessor) on the same endpoint. PEER_BACKEND=memory|redis, IC_REDIS_URL."""

import os

from fastapi import FastAPI
from fastapi_intelligent_cache import CacheManager, cache_config
from fastapi_intelligent_cache.backends import MemoryBackend, RedisBackend

from .common import Item, Limit, Page, make_items

app = FastAPI()
if os.environ.get("PEER_BACKEND") == "redis":
    backend = RedisBackend(os.environ["IC_REDIS_URL"], key_prefix="bench-fic:")
else:
    backend = MemoryBackend()
CacheManager(backend=backend, default_ttl=3600).init_app(app)


@app.get("/items", response_model=list[Item])
@cache_config(ttl_seconds=3600)
async def items(page: int = Page, limit: int = Limit) -> list[Item]:
    return make_items(page, limit)
