"""HTTP caching semantics of cached routes, one test per item of HTTP_CHECKLIST.md where possible.

Every test drives a fresh app through httpx's ASGITransport in the test's own event loop, so
the Redis backends (whose connections belong to that loop) run the same tests as the memory
backend. Time only moves through the ``clock`` fixture: it is the manager's clock (freshness,
Age) on every backend and also the memory backend's expiry clock; Redis' own TTLs are real
time, long enough never to expire during a test.
"""

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from intelligent_cache import (
    CachedRoute,
    CacheManager,
    ConfigurationError,
    MemoryBackend,
    build_key,
    cache_config,
)
from intelligent_cache.config import invalidates
from intelligent_cache.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = "http://testserver"

# A fixed Date and a matching Expires 45 seconds later, for Expires - Date lifetimes.
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"
DATE_PLUS_45 = "Tue, 14 Nov 2023 22:14:05 GMT"


# -- harness ------------------------------------------------------------------------------------------------


class Calls:
    """Counts how often an endpoint (or dependency) ran."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> int:
        self.count += 1
        return self.count


def client_for(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: an endpoint that raises reaches the client as the 500 a server sends.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


def new_app(backend, clock: FakeClock, **manager_options) -> tuple[FastAPI, CacheManager]:
    app = FastAPI()
    manager = CacheManager(backend, clock=clock, **manager_options)
    manager.init_app(app)
    return app, manager


def cached_app(
    backend,
    clock: FakeClock,
    make_response: Callable[[int], Response] | None = None,
    *,
    paths: tuple[str, ...] = ("/r",),
    manager_options: dict | None = None,
    **config,
) -> tuple[FastAPI, CacheManager, Calls]:
    """An app whose cached GET routes answer ``make_response(call number)`` (default: ``call <n>`` as text)."""
    app, manager = new_app(backend, clock, **(manager_options or {}))
    calls = Calls()

    @cache_config(**config)
    async def endpoint() -> Response:
        number = calls.next()
        if make_response is None:
            return PlainTextResponse(f"call {number}")
        return make_response(number)

    for path in paths:
        app.get(path)(endpoint)
    return app, manager, calls


def with_headers(*pairs: tuple[str, str], body: str = "call {n}") -> Callable[[int], Response]:
    """A response factory sending ``pairs`` as raw header lines (repeats allowed)."""

    def make(number: int) -> Response:
        response = PlainTextResponse(body.format(n=number))
        response.raw_headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs)
        return response

    return make


def x_cache(response: httpx.Response) -> str | None:
    return response.headers.get("x-cache")


def cache_status(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


def without_markers(response: httpx.Response) -> dict[str, str]:
    """The response headers minus what differs between a MISS and a HIT of the same entry."""
    return {name: value for name, value in response.headers.items() if name not in ("x-cache", "cache-status", "age")}


async def evict_generation_counters(backend) -> None:
    """Lose every invalidation counter, as an LRU eviction or a Redis eviction policy would."""
    if isinstance(backend, MemoryBackend):
        backend._generations.clear()
    else:
        await backend.clear("~g:*")


async def assert_stored(client: httpx.AsyncClient, calls: Calls, path: str = "/r") -> None:
    before = calls.count
    response = await client.get(path)
    assert x_cache(response) == "HIT"
    assert calls.count == before


async def assert_not_stored(client: httpx.AsyncClient, calls: Calls, path: str = "/r") -> None:
    before = calls.count
    response = await client.get(path)
    assert x_cache(response) != "HIT"
    assert calls.count == before + 1


# -- 1. only GET is stored; HEAD from the GET entry; other methods never read -------------------------------


async def test_item_01_only_get_responses_are_stored(backend, clock):
    app, manager = new_app(backend, clock)
    calls = Calls()

    @app.api_route("/r", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @cache_config
    async def endpoint(request: Request):
        return PlainTextResponse(f"{request.method} {calls.next()}")

    async with client_for(app) as client:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            first = await client.request(method, "/r")
            second = await client.request(method, "/r")
            assert (first.text, second.text) == (f"{method} {calls.count - 1}", f"{method} {calls.count}")
            assert x_cache(second) != "HIT"
        response = await client.get("/r")
        assert response.text == f"GET {calls.count}"
        assert x_cache(response) == "MISS"
        assert await manager.service().list_keys() == [build_key("GET", "/r")]


async def test_item_01_other_methods_never_read_the_cache(backend, clock):
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.api_route("/r", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    @cache_config
    async def endpoint(request: Request):
        return PlainTextResponse(f"{request.method} {calls.next()}")

    async with client_for(app) as client:
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            assert (await client.get("/r")).text.startswith("GET")  # a stored GET entry (MISS or HIT)
            before = calls.count
            response = await client.request(method, "/r")
            assert response.text == f"{method} {before + 1}"
            assert calls.count == before + 1
            assert x_cache(response) != "HIT"


async def test_item_01_head_on_a_hit_has_the_get_headers_and_no_body(backend, clock):
    app, _, calls = cached_app(backend, clock, with_headers(("X-Extra", "1"), body="a body of some length {n}"))
    async with client_for(app) as client:
        await client.get("/r")
        get = await client.get("/r")
        head = await client.head("/r")
    assert x_cache(get) == x_cache(head) == "HIT"
    assert head.content == b""
    assert head.headers.multi_items() == get.headers.multi_items()
    assert head.headers["content-length"] == str(len(get.content)) == str(len("a body of some length 1"))
    assert calls.count == 1


async def test_item_01_head_on_a_cold_key_computes_the_get_and_stores_it(backend, clock):
    app, _, calls = cached_app(backend, clock, with_headers(("X-Extra", "1"), body="a body of some length {n}"))
    async with client_for(app) as client:
        head = await client.head("/r")
        get = await client.get("/r")
    assert x_cache(head) == "MISS"
    assert x_cache(get) == "HIT"
    assert head.content == b""
    assert get.text == "a body of some length 1"
    assert head.headers["content-length"] == str(len(get.content))
    assert without_markers(head) == without_markers(get)
    assert calls.count == 1


# -- 2. statuses --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [201, 202, 203, 204, 206, 304, 403, 404, 410, 500, 502, 503, 504, 599])
async def test_item_02_only_200_is_stored_by_default(backend, clock, status):
    app, _, _calls = cached_app(backend, clock, lambda n: Response(status_code=status, headers={"x-call": str(n)}))
    async with client_for(app) as client:
        first = await client.get("/r")
        second = await client.get("/r")
    assert first.status_code == second.status_code == status
    assert second.headers["x-call"] == "2"
    assert x_cache(second) == "SKIP"
    assert "detail=status" in cache_status(second)


async def test_item_02_opted_in_404_is_stored(backend, clock):
    app, _, calls = cached_app(
        backend,
        clock,
        lambda n: JSONResponse({"missing": n}, status_code=404),
        cacheable_statuses={200, 404},
    )
    async with client_for(app) as client:
        first = await client.get("/r")
        second = await client.get("/r")
    assert (first.status_code, x_cache(first)) == (404, "MISS")
    assert (second.status_code, x_cache(second), second.json()) == (404, "HIT", {"missing": 1})
    assert calls.count == 1


@pytest.mark.parametrize("status", [410, 201, 503])
async def test_item_02_opt_in_stores_only_the_listed_statuses(backend, clock, status):
    app, _, calls = cached_app(
        backend, clock, lambda n: PlainTextResponse(f"call {n}", status_code=status), cacheable_statuses={200, 404}
    )
    async with client_for(app) as client:
        await client.get("/r")
        await assert_not_stored(client, calls)


@pytest.mark.parametrize("statuses", [{201}, {200, 206}, {200, 304}, {200, 500}, {200, 599}, {200, 999}, set()])
def test_item_02_invalid_opt_in_raises(statuses):
    with pytest.raises(ConfigurationError):
        cache_config(cacheable_statuses=statuses)


# -- 3. no-store ----------------------------------------------------------------------------------------------

NO_STORE_RESPONSES = [
    pytest.param([("Cache-Control", "no-store")], id="lower"),
    pytest.param([("Cache-Control", "NO-STORE")], id="upper"),
    pytest.param([("Cache-Control", "No-Store")], id="mixed"),
    pytest.param([("Cache-Control", "max-age=60, no-store")], id="after-max-age"),
    pytest.param([("Cache-Control", "no-store, max-age=60")], id="before-max-age"),
    pytest.param([("Cache-Control", "max-age=60"), ("Cache-Control", "No-Store")], id="second-line"),
    pytest.param([("Cache-Control", "no-store"), ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], id="with-expires"),
    pytest.param(
        [("Cache-Control", "public, s-maxage=60, NO-STORE"), ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
        id="with-public-s-maxage-expires",
    ),
]


@pytest.mark.parametrize("headers", NO_STORE_RESPONSES)
async def test_item_03_no_store_any_case(backend, clock, headers):
    app, _, calls = cached_app(backend, clock, with_headers(*headers))
    async with client_for(app) as client:
        first = await client.get("/r")
        assert x_cache(first) == "SKIP"
        assert cache_status(first) == "intelligent-cache; fwd=uri-miss; detail=no-store"
        await assert_not_stored(client, calls)


@pytest.mark.parametrize("ttl_from_headers", [False, True])
async def test_item_03_no_store_wins_over_ttl_from_headers(backend, clock, ttl_from_headers):
    app, _, calls = cached_app(
        backend, clock, with_headers(("Cache-Control", "max-age=600, no-store")), ttl_from_headers=ttl_from_headers
    )
    async with client_for(app) as client:
        await client.get("/r")
        await assert_not_stored(client, calls)


# -- 4. private -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["private", "PRIVATE", "private, max-age=60", 'private="Set-Cookie"', 'max-age=60, private="x-a, x-b"']
)
async def test_item_04_private_is_not_stored(backend, clock, value):
    app, _, calls = cached_app(backend, clock, with_headers(("Cache-Control", value)))
    async with client_for(app) as client:
        first = await client.get("/r")
        assert x_cache(first) == "SKIP"
        assert "detail=private" in cache_status(first)
        await assert_not_stored(client, calls)


# -- 5. credentials -------------------------------------------------------------------------------------------

ALICE = {"Authorization": "Bearer alice"}
BOB = {"Authorization": "Bearer bob"}


async def test_item_05_authorization_is_never_served_another_callers_entry(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        anonymous = await client.get("/r")
        alice = await client.get("/r", headers=ALICE)
        again = await client.get("/r")
    assert anonymous.text == "call 1"
    assert alice.text == "call 2"
    assert x_cache(alice) == "SKIP"
    assert "detail=credentials" in cache_status(alice)
    # Alice's response did not replace the shared entry either.
    assert (again.text, x_cache(again)) == ("call 1", "HIT")


async def test_item_05_authorization_response_is_not_stored(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        first = await client.get("/r", headers=ALICE)
        alice_again = await client.get("/r", headers=ALICE)
        bob = await client.get("/r", headers=BOB)
        anonymous = await client.get("/r")
    assert [first.text, alice_again.text, bob.text, anonymous.text] == ["call 1", "call 2", "call 3", "call 4"]
    assert x_cache(anonymous) == "MISS"


async def test_item_05_cookie_is_treated_like_authorization(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        anonymous = await client.get("/r")
        with_cookie = await client.get("/r", headers={"Cookie": "session=alice"})
        cookie_again = await client.get("/r", headers={"Cookie": "session=alice"})
    assert anonymous.text == "call 1"
    assert (with_cookie.text, cookie_again.text) == ("call 2", "call 3")


@pytest.mark.parametrize("cache_control", ["public, max-age=60", "s-maxage=60", "max-age=60, must-revalidate"])
async def test_item_05_shareable_response_is_stored_and_served_with_authorization(backend, clock, cache_control):
    app, _, calls = cached_app(backend, clock, with_headers(("Cache-Control", cache_control)))
    async with client_for(app) as client:
        alice = await client.get("/r", headers=ALICE)
        bob = await client.get("/r", headers=BOB)
        anonymous = await client.get("/r")
    assert x_cache(alice) == "MISS"
    assert (bob.text, x_cache(bob)) == ("call 1", "HIT")
    assert (anonymous.text, x_cache(anonymous)) == ("call 1", "HIT")
    assert calls.count == 1


async def test_item_05_shared_entry_stored_anonymously_reaches_authorization_only_when_shareable(backend, clock):
    app, _, _calls = cached_app(backend, clock, with_headers(("Cache-Control", "public, max-age=60")))
    async with client_for(app) as client:
        await client.get("/r")
        alice = await client.get("/r", headers=ALICE)
    assert (alice.text, x_cache(alice)) == ("call 1", "HIT")


async def test_item_05_public_route_shares_its_entry_with_authorization(backend, clock):
    app, _, _calls = cached_app(backend, clock, public=True)
    async with client_for(app) as client:
        alice = await client.get("/r", headers=ALICE)
        bob = await client.get("/r", headers=BOB)
        cookie = await client.get("/r", headers={"Cookie": "session=x"})
    assert x_cache(alice) == "MISS"
    assert [bob.text, cookie.text] == ["call 1", "call 1"]
    assert x_cache(bob) == x_cache(cookie) == "HIT"


def identified_app(backend, clock: FakeClock, **config) -> tuple[FastAPI, Calls]:
    """A route keyed by caller: a middleware sets request.state.user_id from the bearer token."""
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.middleware("http")
    async def identify(request: Request, call_next):
        authorization = request.headers.get("authorization")
        if authorization is not None:
            request.state.user_id = authorization.removeprefix("Bearer ")
        return await call_next(request)

    @app.get("/me")
    @cache_config(vary_by=["user_id"], **config)
    async def me(request: Request):
        return {"user": getattr(request.state, "user_id", None), "call": calls.next()}

    return app, calls


async def test_item_05_vary_by_stores_one_entry_per_caller(backend, clock):
    app, _calls = identified_app(backend, clock)
    async with client_for(app) as client:
        alice = await client.get("/me", headers=ALICE)
        bob = await client.get("/me", headers=BOB)
        alice_again = await client.get("/me", headers=ALICE)
        bob_again = await client.get("/me", headers=BOB)
    assert alice.json() == alice_again.json() == {"user": "alice", "call": 1}
    assert bob.json() == bob_again.json() == {"user": "bob", "call": 2}
    assert [x_cache(r) for r in (alice, bob, alice_again, bob_again)] == ["MISS", "MISS", "HIT", "HIT"]


def router_protected_app(backend, clock: FakeClock, **config) -> tuple[FastAPI, Calls, Calls]:
    """A public cached route whose only protection is a router-level auth dependency.

    The dependency reads the token from the request itself, so the key does not vary by
    caller: every authorized caller shares one entry, and the dependency is what stands
    between that entry and an unauthenticated caller.
    """
    app, _ = new_app(backend, clock)
    checks, calls = Calls(), Calls()

    def check_token(request: Request) -> None:
        checks.next()
        if request.headers.get("authorization") not in ("Bearer alice", "Bearer bob"):
            raise HTTPException(status_code=401, detail="bad token")

    router = APIRouter(route_class=CachedRoute)

    @router.get("/reports")
    @cache_config(public=True, **config)
    async def reports():
        return {"report": calls.next()}

    app.include_router(router, prefix="/api", dependencies=[Depends(check_token)])
    return app, checks, calls


async def test_item_05_router_dependency_runs_on_every_hit(backend, clock):
    app, checks, calls = router_protected_app(backend, clock)
    async with client_for(app) as client:
        miss = await client.get("/api/reports", headers=ALICE)
        hit = await client.get("/api/reports", headers=BOB)
        hit_again = await client.get("/api/reports", headers=ALICE)
        assert [x_cache(miss), x_cache(hit), x_cache(hit_again)] == ["MISS", "HIT", "HIT"]
        assert calls.count == 1
        assert checks.count == 3

        anonymous = await client.get("/api/reports")
        forged = await client.get("/api/reports", headers={"Authorization": "Bearer mallory"})
        head = await client.head("/api/reports")
    assert anonymous.status_code == forged.status_code == head.status_code == 401
    assert "report" not in anonymous.text
    assert checks.count == 6
    assert calls.count == 1


async def test_item_05_header_dependency_keys_by_token_and_runs_on_hit(backend, clock):
    app, _ = new_app(backend, clock)
    checks, calls = Calls(), Calls()

    def check_token(authorization: Annotated[str | None, Header()] = None) -> str:
        checks.next()
        if authorization not in ("Bearer alice", "Bearer bob"):
            raise HTTPException(status_code=401)
        return authorization.removeprefix("Bearer ")

    router = APIRouter(route_class=CachedRoute)

    @router.get("/mine")
    @cache_config
    async def mine():
        return {"call": calls.next()}

    app.include_router(router, dependencies=[Depends(check_token)])
    async with client_for(app) as client:
        alice = await client.get("/mine", headers=ALICE)
        alice_again = await client.get("/mine", headers=ALICE)
        bob = await client.get("/mine", headers=BOB)
        anonymous = await client.get("/mine")
    assert (alice_again.json(), x_cache(alice_again)) == ({"call": 1}, "HIT")
    assert (bob.json(), x_cache(bob)) == ({"call": 2}, "MISS")  # keyed by the declared header
    assert anonymous.status_code == 401
    assert checks.count == 4
    assert alice.headers["cache-control"].startswith("private")


async def test_item_05_skip_dependencies_on_hit_skips_the_router_dependency(backend, clock):
    # The documented risk of skip_dependencies_on_hit: a HIT is answered before FastAPI solves
    # dependencies, so when the dependency is the route's only protection (as here), an
    # unauthenticated caller receives the cached body. Only set it when no dependency authorizes.
    app, checks, _calls = router_protected_app(backend, clock, skip_dependencies_on_hit=True)
    async with client_for(app) as client:
        miss = await client.get("/api/reports", headers=ALICE)
        hit = await client.get("/api/reports", headers=ALICE)
        anonymous = await client.get("/api/reports")
    assert [x_cache(miss), x_cache(hit)] == ["MISS", "HIT"]
    assert checks.count == 1
    assert (anonymous.status_code, anonymous.json(), x_cache(anonymous)) == (200, {"report": 1}, "HIT")


# -- 6. Set-Cookie --------------------------------------------------------------------------------------------


async def test_item_06_set_cookie_is_never_stored(backend, clock):
    def make(number: int) -> Response:
        response = PlainTextResponse(f"call {number}")
        response.set_cookie("session", f"s{number}")
        return response

    app, _, _calls = cached_app(backend, clock, make)
    async with client_for(app) as client:
        first = await client.get("/r")
        second = await client.get("/r")
    assert x_cache(first) == x_cache(second) == "SKIP"
    assert "detail=set-cookie" in cache_status(first)
    # Computed again, and never replayed without its cookie.
    assert second.text == "call 2"
    assert second.headers["set-cookie"].startswith("session=s2")


# -- 7. Vary --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["*"], id="star"),
        pytest.param(["*, Accept"], id="star-first"),
        pytest.param(["Accept, *"], id="star-last"),
        pytest.param([", *"], id="leading-comma"),
        pytest.param([" * "], id="spaces"),
        pytest.param(["Accept", "*"], id="two-lines"),
    ],
)
async def test_item_07_vary_star_is_never_stored(backend, clock, lines):
    app, _, calls = cached_app(backend, clock, with_headers(*(("Vary", line) for line in lines)))
    async with client_for(app) as client:
        first = await client.get("/r")
        assert x_cache(first) == "SKIP"
        assert "detail=vary-star" in cache_status(first)
        await assert_not_stored(client, calls)


def vary_app(backend, clock: FakeClock, vary: str) -> tuple[FastAPI, Calls]:
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.get("/v")
    @cache_config
    async def negotiated(request: Request):
        languages = request.headers.getlist("accept-language")
        return JSONResponse({"call": calls.next(), "languages": languages}, headers={"Vary": vary})

    return app, calls


async def test_item_07_vary_keys_by_each_value_and_absent_matches_only_absent(backend, clock):
    app, _calls = vary_app(backend, clock, "Accept-Language")
    sequence = [
        ({"Accept-Language": "en"}, 1, "MISS"),
        ({"Accept-Language": "fr"}, 2, "MISS"),
        ({"Accept-Language": "en"}, 1, "HIT"),
        ({}, 3, "MISS"),
        ({"Accept-Language": "fr"}, 2, "HIT"),
        ({}, 3, "HIT"),
        ({"Accept-Language": ""}, 4, "MISS"),
    ]
    async with client_for(app) as client:
        for headers, call, state in sequence:
            response = await client.get("/v", headers=headers)
            assert (response.json()["call"], x_cache(response)) == (call, state), headers


async def test_item_07_vary_ignores_request_header_order(backend, clock):
    app, calls = vary_app(backend, clock, "Accept, Accept-Language")
    async with client_for(app) as client:
        first = await client.get("/v", headers=[("Accept-Language", "en"), ("Accept", "text/plain")])
        second = await client.get("/v", headers=[("Accept", "text/plain"), ("Accept-Language", "en")])
        other = await client.get("/v", headers=[("Accept", "text/html"), ("Accept-Language", "en")])
    assert [x_cache(first), x_cache(second), x_cache(other)] == ["MISS", "HIT", "MISS"]
    assert calls.count == 2


async def test_item_07_vary_header_listed_in_any_order_and_case(backend, clock):
    app, _calls = vary_app(backend, clock, "accept-language , ACCEPT")
    async with client_for(app) as client:
        await client.get("/v", headers={"Accept": "a", "Accept-Language": "en"})
        same = await client.get("/v", headers={"Accept": "a", "Accept-Language": "en"})
        other_accept = await client.get("/v", headers={"Accept": "b", "Accept-Language": "en"})
    assert [x_cache(same), x_cache(other_accept)] == ["HIT", "MISS"]


async def test_item_07_vary_uses_every_line_of_a_repeated_request_header(backend, clock):
    # RFC 9111 section 4.1: a varying header is compared after combining all its field lines.
    # The response computed for "en" and "fr" must not answer a request that asked for "en" only.
    app, calls = vary_app(backend, clock, "Accept-Language")
    async with client_for(app) as client:
        both = await client.get("/v", headers=[("Accept-Language", "en"), ("Accept-Language", "fr")])
        english = await client.get("/v", headers=[("Accept-Language", "en")])
    assert both.json()["languages"] == ["en", "fr"]
    assert english.json()["languages"] == ["en"]
    assert calls.count == 2


# -- 8. end-to-end and hop-by-hop headers ---------------------------------------------------------------------

END_TO_END = [
    ("Content-Language", "en"),
    ("Link", "</style.css>; rel=preload"),
    ("X-Unknown-Custom", "kept as is"),
    ("X-Repeated", "one"),
    ("X-Repeated", "two"),
    ("Last-Modified", DATE),
]
HOP_BY_HOP = [
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Transfer-Encoding", "identity"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Upgrade", "h2c"),
    ("Proxy-Authenticate", 'Basic realm="x"'),
    ("Proxy-Connection", "keep-alive"),
]


async def test_item_08_stored_entries_keep_end_to_end_headers_and_drop_hop_by_hop(backend, clock):
    app, _, _calls = cached_app(backend, clock, with_headers(*END_TO_END, *HOP_BY_HOP))
    async with client_for(app) as client:
        await client.get("/r")
        hit = await client.get("/r")
    assert x_cache(hit) == "HIT"
    for name, value in END_TO_END:
        assert value in hit.headers.get_list(name), name
    assert hit.headers.get_list("x-repeated") == ["one", "two"]
    for name, _ in HOP_BY_HOP:
        assert name not in hit.headers, name


@pytest.mark.parametrize("name", ["Proxy-Status", "Proxy-Foo"])
async def test_item_08_every_proxy_header_is_dropped(backend, clock, name):
    app, _, _calls = cached_app(backend, clock, with_headers((name, "value")))
    async with client_for(app) as client:
        await client.get("/r")
        hit = await client.get("/r")
    assert x_cache(hit) == "HIT"
    assert name not in hit.headers


async def test_item_08_headers_nominated_by_connection_are_dropped(backend, clock):
    # RFC 9110 section 7.6.1: the fields a Connection header lists are hop-by-hop too.
    app, _, _calls = cached_app(
        backend, clock, with_headers(("Connection", "X-Hop"), ("X-Hop", "secret"), ("X-E2e", "1"))
    )
    async with client_for(app) as client:
        await client.get("/r")
        hit = await client.get("/r")
    assert x_cache(hit) == "HIT"
    assert hit.headers["x-e2e"] == "1"
    assert "x-hop" not in hit.headers


# -- 9. lifetime from the response ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        pytest.param([("Cache-Control", "max-age=30, s-maxage=90")], 90, id="s-maxage-over-max-age"),
        pytest.param([("Cache-Control", "s-maxage=20"), ("Cache-Control", "max-age=90")], 20, id="s-maxage-2-lines"),
        pytest.param(
            [("Cache-Control", "max-age=30"), ("Date", DATE), ("Expires", DATE_PLUS_45)], 30, id="max-age-over-expires"
        ),
        pytest.param([("Date", DATE), ("Expires", DATE_PLUS_45)], 45, id="expires-minus-date"),
        pytest.param([("Cache-Control", "MAX-AGE=25")], 25, id="upper-case"),
        pytest.param([("Cache-Control", 'community="max-age=600", max-age=15')], 15, id="quoted-decoy"),
    ],
)
async def test_item_09_ttl_from_headers_precedence(backend, clock, headers, lifetime):
    app, _, _calls = cached_app(backend, clock, with_headers(*headers), ttl_from_headers=True, ttl_seconds=300)
    async with client_for(app) as client:
        assert x_cache(await client.get("/r")) == "MISS"
        first_hit = await client.get("/r")
        assert cache_status(first_hit) == f"intelligent-cache; hit; ttl={lifetime}"
        clock.advance(lifetime - 1)
        assert x_cache(await client.get("/r")) == "HIT"
        clock.advance(1)
        last = await client.get("/r")
    assert (x_cache(last), last.text) == ("MISS", "call 2")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Cache-Control", "max-age=0")], id="zero"),
        pytest.param([("Cache-Control", "max-age=-60")], id="negative"),
        pytest.param([("Cache-Control", 'max-age="60"')], id="quoted"),
        pytest.param([("Cache-Control", "max-age=sixty")], id="non-numeric"),
        pytest.param([("Cache-Control", "max-age=6.5")], id="fraction"),
        pytest.param([("Cache-Control", "max-age=")], id="empty"),
        pytest.param([("Cache-Control", "s-maxage=0, max-age=60")], id="zero-s-maxage"),
        pytest.param([("Expires", "0")], id="expires-zero"),
        pytest.param([("Expires", "not a date")], id="expires-garbage"),
        pytest.param([("Date", DATE), ("Expires", DATE)], id="expires-equals-date"),
        pytest.param([("Date", DATE_PLUS_45), ("Expires", DATE)], id="expires-before-date"),
    ],
)
async def test_item_09_invalid_or_zero_lifetime_is_not_stored(backend, clock, headers):
    app, _, calls = cached_app(backend, clock, with_headers(*headers), ttl_from_headers=True, ttl_seconds=300)
    async with client_for(app) as client:
        first = await client.get("/r")
        assert x_cache(first) == "SKIP"
        assert "detail=not-reusable" in cache_status(first)
        await assert_not_stored(client, calls)


async def test_item_09_max_age_inside_a_quoted_string_is_not_a_lifetime(backend, clock):
    app, _, calls = cached_app(
        backend,
        clock,
        with_headers(("Cache-Control", 'community="max-age=600"')),
        ttl_from_headers=True,
        ttl_seconds=10,
    )
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(10)
        await assert_not_stored(client, calls)


# -- 10-12. Age, Cache-Control and Date on HITs -----------------------------------------------------------------


async def test_item_10_age_counts_seconds_since_storage_and_replaces_upstream_age(backend, clock):
    app, _, _calls = cached_app(backend, clock, with_headers(("Age", "100")), ttl_seconds=60)
    async with client_for(app) as client:
        await client.get("/r")
        immediately = await client.get("/r")
        clock.advance(7)
        later = await client.get("/r")
        clock.advance(0.9)
        fraction = await client.get("/r")
    assert immediately.headers.get_list("age") == ["0"]
    assert later.headers.get_list("age") == ["7"]
    assert fraction.headers.get_list("age") == ["7"]
    assert x_cache(later) == "HIT"


async def test_item_10_never_fresh_once_age_reaches_the_lifetime(backend, clock):
    app, _, _calls = cached_app(backend, clock, ttl_seconds=60)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(59)
        last_hit = await client.get("/r")
        clock.advance(1)
        expired = await client.get("/r")
    assert (x_cache(last_hit), last_hit.headers["age"], last_hit.text) == ("HIT", "59", "call 1")
    assert (x_cache(expired), expired.text) == ("MISS", "call 2")
    assert "age" not in expired.headers


async def test_item_11_hit_cache_control_is_the_full_lifetime_beside_age(backend, clock):
    app, _, _calls = cached_app(backend, clock, ttl_seconds=60)
    async with client_for(app) as client:
        miss = await client.get("/r")
        clock.advance(25)
        hit = await client.get("/r")
    assert miss.headers.get_list("cache-control") == ["max-age=60"]
    assert hit.headers.get_list("cache-control") == ["max-age=60"]
    assert hit.headers["age"] == "25"
    assert "ttl=35" in cache_status(hit)


async def test_item_11_endpoint_cache_control_is_kept_unchanged(backend, clock):
    app, _, _calls = cached_app(backend, clock, with_headers(("Cache-Control", "public, max-age=300")), ttl_seconds=60)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(5)
        hit = await client.get("/r")
    assert hit.headers.get_list("cache-control") == ["public, max-age=300"]


async def test_item_11_per_user_routes_send_private(backend, clock):
    app, _calls = identified_app(backend, clock, ttl_seconds=60)
    async with client_for(app) as client:
        miss = await client.get("/me", headers=ALICE)
        clock.advance(3)
        hit = await client.get("/me", headers=ALICE)
    assert miss.headers.get_list("cache-control") == ["private, max-age=60"]
    assert hit.headers.get_list("cache-control") == ["private, max-age=60"]
    assert x_cache(hit) == "HIT"


async def test_item_11_route_keyed_by_a_declared_cookie_sends_private(backend, clock):
    app, _ = new_app(backend, clock)

    @app.get("/cart")
    @cache_config(ttl_seconds=60)
    async def cart(session: Annotated[str | None, Cookie()] = None):
        return {"session": session}

    async with client_for(app) as client:
        miss = await client.get("/cart", headers={"Cookie": "session=a"})
        hit = await client.get("/cart", headers={"Cookie": "session=a"})
        other = await client.get("/cart", headers={"Cookie": "session=b"})
    assert miss.headers["cache-control"] == "private, max-age=60"
    assert (x_cache(hit), hit.json()) == ("HIT", {"session": "a"})
    assert (x_cache(other), other.json()) == ("MISS", {"session": "b"})


async def test_item_12_hit_never_carries_more_than_one_date(backend, clock):
    app, _, _calls = cached_app(backend, clock, with_headers(("Date", DATE)))
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(4)
        hit = await client.get("/r")
    assert x_cache(hit) == "HIT"
    assert len(hit.headers.get_list("date")) <= 1
    # README: entries do not keep Date; the server in front adds a fresh one (see test_http_client.py).
    assert DATE not in hit.headers.get_list("date")


# -- 13. request no-cache / max-age=0 ------------------------------------------------------------------------

REVALIDATING_REQUESTS = [
    pytest.param({"Cache-Control": "no-cache"}, id="no-cache"),
    pytest.param({"Cache-Control": "NO-CACHE"}, id="no-cache-upper"),
    pytest.param({"Cache-Control": "max-age=0"}, id="max-age-0"),
    pytest.param({"Pragma": "no-cache"}, id="pragma"),
]


@pytest.mark.parametrize("headers", REVALIDATING_REQUESTS)
async def test_item_13_request_no_cache_recomputes_and_stores_the_new_response(backend, clock, headers):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        await client.get("/r")
        forced = await client.get("/r", headers=headers)
        after = await client.get("/r")
    assert forced.text == "call 2"
    # Not answered from the cache (SKIP), but its fresh response replaces the entry (route.py, RFC 9111 5.2.1.4).
    assert x_cache(forced) == "SKIP"
    assert cache_status(forced) == "intelligent-cache; fwd=request; stored"
    assert (after.text, x_cache(after)) == ("call 2", "HIT")


@pytest.mark.parametrize("headers", REVALIDATING_REQUESTS)
async def test_item_13_request_no_cache_on_a_cold_key_is_stored(backend, clock, headers):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        forced = await client.get("/r", headers=headers)
        after = await client.get("/r")
    assert (forced.text, x_cache(forced), cache_status(forced)) == (
        "call 1",
        "SKIP",
        "intelligent-cache; fwd=request; stored",
    )
    assert (after.text, x_cache(after)) == ("call 1", "HIT")


async def test_item_13_pragma_is_ignored_when_cache_control_is_present(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        await client.get("/r")
        response = await client.get("/r", headers={"Pragma": "no-cache", "Cache-Control": "max-age=600"})
    assert (response.text, x_cache(response)) == ("call 1", "HIT")


async def test_item_13_request_max_age_bounds_the_age_of_a_hit(backend, clock):
    app, _, _calls = cached_app(backend, clock, ttl_seconds=60)
    async with client_for(app) as client:
        await client.get("/r")
        clock.advance(7)
        young_enough = await client.get("/r", headers={"Cache-Control": "max-age=10"})
        too_old = await client.get("/r", headers={"Cache-Control": "max-age=5"})
    assert (young_enough.text, x_cache(young_enough)) == ("call 1", "HIT")
    assert (too_old.text, x_cache(too_old)) == ("call 2", "MISS")


async def test_item_13_concurrent_no_cache_requests_compute_once(backend, clock):
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.get("/slow")
    @cache_config
    async def slow():
        number = calls.next()
        await asyncio.sleep(0.1)
        return {"call": number}

    async with client_for(app) as client:
        await client.get("/slow")
        responses = await asyncio.gather(
            *(client.get("/slow", headers={"Cache-Control": "no-cache"}) for _ in range(20))
        )
        after = await client.get("/slow")
    assert calls.count == 2
    assert {r.json()["call"] for r in responses} == {2}
    assert sorted(x_cache(r) for r in responses) == ["HIT"] * 19 + ["SKIP"]
    assert sum("collapsed" in cache_status(r) for r in responses) == 19
    assert (after.json(), x_cache(after)) == ({"call": 2}, "HIT")


# -- 14. only-if-cached and request no-store ------------------------------------------------------------------


async def test_item_14_only_if_cached_returns_the_fresh_entry_or_504(backend, clock):
    app, _, calls = cached_app(backend, clock, ttl_seconds=60)
    only = {"Cache-Control": "only-if-cached"}
    async with client_for(app) as client:
        cold = await client.get("/r", headers=only)
        assert (cold.status_code, cold.content, calls.count) == (504, b"", 0)
        await client.get("/r")
        stored = await client.get("/r", headers=only)
        assert (stored.status_code, stored.text, x_cache(stored)) == (200, "call 1", "HIT")
        clock.advance(60)
        expired = await client.get("/r", headers=only)
    assert expired.status_code == 504
    assert calls.count == 1
    for response in (cold, expired):
        assert x_cache(response) is not None and cache_status(response).startswith("intelligent-cache")


@pytest.mark.parametrize("value", ["no-store", "NO-STORE", "max-age=60, no-store"])
async def test_item_14_request_no_store_keeps_the_response_out_of_the_cache(backend, clock, value):
    app, _, calls = cached_app(backend, clock)
    async with client_for(app) as client:
        response = await client.get("/r", headers={"Cache-Control": value})
        assert (x_cache(response), cache_status(response)) == ("SKIP", "intelligent-cache; fwd=bypass; detail=no-store")
        await assert_not_stored(client, calls)


async def test_item_14_request_no_store_does_not_replace_an_entry(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        await client.get("/r")
        await client.get("/r", headers={"Cache-Control": "no-store"})
        after = await client.get("/r")
    assert (after.text, x_cache(after)) == ("call 1", "HIT")


# -- 15. ETag ---------------------------------------------------------------------------------------------------

ETAG_SCRIPT = textwrap.dedent(
    """
    import asyncio, httpx
    from fastapi import FastAPI
    from intelligent_cache import CacheManager, cache_config

    app = FastAPI()
    CacheManager().init_app(app)

    @app.get("/doc")
    @cache_config
    async def doc():
        return {"title": "same", "items": [1, 2, 3]}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            print((await client.get("/doc")).headers["etag"])

    asyncio.run(main())
    """
)


def document_app(backend, clock: FakeClock) -> FastAPI:
    app, _ = new_app(backend, clock)

    @app.get("/doc")
    @cache_config
    async def doc():
        return {"title": "same", "items": [1, 2, 3]}

    return app


async def test_item_15_etag_is_strong_and_identical_across_apps(backend, clock):
    async with client_for(document_app(backend, clock)) as client:
        miss = await client.get("/doc")
        hit = await client.get("/doc")
    async with client_for(document_app(MemoryBackend(clock=clock), clock)) as client:
        other_app = await client.get("/doc")
    etag = miss.headers["etag"]
    assert not etag.startswith("W/")
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert x_cache(hit) == "HIT"
    assert hit.headers["etag"] == other_app.headers["etag"] == etag


async def test_item_15_etag_is_identical_across_processes(clock):
    async with client_for(document_app(MemoryBackend(clock=clock), clock)) as client:
        etag = (await client.get("/doc")).headers["etag"]
    # Two fresh interpreters with different hash seeds: no hash(), no per-process salt.
    for seed in ("1", "2"):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", ETAG_SCRIPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == etag


async def test_item_15_etag_differs_when_the_body_or_representation_differs(backend, clock):
    app, _ = new_app(backend, clock)

    @app.get("/text")
    @cache_config
    async def text():
        return PlainTextResponse("{}")

    @app.get("/json")
    @cache_config
    async def as_json():
        return Response("{}", media_type="application/json")

    @app.get("/other")
    @cache_config
    async def other():
        return PlainTextResponse("{ }")

    async with client_for(app) as client:
        tags = {(await client.get(path)).headers["etag"] for path in ("/text", "/json", "/other")}
    assert len(tags) == 3


@pytest.mark.parametrize("origin_etag", ['"v1"', 'W/"v1"', '"sha-abc:1"'])
async def test_item_15_origin_etag_is_kept_unchanged(backend, clock, origin_etag):
    app, _, _calls = cached_app(backend, clock, with_headers(("ETag", origin_etag)))
    async with client_for(app) as client:
        miss = await client.get("/r")
        hit = await client.get("/r")
    assert miss.headers.get_list("etag") == hit.headers.get_list("etag") == [origin_etag]


# -- 16-17. conditional requests --------------------------------------------------------------------------------

CONDITIONAL_HEADERS = [
    ("Vary", "Accept-Language"),
    ("Content-Location", "/r/en"),
    ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
    ("Cache-Control", "max-age=60"),
    ("Last-Modified", DATE),
    ("X-Not-Repeated", "body metadata"),
]


def matching_validators(etag: str) -> list[str]:
    return [etag, f'"other", {etag}', f'"a",{etag} , "b"', f"W/{etag}", "*"]


async def learn_etag(client: httpx.AsyncClient) -> str:
    """The ETag of the conditional route's response, read from a twin path that stores nothing under /r."""
    return (await client.get("/twin")).headers["etag"]


