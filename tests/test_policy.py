"""What may be served from the cache (request side) and what may be stored (response side), seen over HTTP."""

from collections.abc import Callable

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from intelligent_cache import CacheManager, cache_config


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def next(self) -> int:
        self.calls += 1
        return self.calls


def app_with(
    manager: CacheManager,
    make_response: Callable[[int], Response] | None = None,
    **config,
) -> tuple[TestClient, Counter]:
    """An app whose cached GET /r answers ``make_response(call number)`` (default: the number as text)."""
    app = FastAPI()
    manager.init_app(app)
    counter = Counter()

    @app.middleware("http")
    async def identify(request: Request, call_next):
        # How an app sets request.state.user_id from its credentials, before routing.
        authorization = request.headers.get("authorization")
        if authorization is not None:
            request.state.user_id = authorization.removeprefix("Bearer ")
        return await call_next(request)

    @app.get("/r")
    @cache_config(**config)
    async def endpoint():
        number = counter.next()
        if make_response is None:
            return Response(f"call {number}", media_type="text/plain")
        return make_response(number)

    return TestClient(app, follow_redirects=False), counter


# -- request side ------------------------------------------------------------------------------------------

BYPASSING_REQUESTS = [
    pytest.param([("Cache-Control", "no-cache")], id="no-cache"),
    pytest.param([("Cache-Control", "no-store")], id="no-store"),
    pytest.param([("Cache-Control", "No-Cache")], id="no-cache-mixed-case"),
    pytest.param([("Cache-Control", "NO-STORE")], id="no-store-upper-case"),
    pytest.param([("Cache-Control", "max-age=3600, no-cache")], id="no-cache-after-max-age"),
    pytest.param([("Cache-Control", "no-store , no-transform")], id="no-store-before-other"),
    pytest.param([("Cache-Control", "no-transform"), ("Cache-Control", "no-cache")], id="no-cache-on-second-line"),
    pytest.param([("Pragma", "no-cache")], id="pragma-without-cache-control"),
    pytest.param([("Pragma", "No-Cache")], id="pragma-mixed-case"),
]


@pytest.mark.parametrize("headers", BYPASSING_REQUESTS)
def test_bypassing_request_is_computed_fresh(manager, headers):
    client, counter = app_with(manager)
    assert client.get("/r").headers["x-cache"] == "MISS"

    response = client.get("/r", headers=headers)

    assert response.text == "call 2"  # computed, not the stored "call 1"
    assert counter.calls == 2
    assert response.headers["x-cache"] == "SKIP"


@pytest.mark.parametrize("headers", BYPASSING_REQUESTS)
def test_bypassing_request_on_a_cold_key_is_computed(manager, headers):
    client, counter = app_with(manager)
    response = client.get("/r", headers=headers)
    assert response.text == "call 1"
    assert counter.calls == 1
    assert response.headers["x-cache"] == "SKIP"


@pytest.mark.parametrize("value", ["no-store", "NO-STORE", "max-age=60, no-store"])
def test_request_no_store_keeps_the_response_out_of_the_cache(manager, value):
    client, _counter = app_with(manager)
    client.get("/r", headers={"Cache-Control": value})
    response = client.get("/r")
    assert response.headers["x-cache"] == "MISS"
    assert response.text == "call 2"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Cache-Control": "no-transform"}, id="unrelated-directive"),
        pytest.param({"Cache-Control": "max-age=3600"}, id="generous-max-age"),
        # Pragma only counts when Cache-Control is absent (RFC 9111 section 5.4).
        pytest.param({"Cache-Control": "max-age=3600", "Pragma": "no-cache"}, id="pragma-with-cache-control"),
        pytest.param({"Pragma": "public"}, id="other-pragma"),
        pytest.param({"X-No-Cache": "no-cache"}, id="lookalike-header"),
        pytest.param({"Cache-Control": 'x-ext="no-cache"'}, id="no-cache-inside-quotes"),
    ],
)
def test_other_request_headers_do_not_bypass(manager, headers):
    client, counter = app_with(manager)
    client.get("/r")
    response = client.get("/r", headers=headers)
    assert response.headers["x-cache"] == "HIT"
    assert response.text == "call 1"
    assert counter.calls == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer alice"}, id="authorization"),
        pytest.param({"Cookie": "session=alice"}, id="cookie"),
        pytest.param({"Authorization": ""}, id="empty-authorization"),
    ],
)
def test_credentials_bypass_without_vary_by(manager, headers):
    client, _counter = app_with(manager)
    assert client.get("/r").headers["x-cache"] == "MISS"

    first = client.get("/r", headers=headers)
    second = client.get("/r", headers=headers)

    assert first.headers["x-cache"] == second.headers["x-cache"] == "SKIP"
    assert (first.text, second.text) == ("call 2", "call 3")
    # The anonymous entry is still the anonymous one.
    assert client.get("/r").text == "call 1"


def test_authorization_uses_the_cache_when_the_route_varies_by_caller(manager):
    client, _counter = app_with(manager, vary_by=["user_id"])
    alice = {"Authorization": "Bearer alice"}
    bob = {"Authorization": "Bearer bob"}

    assert client.get("/r", headers=alice).headers["x-cache"] == "MISS"
    hit = client.get("/r", headers=alice)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.text == "call 1"
    other = client.get("/r", headers=bob)
    assert other.headers["x-cache"] == "MISS"
    assert other.text == "call 2"


