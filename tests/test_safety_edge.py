"""Hostile-client attacks on ``CacheManager(edge=True)`` and the fast path (``find_hit``).

The edge answers a fresh HIT before FastAPI's ``__call__``, the app's middleware
and its router run. What the README promises for it ("Edge HITs", "Who may
share an entry", "Safety"):

- one caller's data is never served to another (credentials in every form
  FastAPI offers keep a request off shared entries; declared headers and
  cookies are keyed; an entry answers only its own host);
- the cache never turns a request into a 500;
- only requests the fast path would answer anyway qualify: an edge HIT answers
  what the normal path would have answered, with the same bytes (GZip being
  the one documented difference: an edge HIT is sent uncompressed).

Most tests here are differential: the same app is built with ``edge=False``
and ``edge=True`` and driven with the same requests; the edge must never
answer a request the normal path refuses or answers differently. The README
says the edge skips "your middleware" (logging, sessions, rate limiting); a
demanding user still expects that a middleware which *refuses* a request or
*changes which response it gets* is not bypassed, so those tests accept either
behaviour a fix could choose: the request reaches the middleware, or
``init_app``/start-up refuses ``edge=True`` for such an app with a
``ConfigurationError``.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import PlainTextResponse
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPBasic,
    HTTPBearer,
    HTTPDigest,
    OAuth2AuthorizationCodeBearer,
    OAuth2PasswordBearer,
    OpenIdConnect,
)
from fastapi.security.base import SecurityBase
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Host
from starlette.types import ASGIApp, Receive, Scope, Send

from intelligent_cache import CachedRoute, CacheManager, ConfigurationError, MemoryBackend, cache_config

Build = Callable[[bool], FastAPI]
Step = tuple[str, str, dict[str, str]]


def new_app(edge: bool, **options: Any) -> tuple[FastAPI, CacheManager, dict[str, int]]:
    """An app with a memory-backed manager (``edge`` on or off) and a call counter."""
    app_options = options.pop("app", {})
    app = FastAPI(**app_options)
    manager = CacheManager(MemoryBackend(), edge=edge, **options)
    manager.init_app(app)
    return app, manager, {}


def bump(seen: dict[str, int], name: str) -> int:
    seen[name] = seen.get(name, 0) + 1
    return seen[name]


@contextmanager
def started(app: FastAPI, **options: Any) -> Iterator[TestClient]:
    with TestClient(app, **options) as client:
        yield client


def drive(app: FastAPI, steps: Sequence[Step], **options: Any) -> list[tuple[int, bytes, str | None]]:
    results = []
    with started(app, **options) as client:
        for method, url, headers in steps:
            response = client.request(method, url, headers=headers, follow_redirects=False)
            results.append((response.status_code, response.content, response.headers.get("x-cache")))
    return results


def same_with_and_without_edge(
    build: Build, steps: Sequence[Step], **options: Any
) -> list[tuple[int, bytes, str | None]]:
    """Drive both apps; every answer (status, body, X-Cache) must be the same."""
    normal = drive(build(False), steps, **options)
    edged = drive(build(True), steps, **options)
    for step, without, with_edge in zip(steps, normal, edged, strict=True):
        assert with_edge == without, f"{step}: edge answered {with_edge}, the normal path {without}"
    return edged


def refused_or_edge_refused(build: Callable[[], FastAPI], run: Callable[[TestClient], None]) -> None:
    """Run ``run`` against the app; building or starting it may instead refuse edge=True."""
    try:
        app = build()
        with TestClient(app) as client:
            run(client)
    except ConfigurationError:
        return


async def asgi(app: ASGIApp, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One raw ASGI request: status, headers, body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], list(start.get("headers", [])), body


def http_scope(path: str = "/", *, headers: Sequence[tuple[bytes, bytes]] = (), **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


def x_cache(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    return next((value for name, value in headers if name == b"x-cache"), None)


# -- credentials ---------------------------------------------------------------


def plain_build(edge: bool) -> FastAPI:
    app, _, seen = new_app(edge)

    @app.get("/data")
    @cache_config(ttl_seconds=60)
    async def data() -> dict[str, int]:
        return {"computed": bump(seen, "data")}

    return app


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer alice"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Proxy-Authorization": "Basic YWxpY2U6cHc="},
        {"Cookie": "session=alice"},
        {"Cookie": "anything=1"},
        {"Cookie": ""},
        {"Cookie": "a=1", "Authorization": "x"},
    ],
    ids=["bearer", "basic", "proxy", "session-cookie", "any-cookie", "empty-cookie", "both"],
)
def test_a_credentialed_request_never_gets_the_anonymous_entry_at_the_edge(headers: dict[str, str]) -> None:
    """README: a request carrying a credential the key does not cover only uses a shareable entry."""
    steps = [("GET", "/data", {}), ("GET", "/data", {}), ("GET", "/data", headers), ("GET", "/data", {})]
    results = same_with_and_without_edge(plain_build, steps)
    assert [result[2] for result in results] == ["MISS", "HIT", "SKIP", "HIT"]
    assert json.loads(results[2][1]) == {"computed": 2}  # computed for the credentialed caller


class CustomScheme(SecurityBase):
    """A security scheme of its own kind: the cache cannot know what it reads."""

    def __init__(self) -> None:
        self.model = APIKeyHeader(name="x-custom").model
        self.scheme_name = "custom"

    async def __call__(self, request: Request) -> str:
        value = request.headers.get("x-custom")
        if not value:
            raise HTTPException(403, "custom")
        return value


SCHEMES: dict[str, tuple[Callable[[], Any], dict[str, str], str]] = {
    "api-key-header": (lambda: APIKeyHeader(name="X-API-Key"), {"X-API-Key": "k"}, ""),
    "api-key-cookie": (lambda: APIKeyCookie(name="key"), {"Cookie": "key=k"}, ""),
    "api-key-query": (lambda: APIKeyQuery(name="key"), {}, "?key=k"),
    "http-bearer": (HTTPBearer, {"Authorization": "Bearer k"}, ""),
    "http-basic": (HTTPBasic, {"Authorization": "Basic YTpi"}, ""),
    "http-digest": (HTTPDigest, {"Authorization": "Digest k"}, ""),
    "oauth2-password": (lambda: OAuth2PasswordBearer(tokenUrl="/token"), {"Authorization": "Bearer k"}, ""),
    "oauth2-code": (
        lambda: OAuth2AuthorizationCodeBearer(authorizationUrl="/auth", tokenUrl="/token"),
        {"Authorization": "Bearer k"},
        "",
    ),
    "openid": (lambda: OpenIdConnect(openIdConnectUrl="/oidc"), {"Authorization": "Bearer k"}, ""),
    "custom": (CustomScheme, {"X-Custom": "k"}, ""),
}


def secured_build(scheme_name: str, level: str, *, public: bool) -> Build:
    make_scheme = SCHEMES[scheme_name][0]

    def build(edge: bool) -> FastAPI:
        scheme = make_scheme()
        guard = [Depends(scheme)]
        app_options = {"dependencies": guard} if level == "app" else {}
        app, _, seen = new_app(edge, app=app_options)
        config = cache_config(ttl_seconds=60, public=public)
        if level in ("route", "param", "app"):
            if level == "param":

                @app.get("/secret")
                @config
                async def secret_param(credential: Annotated[Any, Depends(scheme)]) -> dict[str, int]:
                    return {"computed": bump(seen, "secret")}

            else:

                @app.get("/secret", dependencies=guard if level == "route" else None)
                @config
                async def secret_route() -> dict[str, int]:
                    return {"computed": bump(seen, "secret")}

        else:
            router = APIRouter(route_class=CachedRoute, dependencies=guard if level == "router" else None)

            @router.get("/secret")
            @config
            async def secret_router() -> dict[str, int]:
                return {"computed": bump(seen, "secret")}

            app.include_router(router, dependencies=guard if level == "include" else None)
        return app

    return build


@pytest.mark.parametrize("public", [True, False], ids=["public", "private"])
@pytest.mark.parametrize("level", ["route", "param", "router", "include", "app"])
@pytest.mark.parametrize("scheme_name", list(SCHEMES))
def test_a_security_scheme_at_any_level_is_never_bypassed_at_the_edge(
    scheme_name: str, level: str, public: bool
) -> None:
    """README: dependencies run on a HIT, before the lookup; routes with dependencies are never edge HITs.

    An authorized caller fills the entry (``public=True`` lets it be stored);
    an anonymous caller must still be refused, exactly as without the edge.
    """
    _, credential, query = SCHEMES[scheme_name]
    authorized = ("GET", "/secret" + query, credential)
    anonymous = ("GET", "/secret", {})
    results = same_with_and_without_edge(
        secured_build(scheme_name, level, public=public), [authorized, authorized, anonymous, anonymous, authorized]
    )
    assert results[0][0] == 200 and results[2][0] in (401, 403) and results[3][0] in (401, 403)


@pytest.mark.parametrize("scheme_name", ["api-key-header", "http-bearer", "api-key-cookie"])
def test_skip_dependencies_on_hit_with_a_security_scheme_never_serves_the_anonymous(scheme_name: str) -> None:
    """A fast-path route (skip_dependencies_on_hit) whose scheme errors: only authorized callers compute."""
    make_scheme, credential, _ = SCHEMES[scheme_name]

    def build(edge: bool) -> FastAPI:
        app, _, seen = new_app(edge)

        @app.get("/s", dependencies=[Depends(make_scheme())])
        @cache_config(ttl_seconds=60, skip_dependencies_on_hit=True)
        async def s() -> dict[str, int]:
            return {"computed": bump(seen, "s")}

        return app

    steps = [("GET", "/s", credential), ("GET", "/s", credential), ("GET", "/s", {}), ("GET", "/s", {})]
    results = same_with_and_without_edge(build, steps)
    assert [result[0] for result in results][2:] == [results[2][0]] * 2 and results[2][0] in (401, 403)


def test_a_dependency_added_to_the_app_router_later_is_not_bypassed_at_the_edge() -> None:
    """A guard appended to ``app.router.dependencies`` after the routes: the edge does what FastAPI does.

    (FastAPI 0.165 applies router dependencies when a route is added, so this one guards nothing either way.)
    """

    def build(edge: bool) -> FastAPI:
        app, _, seen = new_app(edge)

        @app.get("/late")
        @cache_config(ttl_seconds=60, public=True)
        async def late() -> dict[str, int]:
            return {"computed": bump(seen, "late")}

        return app

    def guarded(edge: bool) -> FastAPI:
        app = build(edge)
        app.router.dependencies.append(Depends(APIKeyHeader(name="X-Key")))
        return app

    steps = [("GET", "/late", {"X-Key": "k"}), ("GET", "/late", {"X-Key": "k"}), ("GET", "/late", {})]
    same_with_and_without_edge(guarded, steps)


# -- declared inputs and vary sources ------------------------------------------


def declared_build(edge: bool) -> FastAPI:
    # UserFromHeader only feeds a vary source, whose routes the edge never answers: safe to skip, and named.
    app, _, _ = new_app(edge, edge_skip_middleware=["UserFromHeader"])

    @app.get("/alias")
    @cache_config(ttl_seconds=60)
    async def alias(tenant: str | None = Header(None, alias="X-Tenant")) -> dict[str, str | None]:
        return {"tenant": tenant}

    @app.get("/underscore")
    @cache_config(ttl_seconds=60)
    async def underscore(x_tenant: str | None = Header(None, convert_underscores=False)) -> dict[str, str | None]:
        return {"tenant": x_tenant}

    @app.get("/cookie")
    @cache_config(ttl_seconds=60)
    async def cookie(theme: str | None = Cookie(None)) -> dict[str, str | None]:
        return {"theme": theme}

    @app.get("/vary")
    @cache_config(ttl_seconds=60, vary_by=["header:X-Region"])
    async def vary(request: Request) -> dict[str, str | None]:
        return {"region": request.headers.get("x-region")}

    def tenant_dep(x_tenant: str | None = Header(None)) -> str | None:
        return x_tenant

    @app.get("/dep")
    @cache_config(ttl_seconds=60, skip_dependencies_on_hit=True)
    async def dep(tenant: str | None = Depends(tenant_dep)) -> dict[str, str | None]:
        return {"tenant": tenant}

    @app.get("/state")
    @cache_config(ttl_seconds=60, vary_by=["user_id"])
    async def state(request: Request) -> dict[str, str | None]:
        return {"user": getattr(request.state, "user_id", None)}

    app.add_middleware(UserFromHeader)
    return app


class UserFromHeader:
    """Sets ``request.state.user_id`` from ``X-User`` (pure ASGI): a vary source only middleware knows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            user = dict(scope["headers"]).get(b"x-user")
            if user is not None:
                scope.setdefault("state", {})["user_id"] = user.decode()
        await self.app(scope, receive, send)


