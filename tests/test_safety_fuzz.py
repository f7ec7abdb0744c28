"""Fuzz every request header the cache parses, black-box, against cached routes (memory backend).

Each request goes to the cached app and to an uncached twin built from the same endpoints. The cached
app must never answer 5xx (except the 504 RFC 9111 prescribes for ``only-if-cached``), and a 200 it
sends must carry exactly the body the endpoint computes for that request, as the twin shows: no
header, however malformed, repeated or huge, may crash the cache or make it serve another request's
entry. Requests are sent as raw latin-1 bytes through httpx's ``ASGITransport`` (Starlette's
TestClient re-encodes header values as UTF-8); the cached app's lifespan runs in a TestClient portal.
One test repeats the worst values over a real socket to uvicorn.
"""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import Cookie, Depends, FastAPI, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from intelligent_cache import CacheManager, MemoryBackend, cache_config

RawHeaders = list[tuple[bytes, bytes]]

optional_bearer = HTTPBearer(auto_error=False)


def identify(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(optional_bearer)]) -> None:
    if cred is not None:
        request.state.user_id = cred.credentials


def build_app(cached: bool) -> FastAPI:
    """The fuzzed routes; ``cached=False`` builds the oracle twin (same endpoints, no cache)."""
    app = FastAPI()

    def config(**options: Any) -> Callable[[Any], Any]:
        return cache_config(**options) if cached else (lambda endpoint: endpoint)

    if cached:
        CacheManager(MemoryBackend(), default_ttl=3600).init_app(app)

    @app.get("/items/{item_id}")
    @config()
    def get_item(item_id: str, q: str | None = None) -> dict[str, Any]:
        return {"item": item_id, "q": q}

    @app.get("/tenant")
    @config()
    def tenant(x_tenant: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return {"tenant": x_tenant}

    @app.get("/lang")
    @config()
    def lang(lang: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        return {"lang": lang}

    @app.get("/me", dependencies=[Depends(identify)])
    @config(vary_by=["user_id"])
    def me(request: Request) -> dict[str, Any]:
        return {"user": getattr(request.state, "user_id", None)}

    @app.get("/public")
    @config(public=True)
    def public() -> dict[str, Any]:
        return {"catalog": ["a", "b"]}

    @app.get("/negotiated")
    @config()
    def negotiated(request: Request) -> Response:
        # Repeated field lines mean the same as one comma-joined line (RFC 9110 section 5.3).
        value = ", ".join(request.headers.getlist("accept-language"))
        return Response(value.encode("latin-1"), media_type="text/plain", headers={"Vary": "Accept-Language"})

    return app


@dataclass
class Exchange:
    status: int
    headers: httpx.Headers
    body: bytes


class Site:
    """The cached app (lifespan running) and its uncached twin, each answering raw-byte requests."""

    def __init__(self, client: TestClient, cached: FastAPI, twin: FastAPI) -> None:
        self.client = client
        self.cached = cached
        self.twin = twin

    @staticmethod
    async def _send(app: FastAPI, target: str, headers: RawHeaders) -> Exchange:
        # The transport alone: an httpx client would add headers and parse redirects.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        request = httpx.Request("GET", "http://testserver" + target)
        request.headers = httpx.Headers(headers)  # exactly these lines, as bytes
        response = await transport.handle_async_request(request)
        body = await response.aread()
        return Exchange(response.status_code, response.headers, body)

    def send(self, target: str, headers: RawHeaders) -> tuple[Exchange, Exchange]:
        cached = self.client.portal.call(self._send, self.cached, target, headers)
        twin = self.client.portal.call(self._send, self.twin, target, headers)
        return cached, twin


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    cached = build_app(cached=True)
    with TestClient(cached) as client:
        yield Site(client, cached, build_app(cached=False))


def asks_only_if_cached(headers: RawHeaders) -> bool:
    return any(name == b"cache-control" and b"only-if-cached" in value.lower() for name, value in headers)


def check(site: Site, target: str, headers: RawHeaders) -> None:
    cached, twin = site.send(target, headers)
    described = f"GET {target[:200]} " + repr([(name[:60], value[:120]) for name, value in headers])
    if cached.status == 504 and asks_only_if_cached(headers):
        return  # RFC 9111 section 5.2.1.7: nothing stored for it
    assert cached.status < 500, f"{cached.status} for {described}: {cached.body[:300]!r}"
    if cached.status == 304:
        assert any(name == b"if-none-match" for name, _ in headers), described
        assert cached.body == b""
    elif cached.status == 200:
        assert twin.status == 200, f"the endpoint answers {twin.status} to {described}, the cache 200"
        assert cached.body == twin.body, f"{described}: cache sent {cached.body[:300]!r}, endpoint {twin.body[:300]!r}"
    else:
        assert cached.status == twin.status, f"{described}: cache {cached.status}, endpoint {twin.status}"
    if cached.status in (200, 304):
        assert cached.headers.get("x-cache") in {"HIT", "MISS", "STALE", "SKIP"}, described
        assert cached.headers.get("cache-status", "").startswith("intelligent-cache"), described


# -- strategies -------------------------------------------------------------------------------------------

latin1_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
latin1 = latin1_text.map(lambda text: text.encode("latin-1"))
visible = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)

HUGE_NINES = b"9" * 4301
weird_numbers = st.sampled_from(
    [
        b"0",
        b"1",
        b"60",
        b"-1",
        b"1.5",
        b"",
        b'"5"',
        b"\xb2",  # superscript two: str.isdigit() is true, int() refuses it
        b"\xb9\xb3",
        b"\xbd",
        b"1\xb2",
        "\u0663".encode("utf-8"),  # ARABIC-INDIC DIGIT THREE, as UTF-8 bytes
        b"99999999999999999999999999",
        HUGE_NINES,
        b"0x10",
        b" 5 ",
        b"5,",
        b"1e3",
    ]
)
directive_names = st.sampled_from(
    [
        b"max-age",
        b"s-maxage",
        b"max-stale",
        b"min-fresh",
        b"no-cache",
        b"no-store",
        b"only-if-cached",
        b"no-transform",
        b"private",
        b"public",
        b"must-revalidate",
        b"stale-if-error",
        b"stale-while-revalidate",
        b"MAX-AGE",
        b"Max-Age",
    ]
)
directive = st.one_of(
    directive_names,
    st.tuples(directive_names, st.one_of(weird_numbers, latin1)).map(lambda pair: pair[0] + b"=" + pair[1]),
    latin1,
)
cache_control = st.lists(directive, max_size=5).flatmap(
    lambda items: st.sampled_from([b",", b", ", b";", b" ,", b",,"]).map(lambda sep: sep.join(items))
)
etag = st.one_of(
    st.sampled_from([b"*", b'W/"x"', b'"x"', b"W/", b'"', b'""', b"W/*", b"*, *"]),
    visible.map(lambda text: b'"' + text.encode() + b'"'),
    latin1,
)
http_date = st.one_of(
    st.sampled_from(
        [
            b"Sat, 01 Jan 2000 00:00:00 GMT",
            b"Sat, 01 Jan 99999 00:00:00 GMT",
            b"Sat, 01 Jan -1 00:00:00 GMT",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
            b"Sat, 31 Feb 2000 25:61:61 GMT",
            b"0",
            b"",
        ]
    ),
    latin1,
)
token_value = st.one_of(
    st.sampled_from([b"tok-alice", b"tok-bob", b"", b"\xb2", b"a:b", b"@user_id", b"x" * 5000]),
    latin1,
)
authorization = st.one_of(
    token_value.map(lambda token: b"Bearer " + token),
    token_value.map(lambda token: b"Basic " + token),
    st.sampled_from([b"Bearer", b"bearer tok-alice", b"Bearer  tok-alice", b"Digest x"]),
    latin1,
)
cookie = st.one_of(
    st.sampled_from([b"lang=en", b"lang=fr", b"lang=en; lang=fr", b"lang=", b"=", b";;", b'lang="en"']),
    st.lists(st.tuples(latin1, latin1).map(lambda pair: pair[0] + b"=" + pair[1]), max_size=4).map(b"; ".join),
    latin1,
)
host = st.one_of(
    st.sampled_from(
        [b"testserver", b"TESTSERVER", b"testserver:80", b"evil.example", b"", b"[::1]:8000", b":", b"a@b"]
    ),
    latin1,
)
byte_range = st.one_of(
    st.sampled_from([b"bytes=0-10", b"bytes=-5", b"bytes=5-", b"bytes=0-0,1-1", b"bytes=" + b"9" * 5000, b"lines=1"]),
    latin1,
)
random_name = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=":"), min_size=1, max_size=20
).map(lambda text: text.lower().encode("latin-1"))