def conditional_app(backend, clock: FakeClock) -> tuple[FastAPI, Calls]:
    app, _, calls = cached_app(backend, clock, with_headers(*CONDITIONAL_HEADERS, body="body"), paths=("/r", "/twin"))
    return app, calls


def assert_not_modified(response: httpx.Response, reference: httpx.Response) -> None:
    assert response.status_code == 304
    assert response.content == b""
    for name in ("etag", "cache-control", "vary", "content-location", "expires"):
        assert response.headers.get_list(name) == reference.headers.get_list(name), name
    assert x_cache(response) is not None
    assert cache_status(response).startswith("intelligent-cache")


@pytest.mark.parametrize("index", range(5), ids=["exact", "list", "list-no-spaces", "weak", "star"])
async def test_item_16_if_none_match_on_a_hit_gives_304(backend, clock, index):
    app, calls = conditional_app(backend, clock)
    async with client_for(app) as client:
        reference = await client.get("/r")
        validator = matching_validators(reference.headers["etag"])[index]
        response = await client.get("/r", headers={"If-None-Match": validator})
    assert x_cache(response) == "HIT"
    assert_not_modified(response, reference)
    assert calls.count == 1


@pytest.mark.parametrize("index", range(5), ids=["exact", "list", "list-no-spaces", "weak", "star"])
async def test_item_16_if_none_match_on_a_miss_gives_304_and_stores(backend, clock, index):
    app, _calls = conditional_app(backend, clock)
    async with client_for(app) as client:
        etag = await learn_etag(client)
        response = await client.get("/r", headers={"If-None-Match": matching_validators(etag)[index]})
        reference = await client.get("/r")
    assert x_cache(response) == "MISS"
    assert (reference.status_code, reference.text, x_cache(reference)) == (200, "body", "HIT")
    assert_not_modified(response, reference)