@pytest.mark.parametrize(
    ("path", "header", "values"),
    [
        ("/alias", "X-Tenant", ["a", "b", None]),
        ("/underscore", "x_tenant", ["a", "b", None]),
        ("/cookie", "Cookie", ["theme=a", "theme=b", None]),
        ("/vary", "X-Region", ["a", "b", None]),
        ("/dep", "X-Tenant", ["a", "b", None]),
        ("/state", "X-User", ["a", "b"]),
    ],
)
def test_declared_inputs_never_get_another_callers_variant_at_the_edge(
    path: str, header: str, values: list[str | None]
) -> None:
    """README: declared Header()/Cookie() parameters (any alias) and vary_by sources are keyed."""
    steps: list[Step] = []
    for value in values + values:
        steps.append(("GET", path, {} if value is None else {header: value}))
    results = same_with_and_without_edge(declared_build, steps)
    for (_, _, headers), (status, body, _) in zip(steps, results, strict=True):
        sent = next(iter(headers.values()), None)
        got = next(iter(json.loads(body).values()))
        assert status == 200
        assert got == (None if sent is None else sent.removeprefix("theme="))


# -- hosts ---------------------------------------------------------------------


def host_build(edge: bool, **options: Any) -> FastAPI:
    app, _, seen = new_app(edge, **options)

    @app.get("/where")
    @cache_config(ttl_seconds=60)
    async def where(request: Request) -> dict[str, object]:
        return {"base": str(request.base_url), "computed": bump(seen, "where")}

    return app


