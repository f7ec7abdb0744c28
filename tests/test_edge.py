"""``CacheManager(edge=True)``: fresh HITs answered before the app's middleware and router run.

Every safety rule of the normal path holds: only fast-path routes (no dependencies to
run, no vary source), only requests without credentials, preconditions, directives,
ranges or ``Origin``; everything else reaches the app as before. Tested with
Starlette's CORS, GZip and session middleware in the app. Middleware not known to be safe
to skip stops the app from starting unless the manager names it (``edge_skip_middleware``).
"""

import re

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from intelligent_cache import CacheManager, ConfigurationError, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock

BIG = "x" * 2000  # above GZip's minimum size


def build(edge: bool) -> tuple[FastAPI, dict[str, int]]:
    seen = {"middleware": 0, "items": 0, "guarded": 0}
    app = FastAPI()
    clock = FakeClock()
    # The counting middleware is one a HIT may skip (it only counts): named, or the app would not start.
    CacheManager(MemoryBackend(clock=clock), clock=clock, edge=edge, edge_skip_middleware=["count_requests"]).init_app(
        app
    )

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
        # Paths are learned per method: the first HEAD is the app's (its route could be a HEAD route of
        # its own), a HIT all the same; the next one is the edge's.
        for middleware_runs in (2, 2):
            head = await client.head("/items/1")
            assert head.status_code == 200 and head.content == b"" and head.headers["content-length"]
            assert head.headers["x-cache"] == "HIT" and seen["middleware"] == middleware_runs
        stats = await app.state.intelligent_cache.service().get_stats()
        assert stats["routes"]["/items/{item_id}"]["hits"] == 3


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


# -- middleware the edge would skip -------------------------------------------------------------------------------


class RequireToken:
    """Pure ASGI middleware that refuses requests without ``X-Token``: an edge HIT must never skip it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"x-token" not in dict(scope["headers"]):
            await JSONResponse({"detail": "no token"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def cached_app(**options: object) -> FastAPI:
    app = FastAPI()
    CacheManager(MemoryBackend(), edge=True, **options).init_app(app)  # type: ignore[arg-type]

    @app.get("/data")
    @cache_config(ttl_seconds=60)
    async def data() -> dict[str, str]:
        return {"data": "for token holders"}

    return app


def test_an_app_with_middleware_the_edge_must_not_skip_refuses_to_start() -> None:
    app = cached_app()
    app.add_middleware(RequireToken)
    with pytest.raises(ConfigurationError, match="RequireToken would not run") as raised, TestClient(app):
        pass
    assert "edge_skip_middleware" in str(raised.value) and "edge=False" in str(raised.value)


def test_an_app_middleware_function_is_named_in_the_refusal() -> None:
    app = cached_app()

    @app.middleware("http")
    async def audit(request: Request, call_next):  # type: ignore[no-untyped-def]
        return await call_next(request)

    with pytest.raises(ConfigurationError, match=re.escape("audit (an @app.middleware function)")), TestClient(app):
        pass


@pytest.mark.parametrize("named", ["class", "name", "qualified-name"])
def test_middleware_named_as_safe_to_skip_is_skipped_by_edge_hits(named: str) -> None:
    skip = {"class": RequireToken, "name": "RequireToken", "qualified-name": "tests.test_edge.RequireToken"}[named]
    app = cached_app(edge_skip_middleware=[skip])
    app.add_middleware(RequireToken)
    with TestClient(app) as client:
        assert client.get("/data").status_code == 401
        assert client.get("/data", headers={"X-Token": "t"}).headers["x-cache"] == "MISS"
        # What the user declared: a HIT skips the middleware.
        assert client.get("/data").headers["x-cache"] == "HIT"


def test_the_middleware_known_to_be_safe_to_skip_needs_no_naming() -> None:
    app = cached_app()
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["testserver"])
    app.add_middleware(HTTPSRedirectMiddleware)
    app.add_middleware(GZipMiddleware)
    app.add_middleware(CORSMiddleware, allow_origins=["https://front.example"])
    app.add_middleware(SessionMiddleware, secret_key="s" * 32)
    with TestClient(app, base_url="https://testserver") as client:
        assert [client.get("/data").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]


def test_an_app_class_with_its_own_call_cannot_have_the_edge() -> None:
    class Gated(FastAPI):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await super().__call__(scope, receive, send)

    with pytest.raises(ConfigurationError, match=re.escape("Gated.__call__")):
        CacheManager(MemoryBackend(), edge=True).init_app(Gated())


def test_edge_skip_middleware_takes_a_list() -> None:
    with pytest.raises(ConfigurationError, match="list"):
        CacheManager(edge=True, edge_skip_middleware="RequireToken")


def test_what_the_edge_learned_is_forgotten_when_the_routes_change() -> None:
    app = cached_app()
    with TestClient(app) as client:
        assert [client.get("/data").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        del app.router.routes[-1]
        assert client.get("/data").status_code == 404
        app.router.routes = list(app.router.routes)  # a plain list again: watched from now on
        assert client.get("/data").status_code == 404
