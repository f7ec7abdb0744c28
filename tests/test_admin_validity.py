"""The admin API tells live entries from invalidated ones (``valid``, ``state``, ``include_invalidated``).

Black-box: an app with ``CacheManager(include_admin_routes=True, ...)``, driven over ASGI, against the
memory backend and a private Redis server. An entry is valid while the invalidation counters it recorded
are still current; a successful write bumps some, and the admin must then stop calling the entry fresh.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from intelligent_cache import CacheBackend, CachedResponse, CacheManager, MemoryBackend, cache_config
from intelligent_cache.entry import encode
from tests.conftest import BACKEND_KINDS, make_backend

TOKEN = "validity-s3cret"
AUTH = {"X-Admin-Token": TOKEN}
PREFIX = "/api/cache"
KINDS = [param for param in BACKEND_KINDS if param.id in ("memory", "redis")]
TTL = 60
STALE_WINDOW = 30


def require_token(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def make_app(manager: CacheManager) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)
    items = {1: {3: "three", 4: "four"}, 2: {1: "one"}}

    @app.get("/spaces/{space_id}/items")
    @cache_config(ttl_seconds=TTL, tags=["catalog"])
    async def list_items(space_id: int) -> list[str]:
        return sorted(items[space_id].values())

    @app.get("/spaces/{space_id}/items/{item_id}")
    @cache_config(ttl_seconds=TTL, stale_if_error=STALE_WINDOW)
    async def get_item(space_id: int, item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": items[space_id].get(item_id)}

    @app.delete("/spaces/{space_id}/items/{item_id}")
    async def delete_item(space_id: int, item_id: int) -> dict[str, int]:
        items[space_id].pop(item_id, None)
        return {"deleted": item_id}

    @app.get("/greeting")
    @cache_config(ttl_seconds=TTL)
    async def greeting(request: Request) -> JSONResponse:
        language = request.headers.get("accept-language", "en")
        return JSONResponse({"hello": language}, headers={"Vary": "Accept-Language"})

    return app


def admin_manager(backend: CacheBackend, clock: Any, **options: Any) -> CacheManager:
    return CacheManager(backend, clock=clock, include_admin_routes=True, admin_auth_dependency=require_token, **options)


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, clock: Any) -> AsyncIterator[CacheBackend]:
    instance = await make_backend(request.param, request, clock)
    try:
        yield instance
    finally:
        await instance.aclose()


@pytest.fixture
def manager(backend: CacheBackend, clock: Any) -> CacheManager:
    return admin_manager(backend, clock)


@pytest.fixture
async def client(manager: CacheManager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def x_cache(client: httpx.AsyncClient, url: str) -> str | None:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.headers.get("x-cache")


async def page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    """Every key as the listing describes it, all pages (a page of a shared Redis may hold none of ours)."""
    keys: list[dict[str, Any]] = []
    cursor = 0
    for _ in range(100_000):
        response = await client.get(f"{PREFIX}/keys", params={"limit": 1000, **params, "cursor": cursor}, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        keys.extend(body["keys"])
        cursor = body["cursor"]
        if cursor == 0:
            return {**body, "keys": keys}
    raise AssertionError("the cursor never came back to 0")


async def detail(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await client.get(f"{PREFIX}/keys/" + quote(key, safe=""), headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def by_path(client: httpx.AsyncClient, **params: Any) -> dict[str, dict[str, Any]]:
    """The listed response entries by the path they answer (keys are the cache's business)."""
    found: dict[str, dict[str, Any]] = {}
    for item in (await page(client, **params))["keys"]:
        if item["kind"] == "response":
            path = (await detail(client, item["key"]))["path"]
            assert path not in found, path
            found[path] = item
    return found


async def warm(client: httpx.AsyncClient, *urls: str) -> None:
    for url in urls:
        assert await x_cache(client, url) == "MISS"


URLS = ("/spaces/1/items", "/spaces/1/items/3", "/spaces/1/items/4", "/spaces/2/items")


async def test_a_successful_write_shows_the_entries_it_invalidated(client, clock):
    await warm(client, *URLS)
    clock.advance(5)
    before = await by_path(client, with_state="true")
    assert set(before) == set(URLS)
    for item in before.values():
        assert (item["valid"], item["state"]) == (True, "fresh")
        assert item["expires_in"] == pytest.approx(TTL - 5)

    assert (await client.delete("/spaces/1/items/3")).status_code == 200

    after = await by_path(client, with_state="true")
    assert set(after) == set(URLS)  # still stored, but no longer live
    for path in ("/spaces/1/items", "/spaces/1/items/3"):
        assert (after[path]["valid"], after[path]["state"], after[path]["expires_in"]) == (False, "invalidated", 0)
    for path in ("/spaces/1/items/4", "/spaces/2/items"):
        assert (after[path]["valid"], after[path]["state"]) == (True, "fresh")
        assert after[path]["expires_in"] == pytest.approx(TTL - 5)

    # The entry detail says the same, and never claims freshness for an invalidated entry.
    details = {path: await detail(client, item["key"]) for path, item in after.items()}
    listing = details["/spaces/1/items"]
    assert (listing["valid"], listing["state"], listing["expires_in"]) == (False, "invalidated", 0)
    assert listing["age"] == pytest.approx(5)  # the other fields are unchanged
    fresh = details["/spaces/1/items/4"]
    assert (fresh["valid"], fresh["state"]) == (True, "fresh")
    assert fresh["expires_in"] == pytest.approx(TTL - 5)

    # Hidden on request; the page says how many were left out.
    shown = await page(client, include_invalidated="false")
    assert shown["hidden"] == 2
    assert len(shown["keys"]) == 2
    assert {item["state"] for item in shown["keys"]} == {"fresh"}
    assert {details[path]["key"] for path in ("/spaces/1/items/4", "/spaces/2/items")} == {
        item["key"] for item in shown["keys"]
    }

    # What the admin says is what requests get: the invalidated entries recompute, the others hit.
    assert await x_cache(client, "/spaces/1/items") == "MISS"
    assert await x_cache(client, "/spaces/1/items/4") == "HIT"
    again = await by_path(client, with_state="true")
    assert (again["/spaces/1/items"]["valid"], again["/spaces/1/items"]["state"]) == (True, "fresh")
    assert again["/spaces/1/items/3"]["state"] == "invalidated"


async def test_the_default_listing_is_unchanged(client):
    await warm(client, *URLS)
    assert (await client.delete("/spaces/1/items/3")).status_code == 200
    body = await page(client)
    assert set(body) == {"keys", "cursor"}
    assert len(body["keys"]) == len(URLS)
    for item in body["keys"]:
        assert set(item) == {"key", "ttl"}


async def test_tag_and_path_invalidation_through_the_admin_api(client):
    await warm(client, *URLS)
    response = await client.post(f"{PREFIX}/invalidate", json={"tags": ["catalog"]}, headers=AUTH)
    assert response.status_code == 200
    states = {path: item["state"] for path, item in (await by_path(client, with_state="true")).items()}
    assert states == {
        "/spaces/1/items": "invalidated",  # both listings carry the tag
        "/spaces/2/items": "invalidated",
        "/spaces/1/items/3": "fresh",
        "/spaces/1/items/4": "fresh",
    }
    response = await client.post(f"{PREFIX}/invalidate", json={"path": "/spaces/1/items/4"}, headers=AUTH)
    assert response.status_code == 200
    states = {path: item["state"] for path, item in (await by_path(client, with_state="true")).items()}
    assert states["/spaces/1/items/4"] == "invalidated"
    assert states["/spaces/1/items/3"] == "fresh"


async def test_soft_purge_keeps_invalidated_entries_as_stale_fallbacks(backend, clock):
    manager = admin_manager(backend, clock, soft_purge=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(manager)), base_url="http://t") as client:
        await warm(client, *URLS)
        assert (await client.delete("/spaces/1/items/3")).status_code == 200
        after = await by_path(client, with_state="true")
        for path in ("/spaces/1/items", "/spaces/1/items/3"):
            assert (after[path]["valid"], after[path]["state"], after[path]["expires_in"]) == (False, "stale", 0)
        assert after["/spaces/1/items/4"]["state"] == "fresh"
        # Servable as a fallback: not what include_invalidated=false hides.
        shown = await page(client, include_invalidated="false")
        assert shown["hidden"] == 0
        assert len(shown["keys"]) == len(URLS)
        info = await detail(client, after["/spaces/1/items/3"]["key"])
        assert (info["valid"], info["state"], info["expires_in"]) == (False, "stale", 0)