@pytest.mark.parametrize("key_by_host", [False, True])
def test_a_forged_host_never_gets_nor_poisons_another_hosts_entry(key_by_host: bool) -> None:
    """README: an entry answers only requests for the scheme://host it was computed for."""
    good, evil = {"Host": "good.example"}, {"Host": "evil.example"}
    steps = [("GET", "/where", good), ("GET", "/where", good), ("GET", "/where", evil), ("GET", "/where", evil)]
    steps += [("GET", "/where", good)]
    results = same_with_and_without_edge(lambda edge: host_build(edge, key_by_host=key_by_host), steps)
    for (_, _, headers), (_, body, _) in zip(steps, results, strict=True):
        assert json.loads(body)["base"] == f"http://{headers['Host']}/"


@pytest.mark.parametrize("edge", [False, True])
async def test_duplicate_host_headers_never_poison_the_entry_others_get(edge: bool) -> None:
    """Starlette (request.url, TrustedHostMiddleware) reads the first Host; the entry must be bound to it.

    A hostile client sends ``Host: evil`` then ``Host: good``: the endpoint
    computes links for ``evil``; that response must never be stored as the
    entry ``good`` callers get.
    """
    app = host_build(edge)
    warm = http_scope("/where", query_string=b"warm") | {"headers": [(b"host", b"good.example")]}
    assert (await asgi(app, warm))[0] == 200  # the key secret is known from now on: the fast path runs
    forged = http_scope("/where") | {"headers": [(b"host", b"evil.example"), (b"host", b"good.example")]}
    status, _, body = await asgi(app, forged)
    assert status == 200 and json.loads(body)["base"] == "http://evil.example/"
    for _ in range(2):
        status, _, body = await asgi(app, http_scope("/where") | {"headers": [(b"host", b"good.example")]})
        assert status == 200 and json.loads(body)["base"] == "http://good.example/"


def trusted_build(edge: bool) -> FastAPI:
    app = host_build(edge)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["good.example"])
    return app


async def test_trusted_host_middleware_is_not_bypassed_by_duplicate_host_headers() -> None:
    """README: TrustedHostMiddleware remains the first line of defence; the edge must not answer what it refuses."""
    for edge in (False, True):
        app = trusted_build(edge)
        good = http_scope("/where") | {"headers": [(b"host", b"good.example")]}
        for _ in range(2):
            assert (await asgi(app, dict(good)))[0] == 200
        forged = http_scope("/where") | {"headers": [(b"host", b"evil.example"), (b"host", b"good.example")]}
        status, headers, _ = await asgi(app, forged)
        assert status == 400, f"edge={edge}: {status} {x_cache(headers)!r}"


def test_trusted_host_middleware_is_not_bypassed_by_the_case_or_port_of_the_host() -> None:
    steps = [("GET", "/where", {"Host": "good.example"})] * 2
    steps += [("GET", "/where", {"Host": host}) for host in ("GOOD.EXAMPLE", "good.example:80", "evil.example", "")]
    same_with_and_without_edge(trusted_build, steps)


def test_https_redirect_middleware_is_not_bypassed() -> None:
    def build(edge: bool) -> FastAPI:
        app = host_build(edge)
        app.add_middleware(HTTPSRedirectMiddleware)
        return app

    steps = [("GET", "https://testserver/where", {})] * 2 + [("GET", "http://testserver/where", {})]
    results = same_with_and_without_edge(build, steps)
    assert results[1][2] == "HIT" and results[2][0] in (307, 308)


def test_forwarded_headers_do_not_change_what_the_edge_answers() -> None:
    """``X-Forwarded-*`` sent by a client are not read by the cache (no proxy middleware here)."""
    forwarded = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example"}
    steps = [("GET", "/where", {}), ("GET", "/where", {}), ("GET", "/where", forwarded)]
    same_with_and_without_edge(host_build, steps)


# -- routing -------------------------------------------------------------------