async def test_item_16_weak_origin_etag_matches_by_weak_comparison(backend, clock):
    app, _, _calls = cached_app(backend, clock, with_headers(("ETag", 'W/"v1"')))
    async with client_for(app) as client:
        miss = await client.get("/r", headers={"If-None-Match": '"v1"'})
        hit = await client.get("/r", headers={"If-None-Match": 'W/"v1"'})
    assert (miss.status_code, hit.status_code) == (304, 304)
    assert hit.headers["etag"] == 'W/"v1"'


@pytest.mark.parametrize("validator", ['"nope"', 'W/"nope"', '"a", "b"'])
async def test_item_16_non_matching_if_none_match_gives_200(backend, clock, validator):
    app, _calls = conditional_app(backend, clock)
    async with client_for(app) as client:
        miss = await client.get("/r", headers={"If-None-Match": validator})
        hit = await client.get("/r", headers={"If-None-Match": validator})
    assert (miss.status_code, miss.text, x_cache(miss)) == (200, "body", "MISS")
    assert (hit.status_code, hit.text, x_cache(hit)) == (200, "body", "HIT")


@pytest.mark.parametrize("validator", ["garbage", '"unterminated', "W/", '"a" "b"', "**", ",,", '"a", garbage'])
async def test_item_17_malformed_if_none_match_is_ignored(backend, clock, validator):
    app, _calls = conditional_app(backend, clock)
    async with client_for(app) as client:
        miss = await client.get("/r", headers={"If-None-Match": validator})
        hit = await client.get("/r", headers={"If-None-Match": validator})
    assert (miss.status_code, miss.text) == (200, "body")
    assert (hit.status_code, hit.text, x_cache(hit)) == (200, "body", "HIT")


