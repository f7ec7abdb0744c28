"""Every module of example_app/examples runs, through real FastAPI apps; and intelligent_cache.testing.

The Redis examples use the session's private ``redis_server`` (never the shared
Redis), each test in a namespace of its own.
"""

import contextlib
import importlib
import logging
import os
import pkgutil
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import example_app.examples
from example_app.examples import basic, custom_backend, multi_worker, per_user, redis_backend, secured_admin, tags
from example_app.examples.custom_backend import DictBackend
from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config
from intelligent_cache import testing as ic_testing
from intelligent_cache.testing import (
    FakeClock,
    assert_cache,
    cache_disabled,
    cache_state,
    clear_cache,
    memory_manager,
)
from tests.conftest import PATIENT, unique_prefix
from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [
    "basic",
    "custom_backend",
    "http_proxy",
    "multi_worker",
    "per_user",
    "redis_backend",
    "secured_admin",
    "tags",
]
# Examples are short enough to read at once; the proxy carries a whole HTTP hop.
LINE_LIMITS = {"http_proxy": 200}


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (start-up, then shutdown: stats flush, backend closed) around a client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def manager_of(app: FastAPI) -> CacheManager:
    manager = app.state.intelligent_cache
    assert isinstance(manager, CacheManager)
    return manager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- every module --------------------------------------------------------------------------------------------------


def test_every_example_has_a_docstring_an_app_and_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_URL", "http://127.0.0.1:9")  # the proxy builds its app from it
    names = sorted(info.name for info in pkgutil.iter_modules(example_app.examples.__path__))
    assert names == EXAMPLES
    assert example_app.examples.__doc__
    for name in names:
        module = importlib.import_module(f"example_app.examples.{name}")
        doc = module.__doc__ or ""
        assert len(doc.strip().splitlines()) >= 3, f"{name} needs a docstring saying what it shows"
        assert f"uvicorn example_app.examples.{name}:app" in doc, f"{name}'s docstring must say how to run it"
        assert isinstance(module.app, FastAPI), name
        assert callable(module.create_app), name
        assert isinstance(module.app.state.intelligent_cache, CacheManager), name
        lines = len((ROOT / "example_app" / "examples" / f"{name}.py").read_text().splitlines())
        assert lines <= LINE_LIMITS.get(name, 110), name


# -- basic -------------------------------------------------------------------------------------------------------------


def test_basic_miss_hit_and_writes_invalidate() -> None:
    with TestClient(basic.create_app()) as client:
        assert_cache(client.get("/books"), "MISS")
        listed = client.get("/books")
        assert_cache(listed, "HIT")
        assert [book["title"] for book in listed.json()] == ["Dune", "Hyperion"]
        assert_cache(client.get("/books/1"), "MISS")
        assert_cache(client.get("/books/1"), "HIT")

        assert client.post("/books", params={"title": "Solaris"}).status_code == 201
        after = client.get("/books")
        assert_cache(after, "MISS")
        assert [book["title"] for book in after.json()] == ["Dune", "Hyperion", "Solaris"]
        assert_cache(client.get("/books/1"), "MISS")  # under /books: invalidated too

        assert_cache(client.get("/books/2"), "MISS")
        assert client.put("/books/2", params={"title": "Endymion"}).status_code == 200
        renamed = client.get("/books/2")
        assert_cache(renamed, "MISS")
        assert renamed.json() == {"id": 2, "title": "Endymion"}
        assert_cache(client.get("/books"), "MISS")  # the ancestor
        assert_cache(client.get("/books/1"), "HIT")  # the sibling is untouched

        # A failed write invalidates nothing; an error response is not stored.
        assert client.put("/books/99", params={"title": "x"}).status_code == 404
        assert_cache(client.get("/books"), "HIT")
        for _ in range(2):
            missing = client.get("/books/99")
            assert missing.status_code == 404
            assert cache_state(missing) != "HIT"


def test_basic_404_says_it_was_not_stored() -> None:
    """README: "Every response of a cached route also carries an RFC 9211 Cache-Status"
    and "A response neither served from nor stored in the cache says X-Cache: SKIP".

    Fails: a cached endpoint that raises HTTPException (how FastAPI apps answer 404)
    gets neither header: the exception leaves _CachingHandler._run, and the response
    is built by Starlette's exception middleware, outside the route.
    """
    with TestClient(basic.create_app()) as client:
        missing = client.get("/books/99")
        assert missing.status_code == 404
        assert_cache(missing, "SKIP")
        assert "detail=status" in missing.headers["cache-status"]