header_line = st.one_of(
    st.tuples(st.sampled_from([b"cache-control"]), cache_control),
    st.tuples(st.sampled_from([b"pragma"]), st.one_of(st.sampled_from([b"no-cache", b"NO-CACHE", b""]), latin1)),
    st.tuples(st.sampled_from([b"if-none-match"]), st.lists(etag, max_size=4).map(b", ".join)),
    st.tuples(st.sampled_from([b"if-modified-since"]), http_date),
    st.tuples(st.sampled_from([b"authorization"]), authorization),
    st.tuples(st.sampled_from([b"cookie"]), cookie),
    st.tuples(st.sampled_from([b"host"]), host),
    st.tuples(st.sampled_from([b"range"]), byte_range),
    st.tuples(st.sampled_from([b"x-tenant", b"accept-language"]), st.one_of(token_value, latin1)),
    st.tuples(random_name, latin1),
)
# Repeated lines of one header come from the same list drawing the same name twice.
headers_strategy = st.lists(header_line, max_size=8)

targets = st.one_of(
    st.sampled_from(["/items/1", "/items/2", "/items/1?q=a", "/tenant", "/lang", "/me", "/public", "/negotiated"]),
    st.tuples(latin1_text, latin1_text).map(
        lambda pair: f"/items/{quote(pair[0] or 'x', safe='')}?q={quote(pair[1], safe='')}"
    ),
)


