"""Invalidation through real FastAPI apps, on every backend (memory, Redis, Redis Cluster).

- The hierarchy rule table of README.rst ("Invalidation") is parsed out of the
  README and checked row by row, so the README and the behaviour cannot diverge
  silently; GETs the table does not name are checked against the rule stated
  in prose just above it.
- Tags, ``@invalidates(paths=..., hierarchy=False)``, the manual API,
  ``invalidation_exclude_paths``, failed writes, failing invalidations, pattern
  clears and evicted counters.
- The "no stale set" race: a GET whose computation started before a write
  completes after it; no GET that starts after the write may see pre-write data.
"""

import asyncio
import contextlib
import fnmatch
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from intelligent_cache import BackendError, CacheBackend, CachedRoute, CacheManager, ConfigurationError, cache_config
from intelligent_cache.backends.memory import MemoryBackend
from intelligent_cache.config import invalidates
from intelligent_cache.invalidation import invalidation_keys
from intelligent_cache.keys import build_key
from intelligent_cache.testing import FakeClock, cache_state
from tests.conftest import BACKEND_KINDS, PATIENT, make_backend

README = Path(__file__).resolve().parent.parent / "README.rst"

# -- the README rule table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """One item of a table cell: a literal path (``/a``, ``/a?...``, ``/a?q=1``), a subtree, or "the rest"."""

    kind: str  # "literal", "under" or "else"
    text: str = ""


@dataclass(frozen=True)
class TableRow:
    method: str
    path: str
    invalidated: tuple[Selector, ...]
    still_cached: tuple[Selector, ...]

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


_CELL_TOKEN = re.compile(
    r"\s*(?:everything under ``(?P<under>[^`]+)``|(?P<else>everything else)|``(?P<lit>[^`]+)``(?: only)?)\s*,?"
)


def _parse_cell(text: str) -> tuple[Selector, ...]:
    items: list[Selector] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _CELL_TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"README table: cannot read {text[position:]!r} in cell {text!r}")
        if match.group("under"):
            items.append(Selector("under", match.group("under")))
        elif match.group("else"):
            items.append(Selector("else"))
        else:
            items.append(Selector("literal", match.group("lit")))
        position = match.end()
    if not items:
        raise ValueError(f"README table: empty cell {text!r}")
    return tuple(items)


