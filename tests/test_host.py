"""A forged Host header cannot poison what other clients receive."""

import httpx
import pytest
from fastapi import FastAPI, Request

from intelligent_cache import CacheManager, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock


def make_app(clock: FakeClock, **options: object) -> tuple[FastAPI, CacheManager]:
    app = FastAPI()
    manager = CacheManager(MemoryBackend(clock=clock), clock=clock, **options)  # type: ignore[arg-type]
    manager.init_app(app)

    @app.get("/links")
    @cache_config
    async def links(request: Request) -> dict[str, str]:
        # Reflects the Host header, like any absolute URL built with url_for.
        return {"next": str(request.url_for("links"))}

    return app, manager


def client(app: FastAPI, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def test_an_entry_is_only_served_for_its_own_host(clock: FakeClock) -> None:
    app, manager = make_app(clock)
    async with client(app, "api.example.com") as good, client(app, "evil.example") as evil:
        assert (await good.get("/links")).headers["x-cache"] == "MISS"
        forged = await evil.get("/links")
        assert forged.json() == {"next": "http://evil.example/links"}
        assert forged.headers["x-cache"] == "SKIP"
        assert "detail=origin" in forged.headers["cache-status"]
        honest = await good.get("/links")
    assert honest.headers["x-cache"] == "HIT"
    assert honest.json() == {"next": "http://api.example.com/links"}
    assert manager.stats.counters["skip_reason|origin"] == 1


async def test_a_forged_host_first_cannot_poison_later_clients(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    async with client(app, "evil.example") as evil, client(app, "api.example.com") as good:
        await evil.get("/links")
        for _ in range(2):
            response = await good.get("/links")
            assert response.json() == {"next": "http://api.example.com/links"}
            assert response.headers["x-cache"] == "SKIP"


@pytest.mark.parametrize("hosts", [("a.example", "b.example")])
async def test_key_by_host_caches_each_host_separately(clock: FakeClock, hosts: tuple[str, str]) -> None:
    app, manager = make_app(clock, key_by_host=True)
    for host in hosts:
        async with client(app, host) as each:
            assert (await each.get("/links")).headers["x-cache"] == "MISS"
            hit = await each.get("/links")
            assert hit.headers["x-cache"] == "HIT"
            assert hit.json() == {"next": f"http://{host}/links"}
    keys = await manager.service().list_keys()
    assert sorted(keys) == [f"GET:links:@origin=http%3A//{host}" for host in hosts]
