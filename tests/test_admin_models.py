"""The admin routes' response models: what ``/openapi.json`` promises, and that every answer keeps the promise.

Black-box over ASGI against the memory backend and a private Redis server: each route is called in each
of its shapes (pages with and without state, every kind of entry, errors), and every response is checked
twice: by schemathesis against the app's own OpenAPI document, and by the pydantic model of its status.
"""

import datetime
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from intelligent_cache import CacheBackend, CacheManager, MemoryBackend, cache_config
from intelligent_cache.admin import (
    AdminOptions,
    ClearResult,
    DeleteResult,
    HealthStatus,
    InvalidateResult,
    KeyDetail,
    KeysPage,
    StatsDocument,
    admin_router,
)
from intelligent_cache.admin.models import ErrorDetail, ValidationErrors
from tests.conftest import BACKEND_KINDS, make_backend

TOKEN = "models-s3cret"
AUTH = {"X-Admin-Token": TOKEN}
PREFIX = "/api/cache"
KINDS = [param for param in BACKEND_KINDS if param.id in ("memory", "redis")]

# What each operation documents: status -> the component schema of its JSON body.
DOCUMENTED: dict[tuple[str, str], dict[str, str | None]] = {
    ("get", "/keys"): {"200": "KeysPage", "401": "ErrorDetail", "422": "HTTPValidationError", "503": "ErrorDetail"},
    ("get", "/keys/{key}"): {
        "200": None,  # a union: checked on its own
        "401": "ErrorDetail",
        "404": "ErrorDetail",
        "422": "HTTPValidationError",
        "503": "ErrorDetail",
    },
    ("delete", "/keys/{key}"): {
        "200": "DeleteResult",
        "401": "ErrorDetail",
        "404": "ErrorDetail",
        "422": "HTTPValidationError",
        "503": "ErrorDetail",
    },
    ("post", "/clear"): {
        "200": "ClearResult",
        "401": "ErrorDetail",
        "422": "HTTPValidationError",
        "503": "ErrorDetail",
    },
    ("post", "/invalidate"): {"200": "InvalidateResult", "401": "ErrorDetail", "422": None, "503": "ErrorDetail"},
    ("get", "/stats"): {"200": "StatsDocument", "401": "ErrorDetail"},
    ("get", "/metrics"): {"200": None, "401": "ErrorDetail"},
    ("get", "/health"): {"200": "HealthStatus", "401": "ErrorDetail", "503": "HealthStatus"},
}
# The pydantic model of each (operation, status) a test below checks responses against.
MODELS: dict[tuple[str, str, int], Any] = {
    ("GET", "/keys", 200): KeysPage,
    ("GET", "/keys/{key}", 200): KeyDetail,
    ("DELETE", "/keys/{key}", 200): DeleteResult,
    ("POST", "/clear", 200): ClearResult,
    ("POST", "/invalidate", 200): InvalidateResult,
    ("POST", "/invalidate", 422): ValidationErrors | ErrorDetail,
    ("GET", "/stats", 200): StatsDocument,
    ("GET", "/health", 200): HealthStatus,
    ("GET", "/health", 503): HealthStatus,
}


def require_token(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def make_app(manager: CacheManager) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)

    @app.get("/items")
    @cache_config(tags=["catalog"])
    async def list_items(page: int = 1) -> dict[str, int]:
        return {"page": page}

    @app.get("/greeting")
    @cache_config
    async def greeting(request: Request) -> JSONResponse:
        return JSONResponse(
            {"hello": request.headers.get("accept-language", "en")}, headers={"Vary": "Accept-Language"}
        )

    return app


def admin_manager(backend: CacheBackend, clock: Any = None, **options: Any) -> CacheManager:
    if clock is not None:
        options["clock"] = clock
    return CacheManager(backend, include_admin_routes=True, admin_auth_dependency=require_token, **options)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


class Checker:
    """Checks every admin response against the app's OpenAPI document and the route's pydantic model."""

    def __init__(self, app: FastAPI) -> None:
        self.document = app.openapi()
        self.schema = schemathesis.openapi.from_dict(self.document)
        self.seen: set[tuple[str, str, int]] = set()

    def check(self, response: httpx.Response, template: str) -> Any:
        method = response.request.method
        operation = self.document["paths"][PREFIX + template][method.lower()]
        assert str(response.status_code) in operation["responses"], (method, template, response.status_code)
        self.schema[PREFIX + template][method].validate_response(response)  # raises if it does not conform
        self.seen.add((method, template, response.status_code))
        if not response.headers["content-type"].startswith("application/json"):
            return response.text
        default = ValidationErrors if response.status_code == 422 else ErrorDetail
        model = MODELS.get((method, template, response.status_code), default)
        return TypeAdapter(model).validate_json(response.content, strict=True)  # strict: no "0" for 0

    async def pages(self, client: httpx.AsyncClient, **params: Any) -> list[KeysPage]:
        """Every page of a listing, each checked (a page of a shared Redis may hold none of this test's keys)."""
        found: list[KeysPage] = []
        cursor = 0
        while True:
            response = await client.get(f"{PREFIX}/keys", params={**params, "cursor": cursor}, headers=AUTH)
            found.append(self.check(response, "/keys"))
            cursor = found[-1].cursor
            if not cursor:
                return found


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, clock: Any) -> AsyncIterator[CacheBackend]:
    instance = await make_backend(request.param, request, clock)
    try:
        yield instance
    finally:
        await instance.clear()
        await instance.aclose()