def readme_rule_table() -> list[TableRow]:
    """The Write / Invalidated / Still cached table of the README's Invalidation section."""
    text = README.read_text()
    section = text.split("\nInvalidation\n============\n", 1)[1]
    lines = section.splitlines()
    borders = [index for index, line in enumerate(lines) if re.fullmatch(r"=+(?: +=+)+", line)]
    top, below_header, bottom = borders[:3]
    starts = [match.start() for match in re.finditer(r"=+", lines[top])]
    header = [lines[top + 1][start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
    if header != ["Write", "Invalidated", "Still cached"]:
        raise ValueError(f"README table: unexpected header {header}")
    cells: list[list[str]] = []
    for line in lines[below_header + 1 : bottom]:
        parts = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        if parts[0]:
            cells.append(parts)
        else:
            if not cells:
                raise ValueError("README table: continuation line before the first row")
            for column, part in enumerate(parts):
                cells[-1][column] = f"{cells[-1][column]} {part}".strip()
    rows = []
    for write, invalidated, still in cells:
        match = re.fullmatch(r"``(GET|POST|PUT|PATCH|DELETE) (/[^`]*)``", write)
        if match is None:
            raise ValueError(f"README table: cannot read write {write!r}")
        rows.append(TableRow(match.group(1), match.group(2), _parse_cell(invalidated), _parse_cell(still)))
    return rows


RULE_TABLE = readme_rule_table()


def _split(get: str) -> tuple[str, str | None]:
    path, sep, query = get.partition("?")
    return path, (query if sep else None)


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def expand(
    selectors: tuple[Selector, ...], universe: list[str], others: frozenset[str] | set[str] = frozenset()
) -> set[str]:
    """The GETs of ``universe`` a cell names.

    ``/a`` and ``/a?...`` name the path with any query string (the rule says
    "with any query string"); ``/a?q=1`` names that one request; ``everything
    under /a/`` names the paths below; ``everything else`` names what the other
    column does not.
    """
    chosen: set[str] = set()
    for selector in selectors:
        if selector.kind == "else":
            chosen |= set(universe) - others
        elif selector.kind == "under":
            chosen |= {get for get in universe if _split(get)[0].startswith(selector.text)}
        else:
            path, query = _split(selector.text)
            if query is None or query == "...":
                chosen |= {get for get in universe if _split(get)[0] == path}
            else:
                chosen |= {get for get in universe if get == selector.text}
    return chosen


def rule_invalidates(write_path: str, get: str) -> bool:
    """The prose rule of the README: P itself and everything under P (any query
    string), plus each ancestor of P below the root; a write to ``/`` only ``/``."""
    written, read = _segments(write_path), _segments(_split(get)[0])
    if not written:
        return not read
    if read[: len(written)] == written:
        return True
    return 0 < len(read) < len(written) and written[: len(read)] == read


# -- the app ------------------------------------------------------------------------------------------------------

SPACE_GETS = [
    "/",
    "/?page=2",
    "/spaces",
    "/spaces?page=2",
    "/spaces/1",
    "/spaces/2",
    "/spaces/1/items",
    "/spaces/1/items?page=3",
    "/spaces/1/items/2",
    "/spaces/1/items/2?page=1",
    "/spaces/1/items/3",
    "/spaces/1/items/7",
    "/spaces/1/members",
    "/spaces/2/items",
    "/spaces/2/items?page=3",
    "/spaces/2/items/2",
    "/spaces/2/members",
]
OTHER_GETS = [
    "/users",
    "/users/1",
    "/users/2",
    "/users/1/feed",
    "/users/1/profile",
    "/users/2/feed",
    "/users/2/profile",
    "/posts",
    "/posts/1",
    "/timeline",
    "/timeline/recent",
    "/webhooks",
    "/webhooks/x",
    "/webhooks-log",
]


def _table_literals() -> list[str]:
    found = []
    for row in RULE_TABLE:
        for selector in (*row.invalidated, *row.still_cached):
            if selector.kind == "literal" and not selector.text.endswith("?..."):
                found.append(selector.text)
    return found


# Every GET the README table names is requested for real (a path the app does not serve fails the warm-up).
UNIVERSE = list(dict.fromkeys([*SPACE_GETS, *_table_literals(), *OTHER_GETS]))
FEEDS = {"/users/1/feed", "/users/1/profile", "/users/2/feed", "/users/2/profile"}


@dataclass
class AppState:
    version: int = 0
    writes: list[str] = field(default_factory=list)


def build_app(manager: CacheManager, state: AppState) -> FastAPI:
    """Cached GETs return the data version; every successful write bumps it."""
    app = FastAPI()
    manager.init_app(app)

    def read(request: Request) -> dict[str, Any]:
        return {"url": str(request.url.path), "version": state.version}

    async def write(request: Request, fail: str | None) -> Response:
        state.writes.append(f"{request.method} {request.url.path}")
        if fail == "409":
            return JSONResponse({"error": "conflict"}, status_code=409)
        if fail == "404-raised":
            raise HTTPException(status_code=404)
        if fail == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if fail == "503-raised":
            raise HTTPException(status_code=503)
        if fail == "crash":
            raise RuntimeError("the write crashed")
        state.version += 1
        return JSONResponse({"version": state.version})

    @app.get("/")
    @cache_config(ttl_seconds=600)
    async def root(request: Request, page: int | None = None):
        return read(request)

    @app.get("/spaces")
    @cache_config(ttl_seconds=600)
    async def spaces(request: Request, page: int | None = None):
        return read(request)

    @app.get("/spaces/{space_id}")
    @cache_config(ttl_seconds=600)
    async def space(request: Request, space_id: int, page: int | None = None):
        return read(request)

    @app.get("/spaces/{space_id}/items")
    @cache_config(ttl_seconds=600)
    async def items(request: Request, space_id: int, page: int | None = None):
        return read(request)

    @app.get("/spaces/{space_id}/items/{item_id}")
    @cache_config(ttl_seconds=600)
    async def item(request: Request, space_id: int, item_id: int, page: int | None = None):
        return read(request)

    @app.get("/spaces/{space_id}/members")
    @cache_config(ttl_seconds=600)
    async def members(request: Request, space_id: int, page: int | None = None):
        return read(request)

    @app.post("/spaces/{space_id}/items")
    async def add_item(request: Request, space_id: int, fail: str | None = None):
        return await write(request, fail)

    @app.patch("/spaces/{space_id}/items/{item_id}")
    async def edit_item(request: Request, space_id: int, item_id: int, fail: str | None = None):
        return await write(request, fail)

    @app.delete("/spaces/{space_id}")
    async def delete_space(request: Request, space_id: int, fail: str | None = None):
        return await write(request, fail)

    @app.post("/")
    async def post_root(request: Request, fail: str | None = None):
        return await write(request, fail)

    # -- tags and @invalidates ----------------------------------------------------------------

    @app.get("/users")
    @cache_config(ttl_seconds=600)
    async def users(request: Request):
        return read(request)

    @app.get("/users/{user_id}")
    @cache_config(ttl_seconds=600)
    async def user(request: Request, user_id: int):
        return read(request)

    @app.get("/users/{user_id}/feed")
    @cache_config(ttl_seconds=600, tags=["user:{user_id}", "feed"])
    async def feed(request: Request, user_id: int):
        return read(request)

    @app.get("/users/{user_id}/profile")
    @cache_config(ttl_seconds=600, tags=["user:{user_id}", "feed"])
    async def profile(request: Request, user_id: int):
        return read(request)

    @app.put("/users/{user_id}/settings")
    @invalidates("user:{user_id}")
    async def settings(request: Request, user_id: int):
        return await write(request, None)

    @app.get("/posts")
    @cache_config(ttl_seconds=600)
    async def posts(request: Request):
        return read(request)

    @app.get("/posts/{post_id}")
    @cache_config(ttl_seconds=600)
    async def post(request: Request, post_id: int):
        return read(request)

    @app.post("/posts/{post_id}/publish")
    @invalidates("feed", hierarchy=False)
    async def publish(request: Request, post_id: int):
        return await write(request, None)

    @app.post("/users/{user_id}/posts")
    @invalidates(paths=["/timeline"])
    async def add_post(request: Request, user_id: int):
        return await write(request, None)

    @app.get("/timeline")
    @cache_config(ttl_seconds=600)
    async def timeline(request: Request):
        return read(request)

    @app.get("/timeline/recent")
    @cache_config(ttl_seconds=600)
    async def recent(request: Request):
        return read(request)

    # -- excluded prefix ----------------------------------------------------------------------

    @app.get("/webhooks")
    @cache_config(ttl_seconds=600)
    async def webhooks(request: Request):
        return read(request)

    @app.get("/webhooks/{name}")
    @cache_config(ttl_seconds=600)
    async def webhook(request: Request, name: str):
        return read(request)

    @app.post("/webhooks/{name}")
    async def receive_webhook(request: Request, name: str):
        response = await write(request, None)
        # Even a same-origin Location does not make an excluded write invalidate.
        response.headers["location"] = "/spaces/1"
        return response

    @app.get("/webhooks-log")
    @cache_config(ttl_seconds=600)
    async def webhooks_log(request: Request):
        return read(request)

    @app.post("/webhooks-log")
    async def append_webhooks_log(request: Request):
        return await write(request, None)

    return app


def client_for(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def warm(client: httpx.AsyncClient, gets: list[str]) -> None:
    """Each GET is computed once (MISS), then served from the cache (HIT)."""
    for get in gets:
        first = await client.get(get)
        assert first.status_code == 200, (get, first.status_code)
        assert cache_state(first) == "MISS", (get, cache_state(first))
        second = await client.get(get)
        assert cache_state(second) == "HIT", (get, cache_state(second))
        assert second.json() == first.json()


async def observe(client: httpx.AsyncClient, gets: list[str], version: int) -> dict[str, str]:
    """``{get: X-Cache}``; a MISS must have recomputed the current data."""
    states: dict[str, str] = {}
    for get in gets:
        response = await client.get(get)
        assert response.status_code == 200, (get, response.status_code)
        states[get] = cache_state(response) or "?"
        if states[get] == "MISS":
            assert response.json()["version"] == version, get
    return states


def expected(missed: set[str], gets: list[str] = UNIVERSE) -> dict[str, str]:
    return {get: "MISS" if get in missed else "HIT" for get in gets}


@contextlib.asynccontextmanager
async def running(
    backend: CacheBackend, clock: FakeClock, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, CacheManager, AppState]]:
    manager = CacheManager(backend, clock=clock, **options)
    state = AppState()
    app = build_app(manager, state)
    async with client_for(app, raise_app_exceptions=False) as client:
        yield client, manager, state


# -- the README table ---------------------------------------------------------------------------------------------


def test_readme_table_is_parsed_and_consistent_with_its_rule() -> None:
    """The table has the rows the brief names, and each named GET agrees with the prose rule."""
    assert [row.label for row in RULE_TABLE] == [
        "POST /spaces/1/items",
        "PATCH /spaces/1/items/2",
        "DELETE /spaces/1",
        "POST /",
    ]
    for row in RULE_TABLE:
        invalidated = expand(row.invalidated, UNIVERSE)
        still = expand(row.still_cached, UNIVERSE, invalidated)
        assert invalidated, row.label
        assert still, row.label
        assert not invalidated & still, row.label
        assert all(rule_invalidates(row.path, get) for get in invalidated), row.label
        assert not any(rule_invalidates(row.path, get) for get in still), row.label


@pytest.mark.parametrize("row", RULE_TABLE, ids=[row.label for row in RULE_TABLE])
@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_readme_table_row(backend: CacheBackend, clock: FakeClock, row: TableRow) -> None:
    async with running(backend, clock) as (client, _, state):
        await warm(client, UNIVERSE)
        response = await client.request(row.method, row.path)
        assert response.status_code == 200, response.text
        after = await observe(client, UNIVERSE, state.version)
    invalidated = expand(row.invalidated, UNIVERSE)
    still = expand(row.still_cached, UNIVERSE, invalidated)
    # What the README table says, cell by cell...
    assert {get: after[get] for get in sorted(invalidated)} == dict.fromkeys(sorted(invalidated), "MISS")
    assert {get: after[get] for get in sorted(still)} == dict.fromkeys(sorted(still), "HIT")
    # ...and, for every GET of the app, what the rule above the table says.
    assert after == expected({get for get in UNIVERSE if rule_invalidates(row.path, get)})


# -- tags, @invalidates, the manual API, excluded paths ------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_write_invalidating_a_tag_with_a_path_parameter(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, _, state):
        await warm(client, UNIVERSE)
        assert (await client.put("/users/1/settings")).status_code == 200
        after = await observe(client, UNIVERSE, state.version)
    # The tag user:1 (feed and profile of user 1) plus the write's own hierarchy (/users/1, /users).
    assert after == expected({"/users/1/feed", "/users/1/profile", "/users/1", "/users"})


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_tag_write_without_hierarchy_leaves_its_own_path_cached(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, _, state):
        await warm(client, UNIVERSE)
        assert (await client.post("/posts/1/publish")).status_code == 200
        after = await observe(client, UNIVERSE, state.version)
    # With the hierarchy, /posts/1 and /posts (ancestors of /posts/1/publish) would be MISS.
    assert after == expected(FEEDS)


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_write_invalidating_extra_paths(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, _, state):
        await warm(client, UNIVERSE)
        assert (await client.post("/users/2/posts")).status_code == 200
        after = await observe(client, UNIVERSE, state.version)
    # /timeline and its subtree, plus the write's own hierarchy: /users/2 and /users.
    assert after == expected({"/timeline", "/timeline/recent", "/users/2", "/users"})


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_manual_invalidate_tags_outside_requests(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, manager, state):
        await warm(client, UNIVERSE)
        await manager.service().invalidate_tags("feed")
        assert await observe(client, UNIVERSE, state.version) == expected(FEEDS)
        await manager.service().invalidate_tags("user:2", "no-such-tag")
        assert await observe(client, UNIVERSE, state.version) == expected({"/users/2/feed", "/users/2/profile"})


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_manual_invalidate_path_outside_requests(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, manager, state):
        await warm(client, UNIVERSE)
        await manager.service().invalidate_path("/spaces/1")
        after = await observe(client, UNIVERSE, state.version)
    # Exactly what DELETE /spaces/1 does (the README row), without a request.
    assert after == expected({get for get in UNIVERSE if rule_invalidates("/spaces/1", get)})
    assert state.writes == []


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_writes_under_an_excluded_prefix_invalidate_nothing(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock, invalidation_exclude_paths=["/webhooks"]) as (client, manager, state):
        await warm(client, UNIVERSE)
        response = await client.post("/webhooks/x")
        assert response.status_code == 200
        assert response.headers["location"] == "/spaces/1"
        assert await observe(client, UNIVERSE, state.version) == expected(set())
        assert manager.stats.invalidations == 0
        # A prefix is matched by whole segments: /webhooks-log is not under /webhooks.
        assert (await client.post("/webhooks-log")).status_code == 200
        assert await observe(client, UNIVERSE, state.version) == expected({"/webhooks-log"})


def _set_up_app(declare: Callable[[APIRouter], None], *, via_router: bool) -> FastAPI:
    app = FastAPI()
    CacheManager().init_app(app)
    if via_router:
        router = APIRouter(route_class=CachedRoute)
        declare(router)
        app.include_router(router, prefix="/api")
    else:
        declare(app.router)
    return app


@pytest.mark.parametrize("via_router", [False, True], ids=["app", "included-router"])
def test_cache_tag_naming_a_non_path_parameter_is_rejected_at_set_up(via_router: bool) -> None:
    def declare(router: APIRouter) -> None:
        @router.get("/users/{user_id}/feed")
        @cache_config(tags=["user:{uid}"])
        async def feed(user_id: int, uid: int = 0):
            return {}

    with pytest.raises(ConfigurationError, match="uid"):
        _set_up_app(declare, via_router=via_router)


@pytest.mark.parametrize("via_router", [False, True], ids=["app", "included-router"])
def test_invalidated_tag_naming_no_parameter_of_the_write_is_rejected_at_set_up(via_router: bool) -> None:
    """``@invalidates("user:{uid}")`` where the write has no uid (path or query): the tag would
    be filled with "" at every write and invalidate ``user:`` instead of the user's entries."""

    def declare(router: APIRouter) -> None:
        @router.put("/users/{user_id}/settings")
        @invalidates("user:{uid}")
        async def settings(user_id: int, body: dict[str, int] | None = None):
            return {}

    with pytest.raises(ConfigurationError, match="uid"):
        _set_up_app(declare, via_router=via_router)


@pytest.mark.parametrize("via_router", [False, True], ids=["app", "included-router"])
def test_invalidated_path_naming_no_parameter_of_the_write_is_rejected_at_set_up(via_router: bool) -> None:
    """``paths=["/users/{uid}/feed"]`` where the write has no uid would invalidate ``/users//feed``."""

    def declare(router: APIRouter) -> None:
        @router.post("/posts")
        @invalidates(paths=["/users/{uid}/feed"])
        async def create_post(user: int = 0):
            return {}

    with pytest.raises(ConfigurationError, match="uid"):
        _set_up_app(declare, via_router=via_router)


FAILED_WRITES = [
    pytest.param("POST", "/spaces/1/items?fail=409", 409, id="409-returned"),
    pytest.param("PATCH", "/spaces/1/items/2?fail=404-raised", 404, id="404-raised"),
    pytest.param("DELETE", "/spaces/not-a-number", 422, id="422-validation"),
    pytest.param("POST", "/spaces/1/items?fail=500", 500, id="500-returned"),
    pytest.param("DELETE", "/spaces/1?fail=503-raised", 503, id="503-raised"),
    pytest.param("POST", "/?fail=crash", 500, id="exception"),
]


@pytest.mark.parametrize(("method", "url", "status"), FAILED_WRITES)
@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_failed_writes_invalidate_nothing(
    backend: CacheBackend, clock: FakeClock, method: str, url: str, status: int
) -> None:
    async with running(backend, clock) as (client, manager, state):
        await warm(client, UNIVERSE)
        response = await client.request(method, url)
        assert response.status_code == status
        assert await observe(client, UNIVERSE, state.version) == expected(set())
        assert manager.stats.invalidations == 0
        if status != 422:
            assert state.writes, "the write endpoint did run"


WRITES_THAT_FAILED = [("POST", "/spaces/1/items"), ("PUT", "/users/1/settings"), ("POST", "/posts/1/publish")]


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_failing_invalidation_never_fails_the_write_and_is_counted(
    backend: CacheBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_bump(generation_keys: Any) -> None:
        raise ConnectionError("counters unreachable")

    async with running(backend, clock) as (client, manager, state):
        await warm(client, UNIVERSE)
        monkeypatch.setattr(backend, "bump", broken_bump)
        for method, url in WRITES_THAT_FAILED:
            response = await client.request(method, url)
            assert response.status_code == 200
            assert response.json() == {"version": state.version}
        assert manager.stats.invalidation_errors == 3
        assert manager.stats.invalidations == 0
        # The manual API raises instead (documented): the caller asked for exactly this.
        with pytest.raises(BackendError):
            await manager.service().invalidate_path("/spaces/1")
        monkeypatch.undo()
        assert (await client.post("/spaces/1/items")).status_code == 200
        # The failed invalidations were kept and land before the next lookup: nothing they covered survives.
        assert manager.stats.invalidations == 1
        after = await observe(client, UNIVERSE, state.version)
    # The reference: the same writes on a backend that never failed.
    async with running(MemoryBackend(clock=clock), clock) as (reference, _, reference_state):
        await warm(reference, UNIVERSE)
        for method, url in [*WRITES_THAT_FAILED, ("POST", "/spaces/1/items")]:
            assert (await reference.request(method, url)).status_code == 200
        wanted = await observe(reference, UNIVERSE, reference_state.version)
    assert after == wanted
    assert "MISS" in after.values() and "HIT" in after.values()


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_clear_pattern_agrees_with_the_key_format(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, manager, state):
        await warm(client, UNIVERSE)
        keys = {get: build_key("GET", *_split(get)) for get in UNIVERSE}
        matching = {get for get, key in keys.items() if fnmatch.fnmatchcase(key, "GET:spaces:*")}
        # The key format: "/spaces" alone is GET:spaces (no trailing part), so the pattern misses it.
        assert keys["/spaces"] == "GET:spaces"
        assert keys["/spaces?page=2"] == "GET:spaces:page=2"
        assert matching == {get for get in SPACE_GETS if get.startswith("/spaces") and get != "/spaces"}
        deleted = await manager.service().clear_pattern("GET:spaces:*")
        assert deleted == len(matching)
        assert await observe(client, UNIVERSE, state.version) == expected(matching)
        listed = await manager.service().list_keys("GET:spaces:*")
        assert sorted(listed) == sorted(keys[get] for get in matching)


# -- evicted counters -----------------------------------------------------------------------------------------------


async def evict_counters(backend: CacheBackend, names: list[str] | None = None) -> None:
    """Lose generation counters (all of them, or ``names``), as an LRU or Redis eviction would."""
    if isinstance(backend, MemoryBackend):
        if names is None:
            backend._generations.clear()
        else:
            for name in names:
                backend._generations.pop(name, None)
    elif names is None:
        await backend.clear("~g:*")
    else:
        for name in names:
            await backend.clear(name)


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_entries_whose_counters_were_evicted_read_as_miss(backend: CacheBackend, clock: FakeClock) -> None:
    async with running(backend, clock) as (client, _, state):
        await warm(client, UNIVERSE)
        await evict_counters(backend)
        assert await observe(client, UNIVERSE, state.version) == expected(set(UNIVERSE))


@pytest.mark.parametrize("kind", BACKEND_KINDS)
async def test_a_write_after_its_counters_were_evicted_still_invalidates(
    kind: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    """A write must invalidate what it touches even when its counters were evicted.

    Per README row, on a fresh namespace: write W (its counters are created by
    the write), cache every GET, lose W's counters (an LRU or Redis eviction,
    or their expiry), write W again, read. The second write re-creates the
    counters; if it re-creates them with the values the first write gave, the
    entries cached in between read as fresh.
    """
    stale: dict[str, list[str]] = {}
    for row in RULE_TABLE:
        backend = await make_backend(kind, request, clock)
        try:
            async with running(backend, clock) as (client, _, state):
                assert (await client.request(row.method, row.path)).status_code == 200
                await warm(client, UNIVERSE)
                await evict_counters(backend, invalidation_keys(row.path))
                assert (await client.request(row.method, row.path)).status_code == 200
                after = await observe(client, UNIVERSE, state.version)
        finally:
            await backend.aclose()
        wanted = {get for get in UNIVERSE if rule_invalidates(row.path, get)}
        stale[row.label] = [get for get in UNIVERSE if get in wanted and after[get] != "MISS"]
    assert stale == {row.label: [] for row in RULE_TABLE}, "pre-write entries served as HIT after the write"


# -- the race: no stale set ----------------------------------------------------------------------------------------


class Gate:
    """Holds the next computation of the slow GET inside its endpoint."""

    def __init__(self) -> None:
        self.armed = False
        self.read_first = False
        self.before = 0
        self.after = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self, rng: random.Random) -> None:
        self.armed = True
        self.read_first = rng.random() < 0.6
        self.before = rng.randrange(4)
        self.after = rng.randrange(4)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


def race_app(manager: CacheManager, data: dict[str, int], gate: Gate, rng: random.Random) -> FastAPI:
    app = FastAPI()
    manager.init_app(app)

    @app.get("/items")
    @cache_config(ttl_seconds=600)
    async def list_items(n: int = 0):
        if not gate.armed:
            return {"version": data["version"], "n": n}
        gate.armed = False
        for _ in range(gate.before):
            await asyncio.sleep(0)
        # Read before or after the wait: before makes the stored body pre-write data.
        snapshot = data["version"] if gate.read_first else None
        gate.entered.set()
        await gate.release.wait()
        if snapshot is None:
            snapshot = data["version"]
        for _ in range(gate.after):
            await asyncio.sleep(0)
        return {"version": snapshot, "n": n}

    @app.post("/items")
    async def add_item():
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        data["version"] += 1
        return {"version": data["version"]}

    return app


async def _sleep0(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def race(
    reader: httpx.AsyncClient,
    writer: httpx.AsyncClient,
    others: list[httpx.AsyncClient],
    data: dict[str, int],
    gate: Gate,
    *,
    iterations: int,
    seed: int,
) -> tuple[int, int, int, list[str]]:
    """Run the race ``iterations`` times.

    Returns (stale reads, reads checked, races, the first stale reads described),
    where races counts the iterations whose slow GET stored pre-write data after
    the write had completed: the case a cache without snapshots gets wrong.

    Each iteration: the slow GET of a new key starts (on ``reader``); usually we
    wait until its endpoint runs; the write (on ``writer``) changes the data and
    completes; the slow GET is released, finishes and stores. Then every client
    reads the key, and the previous iteration's key: all must see post-write data.
    Random ``sleep(0)`` counts shift the interleavings, and the endpoint reads the
    data before or after its wait.
    """
    rng = random.Random(seed)
    stale = 0
    checked = 0
    races = 0
    examples: list[str] = []
    for i in range(iterations):
        gate.arm(rng)
        slow = asyncio.create_task(reader.get(f"/items?n={i}"))
        if rng.random() < 0.8:
            entered = asyncio.create_task(gate.entered.wait())
            await asyncio.wait([slow, entered], return_when=asyncio.FIRST_COMPLETED)
            entered.cancel()
        await _sleep0(rng.randrange(6))
        write = asyncio.create_task(writer.post("/items"))
        if rng.random() < 0.1:  # sometimes the slow GET is released while the write runs
            await _sleep0(rng.randrange(3))
            gate.release.set()
        assert (await write).status_code == 200
        written = data["version"]
        await _sleep0(rng.randrange(3))
        gate.release.set()
        first = await slow
        assert first.status_code == 200
        gate.armed = False
        if cache_state(first) == "MISS" and first.json()["version"] != written:
            races += 1
        for client in [reader, *others]:
            for n in (i, i - 1, i):
                response = await client.get(f"/items?n={n}")
                checked += 1
                if response.json()["version"] != written:
                    stale += 1
                    if len(examples) < 5:
                        examples.append(
                            f"iteration {i}: /items?n={n} {cache_state(response)} version "
                            f"{response.json()['version']} after write {written} (slow GET: {cache_state(first)})"
                        )
    return stale, checked, races, examples


RACE_ITERATIONS = {"memory": 2000, "redis": 300, "cluster": 300}
# 2000 iterations take about 6 s on the memory backend; the Redis ones about 2 s.
RACE_BACKENDS = [
    pytest.param("memory", id="memory", marks=pytest.mark.slow),
    *(param for param in BACKEND_KINDS if param.values[0] != "memory"),
]


def _kind(backend: CacheBackend) -> str:
    return {"memory": "memory", "redis": "redis", "redis-cluster": "cluster"}[backend.name]


@pytest.mark.parametrize("backend", RACE_BACKENDS, indirect=True)
async def test_no_stale_set_one_instance(backend: CacheBackend, clock: FakeClock) -> None:
    data = {"version": 0}
    gate = Gate()
    rng = random.Random(11)
    app = race_app(CacheManager(backend, clock=clock), data, gate, rng)
    async with client_for(app) as client:
        iterations = RACE_ITERATIONS[_kind(backend)]
        stale, checked, races, examples = await race(client, client, [], data, gate, iterations=iterations, seed=5)
    assert races > iterations // 4, "the interleavings did not exercise the race"
    assert checked == 3 * iterations
    assert stale == 0, examples


async def twin_backend(kind: str, request: pytest.FixtureRequest, backend: CacheBackend) -> CacheBackend:
    """A second client of the same Redis deployment and namespace (another app instance)."""
    from intelligent_cache.backends.redis import RedisBackend, RedisClusterBackend

    if kind == "redis":
        return RedisBackend(request.getfixturevalue("redis_server").url, key_prefix=backend.key_prefix, **PATIENT)  # type: ignore[attr-defined]
    cluster = request.getfixturevalue("redis_cluster")
    return RedisClusterBackend(startup_nodes=cluster.startup_nodes, key_prefix=backend.key_prefix, **PATIENT)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", [param for param in BACKEND_KINDS if param.values[0] != "memory"])
async def test_no_stale_set_two_instances(kind: str, request: pytest.FixtureRequest, clock: FakeClock) -> None:
    """The slow GET runs on instance A, the write goes through instance B; both share one Redis namespace."""
    data = {"version": 0}
    gate = Gate()
    rng = random.Random(13)
    backend_a = await make_backend(kind, request, clock)
    backend_b = await twin_backend(kind, request, backend_a)
    try:
        app_a = race_app(CacheManager(backend_a, clock=clock), data, gate, rng)
        app_b = race_app(CacheManager(backend_b, clock=clock), data, gate, rng)
        async with client_for(app_a) as a, client_for(app_b) as b:
            iterations = RACE_ITERATIONS[kind]
            stale, checked, races, examples = await race(a, b, [b], data, gate, iterations=iterations, seed=9)
    finally:
        await backend_a.aclose()
        await backend_b.aclose()
    assert races > iterations // 4, "the interleavings did not exercise the race"
    assert checked == 6 * iterations
    assert stale == 0, examples


@pytest.mark.parametrize("backend", BACKEND_KINDS, indirect=True)
async def test_a_read_after_a_write_does_not_wait_for_a_computation_that_started_before_it(
    backend: CacheBackend, clock: FakeClock
) -> None:
    """A GET that starts after a write cannot use what a pre-write computation of the same
    key will store (its counters are older), so it must compute and store for itself,
    not wait for that computation's lock and then answer uncached (``detail=lock-timeout``)."""
    data = {"version": 0}
    gate = Gate()
    manager = CacheManager(backend, clock=clock, lock_timeout=1.0)
    app = race_app(manager, data, gate, random.Random(1))
    attempts: list[str | None] = []
    second_attempt = asyncio.Event()
    acquire = manager.io.acquire_lock

    async def spying_acquire(name: str) -> str | None:
        token = await acquire(name)
        attempts.append(token)
        if len(attempts) == 2:
            second_attempt.set()
        return token

    manager.io.acquire_lock = spying_acquire  # type: ignore[method-assign]
    async with client_for(app) as client:
        gate.arm(random.Random(2))
        gate.read_first = True
        slow = asyncio.create_task(client.get("/items"))
        await gate.entered.wait()
        assert (await client.post("/items")).status_code == 200
        fresh = asyncio.create_task(client.get("/items"))
        await second_attempt.wait()  # the post-write GET has asked for the computation lock
        gate.release.set()
        before = await slow
        after = await fresh
        again = await client.get("/items")
    assert before.json()["version"] == 0
    assert after.json()["version"] == 1
    assert cache_state(after) == "MISS", after.headers["cache-status"]
    # (The pre-write computation may store last and overwrite the post-write entry:
    # that costs a MISS, never a stale read.)
    assert again.json()["version"] == 1