@pytest.mark.parametrize("key_by_host", [False, True])
def test_host_routing_never_answers_one_hosts_path_with_another_hosts_route(key_by_host: bool) -> None:
    """Starlette ``Host`` routing: the same path is a guarded route on one host and a public one on another.

    The edge learns ``/report`` from the public host's route; a request for the
    admin host must still go through the admin route's guard.
    """

    def build(edge: bool) -> FastAPI:
        app, _, _ = new_app(edge, key_by_host=key_by_host)
        admin = APIRouter(route_class=CachedRoute, dependencies=[Depends(APIKeyHeader(name="X-Admin"))])
        www = APIRouter(route_class=CachedRoute)

        @admin.get("/report")
        @cache_config(ttl_seconds=60, public=True)
        async def admin_report() -> dict[str, str]:
            return {"report": "admin only"}

        @www.get("/report")
        @cache_config(ttl_seconds=60)
        async def www_report() -> dict[str, str]:
            return {"report": "public"}

        app.router.routes.append(Host("admin.example", admin))
        app.router.routes.append(Host("www.example", www))
        return app

    admin_ok = ("GET", "/report", {"Host": "admin.example", "X-Admin": "k"})
    anonymous_admin = ("GET", "/report", {"Host": "admin.example"})
    www = ("GET", "/report", {"Host": "www.example"})
    steps = [admin_ok, admin_ok, www, www, www, anonymous_admin, anonymous_admin]
    results = same_with_and_without_edge(build, steps)
    assert results[-1][0] in (401, 403)


def test_one_manager_on_two_apps_answers_each_app_only_with_its_own_routes() -> None:
    """README: a manager is "the cache of one (or several) FastAPI apps"; each app's edge must know only its routes."""

    def build(edge: bool) -> tuple[FastAPI, FastAPI]:
        manager = CacheManager(MemoryBackend(), edge=edge)
        first, second = FastAPI(), FastAPI()
        manager.init_app(first)
        manager.init_app(second)

        @first.get("/only-first")
        @cache_config(ttl_seconds=60)
        async def only_first() -> dict[str, str]:
            return {"app": "first"}

        @second.get("/only-second")
        @cache_config(ttl_seconds=60)
        async def only_second() -> dict[str, str]:
            return {"app": "second"}

        return first, second

    for edge in (False, True):
        first, second = build(edge)
        with TestClient(first) as one, TestClient(second) as two:
            for _ in range(2):
                assert one.get("/only-first").json() == {"app": "first"}
                assert two.get("/only-second").json() == {"app": "second"}
            assert two.get("/only-first").status_code == 404, f"edge={edge}"
            assert one.get("/only-second").status_code == 404, f"edge={edge}"


