"""cashews on the same endpoint, as its README decorates one. PEER_BACKEND=memory|redis, IC_REDIS_URL."""

import os

from cashews import cache
from fastapi import FastAPI

from .common import Item, Limit, Page, make_items

if os.environ.get("PEER_BACKEND") == "redis":
    cache.setup(os.environ["IC_REDIS_URL"])
else:
    cache.setup("mem://")

app = FastAPI()


@app.get("/items", response_model=list[Item])
@cache(ttl="1h")
async def items(page: int = Page, limit: int = Limit) -> list[Item]:
    return make_items(page, limit)