# -- the fuzz ---------------------------------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ_SETTINGS
@given(target=targets, headers=headers_strategy)
@example(target="/items/1", headers=[(b"cache-control", b"max-age=" + HUGE_NINES)])
@example(target="/items/1", headers=[(b"cache-control", b"max-age=\xb2")])
@example(target="/me", headers=[(b"authorization", b"Bearer tok-alice")])
@example(target="/me", headers=[(b"authorization", b"Bearer tok-bob")])
@example(target="/items/1", headers=[(b"cache-control", b"max-age=1"), (b"cache-control", b"max-age=\xb2")])
def test_fuzzed_request_headers_never_crash_and_never_serve_another_body(
    site: Site, target: str, headers: RawHeaders
) -> None:
    check(site, target, headers)


@FUZZ_SETTINGS
@given(
    target=st.sampled_from(["/items/1", "/me", "/tenant", "/negotiated"]),
    requests=st.lists(headers_strategy, min_size=2, max_size=6),
)
def test_fuzzed_request_sequences_on_one_url_each_get_their_own_body(
    site: Site, target: str, requests: list[RawHeaders]
) -> None:
    """Several differently-headed requests to one URL in a row: whoever stored first, each gets its own body."""
    for headers in requests:
        check(site, target, headers)


CRASHERS = [
    pytest.param([(b"cache-control", b"max-age=" + HUGE_NINES)], id="max-age-4301-nines"),
    pytest.param([(b"cache-control", b"max-age=\xb2")], id="max-age-superscript-two"),
    pytest.param([(b"cache-control", b"max-stale=\xb2")], id="max-stale-superscript-two"),
    pytest.param([(b"cache-control", b"min-fresh=\xb2")], id="min-fresh-superscript-two"),
    pytest.param([(b"cache-control", b"min-fresh=" + HUGE_NINES)], id="min-fresh-4301-nines"),
    pytest.param([(b"cache-control", b"max-stale=" + HUGE_NINES)], id="max-stale-4301-nines"),
    pytest.param([(b"cache-control", b"s-maxage=\xb2, max-age=\xb9")], id="s-maxage-superscripts"),
    pytest.param([(b"cache-control", "max-age=\u0663".encode())], id="max-age-arabic-indic-digit-utf8"),
    pytest.param([(b"cache-control", b"max-age=" + b"9" * 100_000)], id="max-age-100k-nines"),
    pytest.param([(b"cache-control", b"max-age=5"), (b"cache-control", b"max-age=\xb2")], id="repeated-cache-control"),
    pytest.param([(b"cache-control", b"," * 10_000)], id="ten-thousand-commas"),
    pytest.param([(b"cache-control", b'"' * 9_999)], id="unbalanced-quotes"),
    pytest.param([(b"pragma", b"no-cache" * 2000)], id="huge-pragma"),
    pytest.param([(b"if-none-match", b", ".join(b'"e%d"' % n for n in range(10_000)))], id="ten-thousand-etags"),
    pytest.param([(b"if-none-match", b"W/" * 5000)], id="if-none-match-w-slashes"),
    pytest.param([(b"if-modified-since", b"Sat, 01 Jan 99999 00:00:00 GMT")], id="if-modified-since-year-99999"),
    pytest.param([(b"range", b"bytes=0-" + HUGE_NINES)], id="range-4301-nines"),
    pytest.param([(b"host", b"\xff\xfe" * 100)], id="latin-1-host"),
    pytest.param([(b"host", b"testserver"), (b"host", b"evil.example")], id="two-hosts"),
    pytest.param([(b"authorization", b"Bearer " + b"\xb2" * 8192)], id="huge-latin-1-token"),
    pytest.param([(b"cookie", b"lang=" + b"\xe9" * 8192)], id="huge-latin-1-cookie"),
    pytest.param([(b"x-tenant", b"\x00\x01\x7f\xff")], id="control-bytes-in-declared-header"),
]


@pytest.mark.parametrize("target", ["/items/1", "/tenant", "/lang", "/me", "/public", "/negotiated"])
@pytest.mark.parametrize("headers", CRASHERS)
def test_worst_header_values_never_crash_the_cache(site: Site, target: str, headers: RawHeaders) -> None:
    check(site, target, headers)
    check(site, target, headers)  # once more, when an entry may exist


# -- over a real socket --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    """The cached app under uvicorn on a free loopback port (lifespan on)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(cached=True), log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10  # a start-up guard, not a speed check
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def raw_get(port: int, target: str, lines: list[bytes]) -> int:
    """Send one GET with these raw header lines; the response's status code."""
    request = b"GET " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    request += b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), received[:200]
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"Cache-Control: max-age=\xb2", id="superscript-two"),
        pytest.param(b"Cache-Control: max-age=" + HUGE_NINES, id="4301-nines"),
    ],
)
@pytest.mark.parametrize("target", ["/items/1", "/me", "/public"])
def test_uvicorn_never_answers_500_to_a_malformed_max_age(server_port: int, target: str, line: bytes) -> None:
    for _ in range(2):  # before and after an entry exists
        assert raw_get(server_port, target, []) == 200
        status = raw_get(server_port, target, [line])
        assert status < 500, f"{status} for {line[:40]!r}"