async def test_item_17_if_none_match_takes_precedence_over_if_modified_since(backend, clock):
    app, _calls = conditional_app(backend, clock)
    far_future = "Thu, 01 Jan 2099 00:00:00 GMT"
    ancient = "Thu, 01 Jan 1970 00:00:01 GMT"
    async with client_for(app) as client:
        etag = await learn_etag(client)
        # A non-matching tag with an If-Modified-Since that alone would give 304: 200.
        miss = await client.get("/r", headers={"If-None-Match": '"nope"', "If-Modified-Since": far_future})
        hit = await client.get("/r", headers={"If-None-Match": '"nope"', "If-Modified-Since": far_future})
        # A matching tag with an If-Modified-Since that alone would give 200: 304.
        matched = await client.get("/r", headers={"If-None-Match": etag, "If-Modified-Since": ancient})
    assert (miss.status_code, hit.status_code, matched.status_code) == (200, 200, 304)
    assert x_cache(hit) == "HIT"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"If-Match": '"nope"'}, id="if-match"),
        pytest.param({"If-Match": "garbage"}, id="if-match-malformed"),
        pytest.param({"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:01 GMT"}, id="if-unmodified-since"),
    ],
)
async def test_item_17_if_match_and_if_unmodified_since_are_not_evaluated(backend, clock, headers):
    app, _calls = conditional_app(backend, clock)
    async with client_for(app) as client:
        miss = await client.get("/r", headers=headers)
        hit = await client.get("/r", headers=headers)
    assert (miss.status_code, miss.text, x_cache(miss)) == (200, "body", "MISS")
    assert (hit.status_code, hit.text, x_cache(hit)) == (200, "body", "HIT")


