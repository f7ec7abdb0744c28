"""A small REST app: spaces holding items, cached with intelligent-cache.

Run it with ``make demo`` (memory backend), or with Redis::

    IC_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn example_app.main:app

Reads are cached; every successful write invalidates exactly the reads it
affects (the path written, everything under it, and its ancestors).
"""

import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(ge=0)


class Item(ItemIn):
    id: int
    space_id: int


class Space(BaseModel):
    id: int
    name: str
    item_count: int


class Store:
    """Stands in for a database: spaces with nested items."""

    def __init__(self) -> None:
        self.spaces: dict[int, str] = {1: "Kitchen", 2: "Garage"}
        self.items: dict[int, dict[int, Item]] = {
            1: {i: Item(id=i, space_id=1, name=f"Spoon {i}", price=1.5 * i) for i in range(1, 31)},
            2: {1: Item(id=1, space_id=2, name="Hammer", price=12.0)},
        }
        self.favorites: dict[str, list[int]] = {"alice": [1, 2], "bob": [3]}

    def space(self, space_id: int) -> Space:
        if space_id not in self.spaces:
            raise HTTPException(status_code=404, detail="space not found")
        return Space(id=space_id, name=self.spaces[space_id], item_count=len(self.items[space_id]))


_LOGIN_PAGE = """<!doctype html>
<title>intelligent-cache: sign in</title>
<form method="post" action="/admin/login">
  <!--error-->
  <label>Admin token <input type="password" name="token" autofocus required></label>
  <button>Open the dashboard</button>
</form>
"""


def create_app(backend: CacheBackend | None = None, *, admin_token: str | None = None) -> FastAPI:
    """Build the example app; ``backend`` defaults to Redis if ``IC_REDIS_URL`` is set, else memory."""
    if backend is None:
        redis_url = os.environ.get("IC_REDIS_URL")
        if redis_url:
            from intelligent_cache.backends import RedisBackend

            backend = RedisBackend(redis_url, key_prefix=os.environ.get("IC_KEY_PREFIX", "example:"))
        else:
            backend = MemoryBackend(max_entries=5_000)
    token = admin_token or os.environ.get("IC_ADMIN_TOKEN", "change-me")
    store = Store()

    def get_store() -> Store:
        return store

    def require_admin(
        x_admin_token: Annotated[str | None, Header()] = None,
        ic_admin_token: Annotated[str | None, Cookie()] = None,
    ) -> None:
        # The header for scripts, the cookie (set by /admin/login) for the dashboard in a browser.
        given = x_admin_token or ic_admin_token
        if given is None or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="admin token required")

    app = FastAPI(title="intelligent-cache example")
    CacheManager(
        backend,
        default_ttl=60,
        include_admin_routes=True,
        admin_auth_dependency=require_admin,
    ).init_app(app)

    @app.get("/admin/login", include_in_schema=False)
    async def admin_login_form() -> HTMLResponse:
        """The dashboard's login page: the token goes in a POSTed form, never in a URL (or an access log)."""
        return HTMLResponse(_LOGIN_PAGE)

    @app.post("/admin/login", include_in_schema=False)
    async def admin_login(request: Request) -> Response:
        """Check the token, keep it in a cookie for /api/cache only, and open the dashboard."""
        form = parse_qs((await request.body()).decode("latin-1"), max_num_fields=4)
        token = (form.get("token") or [""])[0]
        try:
            require_admin(x_admin_token=token)
        except HTTPException:
            return HTMLResponse(_LOGIN_PAGE.replace("<!--error-->", "<p>Wrong token.</p>"), status_code=401)
        response = RedirectResponse("/api/cache/dashboard", status_code=303)
        response.set_cookie("ic_admin_token", token, path="/api/cache", httponly=True, samesite="strict")
        return response

    @app.middleware("http")
    async def identify_user(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # A real app would verify a session or token here.
        request.state.user_id = request.headers.get("x-user")
        return await call_next(request)

    StoreDep = Annotated[Store, Depends(get_store)]

    @app.get("/spaces", response_model=list[Space])
    @cache_config(ttl_seconds=300)
    async def list_spaces(db: StoreDep) -> list[Space]:
        return [db.space(space_id) for space_id in sorted(db.spaces)]

    @app.get("/spaces/{space_id}", response_model=Space)
    @cache_config(ttl_seconds=300)
    async def get_space(space_id: int, db: StoreDep) -> Space:
        return db.space(space_id)

    @app.get("/spaces/{space_id}/items", response_model=list[Item])
    @cache_config(ttl_seconds=120)
    async def list_items(space_id: int, db: StoreDep, page: int = 1, limit: int = 10) -> list[Item]:
        db.space(space_id)
        if page < 1 or not 1 <= limit <= 100:
            raise HTTPException(status_code=422, detail="page >= 1 and 1 <= limit <= 100")
        items = sorted(db.items[space_id].values(), key=lambda item: item.id)
        return items[(page - 1) * limit : page * limit]

    @app.get("/spaces/{space_id}/items/{item_id}", response_model=Item)
    @cache_config
    def get_item(space_id: int, item_id: int, db: StoreDep) -> Item:
        db.space(space_id)
        item = db.items[space_id].get(item_id)
        if item is None:
            raise HTTPException(status_code=404, detail="item not found")
        return item

    @app.post("/spaces/{space_id}/items", response_model=Item, status_code=201)
    async def create_item(space_id: int, body: ItemIn, db: StoreDep) -> Item:
        db.space(space_id)
        item = Item(id=max(db.items[space_id], default=0) + 1, space_id=space_id, **body.model_dump())
        db.items[space_id][item.id] = item
        return item

    @app.patch("/spaces/{space_id}/items/{item_id}", response_model=Item)
    async def update_item(space_id: int, item_id: int, body: ItemIn, db: StoreDep) -> Item:
        db.space(space_id)
        if item_id not in db.items[space_id]:
            raise HTTPException(status_code=404, detail="item not found")
        item = Item(id=item_id, space_id=space_id, **body.model_dump())
        db.items[space_id][item_id] = item
        return item

    @app.delete("/spaces/{space_id}/items/{item_id}", status_code=204)
    async def delete_item(space_id: int, item_id: int, db: StoreDep) -> None:
        db.space(space_id)
        if db.items[space_id].pop(item_id, None) is None:
            raise HTTPException(status_code=404, detail="item not found")

    @app.get("/me/favorites")
    @cache_config(ttl_seconds=60, vary_by=["user_id"])
    async def my_favorites(request: Request, db: StoreDep) -> dict[str, object]:
        user = request.state.user_id
        if user is None:
            raise HTTPException(status_code=401, detail="send X-User")
        return {"user": user, "favorites": db.favorites.get(user, [])}

    return app


app = create_app()
