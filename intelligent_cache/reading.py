"""The read path of a cached GET, as a sequence of named steps.

::

    read_through ─┬─ (no dependencies to run) look_up ── HIT? serve
                  └─ FastAPI's handler: body, dependencies, then the gate:
                        after_dependencies ── look_up (if not done) ── HIT? serve
                                          ── claim (single flight + lock) ── collapsed? serve
                                          ── the endpoint (stale-if-error on failure)
                     conclude ── storable? store ── MISS, or SKIP with the reason
                     release (hand the entry to waiters, free the lock)

Everything one request knows travels in one :class:`ReadContext`. The lookup
happens where every key input is known: before FastAPI's handler for routes
without dependencies to run, after the dependencies otherwise, so a vary value
set by a dependency (``request.state.user_id``) is always read after it is set.
"""

import enum
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from starlette.responses import Response

from . import httpmode
from ._types import Header
from .coalescing import Claim, claim, release
from .config import CacheConfig
from .entry import CachedResponse, VaryIndex, encode_vary_index
from .fastpath import LOOKUP_KEY, PLAIN, UNDECODED, EarlyLookup
from .fields import parse_http_date
from .freshness import Decision, decide
from .httpmode import CONDITIONAL_FIELDS, conditional, ranged
from .inputs import VaryPlan
from .keys import extend_key
from .outcome import Outcome, age_field, mark
from .policy import RequestDirectives, etag_matches, must_revalidate
from .refresh import REFRESH_FLAG, refresh_later
from .routestate import RouteState
from .scope import authenticated, manager_from_scope, origin_of
from .storing import Basis, Storable, storable

if TYPE_CHECKING:
    from .manager import CacheManager

