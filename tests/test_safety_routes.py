"""Routes the cache cannot see, and settings that would silently do nothing.

6. A ``@cache_config`` GET the cache cannot wrap (a plain ``APIRouter()`` included after ``init_app``,
   a route declared before ``init_app``, an explicit ``APIRoute`` override) must stop the app from
   starting, naming the route and the fix. Writes through plain routers still invalidate. The same
   inside a mounted router, and for any ``@cache_config`` GET of a mounted application that has no
   ``CacheManager`` of its own (one that has its own is cached by it).
7. ``@cache_config`` that cannot take effect (on a write route; on a ``CachedRoute`` in an app without
   any ``CacheManager``), and ``@invalidates`` on a read-only route, log one WARNING on
   ``intelligent_cache``, not one per request.
"""

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from intelligent_cache import CachedRoute, CacheManager, ConfigurationError, MemoryBackend, cache_config, invalidates


def x_cache(response: httpx.Response) -> str | None:
    return response.headers.get("x-cache")


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "intelligent_cache" and record.levelno >= logging.WARNING
    ]


def new_app() -> tuple[FastAPI, CacheManager]:
    app = FastAPI()
    manager = CacheManager(MemoryBackend()).init_app(app)
    return app, manager


# -- 6. a @cache_config GET the cache cannot wrap refuses to start ------------------------------------------


def report() -> dict[str, str]:
    return {"report": "q3"}


def plain_router_prefixed(app: FastAPI) -> str:
    router = APIRouter()
    router.get("/reports")(cache_config(report))
    app.include_router(router, prefix="/v1")
    return "/v1/reports"


def plain_router_unprefixed(app: FastAPI) -> str:
    router = APIRouter()
    router.get("/reports")(cache_config(ttl_seconds=30)(report))
    app.include_router(router)
    return "/reports"


def plain_router_decorator_outside(app: FastAPI) -> str:
    router = APIRouter()

    @cache_config
    @router.get("/reports")
    def reports_outside() -> dict[str, str]:
        return {"report": "q3"}

    app.include_router(router, prefix="/v2")
    return "/v2/reports"


def plain_router_inside_cached_router(app: FastAPI) -> str:
    inner = APIRouter()
    inner.get("/reports")(cache_config(report))
    outer = APIRouter(route_class=CachedRoute)
    outer.include_router(inner, prefix="/inner")
    app.include_router(outer, prefix="/v1")
    return "/v1/inner/reports"


def route_class_override(app: FastAPI) -> str:
    app.router.add_api_route("/reports", cache_config(report), methods=["GET"], route_class_override=APIRoute)
    return "/reports"


def mounted_router_plain_route(app: FastAPI) -> str:
    app.router.routes.append(Mount("/m", routes=[APIRoute("/reports", cache_config(report), methods=["GET"])]))
    return "/m/reports"


def mounted_app_plain_route(app: FastAPI) -> str:
    sub = FastAPI()
    sub.get("/reports")(cache_config(report))
    app.mount("/sub", sub)
    return "/sub/reports"


def mounted_app_cached_route(app: FastAPI) -> str:
    sub = FastAPI()
    router = APIRouter(route_class=CachedRoute)
    router.get("/reports")(cache_config(report))
    sub.include_router(router, prefix="/v1")
    app.mount("/sub", sub)
    return "/sub/v1/reports"


def mounted_app_two_levels_down(app: FastAPI) -> str:
    inner, outer = FastAPI(), FastAPI()
    inner.get("/reports")(cache_config(report))
    outer.mount("/inner", inner)
    app.mount("/outer", outer)
    return "/outer/inner/reports"


UNWRAPPABLE = [
    pytest.param(mounted_router_plain_route, id="mounted-router-plain-route"),
    pytest.param(mounted_app_plain_route, id="mounted-app-without-manager"),
    pytest.param(mounted_app_cached_route, id="mounted-app-without-manager-cached-route"),
    pytest.param(mounted_app_two_levels_down, id="mounted-app-two-levels-down"),
    pytest.param(plain_router_prefixed, id="plain-router-with-prefix"),
    pytest.param(plain_router_unprefixed, id="plain-router"),
    pytest.param(plain_router_decorator_outside, id="plain-router-cache-config-outside"),
    pytest.param(plain_router_inside_cached_router, id="plain-router-inside-cached-router"),
    pytest.param(route_class_override, id="route-class-override-apiroute"),
]


