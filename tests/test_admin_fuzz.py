"""Fuzz the admin API from its own OpenAPI schema with schemathesis, in process (ASGI, no network).

Every admin operation gets schema-conforming (positive) and schema-violating (negative) requests,
with the admin token and without it: no request may cause a 5xx, and none without the token may
succeed. Generation is derandomized and bounded, so a run is reproducible.
"""

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
import schemathesis
from fastapi import FastAPI, Header, HTTPException
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from intelligent_cache import CacheManager, MemoryBackend, cache_config

pytestmark = pytest.mark.slow

# Made at run time, so the fuzzer cannot find it among the constants of any source file.
TOKEN = "fuzz-" + secrets.token_hex(16)
PREFIX = "/api/cache"
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20}  # up to 50 requests per operation and auth state


def require_token(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def build_app() -> FastAPI:
    app = FastAPI()
    CacheManager(MemoryBackend(), include_admin_routes=True, admin_auth_dependency=require_token).init_app(app)

    @app.get("/items/{item_id}")
    @cache_config(tags=["catalog"])
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    return app


RAW_SCHEMA = build_app().openapi()
SCHEMA = schemathesis.openapi.from_dict(RAW_SCHEMA).include(path_regex=f"^{PREFIX}(/|$)")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def can_violate(operation: Any) -> bool:
    """Whether negative data exists: a body, or a query or path parameter (any header value is a string)."""
    definition = RAW_SCHEMA["paths"][operation.path][operation.method.lower()]
    return "requestBody" in definition or any(param["in"] != "header" for param in definition.get("parameters", []))


CASES = [
    pytest.param(operation, mode, id=f"{operation.label}-{mode}")
    for operation in OPERATIONS
    for mode in EXAMPLES
    if mode is GenerationMode.POSITIVE or can_violate(operation)
]


def test_the_schema_covers_every_documented_admin_operation() -> None:
    labels = {operation.label for operation in OPERATIONS}
    assert labels == {
        f"GET {PREFIX}/keys",
        f"GET {PREFIX}/keys/{{key}}",
        f"DELETE {PREFIX}/keys/{{key}}",
        f"POST {PREFIX}/clear",
        f"POST {PREFIX}/invalidate",
        f"GET {PREFIX}/stats",
        f"GET {PREFIX}/metrics",
        f"GET {PREFIX}/health",
    }


@pytest.fixture
def app() -> Iterator[FastAPI]:
    """A fresh app with a few entries, so reads and deletes sometimes find something."""
    from fastapi.testclient import TestClient

    app = build_app()
    client = TestClient(app)
    for item in ("1", "2", "x y"):
        assert client.get(f"/items/{item}").headers["x-cache"] == "MISS"
    service = app.state.intelligent_cache.service()
    for key in ("a/b", "100%", "what?x=1#y"):
        asyncio.run(service.set(key, {"key": key}, ttl=600))
    yield app
    try:  # schemathesis starts the app's lifespan on first use and keeps it until told to stop
        from schemathesis.python.asgi import shutdown_lifespans
    except ImportError:  # pragma: no cover - a later schemathesis may manage this differently
        return
    shutdown_lifespans()


def fuzz(app: FastAPI, operation: Any, mode: GenerationMode, headers: dict[str, str] | None) -> Counter[int]:
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(app=app, headers=headers)
        statuses[response.status_code] += 1
        problem = None
        if response.status_code >= 500:
            problem = "server error"
        elif headers is None and 200 <= response.status_code < 300:
            problem = "success without the admin token"
        if problem:
            failures.append(f"{problem}: {response.status_code} {response.text[:300]}\n{case.as_curl_command()[:600]}")
            raise AssertionError(failures[-1])

    run()
    assert not failures, failures[0]
    return statuses


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_fuzz_with_the_admin_token(app: FastAPI, operation: Any, mode: GenerationMode) -> None:
    statuses = fuzz(app, operation, mode, {"X-Admin-Token": TOKEN})
    assert sum(statuses.values()) >= 1
    assert 401 not in statuses, "the token was sent with every request"
    if mode is GenerationMode.POSITIVE and "{key}" not in operation.path:
        # The fuzzer really got past authentication: valid requests succeed (an invalidation naming
        # neither a path nor a tag is valid JSON Schema but a 422).
        succeeded = sum(count for status, count in statuses.items() if 200 <= status < 300)
        assert succeeded == sum(statuses.values()) or (operation.path.endswith("/invalidate") and succeeded), statuses


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_fuzz_without_the_admin_token(app: FastAPI, operation: Any, mode: GenerationMode) -> None:
    statuses = fuzz(app, operation, mode, None)
    assert sum(statuses.values()) >= 1
    assert not [status for status in statuses if 200 <= status < 300]
    assert 401 in statuses, statuses
