"""Per-user entries: a middleware resolves the user, ``vary_by=["user_id"]`` keys by it.

The middleware stands in for your session handling: it maps the
``X-Session`` header to ``request.state.user_id`` (a real app verifies a
signed cookie or a token there). Each user gets their own entry
(``GET:me:cart:@user_id=alice``), marked ``Cache-Control: private``.

``/me/orders`` is protected by a dependency. Dependencies still run on a HIT,
so a suspended user is refused even while their entry is cached.

Run it::

    uvicorn example_app.examples.per_user:app

    curl -si localhost:8000/me/cart -H 'X-Session: s-alice' | grep -i x-cache   # MISS, then HIT
    curl -s localhost:8000/me/cart -H 'X-Session: s-bob'                        # bob's own cart
    curl -si localhost:8000/me/orders                                           # 401
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response

from intelligent_cache import CacheBackend, CacheManager, cache_config


class Users:
    """Stands in for the user database."""

    def __init__(self) -> None:
        self.sessions = {"s-alice": "alice", "s-bob": "bob"}
        self.carts = {"alice": ["tea"], "bob": ["coffee", "milk"]}
        self.orders = {"alice": [1001], "bob": [1002, 1003]}
        self.suspended: set[str] = set()


def create_app(backend: CacheBackend | None = None, users: Users | None = None) -> FastAPI:
    """The app; ``users`` lets tests hold on to the data."""
    db = users if users is not None else Users()
    app = FastAPI(title="intelligent-cache: per user")
    CacheManager(backend).init_app(app)

    @app.middleware("http")
    async def resolve_user(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.user_id = db.sessions.get(request.headers.get("x-session", ""))
        return await call_next(request)

    def active_user(request: Request) -> str:
        user_id: str | None = request.state.user_id
        if user_id is None:
            raise HTTPException(status_code=401, detail="log in first")
        if user_id in db.suspended:
            raise HTTPException(status_code=403, detail="account suspended")
        return user_id

    @app.get("/me/cart")
    @cache_config(ttl_seconds=60, vary_by=["user_id"])
    async def my_cart(request: Request) -> dict[str, object]:
        user_id = request.state.user_id
        if user_id is None:
            raise HTTPException(status_code=401, detail="log in first")  # errors are never stored
        return {"user": user_id, "cart": db.carts.get(user_id, [])}

    @app.get("/me/orders")
    @cache_config(ttl_seconds=60, vary_by=["user_id"])
    async def my_orders(user_id: Annotated[str, Depends(active_user)]) -> dict[str, object]:
        # active_user runs on every request, HITs included.
        return {"user": user_id, "orders": db.orders.get(user_id, [])}

    return app


app = create_app()
