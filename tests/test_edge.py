"""``CacheManager(edge=True)``: fresh HITs answered before the app's middleware and router run.

Every safety rule of the normal path holds: only fast-path routes (no dependencies to
run, no vary source), only requests without credentials, preconditions, directives,
ranges or ``Origin``; everything else reaches the app as before. Tested with
Starlette's CORS, GZip and session middleware in the app.
"""

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware

from intelligent_cache import CacheManager, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock

BIG = "x" * 2000  # above GZip's minimum size


def build(edge: bool) -> tuple[FastAPI, dict[str, int]]:
    seen = {"middleware": 0, "items": 0, "guarded": 0}
    app = FastAPI()
    clock = FakeClock()
    CacheManager(MemoryBackend(clock=clock), clock=clock, edge=edge).init_app(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        seen["middleware"] += 1
        return await call_next(request)

    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(CORSMiddleware, allow_origins=["https://front.example"])
    app.add_middleware(SessionMiddleware, secret_key="s" * 32)

    @app.get("/items/{item_id}")
    @cache_config(ttl_seconds=60, tags=["item:{item_id}"])
    async def item(item_id: int) -> dict[str, object]:
        seen["items"] += 1
        return {"id": item_id, "pad": BIG}

    def auth(request: Request) -> None:
        seen["guarded"] += 1

    @app.get("/guarded", dependencies=[Depends(auth)])
    @cache_config(ttl_seconds=60)
    async def guarded() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/session")
    @cache_config(ttl_seconds=60, public=True)
    async def session(request: Request) -> dict[str, object]:
        return {"visits": request.session.get("visits", 0)}

    @app.post("/items/{item_id}")
    async def update(item_id: int) -> dict[str, bool]:
        return {"ok": True}

    return app, seen


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_an_edge_hit_skips_the_middleware_and_the_router() -> None:
    app, seen = build(edge=True)
    async with client_for(app) as client:
        first = await client.get("/items/1")
        assert first.headers["x-cache"] == "MISS" and seen["middleware"] == 1
        hit = await client.get("/items/1")
        assert hit.headers["x-cache"] == "HIT" and hit.json() == first.json()
        assert seen == {"middleware": 1, "items": 1, "guarded": 0}  # neither middleware nor endpoint ran
        head = await client.head("/items/1")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"]
        assert seen["middleware"] == 1
        stats = await app.state.intelligent_cache.service().get_stats()
        assert stats["routes"]["/items/{item_id}"]["hits"] == 2


async def test_without_edge_the_middleware_runs_on_every_hit() -> None:
    app, seen = build(edge=False)
    async with client_for(app) as client:
        await client.get("/items/1")
        assert (await client.get("/items/1")).headers["x-cache"] == "HIT"
    assert seen["middleware"] == 2


async def test_a_write_invalidates_what_the_edge_serves() -> None:
    app, seen = build(edge=True)
    async with client_for(app) as client:
        await client.get("/items/1")
        assert (await client.get("/items/1")).headers["x-cache"] == "HIT"
        assert (await client.post("/items/1")).status_code == 200
        assert (await client.get("/items/1")).headers["x-cache"] == "MISS"
    assert seen["items"] == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://front.example"},  # CORS: the middleware must answer
        {"Authorization": "Bearer alice"},
        {"Cookie": "session=abc"},
        {"If-None-Match": '"x"'},
        {"Cache-Control": "no-cache"},
        {"Range": "bytes=0-1"},
    ],
)
async def test_requests_the_app_must_see_go_to_the_app(headers: dict[str, str]) -> None:
    app, seen = build(edge=True)
    async with client_for(app) as client:
        await client.get("/items/1")
        answer = await client.get("/items/1", headers=headers)
    assert seen["middleware"] == 2
    if "Origin" in headers:
        assert answer.headers["access-control-allow-origin"] == "https://front.example"


async def test_gzip_applies_to_what_the_app_computes_and_an_edge_hit_is_sent_plain() -> None:
    app, _ = build(edge=True)
    async with client_for(app) as client:
        first = await client.get("/items/1", headers={"Accept-Encoding": "gzip"})
        assert first.headers.get("content-encoding") == "gzip"
        hit = await client.get("/items/1", headers={"Accept-Encoding": "gzip"})
        assert hit.headers["x-cache"] == "HIT" and "content-encoding" not in hit.headers
        assert hit.json() == first.json()


async def test_routes_with_dependencies_are_never_answered_at_the_edge() -> None:
    app, seen = build(edge=True)
    async with client_for(app) as client:
        for _ in range(3):
            await client.get("/guarded")
    assert seen["guarded"] == 3 and seen["middleware"] == 3


async def test_the_session_middleware_still_sees_requests_with_its_cookie() -> None:
    app, seen = build(edge=True)
    async with client_for(app) as client:
        await client.get("/session")
        await client.get("/session", headers={"Cookie": "session=whatever"})
    assert seen["middleware"] == 2


async def test_the_edge_answers_before_fastapi_itself_and_the_app_stays_what_it_was() -> None:
    app, _ = build(edge=True)
    assert isinstance(app, FastAPI) and type(app).__name__ == "FastAPI"
    entered = []
    original = FastAPI.__call__

    async def spy(self, scope, receive, send):  # type: ignore[no-untyped-def]
        entered.append(scope["path"])
        await original(self, scope, receive, send)

    FastAPI.__call__ = spy  # type: ignore[method-assign]
    try:
        async with client_for(app) as client:
            await client.get("/items/1")
            assert (await client.get("/items/1")).headers["x-cache"] == "HIT"
            assert (await client.get("/items/2")).headers["x-cache"] == "MISS"
    finally:
        FastAPI.__call__ = original  # type: ignore[method-assign]
    assert entered == ["/items/1", "/items/2"]  # the HIT never reached FastAPI's __call__
    other = FastAPI()  # other apps of the class are untouched
    assert type(other) is FastAPI


async def test_an_app_with_a_root_path_is_never_answered_at_the_edge() -> None:
    app, seen = build(edge=True)
    app.root_path = "/api"
    async with client_for(app) as client:
        for _ in range(3):
            answer = await client.get("/items/1")
    assert answer.status_code == 200 and seen["middleware"] == 3


async def test_init_app_twice_with_edge_keeps_one_layer() -> None:
    app = FastAPI()
    manager = CacheManager(MemoryBackend(), edge=True)
    manager.init_app(app)
    manager.init_app(app)
    assert type(app).__mro__[1] is FastAPI
