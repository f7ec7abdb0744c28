"""CachedRoute end to end, through TestClient / httpx, wired with ``init_app`` and with a router.

Most tests run twice: routes declared on the app after ``CacheManager.init_app(app)``, and routes declared on
``APIRouter(route_class=CachedRoute)`` then included with ``prefix="/v1"`` and a router-level dependency.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from intelligent_cache import (
    CachedResponse,
    CachedRoute,
    CacheManager,
    ConfigurationError,
    MemoryBackend,
    build_key,
    cache_config,
)

# Headers a HIT may legitimately add or change compared with the MISS that stored it.
CACHE_MARKERS = frozenset({"x-cache", "age", "cache-status"})


def without_markers(headers: httpx.Headers) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in headers.multi_items() if name.lower() not in CACHE_MARKERS]


class Boom(Exception):
    """An application error the app turns into a 500 with its own exception handler."""


class Harness:
    """A fresh app per test, with its routes on the app (``init_app``) or on an included router."""

    def __init__(self, manager: CacheManager, mode: str) -> None:
        self.manager = manager
        self.mode = mode
        self.calls: Counter[str] = Counter()
        self.app = FastAPI()
        manager.init_app(self.app)

        @self.app.exception_handler(Boom)
        async def boom_handler(request: Request, exc: Boom) -> JSONResponse:
            return JSONResponse({"error": "boom"}, status_code=500)

        if mode == "init_app":
            self.routes: Any = self.app
            self.prefix = ""
        else:
            self.routes = APIRouter(route_class=CachedRoute)
            self.prefix = "/v1"
        self._client: TestClient | None = None

    def router_dependency(self) -> None:
        self.calls["router-dependency"] += 1

    def _finish(self) -> None:
        if self.mode == "router" and self.routes is not None:
            self.app.include_router(self.routes, prefix="/v1", dependencies=[Depends(self.router_dependency)])
            self.routes = None

    def client(self) -> TestClient:
        if self._client is None:
            self._finish()
            self._client = TestClient(self.app, follow_redirects=False)
        return self._client

    def async_client(self) -> httpx.AsyncClient:
        self._finish()
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")

    def url(self, path: str) -> str:
        return self.prefix + path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client().get(self.url(path), **kwargs)

    def head(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client().head(self.url(path), **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client().request(method, self.url(path), **kwargs)

    def keys(self) -> list[str]:
        return sorted(asyncio.run(self.manager.service().list_keys()))


MODES = ["init_app", "router"]


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture
def make_harness(mode, clock, memory_backend) -> Callable[..., Harness]:
    def make(**manager_kwargs: Any) -> Harness:
        manager_kwargs.setdefault("clock", clock)
        backend = manager_kwargs.pop("backend", memory_backend)
        return Harness(CacheManager(backend, **manager_kwargs), mode)

    return make


@pytest.fixture
def harness(make_harness) -> Harness:
    return make_harness()


def x_cache(response: httpx.Response) -> str | None:
    return response.headers.get("x-cache")


# -- MISS then HIT -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_second_get_is_a_hit_with_identical_response(harness, kind):
    if kind == "async":

        @harness.routes.get("/items")
        @cache_config(ttl_seconds=60)
        async def list_items(page: int = 1):
            harness.calls["endpoint"] += 1
            return {"page": page, "items": ["a", "b"], "call": harness.calls["endpoint"]}

    else:

        @harness.routes.get("/items")
        @cache_config(ttl_seconds=60)
        def list_items_sync(page: int = 1):
            harness.calls["endpoint"] += 1
            return {"page": page, "items": ["a", "b"], "call": harness.calls["endpoint"]}

    first = harness.get("/items?page=2")
    second = harness.get("/items?page=2")

    assert (first.status_code, second.status_code) == (200, 200)
    assert (x_cache(first), x_cache(second)) == ("MISS", "HIT")
    assert first.json() == {"page": 2, "items": ["a", "b"], "call": 1}
    assert second.content == first.content
    assert without_markers(second.headers) == without_markers(first.headers)
    assert harness.calls["endpoint"] == 1


def test_hit_carries_its_age(harness, clock):
    @harness.routes.get("/items")
    @cache_config(ttl_seconds=60)
    async def list_items():
        return {}

    harness.get("/items")
    assert harness.get("/items").headers["age"] == "0"
    clock.advance(7.5)
    hit = harness.get("/items")
    assert x_cache(hit) == "HIT"
    assert hit.headers["age"] == "7"
    assert len(hit.headers.get_list("age")) == 1


def test_query_parameters_select_entries(harness):
    @harness.routes.get("/items")
    @cache_config
    async def list_items(page: int = 1, sort: str = "id"):
        harness.calls["endpoint"] += 1
        return {"page": page, "sort": sort}

    assert x_cache(harness.get("/items?page=1&sort=name")) == "MISS"
    assert x_cache(harness.get("/items?page=2&sort=name")) == "MISS"
    reordered = harness.get("/items?sort=name&page=1")
    assert x_cache(reordered) == "HIT"
    assert reordered.json() == {"page": 1, "sort": "name"}
    assert harness.get("/items?page=2&sort=name").json() == {"page": 2, "sort": "name"}
    assert harness.calls["endpoint"] == 2


def test_path_parameters_and_prefix_make_the_key(harness):
    @harness.routes.get("/spaces/{space_id}")
    @cache_config
    async def get_space(space_id: int):
        harness.calls["endpoint"] += 1
        return {"id": space_id}

    assert harness.get("/spaces/7").json() == {"id": 7}
    assert harness.get("/spaces/8").json() == {"id": 8}
    assert harness.get("/spaces/7").json() == {"id": 7}
    assert harness.calls["endpoint"] == 2
    expected = (
        ["GET:spaces:7", "GET:spaces:8"] if harness.mode == "init_app" else ["GET:v1:spaces:7", "GET:v1:spaces:8"]
    )
    assert harness.keys() == expected


def test_key_prefix_changes_the_stored_key(harness):
    @harness.routes.get("/items")
    @cache_config(key_prefix="catalog")
    async def list_items(page: int = 1):
        return {"page": page}

    assert x_cache(harness.get("/items?page=3")) == "MISS"
    assert x_cache(harness.get("/items?page=3")) == "HIT"
    expected = "catalog:GET:items:page=3" if harness.mode == "init_app" else "catalog:GET:v1:items:page=3"
    assert harness.keys() == [expected]


def test_router_dependency_runs_on_miss(clock, memory_backend):
    harness = Harness(CacheManager(memory_backend, clock=clock), "router")

    @harness.routes.get("/items")
    @cache_config
    async def list_items():
        harness.calls["endpoint"] += 1
        return {}

    assert x_cache(harness.get("/items")) == "MISS"
    assert harness.calls["router-dependency"] == 1
    assert harness.calls["endpoint"] == 1


# -- response shapes ---------------------------------------------------------------------------------------


class Item(BaseModel):
    id: int
    name: str


class StoredItem(Item):
    secret: str
    internal: str = Field(default="hidden", exclude=True)


def test_response_model_filters_before_storing(harness):
    @harness.routes.get("/items/{item_id}", response_model=Item)
    @cache_config
    async def get_item(item_id: int):
        harness.calls["endpoint"] += 1
        return StoredItem(id=item_id, name="spoon", secret="do-not-leak")

    @harness.routes.get("/raw/{item_id}", response_model=Item)
    @cache_config
    def get_raw(item_id: int):
        return {"id": item_id, "name": "fork", "secret": "do-not-leak"}

    for path, name in (("/items/1", "spoon"), ("/raw/2", "fork")):
        first = harness.get(path)
        second = harness.get(path)
        assert (x_cache(first), x_cache(second)) == ("MISS", "HIT")
        assert first.json() == second.json() == {"id": int(path[-1]), "name": name}
        assert b"do-not-leak" not in second.content
        assert b"hidden" not in second.content
    assert harness.calls["endpoint"] == 1


def test_response_model_exclusion_options_are_kept(harness):
    @harness.routes.get("/items/{item_id}", response_model=StoredItem, response_model_exclude={"secret"})
    @cache_config
    async def get_item(item_id: int):
        return StoredItem(id=item_id, name="spoon", secret="do-not-leak")

    first = harness.get("/items/1")
    second = harness.get("/items/1")
    assert x_cache(second) == "HIT"
    assert first.json() == second.json() == {"id": 1, "name": "spoon"}


@pytest.mark.parametrize(
    ("make", "content_type"),
    [
        (lambda n: JSONResponse({"n": n}, headers={"X-Custom": f"v{n}"}), "application/json"),
        (lambda n: PlainTextResponse(f"n={n}", headers={"X-Custom": f"v{n}"}), "text/plain; charset=utf-8"),
        (lambda n: HTMLResponse(f"<p>{n}</p>", headers={"X-Custom": f"v{n}"}), "text/html; charset=utf-8"),
        (
            lambda n: Response(f"<n>{n}</n>", media_type="application/xml", headers={"X-Custom": f"v{n}"}),
            "application/xml",
        ),
    ],
    ids=["json", "plain", "html", "xml"],
)
def test_endpoint_returning_a_response_keeps_its_headers_on_hit(harness, make, content_type):
    @harness.routes.get("/thing")
    @cache_config
    async def thing():
        harness.calls["endpoint"] += 1
        return make(harness.calls["endpoint"])

    first = harness.get("/thing")
    second = harness.get("/thing")
    assert (x_cache(first), x_cache(second)) == ("MISS", "HIT")
    assert second.headers["x-custom"] == "v1"
    assert second.headers["content-type"] == content_type
    assert second.content == first.content
    assert without_markers(second.headers) == without_markers(first.headers)


def test_response_parameter_headers_are_kept_on_hit(harness):
    @harness.routes.get("/thing")
    @cache_config
    async def thing(response: Response):
        response.headers["X-Request-Kind"] = "computed"
        return {"ok": True}

    harness.get("/thing")
    hit = harness.get("/thing")
    assert x_cache(hit) == "HIT"
    assert hit.headers["x-request-kind"] == "computed"


def test_no_duplicate_date_header_on_hit(harness):
    date = "Wed, 21 Oct 2015 07:28:00 GMT"

    @harness.routes.get("/dated")
    @cache_config
    async def dated():
        return PlainTextResponse("dated", headers={"Date": date})

    first = harness.get("/dated")
    assert first.headers.get_list("date") == [date]
    hit = harness.get("/dated")
    assert x_cache(hit) == "HIT"
    assert len(hit.headers.get_list("date")) <= 1
    # The stored headers drop Date: the server adds a fresh one to every response it sends.
    assert date not in hit.headers.get_list("date")
    key = harness.keys()[0]
    entry = asyncio.run(harness.manager.service().get(key))
    assert isinstance(entry, CachedResponse)
    assert all(name != b"date" for name, _ in entry.headers)


def test_background_tasks_run_on_miss_only(harness):
    @harness.routes.get("/bg")
    @cache_config
    async def with_background(response: Response):
        from starlette.background import BackgroundTasks

        tasks = BackgroundTasks()
        tasks.add_task(lambda: harness.calls.update(["background"]))
        return JSONResponse({"ok": True}, background=tasks)

    harness.get("/bg")
    harness.get("/bg")
    assert harness.calls["background"] == 1


# -- HEAD --------------------------------------------------------------------------------------------------


def declare_document(harness: Harness) -> None:
    @harness.routes.get("/doc")
    @cache_config
    async def document():
        harness.calls["endpoint"] += 1
        return {"text": "x" * 500}


def test_head_is_answered_from_the_get_entry(harness):
    declare_document(harness)
    get = harness.get("/doc")
    head = harness.head("/doc")
    assert head.status_code == 200
    assert x_cache(head) == "HIT"
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    assert without_markers(head.headers) == without_markers(get.headers)
    assert harness.calls["endpoint"] == 1


def test_head_on_a_cold_key(harness):
    declare_document(harness)
    head = harness.head("/doc")
    assert head.status_code == 200
    assert head.content == b""
    get = harness.get("/doc")
    assert x_cache(get) == "HIT"
    assert get.json() == {"text": "x" * 500}
    assert head.headers["content-length"] == str(len(get.content))
    assert harness.calls["endpoint"] == 1


# -- uncached routes ---------------------------------------------------------------------------------------


def declare_plain(routes: Any, decorate: bool, calls: Counter[str]) -> None:
    async def plain(item_id: int):
        calls["endpoint"] += 1
        return {"id": item_id, "call": calls["endpoint"]}

    if decorate:
        plain = cache_config(enabled=False)(plain)
    routes.get("/plain/{item_id}")(plain)


@pytest.mark.parametrize("decorate", [False, True], ids=["no-decorator", "enabled-false"])
def test_uncached_routes_behave_like_api_route(harness, decorate):
    declare_plain(harness.routes, decorate, harness.calls)
    reference = FastAPI()
    reference_calls: Counter[str] = Counter()
    reference_routes: Any = reference if harness.mode == "init_app" else APIRouter()
    declare_plain(reference_routes, decorate, reference_calls)
    if harness.mode == "router":
        reference.include_router(reference_routes, prefix="/v1")
    reference_client = TestClient(reference)

    for _ in range(2):
        response = harness.get("/plain/3")
        expected = reference_client.get(harness.url("/plain/3"))
        assert "x-cache" not in response.headers
        assert response.status_code == expected.status_code == 200
        assert response.content == expected.content
        assert response.headers.multi_items() == expected.headers.multi_items()
    assert harness.calls["endpoint"] == 2

    head = harness.head("/plain/3")
    expected_head = reference_client.head(harness.url("/plain/3"))
    assert expected_head.status_code == 405
    assert head.status_code == expected_head.status_code
    assert head.headers.get("allow") == expected_head.headers.get("allow")
    assert "x-cache" not in head.headers


def test_routes_declared_before_init_app_with_cache_config_refuse_init_app(clock, memory_backend):
    app = FastAPI()

    @app.get("/early")
    @cache_config
    async def early():
        return {}

    @app.get("/plain-uncached")
    async def plain():
        return {}

    with pytest.raises(ConfigurationError, match=r"GET /early .*route_class=CachedRoute"):
        CacheManager(memory_backend, clock=clock).init_app(app)


def test_routes_declared_after_init_app_are_cached(clock, memory_backend):
    app = FastAPI()

    @app.get("/early-uncached")
    async def early():
        return {}

    CacheManager(memory_backend, clock=clock).init_app(app)
    calls: Counter[str] = Counter()

    @app.get("/late")
    @cache_config
    async def late():
        calls["late"] += 1
        return {}

    client = TestClient(app)
    assert [x_cache(client.get("/late")) for _ in range(2)] == ["MISS", "HIT"]
    assert "x-cache" not in client.get("/early-uncached").headers
    assert calls["late"] == 1


# -- never stored ------------------------------------------------------------------------------------------


def test_http_exception_is_never_stored(harness):
    @harness.routes.get("/missing/{item_id}")
    @cache_config
    async def missing(item_id: int):
        harness.calls["endpoint"] += 1
        raise HTTPException(status_code=404, detail="no such item")

    for _ in range(2):
        response = harness.get("/missing/1")
        assert response.status_code == 404
        assert response.json() == {"detail": "no such item"}
        assert x_cache(response) != "HIT"
    assert harness.calls["endpoint"] == 2
    assert harness.keys() == []


def test_201_is_never_stored(harness):
    @harness.routes.get("/created", status_code=201)
    @cache_config
    async def created():
        harness.calls["endpoint"] += 1
        return {"call": harness.calls["endpoint"]}

    responses = [harness.get("/created") for _ in range(2)]
    assert [r.status_code for r in responses] == [201, 201]
    assert [r.json() for r in responses] == [{"call": 1}, {"call": 2}]
    assert [x_cache(r) for r in responses] == ["SKIP", "SKIP"]
    assert harness.keys() == []


def test_handled_exception_500_is_never_stored(harness):
    @harness.routes.get("/fails")
    @cache_config
    async def fails():
        harness.calls["endpoint"] += 1
        raise Boom()

    for _ in range(2):
        response = harness.get("/fails")
        assert response.status_code == 500
        assert response.json() == {"error": "boom"}
        assert x_cache(response) != "HIT"
    assert harness.calls["endpoint"] == 2
    assert harness.keys() == []


def test_set_cookie_is_never_stored_nor_replayed(harness):
    @harness.routes.get("/login-page")
    @cache_config
    async def login_page(response: Response):
        harness.calls["endpoint"] += 1
        response.set_cookie("csrf", f"token{harness.calls['endpoint']}")
        return {"call": harness.calls["endpoint"]}

    client = harness.client()
    for number in (1, 2, 3):
        client.cookies.clear()  # a cookie sent back would bypass the cache for another reason
        response = harness.get("/login-page")
        assert x_cache(response) == "SKIP"
        assert response.json() == {"call": number}
        assert response.headers["set-cookie"].startswith(f"csrf=token{number};")
    assert harness.keys() == []


def test_streaming_response_passes_through(harness):
    chunks = [b"chunk-%d;" % index for index in range(50)]

    @harness.routes.get("/stream")
    @cache_config
    async def stream():
        harness.calls["endpoint"] += 1

        async def generate():
            for chunk in chunks:
                yield chunk

        return StreamingResponse(generate(), media_type="text/plain", headers={"X-Stream": "yes"})

    for _ in range(2):
        response = harness.get("/stream")
        assert response.status_code == 200
        assert response.content == b"".join(chunks)
        assert response.headers["x-stream"] == "yes"
        assert x_cache(response) == "SKIP"
    assert harness.calls["endpoint"] == 2
    assert harness.keys() == []


def test_file_response_passes_through(harness, tmp_path):
    payload = bytes(range(256)) * 100
    path = tmp_path / "data.bin"
    path.write_bytes(payload)

    @harness.routes.get("/file")
    @cache_config
    async def file():
        harness.calls["endpoint"] += 1
        return FileResponse(path, media_type="application/octet-stream")

    for _ in range(2):
        response = harness.get("/file")
        assert response.status_code == 200
        assert response.content == payload
        assert response.headers["content-length"] == str(len(payload))
        assert x_cache(response) == "SKIP"
    assert harness.calls["endpoint"] == 2
    assert harness.keys() == []


def test_body_over_max_response_size_passes_through(make_harness):
    harness = make_harness(max_response_size=1000)
    body = b"z" * 5000

    @harness.routes.get("/big")
    @cache_config
    async def big():
        harness.calls["endpoint"] += 1
        return Response(body, media_type="application/octet-stream")

    for _ in range(2):
        response = harness.get("/big")
        assert response.content == body
        assert response.headers["content-length"] == "5000"
        assert x_cache(response) == "SKIP"
    assert harness.calls["endpoint"] == 2
    assert harness.keys() == []


# -- request-driven bypass ---------------------------------------------------------------------------------


def declare_counter(harness: Harness, **config: Any) -> None:
    @harness.routes.get("/counter")
    @cache_config(**config)
    async def counter():
        harness.calls["endpoint"] += 1
        return {"call": harness.calls["endpoint"]}


@pytest.mark.parametrize("value", ["no-cache", "no-store"])
def test_request_cache_control_is_never_served_from_the_cache(harness, value):
    declare_counter(harness)
    assert harness.get("/counter").json() == {"call": 1}
    response = harness.get("/counter", headers={"Cache-Control": value})
    assert response.json() == {"call": 2}
    assert x_cache(response) == "SKIP"


def test_request_no_store_is_not_stored(harness):
    declare_counter(harness)
    assert x_cache(harness.get("/counter", headers={"Cache-Control": "no-store"})) == "SKIP"
    assert harness.keys() == []
    assert x_cache(harness.get("/counter")) == "MISS"


def test_authorization_skips_without_vary_by(harness):
    declare_counter(harness)
    harness.get("/counter")
    for number in (2, 3):
        response = harness.get("/counter", headers={"Authorization": "Bearer secret"})
        assert response.json() == {"call": number}
        assert x_cache(response) == "SKIP"


def add_user_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def identify(request: Request, call_next):
        user = request.headers.get("x-user")
        if user is not None:
            request.state.user_id = user
        return await call_next(request)


def declare_profile(harness: Harness, vary_by: list[str]) -> None:
    @harness.routes.get("/me")
    @cache_config(vary_by=vary_by)
    async def me(request: Request):
        harness.calls["endpoint"] += 1
        user = getattr(request.state, "user_id", None)
        tenant = request.headers.get("x-tenant")
        return {"user": user, "tenant": tenant, "call": harness.calls["endpoint"]}


def test_vary_by_user_keeps_users_apart(harness):
    add_user_middleware(harness.app)
    declare_profile(harness, ["user_id"])

    alice = harness.get("/me", headers={"X-User": "alice"})
    bob = harness.get("/me", headers={"X-User": "bob"})
    anonymous = harness.get("/me")
    # No user_id: never a key shared by every anonymous caller, served uncached instead.
    assert [x_cache(r) for r in (alice, bob, anonymous)] == ["MISS", "MISS", "SKIP"]
    assert "detail=vary-missing" in anonymous.headers["cache-status"]
    assert alice.json() == {"user": "alice", "tenant": None, "call": 1}
    assert bob.json() == {"user": "bob", "tenant": None, "call": 2}
    assert anonymous.json()["user"] is None

    for _ in range(2):
        assert harness.get("/me", headers={"X-User": "bob"}).json() == bob.json()
        assert harness.get("/me", headers={"X-User": "alice"}).json() == alice.json()
        assert harness.get("/me").json()["user"] is None
    assert harness.calls["endpoint"] == 5


def test_vary_by_user_with_authorization_uses_the_cache(harness):
    add_user_middleware(harness.app)
    declare_profile(harness, ["user_id"])
    headers = {"X-User": "alice", "Authorization": "Bearer alice-token"}
    assert x_cache(harness.get("/me", headers=headers)) == "MISS"
    hit = harness.get("/me", headers=headers)
    assert x_cache(hit) == "HIT"
    assert hit.json()["user"] == "alice"
    other = harness.get("/me", headers={"X-User": "bob", "Authorization": "Bearer bob-token"})
    assert other.json()["user"] == "bob"


def test_vary_by_header_keeps_tenants_apart(harness):
    declare_profile(harness, ["header:X-Tenant"])
    acme = harness.get("/me", headers={"X-Tenant": "acme"})
    globex = harness.get("/me", headers={"x-tenant": "globex"})
    assert (acme.json()["tenant"], globex.json()["tenant"]) == ("acme", "globex")
    again = harness.get("/me", headers={"X-TENANT": "acme"})
    assert x_cache(again) == "HIT"
    assert again.json() == acme.json()
    none = harness.get("/me")
    assert none.json()["tenant"] is None
    empty = harness.get("/me", headers={"X-Tenant": ""})
    assert x_cache(empty) == "MISS"  # an empty value is not an absent header
    assert harness.calls["endpoint"] == 4


# -- TTL ---------------------------------------------------------------------------------------------------


def test_entry_expires_after_its_ttl(harness, clock):
    declare_counter(harness, ttl_seconds=30)
    assert x_cache(harness.get("/counter")) == "MISS"
    clock.advance(29)
    assert x_cache(harness.get("/counter")) == "HIT"
    clock.advance(2)
    expired = harness.get("/counter")
    assert x_cache(expired) == "MISS"
    assert expired.json() == {"call": 2}


def test_route_ttl_overrides_the_default(make_harness, clock):
    harness = make_harness(default_ttl=10)
    declare_counter(harness, ttl_seconds=100)
    harness.get("/counter")
    clock.advance(50)
    assert x_cache(harness.get("/counter")) == "HIT"
    clock.advance(51)
    assert x_cache(harness.get("/counter")) == "MISS"


def test_default_ttl_applies_without_route_ttl(make_harness, clock):
    harness = make_harness(default_ttl=10)
    declare_counter(harness)
    harness.get("/counter")
    clock.advance(9)
    assert x_cache(harness.get("/counter")) == "HIT"
    clock.advance(2)
    assert x_cache(harness.get("/counter")) == "MISS"


def test_disabled_manager_skips_everything(make_harness):
    harness = make_harness(enabled=False)
    declare_counter(harness)
    responses = [harness.get("/counter") for _ in range(3)]
    assert [x_cache(r) for r in responses] == ["SKIP"] * 3
    assert [r.json()["call"] for r in responses] == [1, 2, 3]
    assert harness.keys() == []


def test_several_apps_have_their_own_caches(clock):
    clients = []
    for name in ("one", "two"):
        app = FastAPI()
        CacheManager(MemoryBackend(clock=clock), clock=clock).init_app(app)

        @app.get("/name")
        @cache_config
        async def get_name(name: str = name):
            return {"app": name}

        clients.append(TestClient(app))
    assert [c.get("/name").json()["app"] for c in clients] == ["one", "two"]
    assert [c.get("/name").json()["app"] for c in clients] == ["one", "two"]


# -- writes invalidate -------------------------------------------------------------------------------------


def declare_spaces(harness: Harness, write_status: int = 200) -> None:
    routes = harness.routes

    def read(name: str):
        async def endpoint(request: Request):
            harness.calls[name] += 1
            return {"path": request.url.path, "query": str(request.url.query), "call": harness.calls[name]}

        return cache_config(endpoint)

    routes.get("/")(read("root"))
    routes.get("/spaces")(read("spaces"))
    routes.get("/spaces/{space_id}")(read("space"))
    routes.get("/spaces/{space_id}/items")(read("items"))
    routes.get("/spaces/{space_id}/items/{item_id}")(read("item"))
    routes.get("/spaces/{space_id}/members")(read("members"))

    async def write(request: Request):
        harness.calls["write"] += 1
        if request.query_params.get("fail") == "exception":
            raise Boom()
        if request.query_params.get("fail") == "http":
            raise HTTPException(status_code=409, detail="conflict")
        return JSONResponse({"written": request.url.path}, status_code=write_status)

    for path in ("/", "/spaces/{space_id}", "/spaces/{space_id}/items", "/spaces/{space_id}/items/{item_id}"):
        routes.api_route(path, methods=["POST", "PUT", "PATCH", "DELETE"])(write)


READS = [
    "/",
    "/spaces",
    "/spaces/1",
    "/spaces/2",
    "/spaces/1/items",
    "/spaces/1/items?page=2",
    "/spaces/1/items/2",
    "/spaces/1/items/3",
    "/spaces/1/items/7",
    "/spaces/1/members",
    "/spaces/2/items",
]


def warm(harness: Harness) -> None:
    for path in READS:
        assert x_cache(harness.get(path)) == "MISS", path
    for path in READS:
        assert x_cache(harness.get(path)) == "HIT", path


def states(harness: Harness) -> dict[str, str | None]:
    return {path: x_cache(harness.get(path)) for path in READS}


def expect_invalidated(harness: Harness, invalidated: set[str]) -> dict[str, str]:
    if invalidated and harness.mode == "router":
        invalidated = {*invalidated, "/"}  # "/" is /v1 there: an ancestor of every written path below it
    return {path: "MISS" if path in invalidated else "HIT" for path in READS}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_successful_write_invalidates_its_path_subtree_and_ancestors(harness, method):
    declare_spaces(harness)
    warm(harness)
    response = harness.request(method, "/spaces/1/items")
    assert response.status_code == 200
    assert states(harness) == expect_invalidated(
        harness,
        {
            "/spaces/1/items",
            "/spaces/1/items?page=2",
            "/spaces/1/items/2",
            "/spaces/1/items/3",
            "/spaces/1/items/7",
            "/spaces/1",
            "/spaces",
        },
    )


@pytest.mark.parametrize("status", [201, 202, 204])
def test_any_2xx_write_invalidates(harness, status):
    declare_spaces(harness, write_status=status)
    warm(harness)
    assert harness.request("POST", "/spaces/1/items").status_code == status
    assert x_cache(harness.get("/spaces/1/items?page=2")) == "MISS"
    assert x_cache(harness.get("/spaces/2/items")) == "HIT"


def test_invalidated_read_is_recomputed_with_fresh_data(harness):
    declare_spaces(harness)
    first = harness.get("/spaces/1/items?page=2").json()
    harness.request("POST", "/spaces/1/items")
    second = harness.get("/spaces/1/items?page=2").json()
    assert second["call"] == first["call"] + 1
    assert x_cache(harness.get("/spaces/1/items?page=2")) == "HIT"


@pytest.mark.parametrize(
    ("method", "path", "invalidated"),
    [
        pytest.param(
            "PATCH",
            "/spaces/1/items/2",
            {"/spaces/1/items/2", "/spaces/1/items", "/spaces/1/items?page=2", "/spaces/1", "/spaces"},
            id="patch-item",
        ),
        pytest.param(
            "DELETE",
            "/spaces/1",
            {
                "/spaces/1",
                "/spaces/1/items",
                "/spaces/1/items?page=2",
                "/spaces/1/items/2",
                "/spaces/1/items/3",
                "/spaces/1/items/7",
                "/spaces/1/members",
                "/spaces",
            },
            id="delete-space",
        ),
    ],
)
def test_readme_invalidation_table(harness, method, path, invalidated):
    declare_spaces(harness)
    warm(harness)
    assert harness.request(method, path).status_code == 200
    assert states(harness) == expect_invalidated(harness, invalidated)


def test_write_to_the_root_invalidates_the_root_only(clock, memory_backend):
    # README: "POST /  ->  / only; everything else still cached". The root is nobody's ancestor.
    harness = Harness(CacheManager(memory_backend, clock=clock), "init_app")
    declare_spaces(harness)
    warm(harness)
    assert harness.request("POST", "/").status_code == 200
    assert states(harness) == expect_invalidated(harness, {"/"})


@pytest.mark.parametrize("fail", ["http", "exception"])
def test_failed_write_invalidates_nothing(harness, fail):
    declare_spaces(harness)
    warm(harness)
    response = harness.request("POST", f"/spaces/1/items?fail={fail}")
    assert response.status_code == (409 if fail == "http" else 500)
    assert harness.calls["write"] == 1
    assert states(harness) == expect_invalidated(harness, set())


def test_write_validation_error_invalidates_nothing(harness):
    declare_spaces(harness)

    class Payload(BaseModel):
        name: str

    @harness.routes.post("/spaces/{space_id}/items/{item_id}/rename")
    async def rename(space_id: int, item_id: int, payload: Payload):
        return {"ok": True}

    warm(harness)
    assert harness.request("POST", "/spaces/1/items/2/rename", json={"wrong": 1}).status_code == 422
    assert states(harness) == expect_invalidated(harness, set())


def test_write_on_a_route_with_enabled_false_still_invalidates(harness):
    # README: routes without @cache_config or with enabled=False are left as FastAPI builds them,
    # "apart from that invalidation on writes".
    declare_spaces(harness)

    @harness.routes.post("/spaces/{space_id}/archive")
    @cache_config(enabled=False)
    async def archive(space_id: int):
        return {"archived": space_id}

    warm(harness)
    assert harness.request("POST", "/spaces/1/archive").status_code == 200
    assert x_cache(harness.get("/spaces/1")) == "MISS"
    assert x_cache(harness.get("/spaces/2")) == "HIT"


def test_reads_and_heads_never_invalidate(harness):
    declare_spaces(harness)
    warm(harness)
    for _ in range(3):
        harness.get("/spaces/1/items")
        harness.head("/spaces/1/items")
    assert states(harness) == expect_invalidated(harness, set())


# -- backend failures --------------------------------------------------------------------------------------


class FailingBackend(MemoryBackend):
    """Every call fails, as a backend whose server is down would."""

    async def get(self, key):
        raise ConnectionError("backend down")

    async def set(self, key, value, ttl):
        raise ConnectionError("backend down")

    async def delete(self, key):
        raise ConnectionError("backend down")

    async def fetch(self, key, generation_keys):
        raise ConnectionError("backend down")

    async def bump(self, generation_keys):
        raise ConnectionError("backend down")

    async def scan(self, pattern="*", cursor=0, count=100):
        raise ConnectionError("backend down")

    async def clear(self, pattern=None):
        raise ConnectionError("backend down")

    async def acquire_lock(self, name, ttl):
        raise ConnectionError("backend down")

    async def release_lock(self, name, token):
        raise ConnectionError("backend down")


class FailingWrites(MemoryBackend):
    """Reads work, stores and invalidations fail."""

    async def set(self, key, value, ttl):
        raise TimeoutError("write timed out")

    async def bump(self, generation_keys):
        raise TimeoutError("write timed out")


def test_backend_down_serves_uncached(make_harness, clock, caplog):
    harness = make_harness(backend=FailingBackend(clock=clock))
    declare_spaces(harness)
    with caplog.at_level(logging.WARNING, logger="intelligent_cache"):
        for number in (1, 2, 3):
            response = harness.get("/spaces/1?x=1")
            assert response.status_code == 200
            assert response.json() == {"path": harness.url("/spaces/1"), "query": "x=1", "call": number}
            assert x_cache(response) == "SKIP"
        write = harness.request("POST", "/spaces/1")
    assert write.status_code == 200
    assert write.json() == {"written": harness.url("/spaces/1")}
    stats = harness.manager.stats
    assert stats.errors >= 4
    assert stats.invalidation_errors == 1
    assert stats.hits == stats.misses == 0
    assert harness.manager.degraded
    assert any("backend" in record.getMessage() for record in caplog.records)


def test_failed_stores_and_invalidations_are_not_fatal(make_harness, clock):
    harness = make_harness(backend=FailingWrites(clock=clock))
    declare_spaces(harness)
    for number in (1, 2):
        response = harness.get("/spaces/1")
        assert response.json()["call"] == number
        assert x_cache(response) == "SKIP"
    assert harness.request("DELETE", "/spaces/1").status_code == 200
    assert harness.manager.stats.errors >= 3
    assert harness.manager.stats.invalidation_errors == 1


async def test_corrupt_entry_is_a_miss_then_replaced(make_harness, memory_backend):
    harness = make_harness()
    declare_spaces(harness)
    path = harness.url("/spaces/1/items")
    key = build_key("GET", path, b"page=2")
    await memory_backend.set(key, b"garbage", 60)

    async with harness.async_client() as client:
        first = await client.get(path + "?page=2")
        assert first.status_code == 200
        assert first.json()["call"] == 1
        assert x_cache(first) == "MISS"
        assert harness.manager.stats.corrupt == 1
        second = await client.get(path + "?page=2")
        assert x_cache(second) == "HIT"
        assert second.content == first.content
    assert harness.manager.stats.corrupt == 1


async def test_foreign_value_under_a_key_is_a_miss(make_harness):
    harness = make_harness()
    declare_spaces(harness)
    path = harness.url("/spaces/1")
    await harness.manager.service().set(build_key("GET", path), {"not": "a response"}, ttl=60)
    async with harness.async_client() as client:
        first = await client.get(path)
        assert first.status_code == 200
        assert first.json()["path"] == path
        assert x_cache(first) == "MISS"
        assert x_cache(await client.get(path)) == "HIT"
