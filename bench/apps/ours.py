"""intelligent-cache in front of the same endpoint.

IC_BACKEND=memory|redis|redis-near|cluster, with IC_REDIS_URL or IC_CLUSTER_NODES.
"""

import os

from fastapi import FastAPI

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config

from .common import Item, Limit, Page, make_items


def _backend(namespace: str) -> CacheBackend:
    kind = os.environ.get("IC_BACKEND", "memory")
    if kind in ("redis", "redis-near"):
        from intelligent_cache.backends import NearCache, RedisBackend

        near = NearCache() if kind == "redis-near" else None
        return RedisBackend(os.environ["IC_REDIS_URL"], key_prefix=f"bench-{kind}{namespace}:", near_cache=near)
    if kind == "cluster":
        from intelligent_cache.backends.redis import RedisClusterBackend

        nodes = [(host, int(port)) for host, port in (n.split(":") for n in os.environ["IC_CLUSTER_NODES"].split(","))]
        return RedisClusterBackend(startup_nodes=nodes, key_prefix=f"bench{namespace}:")
    return MemoryBackend()


def create_app(*, cached: bool = True, edge: bool | None = None) -> FastAPI:
    """The benchmark app; ``cached=False`` builds the same routes as plain APIRoutes, for comparison.

    ``edge`` (default: ``IC_EDGE=1``) answers fresh HITs in front of the app.
    """
    app = FastAPI()
    if edge is None:
        edge = os.environ.get("IC_EDGE") == "1"
    if cached:
        # A namespace per variant: entries answer only the Host (port included) they were stored
        # for, and each variant the bench starts listens on a port of its own.
        namespace = "-edge" if edge else ""
        CacheManager(_backend(namespace), default_ttl=3600, max_response_size=10 * 1024 * 1024, edge=edge).init_app(app)

    @app.get("/items", response_model=list[Item])
    @cache_config(ttl_seconds=3600)
    async def items(page: int = Page, limit: int = Limit) -> list[Item]:
        return make_items(page, limit)

    @app.get("/uncached", response_model=list[Item])
    async def uncached(page: int = Page, limit: int = Limit) -> list[Item]:
        return make_items(page, limit)

    return app


app = create_app()