async def test_an_entry_past_its_ttl_is_expired_not_fresh(client, clock):
    await warm(client, "/spaces/1/items/4")  # kept TTL + STALE_WINDOW for stale-if-error
    clock.advance(TTL + 5)
    (item,) = (await page(client, with_state="true"))["keys"]
    assert (item["valid"], item["state"], item["expires_in"]) == (True, "expired", 0)
    info = await detail(client, item["key"])
    assert (info["valid"], info["state"], info["expires_in"]) == (True, "expired", 0)


async def test_counters_that_are_gone_mean_the_entry_is_invalid(client, backend):
    await warm(client, "/spaces/1/items/4", "/spaces/2/items")
    await backend.clear("~g:*")  # as if evicted: a lookup would create new values, never the recorded ones
    items = (await page(client, with_state="true"))["keys"]
    assert {(item["valid"], item["state"]) for item in items} == {(False, "invalidated")}
    assert await x_cache(client, "/spaces/1/items/4") == "MISS"


async def test_a_corrupt_entry_does_not_break_the_listing(client, manager, backend):
    await warm(client, "/spaces/1/items/4", "/spaces/2/items")
    assert (await client.delete("/spaces/2/items/1")).status_code == 200  # invalidates /spaces/2/items
    await manager.service().set("report", {"rows": 3}, ttl=TTL)
    await manager.service().set("nothing", None, ttl=TTL)  # a stored None is a value, not a corrupt entry
    await backend.set("GET:broken", b"\xc1 not msgpack", TTL)
    await backend.set("GET:truncated", encode(sample_entry(manager))[:-3], TTL)
    # Decodes, but its counters cannot be the ones of its path: never valid, never an error.
    await backend.set("GET:mismatched", encode(sample_entry(manager, path="/x/y", generations=(1,))), TTL)
    await backend.set("GET:pathless", encode(sample_entry(manager, path="", generations=(1, 2, 3))), TTL)

    body = await page(client, with_state="true")
    described = {item["key"]: item for item in body["keys"]}
    assert len(described) == 8
    for key in ("GET:broken", "GET:truncated"):
        assert set(described[key]) == {"key", "ttl", "kind", "valid", "state", "expires_in", "size"}
        assert described[key]["kind"] == "corrupt"
        assert described[key]["size"] == len(await backend.get(key))  # the stored bytes
        assert (described[key]["valid"], described[key]["state"], described[key]["expires_in"]) == (None, None, None)
    for key in ("report", "nothing"):
        assert (described[key]["kind"], described[key]["valid"], described[key]["state"]) == ("value", None, None)
    for key in ("GET:mismatched", "GET:pathless"):
        assert (described[key]["kind"], described[key]["valid"], described[key]["state"]) == (
            "response",
            False,
            "invalidated",
        )
    states = sorted(item["state"] for item in described.values() if item["kind"] == "response")
    assert states == ["fresh", "invalidated", "invalidated", "invalidated"]

    shown = await page(client, include_invalidated="false")
    assert shown["hidden"] == 3
    assert {item["kind"] for item in shown["keys"]} == {"response", "corrupt", "value"}
    assert len(shown["keys"]) == 5
    assert (await detail(client, "GET:broken"))["kind"] == "corrupt"
    mismatched = await detail(client, "GET:mismatched")
    assert (mismatched["valid"], mismatched["state"]) == (False, "invalidated")