@pytest.mark.parametrize("declare", UNWRAPPABLE)
def test_cached_get_the_cache_cannot_see_stops_the_app_from_starting(
    declare: Callable[[FastAPI], str], request: pytest.FixtureRequest
) -> None:
    app, _ = new_app()

    @app.get("/fine")
    @cache_config
    def fine() -> dict[str, bool]:
        return {"fine": True}

    with pytest.raises(ConfigurationError) as raised:
        path = declare(app)
        with TestClient(app):
            pass
    message = str(raised.value)
    assert path in message, message
    fix = "init_app() on that application" if "mounted-app" in request.node.callspec.id else "CachedRoute"
    assert fix in message, f"the error should name the fix: {message}"


def test_cached_get_declared_before_init_app_is_a_configuration_error_at_init_app() -> None:
    app = FastAPI()

    @app.get("/early")
    @cache_config
    def early() -> dict[str, bool]:
        return {"early": True}

    with pytest.raises(ConfigurationError, match="/early"):
        CacheManager(MemoryBackend()).init_app(app)


def test_uncached_routes_declared_before_init_app_are_fine(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    CacheManager(MemoryBackend()).init_app(app)
    with TestClient(app) as client:
        assert client.get("/health").json() == {"ok": True}
    assert cache_warnings(caplog) == []


def test_plain_router_without_cache_config_starts_and_serves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app, _ = new_app()
    router = APIRouter()

    @router.get("/plain")
    def plain() -> dict[str, bool]:
        return {"plain": True}

    @router.get("/switched-off")
    @cache_config(enabled=False)
    def switched_off() -> dict[str, bool]:
        return {"off": True}

    app.include_router(router, prefix="/v1")
    with TestClient(app) as client:
        assert client.get("/v1/plain").json() == {"plain": True}
        assert client.get("/v1/switched-off").json() == {"off": True}
    assert cache_warnings(caplog) == []


# -- 6. writes through plain routers invalidate ----------------------------------------------------------------


class Shop:
    """Cached reads on a ``CachedRoute`` router; every write on a plain ``APIRouter()`` (no @cache_config)."""

    def __init__(self) -> None:
        self.db: dict[int, str] = {1: "spoon", 2: "fork"}
        self.calls: Counter[str] = Counter()
        self.app, _ = new_app()
        reads = APIRouter(route_class=CachedRoute)
        writes = APIRouter()
        db, calls = self.db, self.calls

        @reads.get("/items")
        @cache_config
        def list_items() -> dict[str, Any]:
            calls["list"] += 1
            return {"items": dict(sorted(db.items()))}

        @reads.get("/items/{item_id}")
        @cache_config
        def get_item(item_id: int) -> dict[str, Any]:
            calls["item"] += 1
            return {"id": item_id, "name": db.get(item_id)}

        def change(item_id: int, name: str) -> dict[str, Any]:
            if name == "conflict":
                return JSONResponse({"error": "conflict"}, status_code=409)  # type: ignore[return-value]
            if name == "missing":
                raise HTTPException(status_code=404, detail="no such item")
            db[item_id] = name
            return {"id": item_id, "name": name}

        @writes.put("/items/{item_id}")
        def put_item(item_id: int, name: str) -> dict[str, Any]:
            return change(item_id, name)

        @writes.patch("/items/{item_id}")
        def patch_item(item_id: int, name: str) -> dict[str, Any]:
            return change(item_id, name)

        @writes.post("/items/{item_id}")
        def post_item(item_id: int, name: str) -> dict[str, Any]:
            return change(item_id, name)

        @writes.delete("/items/{item_id}")
        def delete_item(item_id: int, name: str = "deleted") -> Response:
            if name in ("conflict", "missing"):
                change(item_id, name)
                return Response(status_code=409)
            db.pop(item_id, None)
            return Response(status_code=204)

        self.app.include_router(reads, prefix="/api")
        self.app.include_router(writes, prefix="/api")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST", "DELETE"])
def test_successful_write_through_a_plain_router_invalidates_the_cached_get(method: str) -> None:
    shop = Shop()
    with TestClient(shop.app) as client:
        assert [x_cache(client.get("/api/items/1")) for _ in range(2)] == ["MISS", "HIT"]
        assert [x_cache(client.get("/api/items")) for _ in range(2)] == ["MISS", "HIT"]
        assert x_cache(client.get("/api/items/2")) == "MISS"
        written = client.request(method, "/api/items/1", params={"name": "knife"})
        assert written.status_code < 400, written.text
        item, listing, other = client.get("/api/items/1"), client.get("/api/items"), client.get("/api/items/2")
    expected_name = None if method == "DELETE" else "knife"
    assert (x_cache(item), item.json()) == ("MISS", {"id": 1, "name": expected_name})
    assert x_cache(listing) == "MISS"
    assert listing.json()["items"].get("1") == expected_name
    # A sibling is not on the written path: still cached.
    assert (x_cache(other), other.json()) == ("HIT", {"id": 2, "name": "fork"})


@pytest.mark.parametrize("failure", ["conflict", "missing", "invalid"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST", "DELETE"])
def test_failed_write_through_a_plain_router_invalidates_nothing(method: str, failure: str) -> None:
    shop = Shop()
    with TestClient(shop.app) as client:
        client.get("/api/items/1")
        client.get("/api/items")
        params = {} if failure == "invalid" else {"name": failure}
        target = "/api/items/not-a-number" if failure == "invalid" else "/api/items/1"
        written = client.request(method, target, params=params)
        assert 400 <= written.status_code < 500, written.text
        item, listing = client.get("/api/items/1"), client.get("/api/items")
    assert (x_cache(item), item.json()) == ("HIT", {"id": 1, "name": "spoon"})
    assert x_cache(listing) == "HIT"
    assert shop.calls == Counter({"item": 1, "list": 1})


def test_mounted_router_with_cached_routes_is_cached_by_the_app() -> None:
    app, _ = new_app()
    calls = Counter[str]()

    def counted() -> dict[str, str]:
        calls["reports"] += 1
        return {"report": "q3"}

    app.router.routes.append(Mount("/m", routes=[CachedRoute("/reports", cache_config(counted), methods=["GET"])]))
    with TestClient(app) as client:
        assert [x_cache(client.get("/m/reports")) for _ in range(2)] == ["MISS", "HIT"]
    assert calls["reports"] == 1


def test_mounted_application_with_its_own_manager_is_cached_by_it(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = new_app()
    sub = FastAPI()
    sub_manager = CacheManager(MemoryBackend()).init_app(sub)
    sub.get("/reports")(cache_config(report))
    app.mount("/sub", sub)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"), TestClient(app) as client:
        assert [x_cache(client.get("/sub/reports")) for _ in range(2)] == ["MISS", "HIT"]
    assert cache_warnings(caplog) == []
    assert sub_manager.stats.snapshot()["hits"] == 1


def test_write_to_a_mounted_sub_application_invalidates_the_parent_cache_above_it() -> None:
    """``PUT /sub/items/1`` is answered by a mounted FastAPI app (no CacheManager of its own).

    It is still a successful write to a path under the parent's cached ``GET /sub``: the parent's
    entries on that path (``/sub``, ``/sub/items/1``) are invalidated; a sibling (``/sub/catalog``) is not.
    """
    app, _ = new_app()
    db = {"version": 1}

    @app.get("/sub")
    @cache_config
    def sub_root() -> dict[str, int]:
        return {"version": db["version"]}

    @app.get("/sub/catalog")
    @cache_config
    def sub_catalog() -> dict[str, int]:
        return {"version": db["version"]}

    other = FastAPI()

    @other.put("/items/{item_id}")
    def put_item(item_id: int) -> dict[str, int]:
        db["version"] += 1
        return {"version": db["version"]}

    @other.put("/broken")
    def put_broken() -> Response:
        return Response(status_code=409)

    app.mount("/sub", other)
    with TestClient(app) as client:
        assert [x_cache(client.get("/sub")) for _ in range(2)] == ["MISS", "HIT"]
        assert [x_cache(client.get("/sub/catalog")) for _ in range(2)] == ["MISS", "HIT"]
        assert client.put("/sub/broken").status_code == 409
        assert x_cache(client.get("/sub")) == "HIT", "a failed write invalidated"
        assert client.put("/sub/items/1").json() == {"version": 2}
        root, catalog = client.get("/sub"), client.get("/sub/catalog")
    assert (x_cache(root), root.json()) == ("MISS", {"version": 2})
    assert (x_cache(catalog), catalog.json()) == ("HIT", {"version": 1})


# -- 7. silent no-ops warn once ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("where", ["app", "cached-router"])
def test_cache_config_on_a_write_route_warns_once(method: str, where: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app, _ = new_app()
    routes: Any = app if where == "app" else APIRouter(route_class=CachedRoute)
    calls = Counter[str]()

    @routes.api_route("/submit", methods=[method])
    @cache_config(ttl_seconds=30)
    def submit() -> dict[str, int]:
        calls["submit"] += 1
        return {"n": calls["submit"]}

    if where != "app":
        app.include_router(routes, prefix="/v1")
    url = "/submit" if where == "app" else "/v1/submit"
    with TestClient(app) as client:
        bodies = [client.request(method, url).json() for _ in range(3)]
    assert bodies == [{"n": 1}, {"n": 2}, {"n": 3}]
    warnings = [message for message in cache_warnings(caplog) if "submit" in message]
    assert len(warnings) == 1, cache_warnings(caplog)


def test_cache_config_on_a_get_and_post_route_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    """The GET of a multi-method route is cached: not a no-op, no warning."""
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app, _ = new_app()

    @app.api_route("/both", methods=["GET", "POST"])
    @cache_config
    def both() -> dict[str, bool]:
        return {"both": True}

    with TestClient(app) as client:
        outcomes = [x_cache(client.get("/both")) for _ in range(2)]
        client.post("/both")
    assert outcomes == ["MISS", "HIT"]
    assert cache_warnings(caplog) == []


@pytest.mark.parametrize("where", ["app", "cached-router", "plain-router"])
def test_invalidates_on_a_read_only_route_warns_once(where: str, caplog: pytest.LogCaptureFixture) -> None:
    """``@invalidates`` on a GET (a ``/logout`` or ``/refresh`` link, say) never runs: GETs do not invalidate."""
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app, _ = new_app()
    routes: Any = (
        app if where == "app" else APIRouter(route_class=CachedRoute if where == "cached-router" else APIRoute)
    )

    @routes.get("/refresh")
    @invalidates("reports")
    def refresh() -> dict[str, bool]:
        return {"refreshed": True}

    @routes.post("/rebuild")
    @invalidates("reports")
    def rebuild() -> dict[str, bool]:
        return {"rebuilt": True}

    if where != "app":
        app.include_router(routes)
    with TestClient(app) as client:
        assert [client.get("/refresh").status_code for _ in range(3)] == [200, 200, 200]
        assert client.post("/rebuild").status_code == 200
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "@invalidates on GET /refresh does nothing" in warnings[0]


def test_cached_route_in_an_app_without_cache_manager_warns_once_at_first_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app = FastAPI()
    router = APIRouter(route_class=CachedRoute)
    calls = Counter[str]()

    @router.get("/items")
    @cache_config
    def items() -> dict[str, int]:
        calls["items"] += 1
        return {"n": calls["items"]}

    @router.get("/other")
    @cache_config
    def other() -> dict[str, bool]:
        return {"other": True}

    app.include_router(router)
    with TestClient(app) as client:
        assert cache_warnings(caplog) == [], "warned before any request"
        bodies = [client.get("/items").json() for _ in range(3)]
        after_items = cache_warnings(caplog)
        client.get("/other")
        client.get("/other")
    assert bodies == [{"n": 1}, {"n": 2}, {"n": 3}]
    # Once for the app, or once per route: never once per request.
    assert len(after_items) == 1, after_items
    warnings = cache_warnings(caplog)
    assert 1 <= len(warnings) <= 2, warnings
    assert len([message for message in warnings if "/other" in message]) <= 1, warnings


def test_a_correctly_wired_app_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app, _ = new_app()
    router = APIRouter(route_class=CachedRoute)

    @app.get("/items")
    @cache_config
    def items() -> dict[str, bool]:
        return {"items": True}

    @router.get("/things")
    @cache_config(ttl_seconds=10)
    def things() -> dict[str, bool]:
        return {"things": True}

    @router.post("/things")
    def add_thing() -> dict[str, bool]:
        return {"added": True}

    app.include_router(router, prefix="/v1")
    with TestClient(app) as client:
        assert [x_cache(client.get("/items")) for _ in range(2)] == ["MISS", "HIT"]
        assert [x_cache(client.get("/v1/things")) for _ in range(2)] == ["MISS", "HIT"]
        client.post("/v1/things")
        assert x_cache(client.get("/v1/things")) == "MISS"
    assert cache_warnings(caplog) == []


@pytest.mark.parametrize("where", ["endpoint", "dependency"])
def test_a_cached_get_that_reads_a_request_body_is_a_configuration_error(where: str) -> None:
    """No key covers a body: two callers sending different ones would share an entry."""
    app, _ = new_app()

    def owner_of(owner: str = Body(embed=True)) -> str:
        return owner

    with pytest.raises(ConfigurationError, match="reads a request body \\(owner\\)"):
        if where == "endpoint":

            @app.get("/search")
            @cache_config(ttl_seconds=60)
            def search(owner: str = Body(embed=True)) -> dict[str, str]:
                return {"results_of": owner}

        else:

            @app.get("/search")
            @cache_config(ttl_seconds=60)
            def search_with_dependency(owner: str = Depends(owner_of)) -> dict[str, str]:
                return {"results_of": owner}

        with TestClient(app):
            pass