# -- 18-19. the key ---------------------------------------------------------------------------------------------


def query_app(backend, clock: FakeClock) -> tuple[FastAPI, Calls]:
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.get("/items")
    @cache_config
    async def items(request: Request):
        return {"call": calls.next(), "query": sorted(request.query_params.multi_items())}

    return app, calls


async def test_item_18_query_parameter_order_does_not_matter(backend, clock):
    app, calls = query_app(backend, clock)
    async with client_for(app) as client:
        first = await client.get("/items?page=2&sort=name&size=10")
        reordered = await client.get("/items?size=10&page=2&sort=name")
        encoded = await client.get("/items?sort=%6Eame&size=10&page=2")
    assert x_cache(reordered) == x_cache(encoded) == "HIT"
    assert first.json() == reordered.json() == encoded.json()
    assert calls.count == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/items?page=1", "/items?page=2"),
        ("/items?page=1", "/items"),
        ("/items?page=1", "/items?page=1&extra="),
        ("/items?a=1", "/items?b=1"),
        ("/items?tag=a&tag=b", "/items?tag=a"),
        # Repeated parameters keep their relative order (README: FastAPI hands them over as a list).
        ("/items?tag=a&tag=b", "/items?tag=b&tag=a"),
    ],
)
async def test_item_18_different_query_values_are_different_entries(backend, clock, first, second):
    app, calls = query_app(backend, clock)
    async with client_for(app) as client:
        await client.get(first)
        other = await client.get(second)
        again = await client.get(first)
    assert x_cache(other) == "MISS"
    assert x_cache(again) == "HIT"
    assert calls.count == 2