__all__ = ["ACTIVE", "ANSWERED", "ReadContext", "after_dependencies", "read_through"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
RawHeaders = list[Header]

_SERVER_ERRORS = frozenset({500, 502, 503, 504})
# Headers a 304 repeats from the 200 it stands for (RFC 9110 section 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({b"etag", b"cache-control", b"expires", b"vary", b"content-location"})
# Vary values a key can hold: anything else would key by object identity (never shared, never hit).
_READABLE = (str, int, float, uuid.UUID, enum.Enum)

# The read in progress, for the gate FastAPI calls in place of the endpoint.
ACTIVE: ContextVar["ReadContext | None"] = ContextVar("intelligent_cache_read", default=None)
# Set in the scope of a request whose response the read path marked (X-Cache, Cache-Status).
ANSWERED = "intelligent_cache.answered"


class _StoredResponse(Response):
    """A response replayed from stored bytes, headers sent exactly as given."""

    def __init__(self, status: int, raw_headers: RawHeaders, body: bytes) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


@dataclass(slots=True, eq=False)
class ReadContext:
    """What one read knows, step by step."""

    request: Request
    manager: "CacheManager"
    config: CacheConfig
    plan: VaryPlan
    route: RouteState
    directives: RequestDirectives
    credentials: bool
    revalidate: bool
    origin: str
    key: str = ""
    entry_key: str = ""  # where the entry found lives: the key, or a variant of it
    looked_up: bool = False
    tags: tuple[str, ...] = ()
    counters: list[str] = field(default_factory=list)
    generations: list[int] | None = None  # None: the backend is down
    decision: Decision | None = None
    skip: str | None = None  # compute without the cache, for this reason
    unavailable: bool = False  # the backend failed before the lookup
    secret: bytes | None = None
    held: Claim | None = None
    computed: CachedResponse | None = None
    revalidating: CachedResponse | None = None  # HTTP mode: the stale entry the endpoint is asked to validate
    entered: bool = False
    stored_at: float = 0.0
    served: bool = False
    outcome: Outcome = Outcome.SKIP
    started: float = field(default_factory=time.perf_counter)
    lines: dict[str, list[str]] | None = None  # the request's header lines per name, once read
    session: str | None = None  # the session as the request brought it (SessionMiddleware), to see it written

    def header(self, name: str, separator: str = ", ") -> str | None:
        """Every line of a request header, joined as one field value; ``None`` if absent.

        A key joins them with ``separator="\n"``, which no line holds: one line
        ``a, b`` and two lines ``a`` and ``b`` are different requests to FastAPI.
        """
        lines = self.lines
        if lines is None:  # once per request: a wide Vary reads many names of many lines
            lines = self.lines = {}
            for key, value in self.request.scope["headers"]:
                lines.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
        values = lines.get(name.lower())
        return None if values is None else separator.join(values)

    def variant(self, names: tuple[str, ...]) -> str:
        """This request's key under a response that varies on ``names``."""
        return extend_key(
            self.key, [(name, self.header(name)) for name in names], secret=self.secret, sensitive=self.plan.sensitive
        )

    def matches(self, entry: CachedResponse) -> bool:
        return all(self.header(name) == value for name, value in entry.vary)

    def answer(
        self, response: Response, outcome: Outcome, *params: str, reason: str | None = None, shown: bool = True
    ) -> Response:
        self.served = True
        self.outcome = outcome
        self.request.scope[ANSWERED] = True
        stats = self.manager.stats
        return mark(response, outcome, *params, stats=stats, route=self.route.template, reason=reason, shown=shown)


# -- the steps ---------------------------------------------------------------------


async def read_through(route: RouteState, request: Request, handler: Handler) -> Response:
    """Answer a GET of a cached route: from the cache, or computed (and stored when it may be)."""
    settings = route.settings()
    assert settings is not None
    config, plan = settings
    scope = request.scope
    manager = manager_from_scope(scope)
    if manager is None or not manager.enabled:
        if manager is None:
            route.warn_once(
                "no-manager", "is cached but its app has no CacheManager: call CacheManager().init_app(app)"
            )
        stats = None if manager is None else manager.stats
        return mark(
            await handler(request), Outcome.SKIP, "fwd=bypass", stats=stats, route=route.template, reason="disabled"
        )
    early: EarlyLookup | None = scope.get(LOOKUP_KEY)
    if early is not None:  # the fast path saw no directive and no credential, and the origin
        directives, credentials, origin = PLAIN, False, early.origin
    else:
        directives = RequestDirectives.parse(scope["headers"])
        credentials = plan.credentialed(scope["headers"], lambda: request.cookies) or (
            not plan.identity and authenticated(scope)
        )
        origin = origin_of(scope)
    revalidate = (directives.revalidate and manager.honor_request_no_cache) or bool(scope.get(REFRESH_FLAG))
    ctx = ReadContext(
        request=request,
        manager=manager,
        config=config,
        plan=plan,
        route=route,
        directives=directives,
        credentials=credentials,
        revalidate=revalidate,
        origin=origin,
    )
    if "session" in scope:
        ctx.session = _session_state(scope["session"])
    token = ACTIVE.set(ctx)
    try:
        if directives.no_store:
            ctx.skip = "no-store"
        elif not plan.late:
            served = await look_up(ctx)
            if served is not None:
                return served
        response = await handler(request)
        return await conclude(ctx, response)
    finally:
        ACTIVE.reset(token)
        if ctx.held is not None:
            await release(manager, ctx.held, ctx.computed)
        manager.stats.observe(route.template, ctx.outcome.stat, time.perf_counter() - ctx.started)


async def after_dependencies(ctx: ReadContext, endpoint: Callable[[], Awaitable[Any]]) -> Any:
    """The gate: FastAPI solved the dependencies and would now call the endpoint."""
    ctx.entered = True
    if ctx.skip is None and not ctx.looked_up:
        served = await look_up(ctx)
        if served is not None:
            return served
    if ctx.skip is None:
        ctx.held = await claim(
            ctx.manager,
            ctx.key,
            ctx.generations,
            credentials=ctx.credentials,
            matches=ctx.matches,
            variant=ctx.variant,
        )
        shared = ctx.held.entry
        if shared is not None:
            ctx.manager.stats.collapsed += 1
            if ctx.generations is None:
                return serve(ctx, shared, Outcome.SKIP, "fwd=bypass", "collapsed", reason="backend-error")
            if shared.vary:  # stored under its variant of the key
                ctx.entry_key = ctx.variant(tuple(name for name, _ in shared.vary))
            return serve(ctx, shared, Outcome.HIT, "hit", "collapsed", f"ttl={int(shared.ttl)}")
    ctx.stored_at = ctx.manager.clock()
    try:
        return await endpoint()
    except HTTPException as exc:
        if exc.status_code not in _SERVER_ERRORS:
            raise
        fallback = on_error(ctx)
        if fallback is None:
            raise
        return fallback
    except Exception:
        fallback = on_error(ctx)
        if fallback is None:
            raise
        return fallback


async def look_up(ctx: ReadContext) -> Response | None:
    """Find the request's entry and decide; the response if the cache answers, else ``None`` (compute)."""
    ctx.looked_up = True
    manager, scope = ctx.manager, ctx.request.scope
    early: EarlyLookup | None = scope.pop(LOOKUP_KEY, None)
    if early is not None:  # the fast path keyed this request already (no vary source, known secret)
        ctx.key, ctx.tags, ctx.counters, ctx.secret = early.key, early.tags, early.counters, early.secret
    elif not await _build_key(ctx):
        return None
    if ctx.unavailable:
        return None
    found: Any = UNDECODED
    if early is not None and not ctx.revalidate:
        raw, generations, found = early.raw, early.generations, early.entry
    else:
        raw, generations = await manager.io.lookup(ctx.key, ctx.counters)
    ctx.generations = generations
    if generations is None:  # backend down: compute, coalesced in process, store nothing
        return None
    forward = "uri-miss"
    entry: CachedResponse | None = None
    if raw is not None:
        if found is UNDECODED:
            found = manager.io.decode(raw)
        ctx.entry_key = ctx.key
        if isinstance(found, VaryIndex):
            ctx.entry_key = ctx.variant(found.names)
            raw = await manager.io.read(ctx.entry_key)
            found = None if raw is None else manager.io.decode(raw)
            forward = "vary-miss"
        if isinstance(found, CachedResponse):
            if found.origin and found.origin != ctx.origin:
                # Computed for another Host: never served here, never overwritten from
                # here, so a forged Host header cannot poison what others receive.
                ctx.skip = "origin"
                return None
            entry = found
    decision = ctx.decision = decide(
        entry,
        generations,
        manager.clock(),
        ctx.directives,
        ctx.config,
        revalidate=ctx.revalidate,
        soft_purge=manager.soft_purge,
        credentials=ctx.credentials,
        forward=forward,
    )
    if decision.action == "hit":
        assert decision.entry is not None
        return serve(ctx, decision.entry, Outcome.HIT, "hit", f"ttl={decision.remaining}")
    if decision.action == "stale":
        assert decision.entry is not None
        refresh_later(ctx.request, manager, ctx.key)
        return serve(ctx, decision.entry, Outcome.STALE, "hit", "fwd=stale")
    if ctx.directives.only_if_cached:
        return ctx.answer(_gateway_timeout(), Outcome.SKIP, f"fwd={decision.forward}", reason="only-if-cached")
    if ctx.config.mode == "http" and decision.entry is not None and decision.entry.generations == tuple(generations):
        _ask_to_validate(ctx, decision.entry)
    return None


def _ask_to_validate(ctx: ReadContext, entry: CachedResponse) -> None:
    """HTTP mode: the endpoint gets the stored entry's validators instead of the client's preconditions."""
    validators = conditional(entry)
    if not validators:
        return
    ctx.revalidating = entry
    request = ctx.request
    kept = [(name, value) for name, value in request.scope["headers"] if name not in CONDITIONAL_FIELDS]
    request.scope["headers"] = [*kept, *validators]
    request.__dict__.pop("_headers", None)  # Starlette's cached view of the old list


def _session_state(session: Any) -> str:
    try:
        return json.dumps(session, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys json cannot sort, a cycle: compare what repr says
        return repr(session)


async def _build_key(ctx: ReadContext) -> bool:
    """Key, tags and counters of the request; ``False`` (with ``ctx.skip`` set) if it has none."""
    vary: list[tuple[str, str | None]] = []
    for source in ctx.plan.sources:
        if source.kind == "state":
            value = ctx.request.scope.get("state", {}).get(source.name)
            if value is None or not isinstance(value, _READABLE) or isinstance(value, bool):
                ctx.skip = "vary-missing" if value is None else "vary-unreadable"
                ctx.route.warn_once(
                    ctx.skip,
                    f"varies on request.state.{source.name}, which is "
                    + ("not set" if value is None else f"a {type(value).__name__}, not a str or a number")
                    + " when the endpoint runs: such requests are served uncached (set it in a dependency)",
                )
                return False
            vary.append((source.label, str(value.value if isinstance(value, enum.Enum) else value)))
        elif source.kind == "header":
            vary.append((source.label, ctx.header(source.name, "\n")))
        else:
            vary.append((source.label, ctx.request.cookies.get(source.name)))
    if ctx.manager.key_by_host:
        vary.append(("origin", ctx.origin))
    secret = await ctx.manager.io.secret()
    if secret is None:
        # The backend is down: the key only coalesces this process's requests
        # (nothing is read or stored), so a secret of this process will do.
        ctx.unavailable = True
        secret = ctx.manager.io.local_secret
    ctx.secret = secret
    scope = ctx.request.scope
    ctx.key = ctx.route.key(scope, tuple(vary), ctx.secret)
    ctx.tags, ctx.counters = ctx.route.counters(scope["path"], scope.get("path_params", {}))
    return True


def serve(
    ctx: ReadContext, entry: CachedResponse, outcome: Outcome, *params: str, reason: str | None = None
) -> Response:
    """Answer from an entry (HIT, STALE, collapsed): 304 when the client's validator matches."""
    if outcome is Outcome.HIT or outcome is Outcome.STALE:
        ctx.manager.stats.key_hit(ctx.entry_key or ctx.key)
    extra = [age_field(entry.age(ctx.manager.clock()))]
    directives = ctx.directives
    part = ranged(entry, directives.range, directives.if_range) if ctx.config.mode == "http" else None
    if validator_matches(directives, entry.headers):
        response: Response = _StoredResponse(304, _not_modified_headers(entry.headers) + extra, b"")
    elif part is not None:
        response = _StoredResponse(part[0], [*part[1], *extra], part[2])
    else:
        response = _StoredResponse(entry.status, [*entry.headers, *extra], entry.body)
    return ctx.answer(response, outcome, *params, reason=reason)


async def conclude(ctx: ReadContext, response: Response) -> Response:
    """The endpoint ran (or the cache answered inside the handler): store what may be stored, and say so."""
    if ctx.served:
        return response
    if ctx.skip is not None or not ctx.entered:
        return ctx.answer(response, Outcome.SKIP, "fwd=bypass", reason=ctx.skip or "streaming")
    if response.status_code in _SERVER_ERRORS:
        fallback = on_error(ctx)
        if fallback is not None:
            return fallback
    if ctx.revalidating is not None and response.status_code == 304:
        return await _validated(ctx, ctx.revalidating, response)
    forward = "bypass" if ctx.generations is None else (ctx.decision.forward if ctx.decision else "uri-miss")
    result = _storable(ctx, response)
    if isinstance(result, str):
        return ctx.answer(response, Outcome.SKIP, f"fwd={forward}", reason=result)
    ctx.computed = result.entry
    held = ctx.held
    if held is None or not held.store:
        reason = "lock-timeout" if held is None else held.reason
        return _answer_computed(ctx, response, Outcome.SKIP, f"fwd={forward}", reason=reason)
    if not await _store(ctx, result):
        ctx.computed = None
        return _answer_computed(ctx, response, Outcome.SKIP, f"fwd={forward}", reason="backend-error")
    if forward == "request":
        # The client asked not to be answered from the cache: it was not, though
        # its fresh response now refreshes the entry (RFC 9111 section 5.2.1.4).
        return _answer_computed(ctx, response, Outcome.SKIP, "fwd=request", "stored", reason="revalidate", shown=False)
    return _answer_computed(ctx, response, Outcome.MISS, f"fwd={forward}", "stored")


def _storable(ctx: ReadContext, response: Response) -> Storable | str:
    """The storing decision of the route's mode."""
    manager, scope = ctx.manager, ctx.request.scope
    if ctx.session is not None and _session_state(scope.get("session")) != ctx.session:
        # Written while serving (a CSRF token, a visit count): the session cookie it goes with is
        # added outside the cache, so a stored copy would hand this visitor's data to the next.
        return "session-written"
    basis = Basis(
        stored_at=ctx.stored_at,
        generations=tuple(ctx.generations or ()),
        path=scope["path"],
        route=ctx.route.template,
        tags=ctx.tags,
        origin=ctx.origin,
    )
    if ctx.config.mode == "http":
        return httpmode.storable(
            response,
            ctx.config,
            basis,
            max_size=manager.max_response_size,
            credentials=ctx.credentials,
            request_time=ctx.stored_at,
            response_time=manager.clock(),
            header=ctx.header,
        )
    return storable(
        response,
        ctx.config,
        basis,
        default_ttl=manager.default_ttl,
        max_size=manager.max_response_size,
        credentials=ctx.credentials,
        cache_control=manager.cache_control,
        per_caller=ctx.plan.per_caller,
        header=ctx.header,
    )


async def _validated(ctx: ReadContext, entry: CachedResponse, not_modified: Response) -> Response:
    """HTTP mode: the endpoint said the stored entry is still good (304): freshen it, store it, serve it."""
    renewed, keep_for = httpmode.freshened(
        entry, not_modified, ctx.config, request_time=ctx.stored_at, response_time=ctx.manager.clock()
    )
    ctx.computed = renewed
    held = ctx.held
    stored = held is not None and held.store
    if stored:
        key = ctx.variant(tuple(name for name, _ in entry.vary)) if entry.vary else ctx.key
        stored = await ctx.manager.io.store(key, renewed, keep_for, ctx.counters)
    params = ("fwd=stale", "fwd-status=304", "stored") if stored else ("fwd=stale", "fwd-status=304")
    return serve(ctx, renewed, Outcome.MISS, *params, reason="revalidated")


async def _store(ctx: ReadContext, result: Storable) -> bool:
    manager, key = ctx.manager, ctx.key
    if result.vary:
        if not await manager.io.store_raw(key, encode_vary_index(VaryIndex(result.vary)), result.keep_for):
            return False
        key = ctx.variant(result.vary)
    return await manager.io.store(key, result.entry, result.keep_for, ctx.counters)


def _answer_computed(
    ctx: ReadContext, response: Response, outcome: Outcome, *params: str, reason: str | None = None, shown: bool = True
) -> Response:
    """Send a computed response, or a 304 for it when the client's validator matches."""
    if validator_matches(ctx.directives, response.raw_headers):
        not_modified = _StoredResponse(304, _not_modified_headers(response.raw_headers), b"")
        not_modified.background = response.background
        response = not_modified
    return ctx.answer(response, outcome, *params, reason=reason, shown=shown)


def on_error(ctx: ReadContext) -> Response | None:
    """The endpoint failed: a stale-if-error answer, a 504 for must-revalidate, or ``None``."""
    decision = ctx.decision
    if decision is None or decision.entry is None:
        return None
    if decision.fallback and not ctx.directives.revalidate:
        return serve(ctx, decision.entry, Outcome.STALE, "hit", "fwd=stale", "detail=error")
    if must_revalidate(decision.entry.headers):
        return ctx.answer(_gateway_timeout(), Outcome.SKIP, "fwd=stale", reason="must-revalidate")
    return None


# -- small helpers -------------------------------------------------------------------


def validator_matches(directives: RequestDirectives, headers: Any) -> bool:
    """Whether the client's precondition says it has this response (RFC 9110 sections 13.1.2, 13.1.3)."""
    if directives.if_none_match is not None:
        for name, value in headers:
            if name == b"etag":
                return bool(etag_matches(directives.if_none_match, value))
        return False
    if directives.if_modified_since is not None:
        for name, value in headers:
            if name == b"last-modified":
                modified = parse_http_date(value.decode("latin-1"))
                return modified is not None and modified <= directives.if_modified_since
    return False


def _gateway_timeout() -> Response:
    """The empty 504 of a request the cache must answer but cannot (only-if-cached, must-revalidate)."""
    return _StoredResponse(504, [(b"content-length", b"0")], b"")


def _not_modified_headers(headers: Any) -> RawHeaders:
    """The fields a 304 repeats from the 200 it stands for."""
    return [(name, value) for name, value in headers if name in _NOT_MODIFIED_HEADERS]