def test_two_apps_with_their_own_managers_learn_their_own_paths() -> None:
    apps = []
    for name in ("a", "b"):
        app, _, _ = new_app(True)

        @app.get(f"/{name}")
        @cache_config(ttl_seconds=60)
        async def endpoint(name: str = name) -> dict[str, str]:
            return {"app": name}

        apps.append(app)
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        assert [a.get("/a").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        assert b.get("/a").status_code == 404
        assert [b.get("/b").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        assert a.get("/b").status_code == 404


def test_a_route_removed_after_being_learned_is_no_longer_answered() -> None:
    for edge in (False, True):
        app, _, _ = new_app(edge)

        @app.get("/gone")
        @cache_config(ttl_seconds=60)
        async def gone() -> dict[str, bool]:
            return {"here": True}

        with TestClient(app) as client:
            assert [client.get("/gone").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
            app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", "") != "/gone"]
            assert client.get("/gone").status_code == 404, f"edge={edge}"


def test_a_route_replaced_by_a_guarded_one_after_being_learned_is_guarded() -> None:
    for edge in (False, True):
        app, _, _ = new_app(edge)

        @app.get("/swap")
        @cache_config(ttl_seconds=60, public=True)
        async def swap() -> dict[str, str]:
            return {"data": "open"}

        with TestClient(app) as client:
            assert [client.get("/swap").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
            app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", "") != "/swap"]

            @app.get("/swap", dependencies=[Depends(HTTPBearer())])
            @cache_config(ttl_seconds=60, public=True)
            async def swap_guarded() -> dict[str, str]:
                return {"data": "guarded"}

            assert client.get("/swap").status_code in (401, 403), f"edge={edge}"


def routing_build(edge: bool) -> FastAPI:
    app, _, _ = new_app(edge)

    @app.get("/users/me")
    @cache_config(ttl_seconds=60)
    async def me() -> dict[str, str]:
        return {"route": "me"}

    @app.get("/users/{user_id}")
    @cache_config(ttl_seconds=60)
    async def user(user_id: str) -> dict[str, str]:
        return {"route": "user", "id": user_id}

    @app.get("/items/{item_id}")
    @cache_config(ttl_seconds=60)
    async def item(item_id: str) -> dict[str, str]:
        return {"route": "item", "id": item_id}

    @app.get("/items/special")
    @cache_config(ttl_seconds=60)
    async def special() -> dict[str, str]:
        return {"route": "special"}

    @app.get("/n/{number:int}")
    @cache_config(ttl_seconds=60)
    async def number(number: int) -> dict[str, object]:
        return {"route": "int", "n": number}

    @app.get("/n/{text}")
    @cache_config(ttl_seconds=60)
    async def text(text: str) -> dict[str, object]:
        return {"route": "str", "t": text}

    @app.get("/a/b")
    @cache_config(ttl_seconds=60)
    async def a_b() -> dict[str, str]:
        return {"route": "a/b"}

    @app.get("/files/{name:path}")
    @cache_config(ttl_seconds=60)
    async def files(name: str) -> dict[str, str]:
        return {"route": "files", "name": name}

    @app.get("/slash/")
    @cache_config(ttl_seconds=60)
    async def slash() -> dict[str, str]:
        return {"route": "slash"}

    @app.head("/headed")
    async def headed_head() -> PlainTextResponse:
        return PlainTextResponse("", headers={"x-head": "own"})

    @app.get("/headed")
    @cache_config(ttl_seconds=60)
    async def headed() -> dict[str, str]:
        return {"route": "headed"}

    @app.api_route("/both", methods=["GET", "HEAD"])
    @cache_config(ttl_seconds=60)
    async def both() -> dict[str, str]:
        return {"route": "both"}

    @app.get("/q")
    @cache_config(ttl_seconds=60)
    async def query(request: Request) -> dict[str, object]:
        return {"query": request.query_params.multi_items()}

    return app


ROUTING_PATHS = [
    "/users/me",
    "/users/7",
    "/items/special",
    "/items/7",
    "/n/1",
    "/n/01",
    "/n/x",
    "/a/b",
    "/a%2Fb",
    "/a/b/",
    "//a/b",
    "/a//b",
    "/A/b",
    "/files/a%2Fb",
    "/files/a/b",
    "/files/a%20b",
    "/slash",
    "/slash/",
    "/q?a=1&b=2",
    "/q?b=2&a=1",
    "/q?a=1;b=2",
    "/q?a=1%26b=2",
    "/q?a=1&a=2",
    "/q?a=2&a=1",
    "/q?a",
    "/q?a=",
    "/q?&&a=1&&",
    "/q?%00=%ff",
]


def test_the_edge_answers_every_path_like_the_router() -> None:
    """Overlapping path-parameter routes, trailing slashes, encoded and doubled slashes, query separators."""
    steps = [("GET", path, {}) for path in ROUTING_PATHS for _ in range(2)]
    results = same_with_and_without_edge(routing_build, steps)
    assert any(result[2] == "HIT" for result in results)


def test_head_and_options_are_answered_like_the_router() -> None:
    """HEAD of a cached GET (from its entry), OPTIONS and writes (405), a GET+HEAD route (HEAD uncached)."""
    steps = [("OPTIONS", "/users/me", {}), ("HEAD", "/users/me", {}), ("GET", "/users/me", {})]
    steps += [("HEAD", "/users/me", {}), ("POST", "/users/me", {}), ("DELETE", "/users/me", {})]
    steps += [("GET", "/both", {}), ("GET", "/both", {}), ("HEAD", "/both", {}), ("HEAD", "/both", {})]
    results = same_with_and_without_edge(routing_build, steps)
    assert results[3][2] == "HIT" and results[3][1] == b""


def test_a_head_route_declared_before_the_cached_get_answers_head() -> None:
    """``@app.head("/headed")`` comes first: the router gives it every HEAD: never answered from the GET."""
    steps = [("GET", "/headed", {}), ("GET", "/headed", {}), ("HEAD", "/headed", {}), ("HEAD", "/headed", {})]
    same_with_and_without_edge(routing_build, steps)
    with started(routing_build(True)) as client:
        client.get("/headed")
        assert client.get("/headed").headers["x-cache"] == "HIT"
        assert client.head("/headed").headers.get("x-head") == "own"


def test_an_app_or_scope_root_path_is_never_answered_at_the_edge() -> None:
    steps = [("GET", "/users/me", {})] * 3
    same_with_and_without_edge(routing_build, steps, root_path="/api")

    def with_root(edge: bool) -> FastAPI:
        app = routing_build(edge)
        app.root_path = "/api"
        return app

    same_with_and_without_edge(with_root, steps)


def test_mounted_sub_apps_are_answered_like_the_router() -> None:
    """A parent and a mounted sub-app, each with its own edge manager, and one sharing the parent's."""

    def build(edge: bool, *, shared: bool = False) -> FastAPI:
        parent, manager, _ = new_app(edge)
        sub = FastAPI()
        (manager if shared else CacheManager(MemoryBackend(), edge=edge)).init_app(sub)

        @parent.get("/x")
        @cache_config(ttl_seconds=60)
        async def parent_x() -> dict[str, str]:
            return {"app": "parent"}

        @sub.get("/x")
        @cache_config(ttl_seconds=60)
        async def sub_x() -> dict[str, str]:
            return {"app": "sub"}

        parent.mount("/sub", sub)

        @parent.get("/sub/x")  # shadowed by the mount
        @cache_config(ttl_seconds=60)
        async def shadowed() -> dict[str, str]:
            return {"app": "shadowed"}

        return parent

    steps = [("GET", path, {}) for path in ("/x", "/sub/x", "/x", "/sub/x", "/sub/x", "/x")]
    for shared in (False, True):
        results = same_with_and_without_edge(lambda edge, shared=shared: build(edge, shared=shared), steps)
        assert [json.loads(body)["app"] for _, body, _ in results] == ["parent", "sub"] * 2 + ["sub", "parent"]


# -- middleware the edge skips -------------------------------------------------


class VersionRewrite:
    """Routes ``/items`` to ``/v2/items`` when ``Accept-Version: 2`` is sent (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"accept-version", b"2") in scope["headers"]:
            scope = {**scope, "path": "/v2" + scope["path"], "raw_path": b"/v2" + scope.get("raw_path", b"")}
        await self.app(scope, receive, send)


class LanguageQuery:
    """Adds ``?lang=`` from ``Accept-Language`` when the client gives none (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["query_string"]:
            language = dict(scope["headers"]).get(b"accept-language")
            if language:
                scope = {**scope, "query_string": b"lang=" + language}
        await self.app(scope, receive, send)


def rewriting_build(edge: bool) -> FastAPI:
    app, _, _ = new_app(edge)

    @app.get("/items")
    @cache_config(ttl_seconds=60)
    async def items_v1() -> dict[str, int]:
        return {"version": 1}

    @app.get("/v2/items")
    @cache_config(ttl_seconds=60)
    async def items_v2() -> dict[str, int]:
        return {"version": 2}

    @app.get("/page")
    @cache_config(ttl_seconds=60)
    async def page(lang: str = "en") -> dict[str, str]:
        return {"lang": lang}

    app.add_middleware(VersionRewrite)
    app.add_middleware(LanguageQuery)
    return app


@pytest.mark.parametrize(
    ("path", "headers", "field", "expected"),
    [("/items", {"Accept-Version": "2"}, "version", 2), ("/page", {"Accept-Language": "fr"}, "lang", "fr")],
    ids=["path-rewrite", "query-rewrite"],
)
def test_a_rewriting_middleware_is_not_bypassed_by_the_edge(
    path: str, headers: dict[str, str], field: str, expected: object
) -> None:
    """The README says the edge skips your middleware; one that rewrites the request changes the answer.

    Without the edge, ``Accept-Version: 2`` gets v2. A user would expect the
    edge never to serve v1 in its place (the header is neither a credential
    nor declared: only the middleware reads it).
    """

    def run(client: TestClient) -> None:
        for _ in range(2):
            assert client.get(path).status_code == 200
        got = client.get(path, headers=headers).json()[field]
        assert got == expected

    refused_or_edge_refused(lambda: rewriting_build(False), run)
    refused_or_edge_refused(lambda: rewriting_build(True), run)


class TokenGate:
    """Rejects requests without ``X-Token`` (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not dict(scope["headers"]).get(b"x-token"):
            await PlainTextResponse("no token", status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenGateHTTP(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Any:
        if not request.headers.get("x-token"):
            return PlainTextResponse("no token", status_code=401)
        return await call_next(request)


@pytest.mark.parametrize("middleware", [TokenGate, TokenGateHTTP], ids=["pure-asgi", "base-http"])
def test_an_auth_middleware_is_not_bypassed_by_the_edge(middleware: type) -> None:
    """An authorized caller fills the entry; a caller without ``X-Token`` must still get the middleware's 401.

    The README lists what an edge HIT skips (logging, sessions, rate limiting),
    but "one caller's data is never served to another" is the first Safety
    promise: data computed for a token holder must not reach a caller the app
    refuses.
    """

    def build() -> FastAPI:
        app, _, _ = new_app(True)

        @app.get("/private")
        @cache_config(ttl_seconds=60)
        async def private() -> dict[str, str]:
            return {"secret": "for token holders"}

        app.add_middleware(middleware)
        return app

    def run(client: TestClient) -> None:
        for _ in range(2):
            assert client.get("/private", headers={"X-Token": "t"}).status_code == 200
        refused = client.get("/private")
        assert refused.status_code == 401 and b"for token holders" not in refused.content

    refused_or_edge_refused(build, run)


def test_gzip_an_edge_hit_is_plain_and_self_consistent() -> None:
    """Documented: an edge HIT is sent uncompressed; it must then say so (no Content-Encoding, right length)."""
    app, _, _ = new_app(True)

    @app.get("/big")
    @cache_config(ttl_seconds=60)
    async def big() -> dict[str, str]:
        return {"pad": "x" * 2000}

    app.add_middleware(GZipMiddleware, minimum_size=500)
    with started(app) as client:
        first = client.get("/big", headers={"Accept-Encoding": "gzip"})
        hit = client.get("/big", headers={"Accept-Encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip" and hit.headers["x-cache"] == "HIT"
    assert "content-encoding" not in hit.headers
    assert int(hit.headers["content-length"]) == len(hit.content) and hit.json() == first.json()


# -- malformed input -----------------------------------------------------------


def malformed_app(edge: bool) -> FastAPI:
    app, _, _ = new_app(edge)

    @app.get("/m")
    @cache_config(ttl_seconds=60)
    async def m() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/p/{name}")
    @cache_config(ttl_seconds=60)
    async def p(name: str) -> dict[str, int]:
        return {"length": len(name)}

    return app


MALFORMED: dict[str, dict[str, Any]] = {
    "huge-header": {"headers": [(b"host", b"testserver"), (b"x-junk", b"a" * 200_000)]},
    "many-headers": {"headers": [(b"host", b"testserver")] + [(b"x-%d" % i, b"v") for i in range(5000)]},
    "huge-host": {"headers": [(b"host", b"h" * 100_000)]},
    "latin1-host": {"headers": [(b"host", b"\xff\xfe.example")]},
    "latin1-header": {"headers": [(b"host", b"testserver"), (b"x-name", b"\xe9\xff\x00")]},
    "latin1-cookie": {"headers": [(b"host", b"testserver"), (b"cookie", b"a=\xff\xfe; \xe9=1")]},
    "latin1-authorization": {"headers": [(b"host", b"testserver"), (b"authorization", b"Bearer \xff")]},
    "latin1-query": {"query_string": b"a=\xff&\xfe=b"},
    "latin1-raw-path": {"raw_path": b"/m\xff"},
    "no-host": {"headers": []},
    "no-host-no-server": {"headers": [], "server": None},
    "no-host-list-server": {"headers": [], "server": ["testserver", 80]},  # TestClient's own spelling
    "no-host-unix-server": {"headers": [], "server": ("/tmp/app.sock", None)},
    "empty-host": {"headers": [(b"host", b"")]},
    "huge-query": {"query_string": b"a=" + b"b" * 100_000},
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_requests_never_become_500s_at_the_edge(case: str) -> None:
    """README: the cache never turns a request into a 500; raw ASGI requests a server could pass on."""
    results = []
    for edge in (False, True):
        app = malformed_app(edge)
        answers = []
        for path in ("/m", "/m", "/p/x", "/p/x"):
            scope = http_scope(path) | MALFORMED[case]
            if "raw_path" in MALFORMED[case] and path != "/m":
                scope["raw_path"] = path.encode()
            status, headers, body = await asgi(app, scope)
            answers.append((status, body, x_cache(headers)))
        assert all(status == 200 for status, _, _ in answers), (edge, answers)
        results.append(answers)
    assert results[0] == results[1], case


async def test_scopes_without_optional_keys_never_become_500s_at_the_edge() -> None:
    """ASGI makes ``scheme``, ``root_path``, ``raw_path``, ``client``, ``server`` and ``http_version`` optional."""
    for edge in (False, True):
        app = malformed_app(edge)
        for _ in range(3):
            scope = http_scope("/m")
            for name in ("scheme", "root_path", "raw_path", "client", "server", "http_version", "asgi"):
                del scope[name]
            status, _, body = await asgi(app, scope)
            assert status == 200 and json.loads(body) == {"ok": True}


@pytest.mark.parametrize("path", ["", "m", "/p/\udcff", "/p/" + "x" * 5000, "/p/\x00", "/p/%"])
async def test_odd_paths_never_become_500s_at_the_edge(path: str) -> None:
    results = []
    for edge in (False, True):
        app = malformed_app(edge)
        answers = []
        for _ in range(3):
            scope = http_scope("/")
            scope["path"], scope["raw_path"] = path, path.encode("utf-8", "surrogateescape")
            status, headers, body = await asgi(app, scope)
            answers.append((status, body, x_cache(headers)))
        assert all(status != 500 for status, _, _ in answers), answers
        results.append(answers)
    assert results[0] == results[1]


async def test_non_http_scopes_go_to_the_app() -> None:
    app = malformed_app(True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        for _ in range(2):
            assert (await client.get("/m")).status_code == 200
        assert (await client.get("/m")).headers["x-cache"] == "HIT"
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app({"type": "websocket", "path": "/m", "headers": [], "query_string": b""}, receive, send)
    assert messages and messages[0]["type"] == "websocket.close"


class AppGate(FastAPI):
    """An app class whose own ``__call__`` refuses requests without ``X-Token``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not dict(scope["headers"]).get(b"x-token"):
            await PlainTextResponse("no token", status_code=401)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def test_an_app_subclass_gate_is_not_bypassed_by_the_edge() -> None:
    """README: ``init_app`` gives the app "a subclass of its own class"; the class's own ``__call__`` is the app."""

    def build() -> FastAPI:
        app = AppGate()
        CacheManager(MemoryBackend(), edge=True).init_app(app)

        @app.get("/private")
        @cache_config(ttl_seconds=60)
        async def private() -> dict[str, str]:
            return {"secret": "for token holders"}

        return app

    def run(client: TestClient) -> None:
        for _ in range(2):
            assert client.get("/private", headers={"X-Token": "t"}).status_code == 200
        assert client.get("/private").status_code == 401

    refused_or_edge_refused(build, run)


def test_an_edge_hit_sends_the_bytes_a_normal_hit_sends() -> None:
    """Same status, headers (Age, Cache-Status, X-Cache included) and body as the fast path's HIT."""
    seen: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
    for edge in (False, True):
        app = malformed_app(edge)
        with started(app) as client:
            client.get("/p/x?a=1")
            hit = client.get("/p/x?a=1")
            seen.append((hit.status_code, sorted(hit.headers.raw), hit.content))
            head = client.head("/p/x?a=1")
            seen.append((head.status_code, sorted(head.headers.raw), head.content))
    assert seen[0][1] and dict(seen[0][1])[b"x-cache"] == b"HIT"
    assert seen[:2] == seen[2:]


def http_mode_build(edge: bool) -> FastAPI:
    app, _, seen = new_app(edge)
    fields: dict[str, list[tuple[str, str]]] = {
        "max-age": [("Cache-Control", "max-age=60")],
        "s-maxage": [("Cache-Control", "s-maxage=60")],
        "private": [("Cache-Control", "private, max-age=60")],
        "no-cache": [("Cache-Control", "no-cache, max-age=60")],
        "no-store": [("Cache-Control", "no-store")],
        "vary-accept": [("Cache-Control", "max-age=60"), ("Vary", "Accept")],
        "vary-star": [("Cache-Control", "max-age=60"), ("Vary", "*")],
        "vary-authorization": [("Cache-Control", "max-age=60"), ("Vary", "Authorization")],
        "set-cookie": [("Cache-Control", "max-age=60"), ("Set-Cookie", "sid=secret")],
        "expired": [("Cache-Control", "max-age=60"), ("Age", "120")],
        "targeted": [("Intelligent-Cache-Control", "max-age=60"), ("Cache-Control", "no-store")],
    }

    @app.get("/h/{kind}")
    @cache_config(mode="http")
    async def kind(kind: str, request: Request) -> PlainTextResponse:
        body = f"{kind} {request.headers.get('accept')} {bump(seen, kind)}"
        return PlainTextResponse(body, headers=dict(fields.get(kind, [])))

    return app


@pytest.mark.parametrize(
    "kind",
    [
        "max-age",
        "s-maxage",
        "private",
        "no-cache",
        "no-store",
        "vary-accept",
        "vary-star",
        "vary-authorization",
        "set-cookie",
        "expired",
        "targeted",
    ],
)
def test_http_mode_responses_are_answered_like_the_normal_path(kind: str) -> None:
    """``mode="http"``: what the response says decides; the edge may only answer what the fast path would."""
    steps = [("GET", f"/h/{kind}", {"Accept": accept}) for accept in ("a", "a", "b", "b", "a")]
    steps += [("GET", f"/h/{kind}", {}), ("GET", f"/h/{kind}", {})]
    same_with_and_without_edge(http_mode_build, steps)


class ForwardedProto:
    """Trusts ``X-Forwarded-Proto`` (as a proxy-headers middleware does) and rewrites the scheme."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proto = dict(scope.get("headers", [])).get(b"x-forwarded-proto")
        if scope["type"] == "http" and proto:
            scope = {**scope, "scheme": proto.decode("latin-1")}
        await self.app(scope, receive, send)


def test_a_proxy_scheme_middleware_with_https_redirect_is_not_bypassed() -> None:
    def build(edge: bool) -> FastAPI:
        # Named as safe to skip: unseen, the edge sees the unrewritten scheme, and no entry has that origin.
        app = host_build(edge, edge_skip_middleware=[ForwardedProto])
        app.add_middleware(HTTPSRedirectMiddleware)
        app.add_middleware(ForwardedProto)
        return app

    https = {"X-Forwarded-Proto": "https"}
    steps = [("GET", "/where", https), ("GET", "/where", https), ("GET", "/where", {}), ("GET", "/where", https)]
    results = same_with_and_without_edge(build, steps)
    assert results[2][0] in (307, 308)


def test_cors_requests_are_answered_like_the_normal_path() -> None:
    from starlette.middleware.cors import CORSMiddleware

    def build(edge: bool) -> FastAPI:
        app = host_build(edge)
        app.add_middleware(CORSMiddleware, allow_origins=["https://front.example"], allow_methods=["GET"])
        return app

    origin = {"Origin": "https://front.example"}
    evil = {"Origin": "https://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "GET"}
    steps = [("GET", "/where", {}), ("GET", "/where", {}), ("GET", "/where", origin), ("GET", "/where", evil)]
    steps += [("OPTIONS", "/where", preflight), ("GET", "/where", origin)]
    for edge in (False, True):
        with started(build(edge)) as client:
            answers = [client.request(method, url, headers=headers) for method, url, headers in steps]
        allowed = [response.headers.get("access-control-allow-origin") for response in answers]
        assert allowed == [None, None, "https://front.example", None, "https://front.example", "https://front.example"]


def test_a_request_the_edge_passes_on_keeps_its_own_path_params() -> None:
    """The edge fills ``scope["path_params"]`` from what it learned; a request it does not answer must not keep them.

    Host routing: ``/r/1`` is ``{x}`` on one host and ``{y}`` on another; the
    second host's endpoint must see only its own parameter.
    """

    def build(edge: bool) -> FastAPI:
        app, _, _ = new_app(edge)
        one, two = APIRouter(route_class=CachedRoute), APIRouter(route_class=CachedRoute)

        @one.get("/r/{x}")
        @cache_config(ttl_seconds=60)
        async def r_one(x: str, request: Request) -> dict[str, object]:
            return {"params": dict(request.path_params)}

        @two.get("/r/{y}")
        @cache_config(ttl_seconds=60)
        async def r_two(y: str, request: Request) -> dict[str, object]:
            return {"params": dict(request.path_params)}

        app.router.routes.append(Host("one.example", one))
        app.router.routes.append(Host("two.example", two))
        return app

    steps = [("GET", "/r/1", {"Host": "one.example"})] * 2 + [("GET", "/r/1", {"Host": "two.example"})] * 2
    results = same_with_and_without_edge(build, steps)
    assert json.loads(results[-1][1]) == {"params": {"y": "1"}}


@pytest.mark.parametrize("path", ["/p/%C3%A9", "/p/e%CC%81", "/p/%EF%AC%81", "/p/fi"])
def test_unicode_forms_of_a_path_are_never_answered_with_each_other(path: str) -> None:
    """NFC, NFD and compatibility forms are different paths to the router: never one entry for two of them."""
    others = [other for other in ("/p/%C3%A9", "/p/e%CC%81", "/p/%EF%AC%81", "/p/fi") if other != path]
    steps = [("GET", other, {}) for other in others for _ in range(2)] + [("GET", path, {})] * 2
    results = same_with_and_without_edge(malformed_app, steps)
    from urllib.parse import unquote

    assert json.loads(results[-1][1]) == {"length": len(unquote(path.removeprefix("/p/")))}


class HeaderBearer(HTTPBearer):
    """A bearer scheme reading its token from ``X-Access-Token`` (a common subclass): not Authorization."""

    async def __call__(self, request: Request) -> Any:  # type: ignore[override]
        token = request.headers.get("x-access-token")
        if not token:
            raise HTTPException(401, "no token")
        return token


class CookieBearer(OAuth2PasswordBearer):
    """FastAPI's tutorial pattern: an OAuth2 bearer read from a cookie."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        token = request.cookies.get("access_token")
        if not token:
            raise HTTPException(401, "no token")
        return token


@pytest.mark.parametrize(
    ("scheme", "header"),
    [(HeaderBearer, "X-Access-Token"), (lambda: CookieBearer(tokenUrl="/t"), "Cookie")],
    ids=["header-bearer", "cookie-bearer"],
)
def test_a_subclassed_scheme_reading_another_input_keeps_callers_apart(scheme: Callable[[], Any], header: str) -> None:
    """README: whatever FastAPI's security schemes in the route's dependency tree read are credentials.

    A subclass of ``HTTPBearer`` whose ``__call__`` reads another header reads
    that header, not ``Authorization``: Bob must never get Alice's answer.
    """

    def build(edge: bool) -> FastAPI:
        app, _, _ = new_app(edge)
        guard = scheme()

        @app.get("/me")
        @cache_config(ttl_seconds=60)
        async def me(token: Annotated[str, Depends(guard)]) -> dict[str, str]:
            return {"me": token}

        return app

    def credential(who: str) -> dict[str, str]:
        return {header: f"access_token={who}" if header == "Cookie" else who}

    steps = [("GET", "/me", credential(who)) for who in ("alice", "alice", "bob", "bob")]
    results = same_with_and_without_edge(build, steps)
    assert [json.loads(body)["me"] for _, body, _ in results] == ["alice", "alice", "bob", "bob"]


def test_a_get_route_with_a_body_parameter_never_answers_one_body_with_another() -> None:
    """A GET endpoint with a ``Body()`` parameter: its answer depends on the body, which no key holds.

    Either the cache refuses the route (``ConfigurationError``) or it keeps
    bodies apart; it must never answer Bob's query with Alice's result.
    """
    from pydantic import BaseModel

    class Search(BaseModel):
        owner: str

    def build() -> FastAPI:
        app, _, _ = new_app(True)

        @app.get("/search")
        @cache_config(ttl_seconds=60)
        async def search(query: Search) -> dict[str, str]:
            return {"results_of": query.owner}

        return app

    def run(client: TestClient) -> None:
        for who in ("alice", "alice", "bob", "bob"):
            response = client.request("GET", "/search", json={"owner": who})
            assert response.status_code == 200 and response.json() == {"results_of": who}

    refused_or_edge_refused(build, run)


def test_a_header_model_with_convert_underscores_false_is_keyed_as_fastapi_reads_it() -> None:
    """README: header parameters the route declares are keyed; a Pydantic header model is declared too.

    With ``Header(convert_underscores=False)`` FastAPI reads ``x_tenant`` as sent
    (underscore); tenant ``b`` must never get tenant ``a``'s answer.
    """
    from pydantic import BaseModel

    class Tenant(BaseModel):
        x_tenant: str | None = None

    def build(edge: bool) -> FastAPI:
        app, _, _ = new_app(edge)

        @app.get("/tenant")
        @cache_config(ttl_seconds=60)
        async def tenant(headers: Annotated[Tenant, Header(convert_underscores=False)]) -> dict[str, str | None]:
            return {"tenant": headers.x_tenant}

        return app

    steps = [("GET", "/tenant", {"x_tenant": who}) for who in ("a", "a", "b", "b")]
    results = same_with_and_without_edge(build, steps)
    assert [json.loads(body)["tenant"] for _, body, _ in results] == ["a", "a", "b", "b"]