def test_item_18_key_covers_method_path_and_canonical_query():
    assert build_key("GET", "/items", b"b=2&a=1") == build_key("GET", "/items", b"a=1&b=2")
    assert build_key("GET", "/items", b"a=1") != build_key("GET", "/items", b"a=2")
    assert build_key("GET", "/items", b"a=1") != build_key("HEAD", "/items", b"a=1")
    assert build_key("GET", "/items/", b"") != build_key("GET", "/items", b"")


async def test_item_19_declared_request_headers_are_keyed(backend, clock):
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.get("/tenant")
    @cache_config
    async def tenant(x_tenant: Annotated[str | None, Header()] = None):
        return {"tenant": x_tenant, "call": calls.next()}

    async with client_for(app) as client:
        acme = await client.get("/tenant", headers={"X-Tenant": "acme"})
        globex = await client.get("/tenant", headers={"X-Tenant": "globex"})
        nobody = await client.get("/tenant")
        acme_again = await client.get("/tenant", headers={"X-Tenant": "acme"})
    assert [acme.json()["tenant"], globex.json()["tenant"], nobody.json()["tenant"]] == ["acme", "globex", None]
    assert (acme_again.json(), x_cache(acme_again)) == (acme.json(), "HIT")
    assert calls.count == 3


async def test_item_19_declared_repeated_header_is_keyed_by_every_line(backend, clock):
    app, _ = new_app(backend, clock)
    calls = Calls()

    @app.get("/scopes")
    @cache_config
    async def scopes(x_scope: Annotated[list[str] | None, Header()] = None):
        return {"scopes": x_scope, "call": calls.next()}

    async with client_for(app) as client:
        both = await client.get("/scopes", headers=[("X-Scope", "read"), ("X-Scope", "admin")])
        read_only = await client.get("/scopes", headers=[("X-Scope", "read")])
    assert both.json()["scopes"] == ["read", "admin"]
    assert read_only.json()["scopes"] == ["read"]
    assert calls.count == 2