def sample_entry(manager: CacheManager, **fields: Any) -> CachedResponse:
    values: dict[str, Any] = {
        "status": 200,
        "headers": ((b"content-type", b"application/json"),),
        "body": b"{}",
        "stored_at": manager.clock(),
        "ttl": TTL,
        "path": "/spaces/9",
        "route": "/spaces/{space_id}",
        **fields,
    }
    return CachedResponse(**values)


async def test_vary_pointers_and_their_variants(client):
    for language in ("fr", "de"):
        response = await client.get("/greeting", headers={"Accept-Language": language})
        assert response.headers["x-cache"] == "MISS"
    items = (await page(client, with_state="true"))["keys"]
    kinds = sorted(item["kind"] for item in items)
    assert kinds == ["response", "response", "vary"]
    (pointer,) = [item for item in items if item["kind"] == "vary"]
    assert (pointer["valid"], pointer["state"]) == (None, None)
    info = await detail(client, pointer["key"])
    assert (info["kind"], info["vary"]) == ("vary", ["accept-language"])
    assert {item["state"] for item in items if item["kind"] == "response"} == {"fresh"}


class _UnknowingBackend(MemoryBackend):
    """A custom backend that does not implement ``generations`` (the base default: unknown)."""

    generations = CacheBackend.generations


