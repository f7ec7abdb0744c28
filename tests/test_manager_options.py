"""CacheManager options not covered elsewhere."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from intelligent_cache import CacheManager, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock


def make_client(clock: FakeClock, **options: object) -> tuple[TestClient, list[int]]:
    calls: list[int] = []
    app = FastAPI()
    CacheManager(MemoryBackend(clock=clock), clock=clock, **options).init_app(app)  # type: ignore[arg-type]

    @app.get("/r")
    @cache_config
    async def r() -> dict[str, int]:
        calls.append(1)
        return {"call": len(calls)}

    return TestClient(app), calls


def test_request_no_cache_is_honoured_by_default(clock: FakeClock) -> None:
    client, calls = make_client(clock)
    client.get("/r")
    fresh = client.get("/r", headers={"cache-control": "no-cache"})
    assert fresh.json() == {"call": 2}
    assert len(calls) == 2
    assert fresh.headers["x-cache"] == "SKIP"
    assert client.get("/r").json() == {"call": 2}  # the fresh response refreshed the entry


def test_request_no_cache_can_be_ignored(clock: FakeClock) -> None:
    client, calls = make_client(clock, honor_request_no_cache=False)
    client.get("/r")
    for headers in ({"cache-control": "no-cache"}, {"cache-control": "max-age=0"}, {"pragma": "no-cache"}):
        answered = client.get("/r", headers=headers)
        assert answered.headers["x-cache"] == "HIT"
        assert answered.json() == {"call": 1}
    assert len(calls) == 1
