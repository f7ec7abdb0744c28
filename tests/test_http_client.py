"""The cache seen by a real third-party HTTP caching client, over a real socket.

An app with the cache runs under uvicorn on a loopback port in a background thread; hishel
(an RFC 9111 caching client for httpx) talks to it with in-memory storage. Each test checks
what hishel reports (its ``caching`` response extension) against what the server saw (an ASGI
wrapper records every request and the status and X-Cache the server answered with).
"""

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hishel import SqliteStorage
from hishel.httpx import CacheClient

from intelligent_cache import CacheManager, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock

DATE = "Tue, 14 Nov 2023 22:13:20 GMT"


@dataclass
class Exchange:
    method: str
    path: str
    if_none_match: str | None
    status: int = 0
    x_cache: str | None = None


@dataclass
class Recorder:
    """An ASGI wrapper keeping what the server received and answered."""

    app: Callable
    exchanges: list[Exchange] = field(default_factory=list)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        inm = headers.get(b"if-none-match")
        exchange = Exchange(scope["method"], scope["path"], None if inm is None else inm.decode())
        self.exchanges.append(exchange)

        async def recording_send(message):
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                x_cache = dict(message.get("headers", [])).get(b"x-cache")
                exchange.x_cache = None if x_cache is None else x_cache.decode()
            await send(message)

        return await self.app(scope, receive, recording_send)


@contextmanager
def serve(app: Callable) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10  # start-up guard, not a speed check
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Site:
    url: str
    recorder: Recorder
    clock: FakeClock
    calls: dict[str, int]

    def exchanges(self, path: str) -> list[Exchange]:
        return [exchange for exchange in self.recorder.exchanges if exchange.path == path]


@pytest.fixture
def site() -> Iterator[Site]:
    clock = FakeClock()
    app = FastAPI()
    CacheManager(MemoryBackend(clock=clock), clock=clock).init_app(app)
    calls = {"version": 1, "/fresh": 0, "/validated": 0, "/dated": 0, "/mine": 0}

    @app.get("/fresh")
    @cache_config(ttl_seconds=60)
    async def fresh():
        calls["/fresh"] += 1
        return {"version": calls["version"]}

    @app.get("/validated")
    @cache_config(ttl_seconds=600)
    async def validated():
        # The server keeps this for 600 s, but tells clients to check with it before each reuse.
        calls["/validated"] += 1
        return JSONResponse({"version": calls["version"]}, headers={"Cache-Control": "max-age=0"})

    @app.post("/validated")
    async def update():
        calls["version"] += 1
        return {"version": calls["version"]}

    @app.get("/dated")
    @cache_config(ttl_seconds=60)
    async def dated():
        calls["/dated"] += 1
        return JSONResponse({"dated": True}, headers={"Date": DATE})

    @app.middleware("http")
    async def identify(request: Request, call_next):
        request.state.user = request.headers.get("x-user")
        return await call_next(request)

    @app.get("/mine")
    @cache_config(ttl_seconds=60, vary_by=["user"])
    async def mine(request: Request):
        calls["/mine"] += 1
        return {"user": request.state.user}

    recorder = Recorder(app)
    with serve(recorder) as url:
        yield Site(url, recorder, clock, calls)


@pytest.fixture
def hishel_client(site: Site) -> Iterator[httpx.Client]:
    """hishel's httpx client following RFC 9111 (a shared cache, its default), storing in memory."""
    storage = SqliteStorage(connection=sqlite3.connect(":memory:", check_same_thread=False))
    with CacheClient(base_url=site.url, storage=storage, rfc=True) as client:
        yield client


def caching(response: httpx.Response) -> dict[str, bool]:
    return dict(response.extensions["caching"])


def test_hishel_reuses_a_fresh_response_without_asking_the_server(site, hishel_client):
    first = hishel_client.get("/fresh")
    second = hishel_client.get("/fresh")

    assert first.headers["cache-control"] == "max-age=60"
    assert caching(first) == {"from_cache": False, "revalidated": False, "stored": True}
    assert caching(second) == {"from_cache": True, "revalidated": False, "stored": False}
    assert second.json() == first.json() == {"version": 1}
    assert [(e.status, e.x_cache) for e in site.exchanges("/fresh")] == [(200, "MISS")]
    assert site.calls["/fresh"] == 1


def test_hishel_revalidates_with_if_none_match_and_gets_a_304(site, hishel_client):
    first = hishel_client.get("/validated")
    second = hishel_client.get("/validated")
    third = hishel_client.get("/validated")

    etag = first.headers["etag"]
    assert caching(first)["stored"] is True
    for response in (second, third):
        assert caching(response) == {"from_cache": True, "revalidated": True, "stored": False}
        assert (response.status_code, response.json()) == (200, {"version": 1})
        assert response.headers["etag"] == etag
    exchanges = site.exchanges("/validated")
    assert [(e.if_none_match, e.status, e.x_cache) for e in exchanges] == [
        (None, 200, "MISS"),
        (etag, 304, "HIT"),
        (etag, 304, "HIT"),
    ]
    assert site.calls["/validated"] == 1


def test_hishel_gets_the_new_representation_after_a_write(site, hishel_client):
    first = hishel_client.get("/validated")
    with httpx.Client(base_url=site.url) as plain:
        assert plain.post("/validated").status_code == 200
    second = hishel_client.get("/validated")

    assert caching(second)["from_cache"] is False
    assert caching(second)["revalidated"] is True
    assert (second.status_code, second.json()) == (200, {"version": 2})
    assert second.headers["etag"] != first.headers["etag"]
    revalidation = site.exchanges("/validated")[-1]
    assert (revalidation.if_none_match, revalidation.status, revalidation.x_cache) == (
        first.headers["etag"],
        200,
        "MISS",
    )
    assert site.calls["/validated"] == 2


def test_hishel_as_a_shared_cache_never_stores_a_per_user_response(site, hishel_client):
    alice = hishel_client.get("/mine", headers={"X-User": "alice"})
    bob = hishel_client.get("/mine", headers={"X-User": "bob"})
    alice_again = hishel_client.get("/mine", headers={"X-User": "alice"})

    assert alice.headers["cache-control"] == "private, max-age=60"
    assert [caching(r)["stored"] for r in (alice, bob, alice_again)] == [False, False, False]
    assert [r.json()["user"] for r in (alice, bob, alice_again)] == ["alice", "bob", "alice"]
    # Every request reached the server, which answered the repeat from its own per-user entry.
    assert [e.x_cache for e in site.exchanges("/mine")] == ["MISS", "MISS", "HIT"]
    assert site.calls["/mine"] == 2


def test_hit_over_a_real_server_has_one_date_and_an_integer_age(site):
    with httpx.Client(base_url=site.url) as client:
        client.get("/dated")
        site.clock.advance(7)
        hit = client.get("/dated")

    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers.get_list("age") == ["7"]
    assert len(hit.headers.get_list("date")) == 1
    assert hit.headers["cache-control"] == "max-age=60"
    assert site.calls["/dated"] == 1


def test_head_over_a_real_server_matches_the_get(site):
    with httpx.Client(base_url=site.url) as client:
        get = client.get("/fresh")
        head = client.head("/fresh")
        get_hit = client.get("/fresh")

    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    volatile = {"date", "x-cache", "cache-status", "age"}
    assert {k: v for k, v in head.headers.items() if k not in volatile} == {
        k: v for k, v in get_hit.headers.items() if k not in volatile
    }
    assert head.headers["x-cache"] == "HIT"
