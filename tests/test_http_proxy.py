"""example_app/examples/http_proxy.py: a caching reverse proxy, end to end.

The origin is an ``httpx.MockTransport`` handler injected through ``create_app(transport=...)``:
it records what reaches it (method, the request target httpcore would send, headers as raw
lines, body) and answers what the test says. Two tests use a real origin on a loopback socket
to see the bytes on the wire. The client drives the proxy through ``httpx.ASGITransport``, or
through a raw ASGI call where httpx would re-quote the request target.
"""

import asyncio
import contextlib
import gzip
import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from example_app.examples import http_proxy
from intelligent_cache import CacheManager
from intelligent_cache.testing import FakeClock, assert_cache

RawHeaders = list[tuple[bytes, bytes]]
BINARY = bytes(range(256)) * 8


@dataclass
class Seen:
    """One request as it reached the origin."""

    method: str
    target: bytes
    headers: RawHeaders
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


@dataclass
class Origin:
    """The upstream: records every request, answers with ``reply(seen)``."""

    reply: Callable[[Seen], httpx.Response] = lambda seen: streamed(200, [], b"origin")
    seen: list[Seen] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        target = request.extensions.get("target", request.url.raw_path)
        seen = Seen(request.method, target, list(request.headers.raw), request.read())
        self.seen.append(seen)
        return self.reply(seen)