def test_cookie_uses_the_cache_when_the_route_varies_by_that_cookie(manager):
    client, counter = app_with(manager, vary_by=["cookie:session"])
    assert client.get("/r", headers={"Cookie": "session=a"}).headers["x-cache"] == "MISS"
    assert client.get("/r", headers={"Cookie": "session=a"}).text == "call 1"
    assert client.get("/r", headers={"Cookie": "session=b"}).text == "call 2"
    assert counter.calls == 2


# -- response side -----------------------------------------------------------------------------------------


def assert_never_stored(client: TestClient, counter: Counter, check: Callable[[Response], None] | None = None):
    responses = []
    for _ in range(3):
        client.cookies.clear()  # a cookie the client kept would bypass the cache for another reason
        responses.append(client.get("/r"))
    assert [response.headers.get("x-cache") for response in responses] == ["SKIP"] * 3
    assert counter.calls == 3
    if check is not None:
        for response in responses:
            check(response)


@pytest.mark.parametrize("status", [201, 202, 203, 204, 206, 301, 304, 400, 404, 410, 500, 503])
def test_non_200_statuses_are_not_stored(manager, status):
    body = b"" if status in (204, 304) else b"payload"
    client, counter = app_with(manager, lambda n: Response(body, status_code=status))

    def check(response):
        assert response.status_code == status
        assert response.content == body

    assert_never_stored(client, counter, check)


def test_set_cookie_response_is_neither_stored_nor_replayed(manager):
    def make(number: int) -> Response:
        response = Response(f"call {number}")
        response.set_cookie("session", f"s{number}")
        return response

    client, counter = app_with(manager, make)

    def check(response):
        number = response.text.removeprefix("call ")
        assert response.headers["set-cookie"].startswith(f"session=s{number};")

    assert_never_stored(client, counter, check)


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param(["no-store"], id="no-store"),
        pytest.param(["No-Store"], id="no-store-mixed-case"),
        pytest.param(["max-age=3600, no-store"], id="no-store-with-max-age"),
        pytest.param(["NO-STORE, max-age=3600"], id="no-store-first-upper-case"),
        pytest.param(["public, max-age=60", "no-store"], id="no-store-on-second-line"),
        pytest.param(["private"], id="private"),
        pytest.param(["Private, max-age=60"], id="private-with-max-age"),
        pytest.param(['private="set-cookie"'], id="qualified-private"),
    ],
)
def test_response_cache_control_refusals(manager, cache_control):
    def make(number: int) -> Response:
        response = Response(f"call {number}")
        for value in cache_control:
            response.headers.append("Cache-Control", value)
        return response

    client, counter = app_with(manager, make)
    assert_never_stored(client, counter, lambda r: r.headers.get_list("cache-control") == cache_control)


def test_no_store_with_expires_is_not_stored(manager):
    def make(number: int) -> Response:
        return Response("x", headers={"Cache-Control": "no-store", "Expires": "Thu, 01 Jan 2099 00:00:00 GMT"})

    client, counter = app_with(manager, make)
    assert_never_stored(client, counter)


@pytest.mark.parametrize("vary", ["*", "Accept, *", ", *"])
def test_vary_star_is_never_stored(manager, vary):
    client, counter = app_with(manager, lambda n: Response(f"call {n}", headers={"Vary": vary}))
    assert_never_stored(client, counter)


def test_response_with_vary_never_reaches_a_request_that_differs_in_that_header(manager):
    def make(number: int) -> Response:
        return Response(f"call {number}", headers={"Vary": "Accept-Language"})

    client, _counter = app_with(manager, make)
    first = client.get("/r", headers={"Accept-Language": "fr"})
    assert first.headers["x-cache"] in ("MISS", "SKIP")
    second = client.get("/r", headers={"Accept-Language": "de"})
    assert second.headers["x-cache"] != "HIT"
    assert second.text == "call 2"


def test_response_with_vary_is_stored_per_variant(manager):
    # A response with Vary is stored under a key extended by those request headers (README, "What is stored").
    client, counter = app_with(manager, lambda n: Response(f"call {n}", headers={"Vary": "Accept-Language"}))
    english = {"accept-language": "en"}
    assert client.get("/r", headers=english).headers["x-cache"] == "MISS"
    assert client.get("/r", headers={"accept-language": "fr"}).headers["x-cache"] == "MISS"
    hit = client.get("/r", headers=english)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.text == "call 1"
    assert counter.calls == 2


def test_cacheable_cache_control_is_stored(manager):
    client, _counter = app_with(
        manager, lambda n: Response(f"call {n}", headers={"Cache-Control": "public, max-age=60"})
    )
    assert client.get("/r").headers["x-cache"] == "MISS"
    hit = client.get("/r")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["cache-control"] == "public, max-age=60"


@pytest.mark.parametrize(("size", "stored"), [(99, True), (100, True), (101, False), (10_000, False)])
def test_body_size_limit(clock, memory_backend, size, stored):
    manager = CacheManager(memory_backend, clock=clock, max_response_size=100)
    client, counter = app_with(manager, lambda n: Response(b"x" * size))
    first = client.get("/r")
    second = client.get("/r")
    assert first.content == second.content == b"x" * size
    if stored:
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert counter.calls == 1
    else:
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("SKIP", "SKIP")
        assert counter.calls == 2