# -- 20. writes invalidate ----------------------------------------------------------------------------------------


def store_app(backend, clock: FakeClock) -> tuple[FastAPI, dict[str, int]]:
    """Cached reads of a few paths, each answering a version that writes bump, plus writes of every kind."""
    app, _ = new_app(backend, clock)
    version = {"n": 0}

    async def read(request: Request):
        return {"path": request.url.path, "version": version["n"]}

    for path in ("/items", "/items/3", "/items/3/parts", "/other/1", "/elsewhere", "/unrelated"):
        app.get(path)(cache_config(read))

    async def write(request: Request):
        version["n"] += 1
        status = int(request.query_params.get("status", "200"))
        headers = {}
        for name in ("location", "content-location"):
            if name in request.query_params:
                headers[name] = request.query_params[name]
        if request.query_params.get("raise") == "http":
            raise HTTPException(status_code=status)
        if request.query_params.get("raise") == "crash":
            raise RuntimeError("write failed")
        return Response(status_code=status, headers=headers)

    app.api_route("/items", methods=["POST", "PURGE"])(write)
    app.api_route("/items/3", methods=["PUT", "PATCH", "DELETE"])(write)
    return app, version


async def cached_versions(client: httpx.AsyncClient, paths: list[str]) -> dict[str, str]:
    return {path: x_cache(await client.get(path)) for path in paths}


READ_PATHS = ["/items", "/items/3", "/items/3/parts", "/other/1", "/elsewhere", "/unrelated"]


@pytest.mark.parametrize(
    ("method", "url", "invalidated"),
    [
        ("POST", "/items?status=201", {"/items", "/items/3", "/items/3/parts"}),
        ("PURGE", "/items", {"/items", "/items/3", "/items/3/parts"}),
        ("PUT", "/items/3", {"/items", "/items/3", "/items/3/parts"}),
        ("PATCH", "/items/3?status=204", {"/items", "/items/3", "/items/3/parts"}),
        ("DELETE", "/items/3?status=202", {"/items", "/items/3", "/items/3/parts"}),
        ("POST", "/items?status=303&location=/other/1", {"/items", "/items/3", "/items/3/parts", "/other/1"}),
        (
            "POST",
            "/items?status=201&location=http://testserver/other/1",
            {"/items", "/items/3", "/items/3/parts", "/other/1"},
        ),
        (
            "POST",
            "/items?status=201&content-location=/elsewhere",
            {"/items", "/items/3", "/items/3/parts", "/elsewhere"},
        ),
        ("POST", "/items?status=201&location=http://evil.example/other/1", {"/items", "/items/3", "/items/3/parts"}),
    ],
)
async def test_item_20_successful_writes_invalidate_target_and_same_origin_locations(
    backend, clock, method, url, invalidated
):
    app, _version = store_app(backend, clock)
    async with client_for(app) as client:
        await cached_versions(client, READ_PATHS)
        response = await client.request(method, url)
        assert response.status_code < 400
        after = await cached_versions(client, READ_PATHS)
    assert {path for path, state in after.items() if state == "MISS"} == invalidated
    assert all(state == "HIT" for path, state in after.items() if path not in invalidated)


@pytest.mark.parametrize(
    "url",
    [
        "/items?status=400",
        "/items?status=404&location=/other/1",
        "/items?status=409&raise=http",
        "/items?status=500&location=/other/1",
        "/items?status=503&raise=http",
        "/items?raise=crash",
    ],
)
async def test_item_20_failed_writes_invalidate_nothing(backend, clock, url):
    app, version = store_app(backend, clock)
    async with client_for(app) as client:
        await cached_versions(client, READ_PATHS)
        response = await client.post(url)
        assert response.status_code >= 400
        after = await cached_versions(client, READ_PATHS)
    assert set(after.values()) == {"HIT"}
    assert version["n"] == 1  # the write did run


