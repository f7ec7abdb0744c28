"""Tags: invalidate what a path cannot tell, from a write or from outside any request.

``GET /users/{user_id}/timeline`` carries the tags ``user:{user_id}`` (filled
from the path) and ``feed``; ``GET /feed`` carries ``feed``. Publishing a post
(``POST /posts``, ``@invalidates("feed")``) invalidates every timeline and the
feed, though ``/posts`` is no ancestor of them; muting an author
(``@invalidates("user:{user_id}")``) invalidates that user's timeline only.

A worker or script invalidates with the manual API, no request needed:
``await invalidate_feed(manager)``. In another process, build a manager on the
same Redis: ``CacheManager(RedisBackend(url, key_prefix=...))``.

Run it::

    uvicorn example_app.examples.tags:app

    curl -si localhost:8000/users/1/timeline | grep -i x-cache   # MISS, then HIT
    curl -si -X POST 'localhost:8000/posts?author=2&text=hi'      # every timeline and /feed: MISS
"""

from fastapi import FastAPI

from intelligent_cache import CacheBackend, CacheManager, cache_config, invalidates

Post = dict[str, str]


def create_app(backend: CacheBackend | None = None, posts: list[Post] | None = None) -> FastAPI:
    """The app; ``posts`` stands in for the database a worker writes to behind the app's back."""
    db = posts if posts is not None else [{"author": "1", "text": "hello"}]
    muted: dict[str, set[str]] = {}
    app = FastAPI(title="intelligent-cache: tags")
    CacheManager(backend).init_app(app)

    @app.get("/feed")
    @cache_config(ttl_seconds=300, tags=["feed"])
    async def feed() -> list[Post]:
        return db[-20:]

    @app.get("/users/{user_id}/timeline")
    @cache_config(ttl_seconds=300, tags=["user:{user_id}", "feed"])
    async def timeline(user_id: str) -> list[Post]:
        return [post for post in db[-20:] if post["author"] not in muted.get(user_id, set())]

    @app.post("/posts", status_code=201)
    @invalidates("feed")  # /posts is not an ancestor of /feed or of the timelines
    async def publish(author: str, text: str) -> Post:
        db.append({"author": author, "text": text})
        return db[-1]

    @app.put("/settings/{user_id}/muted/{author}")
    @invalidates("user:{user_id}")  # this user's entries only
    async def mute(user_id: str, author: str) -> dict[str, list[str]]:
        muted.setdefault(user_id, set()).add(author)
        return {"muted": sorted(muted[user_id])}

    return app


async def invalidate_feed(manager: CacheManager) -> None:
    """What a worker calls after writing posts to the database without going through the app.

    ``manager`` is the app's (``app.state.intelligent_cache``) in the same
    process, or the worker's own on the same Redis namespace.
    """
    await manager.service().invalidate_tags("feed")


app = create_app()
