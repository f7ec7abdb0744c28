"""``cache_config(mode="http")``: the route's cache behaves as an RFC 9111 shared cache.

One behaviour per test, through a real FastAPI app whose endpoint answers what
the test scripts (status, header lines, body) and records what reached it. Time
is a FakeClock shared by the manager and the scripted ``Date`` headers.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from intelligent_cache import CacheManager, ConfigurationError, MemoryBackend, cache_config
from intelligent_cache.testing import FakeClock

START = 1_700_000_000.0


@dataclass
class Script:
    """What the endpoint answers next, and what it saw."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"0123456789"
    seen: list[dict[str, str]] = field(default_factory=list)

    def answer(self, request: Request) -> Response:
        self.seen.append(dict(request.headers.items()))
        response = Response(self.body, status_code=self.status)
        response.raw_headers.extend((name.lower().encode(), value.encode()) for name, value in self.headers)
        return response


@dataclass
class Harness:
    client: httpx.AsyncClient
    script: Script
    clock: FakeClock

    def date(self, offset: float = 0) -> str:
        return formatdate(self.clock() + offset, usegmt=True)

    async def get(self, url: str = "/r", **headers: str) -> httpx.Response:
        return await self.client.get(url, headers=headers)


def make_app(script: Script, clock: FakeClock, **options: object) -> FastAPI:
    app = FastAPI()
    CacheManager(MemoryBackend(clock=clock), cache_control=False, clock=clock).init_app(app)

    @app.get("/{path:path}")
    @cache_config(mode="http", **options)  # type: ignore[arg-type]
    async def endpoint(request: Request) -> Response:
        return script.answer(request)

    return app


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = FakeClock(START)
    script = Script()
    transport = httpx.ASGITransport(app=make_app(script, clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Harness(client, script, clock)


def cache_status(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


# -- freshness comes from the response ---------------------------------------------------------------


async def test_a_response_without_freshness_information_is_not_reused(harness: Harness) -> None:
    await harness.get()
    second = await harness.get()
    assert second.headers["x-cache"] != "HIT"
    assert len(harness.script.seen) == 2


@pytest.mark.parametrize(
    ("fields", "fresh_for"),
    [
        ([("Cache-Control", "max-age=60")], 60),
        ([("Cache-Control", "max-age=60, s-maxage=5")], 5),  # a shared cache prefers s-maxage
        ([("Expires", "+30"), ("Date", "+0")], 30),
        ([("CDN-Cache-Control", "max-age=20"), ("Cache-Control", "no-store")], 20),
        ([("Intelligent-Cache-Control", "max-age=8"), ("CDN-Cache-Control", "max-age=20")], 8),
    ],
)
async def test_freshness_is_what_the_response_says(harness: Harness, fields: list[tuple[str, str]], fresh_for: int):
    harness.script.headers = [
        (name, harness.date(float(value[1:])) if value.startswith("+") else value) for name, value in fields
    ]
    await harness.get()
    harness.clock.advance(fresh_for - 1)
    assert (await harness.get()).headers["x-cache"] == "HIT"
    harness.clock.advance(2)
    assert (await harness.get()).headers["x-cache"] != "HIT"


@pytest.mark.parametrize(
    "fields",
    [
        [("Intelligent-Cache-Control", "no-store"), ("Cache-Control", "max-age=60")],
        [("Cache-Control", "no-store, max-age=60")],
        [("Cache-Control", "private, max-age=60")],
        [("Expires", "Thu, 1 Jan 2099 00:00:00 GMT")],  # a 1-digit day: not an HTTP date, so expired
        [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")],  # our choice: never stored
    ],
)
async def test_what_must_not_be_reused_is_not(harness: Harness, fields: list[tuple[str, str]]) -> None:
    harness.script.headers = fields
    await harness.get()
    assert (await harness.get()).headers["x-cache"] != "HIT"
    assert len(harness.script.seen) == 2


async def test_the_age_the_response_arrives_with_counts_and_a_hit_says_its_current_age(harness: Harness) -> None:
    harness.script.headers = [("Date", harness.date()), ("Cache-Control", "max-age=60"), ("Age", "50")]
    await harness.get()
    harness.clock.advance(5)
    hit = await harness.get()
    assert hit.headers["x-cache"] == "HIT"
    assert int(hit.headers["age"]) == 55
    assert hit.headers["date"] == harness.date(-5)  # the origin's Date is kept
    harness.clock.advance(6)
    assert (await harness.get()).headers["x-cache"] != "HIT"


@pytest.mark.parametrize("age", ["abc", "-1", "1.5", "99999999999999999999"])
async def test_an_unreadable_or_huge_age_makes_the_response_stale(harness: Harness, age: str) -> None:
    harness.script.headers = [("Cache-Control", "max-age=3600"), ("Age", age)]
    await harness.get()
    assert (await harness.get()).headers["x-cache"] != "HIT"


async def test_heuristic_freshness_only_when_asked() -> None:
    clock = FakeClock(START)
    for fraction, expected in ((0.0, 2), (0.1, 1)):
        script = Script(headers=[("Last-Modified", formatdate(START - 1000, usegmt=True))])
        app = make_app(script, clock, heuristic_freshness=fraction)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            await client.get("/r")
            clock.advance(99)  # 10% of 1000 s
            await client.get("/r")
        assert len(script.seen) == expected, fraction


# -- revalidation ------------------------------------------------------------------------------------------


async def test_a_stale_entry_is_revalidated_and_a_304_freshens_it(harness: Harness) -> None:
    script = harness.script
    script.headers = [("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("X-Version", "1")]
    await harness.get(**{"If-None-Match": '"client"'})
    harness.clock.advance(11)
    script.status, script.body = 304, b""
    script.headers = [("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("X-Version", "2")]
    validated = await harness.get()
    assert script.seen[-1]["if-none-match"] == '"v1"'  # the stored validator, not a client's
    assert validated.status_code == 200 and validated.content == b"0123456789"
    assert validated.headers["x-version"] == "2"  # the 304's fields update the stored ones
    assert "fwd-status=304" in cache_status(validated)
    again = await harness.get()
    assert again.headers["x-cache"] == "HIT" and again.headers["x-version"] == "2"
    assert len(script.seen) == 2


async def test_a_client_whose_validator_matches_gets_a_304_after_revalidation(harness: Harness) -> None:
    harness.script.headers = [("Cache-Control", "max-age=1"), ("Last-Modified", harness.date(-100))]
    await harness.get()
    harness.clock.advance(2)
    harness.script.status, harness.script.body = 304, b""
    answer = await harness.get(**{"If-Modified-Since": harness.date()})
    assert harness.script.seen[-1]["if-modified-since"] == harness.date(-102)
    assert answer.status_code == 304 and answer.content == b""


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=1"])
async def test_entries_that_forbid_it_are_never_served_stale(harness: Harness, directive: str) -> None:
    harness.script.headers = [("Cache-Control", f"max-age=1, {directive}, stale-while-revalidate=60")]
    await harness.get()
    harness.clock.advance(3)
    assert (await harness.get()).headers["x-cache"] not in ("HIT", "STALE")


async def test_the_response_stale_while_revalidate_window_is_honoured(harness: Harness) -> None:
    harness.script.headers = [("Cache-Control", "max-age=1, stale-while-revalidate=30")]
    await harness.get()
    harness.clock.advance(5)
    assert (await harness.get()).headers["x-cache"] == "STALE"


# -- ranges ------------------------------------------------------------------------------------------------


async def test_a_range_is_answered_from_the_stored_response(harness: Harness) -> None:
    harness.script.headers = [("Cache-Control", "max-age=60"), ("ETag", '"r"')]
    await harness.get()
    part = await harness.get(Range="bytes=2-5")
    assert (part.status_code, part.content) == (206, b"2345")
    assert part.headers["content-range"] == "bytes 2-5/10" and part.headers["content-length"] == "4"
    assert (await harness.get(Range="bytes=-3")).content == b"789"
    unsatisfiable = await harness.get(Range="bytes=50-")
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == "bytes */10"
    stale_validator = await harness.get(Range="bytes=0-1", **{"If-Range": '"other"'})
    assert (stale_validator.status_code, stale_validator.content) == (200, b"0123456789")
    assert (await harness.get(Range="bytes=0-1,4-5")).status_code == 200  # several ranges: sent whole
    assert len(harness.script.seen) == 1


async def test_a_206_from_the_endpoint_is_never_stored_as_the_whole(harness: Harness) -> None:
    harness.script.status, harness.script.headers = 206, [("Cache-Control", "max-age=60")]
    await harness.get(Range="bytes=0-1")
    assert (await harness.get()).headers["x-cache"] != "HIT"


# -- keys, credentials, status codes ---------------------------------------------------------------------


async def test_the_request_target_is_keyed_byte_for_byte(harness: Harness) -> None:
    harness.script.headers = [("Cache-Control", "max-age=60")]
    for url in ("/a?x=1&y=2", "/a?y=2&x=1", "/a%2Fb", "/a/b"):
        assert (await harness.get(url)).headers["x-cache"] == "MISS", url
    assert (await harness.get("/a?y=2&x=1")).headers["x-cache"] == "HIT"


async def test_a_request_with_authorization_shares_only_what_says_it_may(harness: Harness) -> None:
    harness.script.headers = [("Cache-Control", "max-age=60")]
    await harness.get(Authorization="Bearer alice")
    assert (await harness.get(Authorization="Bearer bob")).headers["x-cache"] != "HIT"
    harness.script.headers = [("Cache-Control", "max-age=60, public")]
    await harness.get("/p", Authorization="Bearer alice")
    assert (await harness.get("/p", Authorization="Bearer bob")).headers["x-cache"] == "HIT"


@pytest.mark.parametrize(("status", "stored"), [(302, True), (500, True), (599, False)])
async def test_any_understood_status_with_explicit_freshness_is_stored(harness: Harness, status: int, stored: bool):
    harness.script.status = status
    harness.script.headers = [("Cache-Control", "max-age=60, must-understand, no-store")]
    await harness.get()
    assert ((await harness.get()).headers["x-cache"] == "HIT") is stored


# -- configuration and hostile input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"ttl_seconds": 60},
        {"ttl_from_headers": True},
        {"stale_while_revalidate": 5},
        {"stale_if_error": 5},
        {"cacheable_statuses": [200]},
        {"heuristic_freshness": 2},
        {"mode": "proxy"},
    ],
)
def test_settings_the_response_owns_are_refused_in_http_mode(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        cache_config(**{"mode": "http", **options})  # type: ignore[arg-type]


def test_heuristic_freshness_needs_http_mode() -> None:
    with pytest.raises(ConfigurationError, match="mode='http'"):
        cache_config(heuristic_freshness=0.1)


@pytest.mark.parametrize(
    "headers",
    [
        {"Range": "bytes=" + "1-2," * 5000},
        {"Range": "bytes=99999999999999999999999-"},
        {"If-Range": "\x7f" * 100, "Range": "bytes=0-1"},
        {"If-Modified-Since": "x" * 10_000},
        {"Cache-Control": "max-stale=" + "9" * 5000 + ", min-fresh=abc"},
    ],
)
async def test_hostile_request_fields_never_make_a_500(harness: Harness, headers: dict[str, str]) -> None:
    harness.script.headers = [("Cache-Control", "max-age=60"), ("ETag", '"e"'), ("Last-Modified", harness.date())]
    await harness.get()
    answer = await harness.get(**headers)
    assert answer.status_code in (200, 206, 304, 416)