# -- 21. tag invalidation cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entries", [1, 200])
async def test_item_21_tag_invalidation_cost_does_not_depend_on_the_entry_count(backend, clock, entries):
    app, _ = new_app(backend, clock)

    @app.get("/catalog")
    @cache_config(tags=["catalog"])
    async def catalog(page: int = 0):
        return {"page": page}

    @app.post("/restock")
    @invalidates("catalog", hierarchy=False)
    async def restock():
        return {"ok": True}

    recorded: list[tuple[str, tuple]] = []
    for name in ("bump", "delete", "clear", "scan", "set"):
        original = getattr(backend, name)

        def recording(*args, _name=name, _original=original):
            recorded.append((_name, tuple(args[0]) if _name == "bump" else args[:1]))
            return _original(*args)

        setattr(backend, name, recording)
    async with client_for(app) as client:
        for page in range(entries):
            await client.get(f"/catalog?page={page}")
        recorded.clear()
        await client.post("/restock")
        operations = list(recorded)
        after = await client.get("/catalog?page=0")
    assert operations == [("bump", ("~g:t:catalog",))]
    assert x_cache(after) == "MISS"


# -- 25. every response says what the cache did -------------------------------------------------------------------


def marked_app(backend, clock: FakeClock) -> FastAPI:
    app, _ = new_app(backend, clock)

    def require_token(request: Request) -> None:
        if request.headers.get("x-token") == "deny":
            raise HTTPException(status_code=401)

    @app.get("/ok")
    @cache_config
    async def ok():
        return {"ok": True}

    @app.get("/typed")
    @cache_config
    async def typed(page: int = 1):
        return {"page": page}

    @app.get("/missing")
    @cache_config
    async def missing():
        raise HTTPException(status_code=404, detail="no such thing")

    @app.get("/guarded", dependencies=[Depends(require_token)])
    @cache_config
    async def guarded():
        return {"guarded": True}

    @app.get("/private")
    @cache_config
    async def private():
        return JSONResponse({"p": 1}, headers={"Cache-Control": "private"})

    return app


RESPONSE_SCENARIOS = {
    "miss": ("GET", "/ok", {}),
    "hit": ("GET", "/ok", {}),
    "head": ("HEAD", "/ok", {}),
    "not-modified": ("GET", "/ok", {"If-None-Match": "*"}),
    "request-no-store": ("GET", "/ok", {"Cache-Control": "no-store"}),
    "request-no-cache": ("GET", "/ok", {"Cache-Control": "no-cache"}),
    "only-if-cached-miss": ("GET", "/typed", {"Cache-Control": "only-if-cached"}),
    "credentials": ("GET", "/ok", {"Authorization": "Bearer x"}),
    "response-private": ("GET", "/private", {}),
    "validation-error": ("GET", "/typed?page=abc", {}),
    "http-exception": ("GET", "/missing", {}),
    "dependency-refuses": ("GET", "/guarded", {"X-Token": "deny"}),
}


@pytest.mark.parametrize("scenario", list(RESPONSE_SCENARIOS))
async def test_item_25_every_response_of_a_cached_route_has_x_cache_and_cache_status(backend, clock, scenario):
    app = marked_app(backend, clock)
    method, url, headers = RESPONSE_SCENARIOS[scenario]
    async with client_for(app) as client:
        await client.get("/ok")
        response = await client.request(method, url, headers=headers)
    assert x_cache(response) in ("HIT", "MISS", "STALE", "SKIP"), (response.status_code, dict(response.headers))
    status = cache_status(response)
    assert status.startswith("intelligent-cache;"), status
    assert len(response.headers.get_list("x-cache")) == len(response.headers.get_list("cache-status")) == 1


# -- 26. failures fall back to computing ---------------------------------------------------------------------------


async def test_item_26_corrupt_entry_is_a_miss_and_is_replaced(backend, clock):
    app, _manager, calls = cached_app(backend, clock)
    key = build_key("GET", "/r")
    for garbage in (b"\x00not msgpack", b"\x93\xa3icr\x01\x02", b""):
        await backend.set(key, garbage, 60)
        async with client_for(app) as client:
            miss = await client.get("/r")
            hit = await client.get("/r")
        assert (miss.status_code, x_cache(miss)) == (200, "MISS")
        assert (hit.text, x_cache(hit)) == (miss.text, "HIT")
    assert calls.count == 3


class BrokenBackend(MemoryBackend):
    """A backend whose every call fails, as a dead Redis would."""

    async def fetch(self, key, generation_keys):
        raise ConnectionError("backend down")

    async def get(self, key):
        raise ConnectionError("backend down")

    async def set(self, key, value, ttl):
        raise ConnectionError("backend down")

    async def bump(self, generation_keys):
        raise ConnectionError("backend down")


class UnwritableBackend(MemoryBackend):
    """Reads work, writes fail."""

    async def set(self, key, value, ttl):
        raise TimeoutError("write timed out")


@pytest.mark.parametrize("backend_class", [BrokenBackend, UnwritableBackend])
async def test_item_26_backend_failures_never_become_5xx(clock, backend_class):
    app, _manager, _calls = cached_app(backend_class(clock=clock), clock)

    @app.post("/r")
    async def write():
        return {"written": True}

    async with client_for(app) as client:
        first = await client.get("/r")
        second = await client.get("/r")
        write_response = await client.post("/r")
    assert (first.status_code, second.status_code, write_response.status_code) == (200, 200, 200)
    assert (first.text, second.text) == ("call 1", "call 2")
    assert x_cache(second) == "SKIP"
    assert "detail=backend-error" in cache_status(second)


# -- 27. missing invalidation metadata reads as a MISS ---------------------------------------------------------------


async def test_item_27_invalidated_entry_never_hits_after_its_counters_are_evicted(backend, clock):
    app, _version = store_app(backend, clock)
    async with client_for(app) as client:
        before = await client.get("/items")
        assert x_cache(await client.get("/items")) == "HIT"
        await client.post("/items")
        await evict_generation_counters(backend)
        after = await client.get("/items")
    assert x_cache(after) == "MISS"
    assert after.json()["version"] == before.json()["version"] + 1


async def test_item_27_entry_whose_counters_were_evicted_is_a_miss(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        await client.get("/r")
        assert x_cache(await client.get("/r")) == "HIT"
        await evict_generation_counters(backend)
        after = await client.get("/r")
        again = await client.get("/r")
    assert (after.text, x_cache(after)) == ("call 2", "MISS")
    assert (again.text, x_cache(again)) == ("call 2", "HIT")


# -- sanity of the harness: the Cache-Status grammar ---------------------------------------------------------------


async def test_cache_status_values_are_rfc_9211_lists(backend, clock):
    app, _, _calls = cached_app(backend, clock)
    async with client_for(app) as client:
        statuses = [
            cache_status(await client.get("/r")),
            cache_status(await client.get("/r")),
            cache_status(await client.get("/r", headers={"Cache-Control": "no-store"})),
        ]
    assert statuses == [
        "intelligent-cache; fwd=uri-miss; stored",
        "intelligent-cache; hit; ttl=60",
        "intelligent-cache; fwd=bypass; detail=no-store",
    ]