async def test_a_backend_that_cannot_tell_gives_null(clock):
    manager = admin_manager(_UnknowingBackend(clock=clock), clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(manager)), base_url="http://t") as client:
        await warm(client, *URLS)
        assert (await client.delete("/spaces/1/items/3")).status_code == 200
        items = (await page(client, with_state="true"))["keys"]
        assert {(item["valid"], item["state"]) for item in items} == {(None, "fresh")}
        info = await detail(client, items[0]["key"])
        assert (info["valid"], info["state"]) == (None, "fresh")
        assert (await page(client, include_invalidated="false"))["hidden"] == 0


async def test_a_listing_page_reads_each_entry_once_and_counters_in_one_call(client, backend, monkeypatch):
    await warm(client, *URLS, "/spaces/2/items/1")
    reads: list[str] = []
    batches: list[list[str]] = []
    get, generations = backend.get, backend.generations

    async def counting_get(key: str) -> bytes | None:
        reads.append(key)
        return await get(key)

    async def counting_generations(names: Any) -> list[int | None]:
        batches.append(list(names))
        return await generations(names)

    monkeypatch.setattr(backend, "get", counting_get)
    monkeypatch.setattr(backend, "generations", counting_generations)
    items = (await page(client, with_state="true"))["keys"]
    assert len(items) == 5
    assert sorted(reads) == sorted(item["key"] for item in items)
    assert len(batches) == 1
    assert len(batches[0]) == len(set(batches[0]))  # shared counters (~g:s:spaces...) asked once

    reads.clear()
    batches.clear()
    await page(client)  # the default listing reads nothing
    assert (reads, batches) == ([], [])


async def first_failing_page(client: httpx.AsyncClient, params: dict[str, str]) -> httpx.Response:
    """The first listing page that is not a 200: Redis SCAN may answer pages holding none of our keys."""
    cursor = 0
    while True:
        response = await client.get(f"{PREFIX}/keys", params={**params, "cursor": cursor, "limit": 1000}, headers=AUTH)
        if response.status_code != 200:
            return response
        cursor = response.json()["cursor"]
        assert response.json()["keys"] == [] and cursor != 0, response.text  # no key described yet


async def test_a_failing_backend_is_a_503_not_a_500(client, backend, monkeypatch):
    await warm(client, *URLS)

    async def failing(*args: Any) -> Any:
        raise ConnectionError("backend down")

    monkeypatch.setattr(backend, "generations", failing)
    for params in ({"with_state": "true"}, {"include_invalidated": "false"}):
        response = await first_failing_page(client, params)
        assert response.status_code == 503, response.text
        assert "backend down" in response.json()["detail"]
    key = (await page(client))["keys"][0]["key"]
    assert (await client.get(f"{PREFIX}/keys/" + quote(key, safe=""), headers=AUTH)).status_code == 503
    monkeypatch.setattr(backend, "get", failing)
    assert (await first_failing_page(client, {"with_state": "true"})).status_code == 503
    assert (await client.get(f"{PREFIX}/keys", headers=AUTH)).status_code == 200  # scan alone still works


@pytest.mark.parametrize("params", [{"with_state": "maybe"}, {"include_invalidated": "2"}])
async def test_invalid_flags_are_422(client, params):
    response = await client.get(f"{PREFIX}/keys", params=params, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]