def streamed(status: int, headers: RawHeaders, body: bytes) -> httpx.Response:
    """A response as a real transport gives it: headers as given, the body still to be read."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def answer(
    status: int = 200, headers: RawHeaders | None = None, body: bytes = b"origin"
) -> Callable[[Seen], httpx.Response]:
    """A reply with these raw header lines (and the Content-Length of ``body``)."""
    lines = [*(headers or []), (b"content-length", b"%d" % len(body))]
    return lambda seen: streamed(status, lines, body)


def app_for(origin: Origin, **options: Any) -> FastAPI:
    return http_proxy.create_app("http://origin.test", transport=httpx.MockTransport(origin.handle), **options)


@contextlib.asynccontextmanager
async def proxied(origin: Origin, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the proxy in front of ``origin``, the proxy's lifespan running."""
    app = app_for(origin, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            yield client


async def asgi_request(
    app: FastAPI, method: str, raw_path: bytes, query: bytes, body: bytes = b""
) -> tuple[int, RawHeaders, bytes]:
    """One request as an ASGI server would pass it, request target untouched."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"proxy.test"), (b"content-length", b"%d" % len(body))],
        "client": ("127.0.0.1", 50000),
        "server": ("proxy.test", 80),
    }
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in messages[1:])


# -- forwarding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "M-SEARCH", "PROPFIND"])
async def test_every_method_and_its_body_are_forwarded_byte_for_byte(method: str) -> None:
    origin = Origin(lambda seen: streamed(207, [(b"content-type", b"application/x-echo")], seen.body))
    async with proxied(origin) as client:
        response = await client.request(method, "/things/1", content=BINARY)
    assert [(seen.method, seen.target, seen.body) for seen in origin.seen] == [(method, b"/things/1", BINARY)]
    assert origin.seen[0].header(b"content-length") == [b"%d" % len(BINARY)]
    assert (response.status_code, response.content) == (207, BINARY)
    assert response.headers["content-type"] == "application/x-echo"


async def test_get_is_forwarded_and_head_is_answered_from_the_get() -> None:
    origin = Origin(answer(headers=[(b"cache-control", b"max-age=60")], body=b"the body"))
    async with proxied(origin) as client:
        head = await client.head("/doc")
        get = await client.get("/doc")
    # HEAD reaches the origin as a GET (the entry serves both), and goes back without the body.
    assert [(seen.method, seen.target) for seen in origin.seen] == [("GET", b"/doc")]
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "8")
    assert_cache(head, "MISS")
    assert (get.content, get.headers["x-cache"]) == (b"the body", "HIT")


async def test_hop_by_hop_headers_are_dropped_both_ways() -> None:
    hop = [
        (b"connection", b"keep-alive, X-Hop-Out"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"trailer", b"X-Sum"),
        (b"upgrade", b"websocket"),
        (b"x-hop-out", b"dropped"),
    ]
    origin = Origin(answer(headers=[*hop, (b"x-end", b"kept"), (b"cache-control", b"no-store")]))
    request_headers = [
        ("Connection", "X-Hop-In, Upgrade"),
        ("X-Hop-In", "dropped"),
        ("Keep-Alive", "300"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("X-Dup", "one"),
        ("X-Dup", "two"),
    ]
    async with proxied(origin) as client:
        response = await client.post("/hop", headers=request_headers, content=b"body")
    seen = origin.seen[0]
    names = {name.lower() for name, _ in seen.headers}
    assert not names & {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
    assert b"transfer-encoding" not in names and b"x-hop-in" not in names
    assert seen.header(b"x-dup") == [b"one", b"two"]
    assert seen.header(b"host") == [b"origin.test"]  # rewritten for the upstream
    assert (seen.body, seen.header(b"content-length")) == (b"body", [b"4"])
    sent = {name.lower() for name, _ in response.headers.raw}
    assert not sent & {name for name, _ in hop}
    assert response.headers["x-end"] == "kept"


async def test_repeated_response_headers_stay_separate_lines_in_order() -> None:
    lines = [
        (b"cache-control", b"public"),
        (b"link", b"</a.css>; rel=preload"),
        (b"cache-control", b"max-age=60"),
        (b"link", b"</b.js>; rel=preload"),
        (b"x-empty", b""),
    ]
    cookies = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly")]
    origin = Origin(lambda seen: answer(headers=lines + (cookies if seen.target == b"/cookies" else []))(seen))
    async with proxied(origin) as client:
        miss, hit = await client.get("/links"), await client.get("/links")
        with_cookies = await client.get("/cookies")

    def kept(response: httpx.Response) -> RawHeaders:
        return [(name, value) for name, value in response.headers.raw if name in {n for n, _ in lines + cookies}]

    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert kept(miss) == kept(hit) == lines  # stored and replayed as separate lines, in order
    assert kept(with_cookies) == lines + cookies
    assert_cache(with_cookies, "SKIP")  # the cache never stores a Set-Cookie response


async def test_gzip_bodies_pass_undecoded_and_accept_encoding_as_sent() -> None:
    text = b"compressible " * 200
    packed = gzip.compress(text, mtime=0)
    headers = [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding"), (b"cache-control", b"max-age=60")]
    origin = Origin(answer(headers=headers, body=packed))
    accept = "gzip;q=1.0, identity; q=0.5, *;q=0"
    async with proxied(origin) as client:
        raws = []
        for _ in range(2):
            async with client.stream("GET", "/big", headers={"Accept-Encoding": accept}) as response:
                raws.append((response.headers["x-cache"], b"".join([chunk async for chunk in response.aiter_raw()])))
                assert response.headers["content-length"] == str(len(packed))
    assert raws == [("MISS", packed), ("HIT", packed)]
    assert gzip.decompress(packed) == text
    assert origin.seen[0].header(b"accept-encoding") == [accept.encode()]


async def test_path_and_query_reach_the_origin_byte_for_byte() -> None:
    origin = Origin()
    app = app_for(origin)
    raw_path, query = b"/a%2Fb/%7Euser/caf%C3%A9", b'b=2&a=1&a=%2F&sp=+%20&empty=&flag&q="x"<y>'
    async with app.router.lifespan_context(app):
        status, _, body = await asgi_request(app, "GET", raw_path, query)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy.test") as client:
            await client.get("/plain?z=1&z=0")
    assert (status, body) == (200, b"origin")
    assert [seen.target for seen in origin.seen] == [raw_path + b"?" + query, b"/plain?z=1&z=0"]


async def test_a_path_in_upstream_url_prefixes_every_target() -> None:
    origin = Origin()
    app = http_proxy.create_app("http://origin.test/api/", transport=httpx.MockTransport(origin.handle))
    async with app.router.lifespan_context(app):
        await asgi_request(app, "POST", b"/v1/x", b"k=v", b"{}")
    assert origin.seen[0].target == b"/api/v1/x?k=v"


async def test_redirects_and_cookies_are_the_clients_business() -> None:
    origin = Origin(answer(302, headers=[(b"location", b"/elsewhere"), (b"set-cookie", b"sid=1")]))
    async with proxied(origin) as client:
        first = await client.get("/login")
        client.cookies.clear()  # the test client has a jar; the proxy's upstream client must not
        await client.get("/login")
    assert (first.status_code, first.headers["location"], first.headers["set-cookie"]) == (302, "/elsewhere", "sid=1")
    assert [seen.target for seen in origin.seen] == [b"/login", b"/login"]  # not followed
    assert origin.seen[1].header(b"cookie") == []


async def test_origin_failures_become_502_and_504() -> None:
    def fail(seen: Seen) -> httpx.Response:
        if seen.target == b"/slow":
            raise httpx.ReadTimeout("slow origin")
        raise httpx.ConnectError("origin down")

    async with proxied(Origin(fail)) as client:
        assert (await client.get("/down")).status_code == 502
        assert (await client.delete("/down")).status_code == 502
        assert (await client.get("/slow")).status_code == 504


async def test_an_invalid_status_becomes_502() -> None:
    # Statuses outside 100-599 are invalid (RFC 9110 section 15), and uvicorn cannot send them.
    async with proxied(Origin(answer(999))) as client:
        assert (await client.get("/odd")).status_code == 502


# -- the wire ------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def wire_origin(response: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An origin on a loopback socket: the request heads it received, and the bytes it answers with."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = [
            int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
        ]
        heads.append(head + await reader.readexactly(length[0] if length else 0))
        writer.write(response)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", heads


async def test_the_origin_receives_the_request_line_and_body_as_sent() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: close\r\n\r\nok"
    async with wire_origin(reply) as (url, heads):
        app = http_proxy.create_app(url)
        async with app.router.lifespan_context(app):
            get = await asgi_request(app, "GET", b"/p%2Fq/%7e", b'x="1"&y=<2>&x=%20')
            search = await asgi_request(app, "M-SEARCH", b"/*", b"", b"ssdp:discover")
            lower = await asgi_request(app, "purge", b"/x", b"")  # methods are case-sensitive
    host = url.removeprefix("http://").encode()
    assert heads[0].startswith(b'GET /p%2Fq/%7e?x="1"&y=<2>&x=%20 HTTP/1.1\r\n')
    assert b"\r\nhost: " + host + b"\r\n" in heads[0].lower()
    assert heads[1].startswith(b"M-SEARCH /* HTTP/1.1\r\n") and heads[1].endswith(b"\r\n\r\nssdp:discover")
    assert heads[2].startswith(b"purge /x HTTP/1.1\r\n")
    for status, headers, body in (get, search, lower):
        assert (status, body) == (200, b"ok")
        assert [value for name, value in headers if name == b"set-cookie"] == [b"a=1", b"b=2"]
        assert b"connection" not in {name for name, _ in headers}


async def test_a_chunked_gzip_response_keeps_its_bytes_and_loses_its_framing() -> None:
    packed = gzip.compress(b"x" * 1000, mtime=0)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunked
    async with wire_origin(reply) as (url, _):
        app = http_proxy.create_app(url)
        async with app.router.lifespan_context(app):
            status, headers, body = await asgi_request(app, "POST", b"/z", b"")
    assert (status, body) == (200, packed)
    assert (b"content-encoding", b"gzip") in headers and b"transfer-encoding" not in {n for n, _ in headers}


# -- caching -------------------------------------------------------------------------------------------------------


async def test_a_get_with_max_age_is_a_hit_the_second_time() -> None:
    origin = Origin(answer(headers=[(b"cache-control", b"max-age=60")], body=b"fresh"))
    async with proxied(origin) as client:
        first, second = await client.get("/fresh?x=1"), await client.get("/fresh?x=1")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert len(origin.seen) == 1
    assert second.content == b"fresh" and "age" in second.headers
    assert [name for name, _ in second.headers.raw].count(b"date") == 1  # added once: the cache drops the stored one


async def test_a_get_without_freshness_information_is_not_reused() -> None:
    # The route's fixed TTL is one microsecond (PROXY_CACHE): with the real clock, never reused.
    origin = Origin(answer(headers=[(b"last-modified", b"Mon, 01 Jan 2024 00:00:00 GMT")]))
    async with proxied(origin) as client:
        for _ in range(2):
            assert (await client.get("/plain")).content == b"origin"
    assert len(origin.seen) == 2


async def test_a_get_without_freshness_information_is_not_stored() -> None:
    clock = FakeClock()  # no time passes: only not storing it at all keeps it from being reused
    origin = Origin(answer())
    async with proxied(origin, clock=clock) as client:
        for _ in range(2):
            assert_cache(await client.get("/plain"), "SKIP")
    assert len(origin.seen) == 2


async def test_distinct_request_targets_are_distinct_entries() -> None:
    origin = Origin(lambda seen: answer(headers=[(b"cache-control", b"max-age=60")], body=seen.target)(seen))
    async with proxied(origin) as client:
        for url in ("/a%2Fb", "/a/b", "/q?a=1&b=2", "/q?b=2&a=1", "/s?x=a+b", "/s?x=a%20b"):
            assert (await client.get(url)).content == url.encode()


async def test_a_post_is_never_cached_and_invalidates_the_get() -> None:
    origin = Origin(answer(headers=[(b"cache-control", b"max-age=60")], body=b"answer"))
    async with proxied(origin) as client:
        assert_cache(await client.get("/items"), "MISS")
        assert_cache(await client.get("/items"), "HIT")
        posts = [await client.post("/items", content=b"new") for _ in range(2)]
        after = await client.get("/items")
    assert [seen.method for seen in origin.seen] == ["GET", "POST", "POST", "GET"]
    assert all(post.status_code == 200 and "x-cache" not in post.headers for post in posts)
    assert_cache(after, "MISS")


async def test_credentials_only_share_responses_that_say_so() -> None:
    # The cache's safe default stays: RFC 9111 section 3.5 (no public=True on the proxy's route).
    origin = Origin(answer(headers=[(b"cache-control", b"max-age=60")], body=b"for alice"))
    async with proxied(origin) as client:
        alice = await client.get("/me", headers={"Authorization": "Bearer alice"})
        anonymous = await client.get("/me")
        again = await client.get("/me", headers={"Authorization": "Bearer bob"})
    assert_cache(alice, "SKIP")
    assert_cache(anonymous, "MISS")
    assert_cache(again, "SKIP")  # a stored response without public/s-maxage/must-revalidate
    assert len(origin.seen) == 3


# -- the module ----------------------------------------------------------------------------------------------------


def test_app_is_built_on_first_access_from_upstream_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPSTREAM_URL", raising=False)
    module = importlib.reload(http_proxy)  # importing needs no environment
    with pytest.raises(RuntimeError, match="UPSTREAM_URL"):
        module.create_app()
    monkeypatch.setenv("UPSTREAM_URL", "http://origin.test:8000")
    try:
        app = module.app
        assert isinstance(app, FastAPI) and module.app is app
        assert isinstance(app.state.intelligent_cache, CacheManager)
    finally:
        vars(module).pop("app", None)
    with pytest.raises(AttributeError):
        module.nothing  # noqa: B018