# -- the document --------------------------------------------------------------------------------------------------


def test_openapi_documents_every_admin_route_with_its_models_and_statuses():
    document = make_app(admin_manager(MemoryBackend())).openapi()
    admin_paths = {path.removeprefix(PREFIX) for path in document["paths"] if path.startswith(PREFIX)}
    assert admin_paths == {"/keys", "/keys/{key}", "/clear", "/invalidate", "/stats", "/metrics", "/health"}
    for (method, path), statuses in DOCUMENTED.items():
        responses = document["paths"][PREFIX + path][method]["responses"]
        assert set(statuses) <= set(responses), (method, path, sorted(responses))
        for status, component in statuses.items():
            assert responses[status]["description"], (method, path, status)
            if component is not None:
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{component}"}, (method, path, status)

    detail = document["paths"][f"{PREFIX}/keys/{{key}}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert detail["schema"]["discriminator"]["propertyName"] == "kind"
    assert detail["schema"]["discriminator"]["mapping"] == {
        "response": "#/components/schemas/ResponseEntry",
        "vary": "#/components/schemas/VaryEntry",
        "value": "#/components/schemas/ValueEntry",
        "corrupt": "#/components/schemas/ValueEntry",
    }
    invalid = document["paths"][f"{PREFIX}/invalidate"]["post"]["responses"]["422"]["content"]["application/json"]
    assert {item["$ref"] for item in invalid["schema"]["anyOf"]} == {
        "#/components/schemas/ValidationErrors",
        "#/components/schemas/ErrorDetail",
    }
    metrics = document["paths"][f"{PREFIX}/metrics"]["get"]["responses"]
    assert set(metrics["200"]["content"]) == {"text/plain"}
    assert set(metrics["401"]["content"]) == {"application/json"}  # the auth dependency answers in JSON

    components = document["components"]["schemas"]
    for name in ("KeysPage", "KeyItem", "ResponseEntry", "VaryEntry", "ValueEntry", "DeleteResult", "ClearResult"):
        assert components[name]["additionalProperties"] is False, name
    for name in ("StatsDocument", "HealthStatus", "BackendInfo"):  # backends describe themselves
        assert components[name].get("additionalProperties", True) is not False, name
    assert set(components["KeysPage"]["required"]) == {"keys", "cursor"}
    assert set(components["KeyItem"]["required"]) == {"key", "ttl"}
    assert {"status", "backend", "last_error"} <= set(components["HealthStatus"]["required"])
    assert "memory backend" in components["BackendInfo"]["properties"]["entries"]["description"]


def test_without_authentication_no_401_is_documented():
    manager = CacheManager(MemoryBackend(), include_admin_routes=True, allow_unauthenticated_admin=True)
    document = make_app(manager).openapi()
    for path, operations in document["paths"].items():
        if path.startswith(PREFIX):
            for operation in operations.values():
                assert "401" not in operation["responses"], path


@pytest.mark.parametrize("prefix", [PREFIX, "/ops/cache"])
async def test_admin_routes_can_be_left_out_of_the_schema(prefix):
    manager = admin_manager(MemoryBackend(), admin_in_schema=False, admin_prefix=prefix)
    app = make_app(manager)
    async with client_for(app) as client:
        document = (await client.get("/openapi.json")).json()
        assert [path for path in document["paths"] if path.startswith(prefix)] == []
        assert set(document["paths"]) == {"/items", "/greeting"}  # the app's own routes stay
        assert not {"KeysPage", "StatsDocument", "HealthStatus"} & set(
            document.get("components", {}).get("schemas", {})
        )
        assert prefix not in (await client.get("/docs")).text
        # Still there, still protected.
        assert (await client.get(f"{prefix}/stats", headers=AUTH)).status_code == 200
        assert (await client.get(f"{prefix}/stats")).status_code == 401
        assert (await client.get(f"{prefix}/dashboard", headers=AUTH)).status_code == 200


def test_admin_options_carry_the_schema_setting():
    manager = CacheManager(MemoryBackend())
    app = FastAPI()
    manager.init_app(app)
    options = AdminOptions(auth_dependency=require_token, include_in_schema=False)
    app.include_router(admin_router(manager, options), prefix="/manual")
    assert not [path for path in app.openapi()["paths"] if path.startswith("/manual")]
    assert CacheManager().admin.include_in_schema is True
    assert CacheManager(admin_in_schema=False).admin.include_in_schema is False


# -- every answer against its model --------------------------------------------------------------------------------


async def test_every_route_answers_as_its_model_says(backend, clock):
    manager = admin_manager(backend, clock)
    app = make_app(manager)
    checker = Checker(app)
    check = checker.check
    async with client_for(app) as client:
        for url in ("/items", "/items?page=2"):
            assert (await client.get(url)).headers["x-cache"] == "MISS"
        for language in ("fr", "de"):
            await client.get("/greeting", headers={"accept-language": language})
        await manager.service().set("report", {"rows": 3}, ttl=60)
        await backend.set("GET:broken", b"\xc1 not msgpack", 60)
        await client.post(f"{PREFIX}/invalidate", json={"path": "/items"}, headers=AUTH)

        # Pages: plain, with state, without the invalidated (and so with "hidden"), bad input, no token.
        plain = await checker.pages(client, limit=1000)
        assert all(item.kind is None and page.hidden is None for page in plain for item in page.keys)
        stated = [item for page in await checker.pages(client, limit=1000, with_state=True) for item in page.keys]
        assert {item.kind for item in stated} == {"response", "vary", "value", "corrupt"}
        assert all(item.size is not None for item in stated)
        shown = await checker.pages(client, limit=1000, include_invalidated=False)
        assert sum(page.hidden or 0 for page in shown) == 2  # /items and /items?page=2
        check(await client.get(f"{PREFIX}/keys", params={"limit": 0}, headers=AUTH), "/keys")
        check(await client.get(f"{PREFIX}/keys"), "/keys")

        # Every kind of entry, then the errors.
        details = {}
        for item in stated:
            entry = check(await client.get(f"{PREFIX}/keys/" + quote(item.key, safe=""), headers=AUTH), "/keys/{key}")
            details[entry.kind] = entry
            assert entry.size == item.size
        assert set(details) == {"response", "vary", "value", "corrupt"}
        assert details["vary"].vary == ["accept-language"]
        check(await client.get(f"{PREFIX}/keys/absent", headers=AUTH), "/keys/{key}")
        check(await client.get(f"{PREFIX}/keys/" + "k" * 5000, headers=AUTH), "/keys/{key}")
        check(await client.get(f"{PREFIX}/keys/report"), "/keys/{key}")

        assert check(await client.delete(f"{PREFIX}/keys/report", headers=AUTH), "/keys/{key}").deleted == "report"
        check(await client.delete(f"{PREFIX}/keys/report", headers=AUTH), "/keys/{key}")
        check(await client.delete(f"{PREFIX}/keys/report"), "/keys/{key}")
        check(await client.delete(f"{PREFIX}/keys/" + "k" * 5000, headers=AUTH), "/keys/{key}")

        assert check(await client.post(f"{PREFIX}/clear?pattern=GET:broken", headers=AUTH), "/clear").deleted == 1
        check(await client.post(f"{PREFIX}/clear?pattern=", headers=AUTH), "/clear")
        check(await client.post(f"{PREFIX}/clear"), "/clear")

        for body in ({"path": "/items"}, {"tags": ["catalog"]}, {"path": "/items", "tags": ["a", "b"]}):
            assert check(await client.post(f"{PREFIX}/invalidate", json=body, headers=AUTH), "/invalidate")
        for body in ({}, {"path": "no-slash"}, {"tags": [""]}, [1]):
            check(await client.post(f"{PREFIX}/invalidate", json=body, headers=AUTH), "/invalidate")
        check(await client.post(f"{PREFIX}/invalidate", json={"path": "/x"}), "/invalidate")

        stats = check(await client.get(f"{PREFIX}/stats", headers=AUTH), "/stats")
        assert stats.backend.backend == backend.name
        check(await client.get(f"{PREFIX}/stats"), "/stats")
        assert "intelligent_cache_requests_total" in check(
            await client.get(f"{PREFIX}/metrics", headers=AUTH), "/metrics"
        )
        check(await client.get(f"{PREFIX}/metrics"), "/metrics")
        health = check(await client.get(f"{PREFIX}/health", headers=AUTH), "/health")
        assert (health.status, health.last_error) == ("ok", None)
        check(await client.get(f"{PREFIX}/health"), "/health")

        assert check(await client.post(f"{PREFIX}/clear", headers=AUTH), "/clear").pattern is None

    expected = {
        (method, path, int(status))
        for (method, path), statuses in DOCUMENTED.items()
        for status in statuses
        if status != "503"
    }
    assert {(method.lower(), path, status) for method, path, status in checker.seen} == expected


REFUSED = "Error 111 connecting to redis://app:hunter2@cache.internal:6379"


class DeadBackend(MemoryBackend):
    """Every call the admin routes make fails, as a Redis that went away would."""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError(REFUSED)

    async def delete(self, key: str) -> bool:
        raise ConnectionError(REFUSED)

    async def fetch(self, key: str, generation_keys: Any) -> Any:
        raise ConnectionError(REFUSED)

    async def bump(self, generation_keys: Any) -> None:
        raise ConnectionError(REFUSED)

    async def scan(self, pattern: str = "*", cursor: int = 0, count: int = 100) -> Any:
        raise ConnectionError(REFUSED)

    async def clear(self, pattern: str | None = None) -> int:
        raise ConnectionError(REFUSED)

    async def ping(self) -> None:
        raise ConnectionError(REFUSED)


async def test_backend_failures_answer_as_documented():
    app = make_app(admin_manager(DeadBackend()))
    checker = Checker(app)
    check = checker.check
    async with client_for(app) as client:
        failure = check(await client.get(f"{PREFIX}/keys", headers=AUTH), "/keys")
        assert failure.detail == "cache backend unavailable: ConnectionError: " + REFUSED.replace("hunter2", "***")
        check(await client.get(f"{PREFIX}/keys/GET:items", headers=AUTH), "/keys/{key}")
        check(await client.delete(f"{PREFIX}/keys/GET:items", headers=AUTH), "/keys/{key}")
        check(await client.post(f"{PREFIX}/clear", headers=AUTH), "/clear")
        check(await client.post(f"{PREFIX}/invalidate", json={"tags": ["t"]}, headers=AUTH), "/invalidate")
        assert (await client.get("/items")).headers["x-cache"] == "SKIP"  # the request path fails open
        stats = check(await client.get(f"{PREFIX}/stats", headers=AUTH), "/stats")
        health = check(await client.get(f"{PREFIX}/health", headers=AUTH), "/health")
    assert stats.degraded is True
    assert health.status == "unavailable"
    assert health.reason == "ConnectionError: Error 111 connecting to redis://app:***@cache.internal:6379"
    assert health.last_error == health.reason
    assert {status for _, _, status in checker.seen} == {503, 200}
    assert {(method, path) for method, path, status in checker.seen if status == 503} == {
        ("GET", "/keys"),
        ("GET", "/keys/{key}"),
        ("DELETE", "/keys/{key}"),
        ("POST", "/clear"),
        ("POST", "/invalidate"),
        ("GET", "/health"),
    }


def test_the_models_are_what_a_client_can_import():
    # A typed client (or a test) validates answers with the same models the routes use.
    page = KeysPage.model_validate({"keys": [{"key": "k", "ttl": None}], "cursor": 0})
    assert page.model_dump(exclude_unset=True) == {"keys": [{"key": "k", "ttl": None}], "cursor": 0}
    with pytest.raises(ValueError, match="Extra inputs"):
        KeysPage.model_validate({"keys": [], "cursor": 0, "surprise": 1})


@pytest.mark.parametrize(
    "body",
    [
        {"keys": [{"key": "k"}], "cursor": 0},  # ttl missing
        {"keys": [], "cursor": "0"},  # a string cursor
        {"keys": [], "cursor": 0, "surprise": 1},  # a field the model does not have
    ],
)
def test_both_checks_reject_a_body_that_breaks_the_model(body):
    checker = Checker(make_app(admin_manager(MemoryBackend())))
    # schemathesis: the body does not match the document (its failures are AssertionErrors).
    with pytest.raises((AssertionError, BaseExceptionGroup), match="violates schema"):
        checker.schema[f"{PREFIX}/keys"]["GET"].validate_response(built(200, body))
    with pytest.raises(ValueError, match="validation error"):  # pydantic: nor the model
        TypeAdapter(KeysPage).validate_json(json.dumps(body), strict=True)


def test_an_undocumented_status_is_rejected():
    checker = Checker(make_app(admin_manager(MemoryBackend())))
    with pytest.raises(AssertionError):
        checker.check(built(418, {"detail": "teapot"}), "/keys")


def built(status: int, body: Any) -> httpx.Response:
    response = httpx.Response(status, json=body, request=httpx.Request("GET", f"http://testserver{PREFIX}/keys"))
    response.elapsed = datetime.timedelta(0)  # schemathesis reads it; a response built by hand has none
    return response