# -- redis_backend -----------------------------------------------------------------------------------------------------


def named_connections(server: RedisServer, name: str) -> int:
    with server.client() as admin:
        return sum(1 for client in admin.client_list() if client.get("name") == name)


@pytest.mark.redis
async def test_redis_backend_example(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    name = "ex-" + uuid.uuid4().hex[:8]
    app = redis_backend.create_app(f"{redis_server.url}?client_name={name}", key_prefix=prefix)
    async with serve(app) as client:
        first = await client.get("/rates/EUR")
        assert_cache(first, "MISS")
        assert_cache(await client.get("/rates/EUR"), "HIT")
        with redis_server.client() as redis:
            assert redis.exists(f"{prefix}GET:rates:EUR") == 1  # under the key prefix

        written = await client.put("/rates/EUR", json={"USD": 1.1})
        assert written.status_code == 200
        after = await client.get("/rates/EUR")
        assert_cache(after, "MISS")
        assert after.json() == {"base": "EUR", "rates": {"USD": 1.1}}

        health = await client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok"
        assert body["backend"] == "redis"
        assert body["key_prefix"] == prefix
        assert body["breaker"]["state"] == "closed"
        assert named_connections(redis_server, name) >= 1
    # The lifespan closed the pool: no connection of this app is left on the server.
    assert named_connections(redis_server, name) == 0


async def test_redis_backend_example_keeps_serving_while_redis_is_down() -> None:
    app = redis_backend.create_app(f"redis://127.0.0.1:{free_port()}/0", key_prefix=unique_prefix())
    async with serve(app) as client:
        for _ in range(2):
            response = await client.get("/rates/EUR")
            assert response.status_code == 200
            assert response.json()["base"] == "EUR"
            assert_cache(response, "SKIP")
            assert "detail=backend-error" in response.headers["cache-status"]
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"


def test_redis_backend_example_reads_its_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IC_REDIS_URL", "redis://127.0.0.1:1/3")
    monkeypatch.setenv("IC_KEY_PREFIX", "shop:")
    backend = manager_of(redis_backend.create_app()).backend
    assert backend.info()["key_prefix"] == "shop:"
    assert backend._client.connection_pool.connection_kwargs["port"] == 1  # type: ignore[attr-defined]
    assert backend._client.connection_pool.connection_kwargs["db"] == 3  # type: ignore[attr-defined]


# -- secured_admin -----------------------------------------------------------------------------------------------------

TOKEN = "s3cret-token"
ADMIN_CALLS = [
    ("GET", "/api/cache/keys", None),
    ("GET", "/api/cache/keys/GET:products", None),
    ("DELETE", "/api/cache/keys/GET:products", None),
    ("POST", "/api/cache/clear", None),
    ("POST", "/api/cache/invalidate", {"path": "/products"}),
    ("GET", "/api/cache/stats", None),
    ("GET", "/api/cache/metrics", None),
    ("GET", "/api/cache/health", None),
    ("GET", "/api/cache/", None),
    ("GET", "/api/cache/dashboard", None),
]
WRONG_CREDENTIALS = [
    pytest.param({}, id="none"),
    pytest.param({"authorization": "Bearer wrong"}, id="wrong-bearer"),
    pytest.param({"authorization": f"Basic {TOKEN}"}, id="basic-scheme"),
    pytest.param({"x-api-key": "wrong"}, id="wrong-api-key"),
    pytest.param({"x-api-key": TOKEN[:-1]}, id="prefix-of-the-token"),
    pytest.param({"x-api-key": "clé".encode("latin-1")}, id="non-ascii"),
]


@pytest.fixture
def admin_client() -> Iterator[TestClient]:
    with TestClient(secured_admin.create_app(admin_token=TOKEN)) as client:
        client.get("/products")  # something in the cache
        yield client


@pytest.mark.parametrize("headers", WRONG_CREDENTIALS)
def test_secured_admin_refuses_every_admin_route_without_the_token(
    admin_client: TestClient, headers: dict[str, Any]
) -> None:
    for method, path, body in ADMIN_CALLS:
        response = admin_client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    # Nothing was deleted or invalidated.
    assert_cache(admin_client.get("/products"), "HIT")


@pytest.mark.parametrize(
    "headers", [{"authorization": f"Bearer {TOKEN}"}, {"x-api-key": TOKEN}], ids=["bearer", "api-key"]
)
def test_secured_admin_accepts_the_token(admin_client: TestClient, headers: dict[str, str]) -> None:
    listed = admin_client.get("/api/cache/keys", headers=headers)
    assert listed.status_code == 200
    assert [entry["key"] for entry in listed.json()["keys"]] == ["GET:products"]
    entry = admin_client.get("/api/cache/keys/GET:products", headers=headers)
    assert entry.status_code == 200
    assert entry.json()["route"] == "/products"
    for method, path, _ in ADMIN_CALLS:
        if method == "GET":
            assert admin_client.request(method, path, headers=headers).status_code == 200, path
    assert admin_client.delete("/api/cache/keys/GET:products", headers=headers).status_code == 200
    assert_cache(admin_client.get("/products"), "MISS")
    cleared = admin_client.post("/api/cache/clear", headers=headers)
    assert cleared.status_code == 200
    assert cleared.json()["deleted"] == 1
    assert_cache(admin_client.get("/products"), "MISS")
    invalidated = admin_client.post("/api/cache/invalidate", json={"path": "/products"}, headers=headers)
    assert invalidated.status_code == 200
    assert_cache(admin_client.get("/products"), "MISS")


def test_secured_admin_token_from_the_environment_or_generated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IC_ADMIN_TOKEN", "from-env")
    with TestClient(secured_admin.create_app()) as client:
        assert client.get("/api/cache/stats", headers={"x-api-key": "from-env"}).status_code == 200
        assert client.get("/api/cache/stats", headers={"x-api-key": TOKEN}).status_code == 401
    monkeypatch.delenv("IC_ADMIN_TOKEN")
    with caplog.at_level(logging.WARNING, logger=secured_admin.__name__):
        app = secured_admin.create_app()
    match = re.search(r"admin token for this process: (\S+)", caplog.text)
    assert match is not None
    with TestClient(app) as client:
        assert client.get("/api/cache/stats", headers={"authorization": f"Bearer {match[1]}"}).status_code == 200
        assert client.get("/api/cache/stats").status_code == 401


@contextlib.asynccontextmanager
async def secured_browser(base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """The secured example as a browser meets it: its lifespan, a client keeping cookies and not following redirects."""
    app = secured_admin.create_app(admin_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        assert (await client.get("/products")).status_code == 200  # something in the cache
        yield client


def set_cookie_attributes(response: httpx.Response) -> dict[str, str]:
    (header,) = response.headers.get_list("set-cookie")
    name_value, *attributes = (part.strip() for part in header.split(";"))
    found = {"cookie": name_value}
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        found[name.lower()] = value
    return found


async def test_secured_admin_signs_a_browser_in_with_an_http_only_cookie() -> None:
    async with secured_browser() as browser:
        form = await browser.get("/admin/login")
        assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
        assert '<form method="post" action="/admin/login">' in form.text and 'type="password" name="token"' in form.text
        assert (await browser.get("/api/cache/dashboard")).status_code == 401

        signed_in = await browser.post("/admin/login", data={"token": TOKEN})
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/api/cache/dashboard")
        cookie = set_cookie_attributes(signed_in)
        assert cookie["cookie"] == f"ic_admin_token={TOKEN}"
        assert (cookie["path"], cookie["samesite"]) == ("/api/cache", "strict")
        assert "httponly" in cookie
        assert "secure" not in cookie  # plain http here: a Secure cookie would never come back

        # The page and every call it makes are authenticated by the cookie alone.
        dashboard = await browser.get("/api/cache/dashboard")
        assert dashboard.status_code == 200 and "<!doctype html>" in dashboard.text.lower()
        for method, path, _ in ADMIN_CALLS:
            if method == "GET":
                assert (await browser.request(method, path)).status_code == 200, path
        assert [entry["key"] for entry in (await browser.get("/api/cache/keys")).json()["keys"]] == ["GET:products"]
        assert (await browser.post("/api/cache/invalidate", json={"path": "/products"})).status_code == 200
        assert_cache(await browser.get("/products"), "MISS")

        signed_out = await browser.post("/admin/logout")
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/admin/login")
        assert set_cookie_attributes(signed_out)["max-age"] == "0"
        assert (await browser.get("/api/cache/stats")).status_code == 401


async def test_secured_admin_cookie_is_secure_over_https() -> None:
    async with secured_browser("https://testserver") as browser:
        signed_in = await browser.post("/admin/login", data={"token": TOKEN})
        assert "secure" in set_cookie_attributes(signed_in)


@pytest.mark.parametrize(
    "form",
    [
        {"token": "wrong"},
        {"token": TOKEN[:-1]},
        {"token": ""},
        {},
        {"token": "clé"},
        {"token": [TOKEN + "x", TOKEN]},  # only the first value counts
        {"other": TOKEN},
    ],
)
async def test_secured_admin_login_refuses_a_wrong_token(form: dict[str, Any]) -> None:
    async with secured_browser() as browser:
        refused = await browser.post("/admin/login", data=form)
        assert refused.status_code == 401
        assert "Wrong token." in refused.text
        assert "set-cookie" not in refused.headers
        assert (await browser.get("/api/cache/stats")).status_code == 401


async def test_secured_admin_login_takes_the_token_from_the_form_only() -> None:
    async with secured_browser() as browser:
        assert "set-cookie" not in (await browser.get("/admin/login", params={"token": TOKEN})).headers
        assert (await browser.post("/admin/login", params={"token": TOKEN})).status_code == 401
        # A body far larger than a token does not break the form (nor count past its head).
        assert (await browser.post("/admin/login", content=b"token=" + b"x" * 100_000)).status_code == 401
        openapi = (await browser.get("/openapi.json")).json()
        assert not [path for path in openapi["paths"] if path.startswith("/admin")]


@pytest.mark.parametrize("cookie", ["wrong", TOKEN[:-1], ""])
async def test_secured_admin_refuses_a_wrong_cookie(cookie: str) -> None:
    async with secured_browser() as browser:
        # As a browser keeps it (a host without a dot is matched as "<host>.local").
        browser.cookies.set("ic_admin_token", cookie, domain="testserver.local", path="/api/cache")
        for method, path, body in ADMIN_CALLS:
            response = await browser.request(method, path, json=body)
            assert response.status_code == 401, (method, path)
        assert_cache(await browser.get("/products"), "HIT")  # nothing was deleted or invalidated
        browser.cookies.set("ic_admin_token", TOKEN, domain="testserver.local", path="/api/cache")
        assert (await browser.get("/api/cache/stats")).status_code == 200  # the same cookie, right: accepted


async def test_secured_admin_header_credentials_win_over_the_cookie() -> None:
    async with secured_browser() as browser:
        await browser.post("/admin/login", data={"token": TOKEN})
        assert (await browser.get("/api/cache/stats")).status_code == 200
        assert (await browser.get("/api/cache/stats", headers={"x-api-key": "wrong"})).status_code == 401
        assert (await browser.get("/api/cache/stats", headers={"authorization": "Bearer wrong"})).status_code == 401


# -- per_user ----------------------------------------------------------------------------------------------------------

ALICE = {"x-session": "s-alice"}
BOB = {"x-session": "s-bob"}


async def test_per_user_entries_are_isolated() -> None:
    app = per_user.create_app()
    async with serve(app) as client:
        first = await client.get("/me/cart", headers=ALICE)
        assert_cache(first, "MISS")
        assert first.json() == {"user": "alice", "cart": ["tea"]}
        assert first.headers["cache-control"].startswith("private")
        assert_cache(await client.get("/me/cart", headers=ALICE), "HIT")

        bob = await client.get("/me/cart", headers=BOB)
        assert_cache(bob, "MISS")
        assert bob.json() == {"user": "bob", "cart": ["coffee", "milk"]}
        bob_again = await client.get("/me/cart", headers=BOB)
        assert_cache(bob_again, "HIT")
        assert bob_again.json()["user"] == "bob"

        for headers in ({}, {"x-session": "forged"}):
            anonymous = await client.get("/me/cart", headers=headers)
            assert anonymous.status_code == 401
            assert cache_state(anonymous) != "HIT"
        assert (await client.get("/me/cart", headers=ALICE)).json()["user"] == "alice"
    keys = await manager_of(app).service().list_keys()
    assert sorted(keys) == ["GET:me:cart:@user_id=alice", "GET:me:cart:@user_id=bob"]


async def test_per_user_dependency_runs_on_every_hit() -> None:
    users = per_user.Users()
    app = per_user.create_app(users=users)
    async with serve(app) as client:
        assert_cache(await client.get("/me/orders", headers=ALICE), "MISS")
        cached = await client.get("/me/orders", headers=ALICE)
        assert_cache(cached, "HIT")
        assert cached.json() == {"user": "alice", "orders": [1001]}
        assert_cache(await client.get("/me/orders", headers=BOB), "MISS")

        users.suspended.add("alice")  # nothing in the cache changes...
        refused = await client.get("/me/orders", headers=ALICE)
        assert refused.status_code == 403  # ...but the dependency runs on the HIT
        assert refused.json() == {"detail": "account suspended"}
        assert_cache(await client.get("/me/orders", headers=BOB), "HIT")
        assert (await client.get("/me/orders")).status_code == 401

        users.suspended.discard("alice")
        back = await client.get("/me/orders", headers=ALICE)
        assert_cache(back, "HIT")  # the entry was there all along
        assert back.json() == cached.json()


# -- custom_backend ----------------------------------------------------------------------------------------------------


def glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


async def scan_all(backend: CacheBackend, pattern: str = "*", count: int = 100) -> tuple[list[str], int]:
    keys: list[str] = []
    cursor, pages = 0, 0
    while True:
        cursor, page = await backend.scan(pattern, cursor, count)
        pages += 1
        keys.extend(key for key, _ in page)
        if cursor == 0 or pages > 10_000:
            return keys, pages


REFERENCE_AND_CUSTOM = [pytest.param(MemoryBackend, id="memory"), pytest.param(DictBackend, id="dict")]


@pytest.mark.parametrize("kind", REFERENCE_AND_CUSTOM)
async def test_custom_backend_contract(kind: type[MemoryBackend | DictBackend], clock: FakeClock) -> None:
    """The custom backend behaves as the reference MemoryBackend on the contract of base.py."""
    backend: Any = kind(clock=clock)
    # get / set / delete, with TTLs
    assert await backend.get("GET:items") is None
    await backend.set("GET:items", b"one", 10)
    await backend.set("GET:items", b"two", 10)
    assert await backend.get("GET:items") == b"two"
    assert await backend.delete("GET:items") is True
    assert await backend.delete("GET:items") is False
    await backend.set("GET:short", b"v", 10)
    clock.advance(9.9)
    assert await backend.get("GET:short") == b"v"
    clock.advance(0.2)
    assert await backend.get("GET:short") is None
    assert await backend.delete("GET:short") is False

    # fetch creates missing counters (random, distinct, stable); bump adds exactly one
    counters = ["~g:s:spaces", "~g:s:spaces:1", "~g:n:spaces:1"]
    raw, generations = await backend.fetch("GET:spaces:1", counters)
    assert raw is None
    assert len(set(generations)) == 3
    assert all(type(value) is int and value > 2**32 for value in generations)
    assert await backend.fetch("GET:spaces:1", counters) == (None, generations)
    await backend.set("GET:spaces:1", b"entry", 60)
    assert await backend.fetch("GET:spaces:1", counters) == (b"entry", generations)
    await backend.bump(["~g:s:spaces:1", "~g:s:spaces:1", "~g:n:spaces:1"])
    assert (await backend.fetch("GET:spaces:1", counters))[1] == [
        generations[0],
        generations[1] + 2,
        generations[2] + 1,
    ]
    await backend.bump(["~g:s:fresh"])
    _, (created,) = await backend.fetch("GET:fresh", ["~g:s:fresh"])
    assert type(created) is int
    assert await backend.fetch("GET:nothing", []) == (None, [])

    # a lost counter never comes back with a value seen before
    seen = []
    for _ in range(3):
        seen.append((await backend.fetch("GET:lost", ["~g:s:lost"]))[1][0])
        await backend.clear(glob_escape("~g:s:lost"))
    assert len(set(seen)) == 3

    # scan paginates, every key exactly once; patterns; remaining TTL
    await backend.clear()
    expected = {f"GET:page:n={i:03d}" for i in range(250)}
    for key in sorted(expected):
        await backend.set(key, b"v", 30)
    keys, pages = await scan_all(backend, count=50)
    assert Counter(keys) == Counter(expected)
    assert pages > 1
    assert sorted((await scan_all(backend, "GET:page:n=00?"))[0]) == [f"GET:page:n=00{i}" for i in range(10)]
    clock.advance(10)
    _, page = await backend.scan("GET:page:n=000", 0, 1000)
    assert len(page) == 1
    assert page[0][1] is not None
    assert 19 < page[0][1] <= 20
    special = "GET:glob*?[x]\\:z"
    await backend.set(special, b"v", 60)
    assert (await scan_all(backend, glob_escape(special)))[0] == [special]

    # clear: the number of (non-internal) entries deleted; counters go too
    await backend.set("GET:other:x", b"v", 60)
    assert await backend.clear("GET:page:n=1*") == 100
    assert await backend.clear("GET:page:n=1*") == 0
    _, before = await backend.fetch("GET:spaces:1", counters)
    assert await backend.clear() == 152
    assert (await scan_all(backend))[0] == []
    _, after = await backend.fetch("GET:spaces:1", counters)
    assert after != before
    assert await backend.clear("*") == 0


@pytest.mark.parametrize("kind", REFERENCE_AND_CUSTOM)
async def test_scan_lists_every_key_present_for_the_whole_walk(
    kind: type[MemoryBackend | DictBackend], clock: FakeClock
) -> None:
    """The admin API pages through keys with a cursor, across requests, while the app
    serves HITs and the operator deletes keys. As with Redis SCAN, a key present
    during the whole walk must be listed.

    Fails for MemoryBackend: its cursor is a position in the LRU order, which
    every read (``_lookup`` moves the key to the end) and every delete shifts.
    """
    backend: Any = kind(clock=clock)
    keys = [f"GET:k:{i:02d}" for i in range(10)]
    for key in keys:
        await backend.set(key, b"v", 60)
    cursor, page = await backend.scan("*", 0, 5)
    listed = [key for key, _ in page]
    await backend.delete(listed[0])  # the operator deletes a listed key
    await backend.get(listed[1])  # a HIT on a listed key
    while cursor:
        cursor, page = await backend.scan("*", cursor, 5)
        listed.extend(key for key, _ in page)
    assert sorted(set(keys) - set(listed)) == [], "keys present for the whole walk were never listed"


async def test_custom_backend_bounds_its_entries(clock: FakeClock) -> None:
    backend = DictBackend(max_entries=3, clock=clock)
    for index in range(5):
        await backend.set(f"GET:k:{index}", b"v", 60)
    assert sorted((await scan_all(backend))[0]) == ["GET:k:2", "GET:k:3", "GET:k:4"]
    for index in range(5000):  # counters are bounded too
        await backend.fetch("GET:x", [f"~g:s:{index}"])
    assert len(backend._counters) <= 12


async def test_custom_backend_example_app(clock: FakeClock) -> None:
    backend = DictBackend(clock=clock)
    app = custom_backend.create_app(backend)
    async with serve(app) as client:
        assert_cache(await client.get("/colors"), "MISS")
        assert_cache(await client.get("/colors"), "HIT")
        assert (await client.post("/colors", params={"name": "blue"})).status_code == 201
        after = await client.get("/colors")
        assert_cache(after, "MISS")
        assert after.json() == ["red", "green", "blue"]
        stats = await manager_of(app).service().get_stats()
        assert stats["backend"] == {"backend": "dict"}
        assert await manager_of(app).service().list_keys() == ["GET:colors"]
    assert manager_of(custom_backend.app).backend.name == "dict"


# -- tags --------------------------------------------------------------------------------------------------------------

TAGGED = ["/feed", "/users/1/timeline", "/users/2/timeline"]


async def warm(client: httpx.AsyncClient, urls: list[str]) -> None:
    for url in urls:
        await client.get(url)
        assert_cache(await client.get(url), "HIT")


async def test_tags_invalidated_by_writes() -> None:
    async with serve(tags.create_app()) as client:
        await warm(client, TAGGED)
        assert (await client.post("/posts", params={"author": "2", "text": "news"})).status_code == 201
        for url in TAGGED:  # /posts is nobody's ancestor: the "feed" tag did it
            response = await client.get(url)
            assert_cache(response, "MISS")
            assert response.json()[-1] == {"author": "2", "text": "news"}

        await warm(client, TAGGED)
        muted = await client.put("/settings/1/muted/2")
        assert muted.json() == {"muted": ["2"]}
        timeline = await client.get("/users/1/timeline")
        assert_cache(timeline, "MISS")
        assert {post["author"] for post in timeline.json()} == {"1"}
        assert_cache(await client.get("/users/2/timeline"), "HIT")
        assert_cache(await client.get("/feed"), "HIT")


async def test_tags_invalidated_from_outside_any_request() -> None:
    posts = [{"author": "1", "text": "hello"}]
    backend = MemoryBackend()
    app = tags.create_app(backend, posts)
    async with serve(app) as client:
        await warm(client, TAGGED)
        posts.append({"author": "3", "text": "imported"})  # a worker writes to the database...
        assert_cache(await client.get("/feed"), "HIT")  # ...which the cache cannot know
        await tags.invalidate_feed(manager_of(app))
        for url in TAGGED:
            response = await client.get(url)
            assert_cache(response, "MISS")
            assert response.json()[-1]["text"] == "imported"

        # A worker with a manager of its own on the same backend does the same.
        await warm(client, TAGGED)
        await tags.invalidate_feed(CacheManager(backend))
        for url in TAGGED:
            assert_cache(await client.get(url), "MISS")


@pytest.mark.redis
async def test_tags_invalidated_by_a_worker_process_sharing_redis(redis_server: RedisServer) -> None:
    from intelligent_cache.backends import RedisBackend

    prefix = unique_prefix()
    app = tags.create_app(RedisBackend(redis_server.url, key_prefix=prefix, **PATIENT))
    worker = CacheManager(RedisBackend(redis_server.url, key_prefix=prefix, **PATIENT))  # what the worker builds
    try:
        async with serve(app) as client:
            await warm(client, [*TAGGED, "/users/1/timeline?page=2"])
            await tags.invalidate_feed(worker)
            for url in [*TAGGED, "/users/1/timeline?page=2"]:
                assert_cache(await client.get(url), "MISS")
    finally:
        await worker.aclose()


# -- multi_worker ------------------------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_multi_worker_two_instances_share_entries_invalidations_and_stats(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    a_app = multi_worker.create_app(redis_server.url, key_prefix=prefix, stats_flush_interval=3600)
    b_app = multi_worker.create_app(redis_server.url, key_prefix=prefix, stats_flush_interval=3600)
    async with serve(a_app) as a, serve(b_app) as b:
        assert (await a.put("/quotes/ACME", params={"price": 12.5})).status_code == 200
        first = await a.get("/quotes/ACME")
        assert_cache(first, "MISS")
        computed_by_a = first.json()["computed_by"]
        assert first.headers["x-served-by"] == computed_by_a

        from_b = await b.get("/quotes/ACME")
        assert_cache(from_b, "HIT")  # B never computed it
        assert from_b.json() == {"symbol": "ACME", "price": 12.5, "computed_by": computed_by_a}
        assert from_b.headers["x-served-by"] != computed_by_a

        assert (await b.put("/quotes/ACME", params={"price": 13.0})).status_code == 200  # a write through B...
        after = await a.get("/quotes/ACME")
        assert_cache(after, "MISS")  # ...invalidates A's lookups
        assert after.json()["price"] == 13.0
        assert_cache(await b.get("/quotes/ACME"), "HIT")

        await manager_of(a_app).flush_stats()
        await manager_of(b_app).flush_stats()
        for client in (a, b):
            stats = (await client.get("/stats")).json()
            assert stats["scope"] == "shared"
            assert (stats["hits"], stats["misses"], stats["skips"], stats["invalidations"]) == (2, 2, 0, 2)
            assert stats["hit_rate"] == 0.5
    with redis_server.client() as redis:
        assert redis.hget(f"db:{prefix}prices", "ACME") == b"13.0"
        redis.delete(f"db:{prefix}prices")


@pytest.mark.slow
@pytest.mark.redis
def test_multi_worker_under_uvicorn_with_two_workers(redis_server: RedisServer) -> None:
    """The documented command, two real worker processes on one Redis: MISS once, then HITs
    whichever worker answers; /stats adds up both workers' counts."""
    deadline = time.monotonic() + 20
    port = free_port()
    prefix = unique_prefix()
    env = {**os.environ, "IC_REDIS_URL": redis_server.url, "IC_KEY_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "uvicorn", "example_app.examples.multi_worker:app", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            while True:
                assert process.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start"
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/stats", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            assert httpx.put(f"{base}/quotes/ACME", params={"price": 7}, timeout=2).status_code == 200
            first = httpx.get(f"{base}/quotes/ACME", timeout=2)  # a new connection per request
            assert_cache(first, "MISS")
            served_by = {first.headers["x-served-by"]}
            hits = 0
            while hits < 20 or (len(served_by) < 2 and time.monotonic() < deadline - 8):
                response = httpx.get(f"{base}/quotes/ACME", timeout=2)
                assert_cache(response, "HIT")
                assert response.json() == first.json()
                served_by.add(response.headers["x-served-by"])
                hits += 1
            # Fresh connections spread over both workers: HITs came from the one that did not compute.
            assert len(served_by) == 2, f"every request landed on one worker: {served_by}"
            # Every worker flushes its counters each second: /stats, on either worker, adds them up.
            while True:
                stats = httpx.get(f"{base}/stats", timeout=2).json()
                if (stats["hits"], stats["misses"]) == (hits, 1):
                    break
                assert time.monotonic() < deadline, f"stats never added up: {stats}"
                time.sleep(0.2)
            assert stats["scope"] == "shared"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError):  # a worker outliving the supervisor
                os.killpg(process.pid, signal.SIGKILL)
            log.seek(0)
            output = log.read().decode(errors="replace")
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    with redis_server.client() as redis:
        redis.delete(f"db:{prefix}prices")


# -- intelligent_cache.testing -----------------------------------------------------------------------------------------


def helpers_app(manager: CacheManager | None = None) -> FastAPI:
    app = FastAPI()
    (manager if manager is not None else memory_manager()).init_app(app)

    @app.get("/items")
    @cache_config(ttl_seconds=60)
    async def items() -> list[str]:
        return ["a"]

    @app.post("/items")
    async def add_item() -> None:
        return None

    return app


def test_assert_cache_passes_and_explains_failures() -> None:
    with TestClient(helpers_app()) as client:
        miss = client.get("/items")
        assert_cache(miss, "MISS")
        with pytest.raises(AssertionError) as failure:
            assert_cache(miss, "HIT")
        message = str(failure.value)
        assert "expected X-Cache: HIT" in message
        assert "X-Cache: MISS" in message
        assert f"Cache-Status: {miss.headers['cache-status']}" in message
        assert "200" in message
        with pytest.raises(AssertionError, match=r"X-Cache: None \(Cache-Status: None"):
            assert_cache(client.post("/items"), "MISS")  # not a cached route: no X-Cache at all
        with pytest.raises(ValueError, match="HIT"):
            assert_cache(miss, "hit")  # type: ignore[arg-type]
        assert_cache(client.get("/items"), "MISS")  # the POST invalidated /items
        assert_cache(client.get("/items"), "HIT")


async def test_cache_disabled_turns_caching_off_inside_the_block_only() -> None:
    app = helpers_app()
    manager = manager_of(app)
    async with serve(app) as client:
        assert_cache(await client.get("/items"), "MISS")
        with cache_disabled(app) as yielded:
            assert yielded is manager
            assert manager.enabled is False
            skipped = await client.get("/items")
            assert_cache(skipped, "SKIP")
            assert "detail=disabled" in skipped.headers["cache-status"]
            with cache_disabled(manager):  # nested, and by manager
                assert_cache(await client.get("/items"), "SKIP")
            assert manager.enabled is False
        assert manager.enabled is True
        assert_cache(await client.get("/items"), "HIT")
        with pytest.raises(RuntimeError), cache_disabled(app):
            raise RuntimeError("boom")
        assert manager.enabled is True
    manager.enabled = False  # a manager built disabled stays disabled
    with cache_disabled(app):
        pass
    assert manager.enabled is False
    with pytest.raises(LookupError, match="init_app"), cache_disabled(FastAPI()):
        pass


async def test_memory_manager_shares_one_fake_clock() -> None:
    clock = FakeClock()
    manager = memory_manager(clock, default_ttl=30)
    assert manager.clock is clock
    assert isinstance(manager.backend, MemoryBackend)
    assert manager.default_ttl == 30
    app = helpers_app(manager)
    async with serve(app) as client:
        assert_cache(await client.get("/items"), "MISS")
        clock.advance(59)
        hit = await client.get("/items")
        assert_cache(hit, "HIT")
        assert hit.headers["age"] == "59"
        clock.advance(2)  # past the route's 60 s, on the backend's clock and the manager's
        assert_cache(await client.get("/items"), "MISS")
    default = memory_manager()
    assert isinstance(default.clock, FakeClock)
    assert memory_manager().clock is not default.clock
    with pytest.raises(TypeError):
        memory_manager(clock, backend=MemoryBackend())


async def test_clear_cache_empties_the_cache_of_the_app() -> None:
    app = helpers_app()
    async with serve(app) as client:
        assert_cache(await client.get("/items"), "MISS")
        assert_cache(await client.get("/items?page=2"), "MISS")
        assert await clear_cache(app) == 2
        assert_cache(await client.get("/items"), "MISS")
        assert await clear_cache(manager_of(app)) == 1
        assert await clear_cache(app) == 0
    with pytest.raises(LookupError):
        await clear_cache(FastAPI())


def test_testing_module_docstring_example_runs() -> None:
    doc = ic_testing.__doc__ or ""
    source = doc[doc.index("::") + 2 :]
    lines = [line[4:] if line.startswith("    ") else line for line in source.splitlines()]
    code = "\n".join(lines).strip()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(ic_testing.__all__) >= {"FakeClock", "cache_state", "assert_cache", "cache_disabled", "clear_cache"}
