"""Admin API: browse, delete, clear, invalidate, stats and health.

``admin_router(manager)`` builds a plain ``APIRouter`` (never cached, never
invalidating). It refuses to build without an auth dependency unless the
manager explicitly allows unauthenticated access.
"""

# No "from __future__ import annotations" here: FastAPI introspects these signatures.

import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.convertors import PathConvertor, register_url_convertor

from ..backends.base import CacheBackend
from ..backends.failopen import describe_error
from ..backends.memory import MemoryBackend
from ..config import invalidates
from ..entry import CachedResponse, VaryIndex, decode
from ..exceptions import BackendError, CorruptEntryError
from ..invalidation import generation_keys
from ..keys import is_internal
from ..service import MAX_PATTERN_LENGTH
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render as render_metrics
from .models import (
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    ClearResult,
    DeleteResult,
    ErrorDetail,
    HealthStatus,
    InvalidateRequest,
    InvalidateResult,
    KeyDetail,
    KeysPage,
    StatsDocument,
    ValidationErrors,
)
from .options import AdminOptions

if TYPE_CHECKING:  # the manager imports this module
    from ..manager import CacheManager


class _KeyConvertor(PathConvertor):
    """A cache key in a URL: like ``path``, newlines included (a key set by hand may hold any character)."""

    regex = "(?s:.*)"


register_url_convertor("cache_key", _KeyConvertor())

__all__ = ["admin_router"]

logger = logging.getLogger("intelligent_cache")

Pattern = Annotated[str, Query(min_length=1, max_length=MAX_PATTERN_LENGTH)]
KeyPath = Annotated[str, Path(min_length=1, max_length=4096)]

T = TypeVar("T")

# Admin calls change the cache, not the app's resources: they say exactly what
# they invalidate, and their own paths invalidate nothing.
_NOT_A_WRITE = invalidates(hierarchy=False)

# Entries read at once when a listing describes its keys: bounds the memory a
# page of large bodies can take (each is decoded, summarized, then dropped).
_READ_CONCURRENCY = 16


def _backend_failure(exc: Exception) -> HTTPException:
    return HTTPException(status_code=503, detail=f"cache backend unavailable: {describe_error(exc)}")


def _backend_info(backend: CacheBackend) -> dict[str, Any]:
    """``backend.info()``, plus how much of its budget a memory backend uses."""
    info = backend.info()
    if isinstance(backend, MemoryBackend):
        info.update(
            entries=len(backend), max_entries=backend.max_entries, bytes=backend.size_bytes, max_bytes=backend.max_bytes
        )
    return info


@dataclasses.dataclass(frozen=True, slots=True)
class _Summary:
    """What validity, freshness and a listing need of a stored response (no body, no headers)."""

    stored_at: float
    ttl: float
    generations: tuple[int, ...]
    names: tuple[str, ...]
    size: int

    @classmethod
    def of(cls, entry: CachedResponse) -> "_Summary":
        names = tuple(generation_keys(entry.path, entry.tags))
        return cls(entry.stored_at, entry.ttl, entry.generations, names, len(entry.body))

    def describe(self, valid: bool | None, now: float, soft_purge: bool) -> dict[str, Any]:
        """``valid``, ``state`` and ``expires_in`` (seconds of freshness left: 0 unless fresh)."""
        if valid is False:
            # A write changed a counter this entry recorded: never a HIT again. Soft purge
            # keeps it as a stale fallback (the route's stale windows); otherwise it is dead.
            state = "stale" if soft_purge else "invalidated"
        else:
            state = "fresh" if now - self.stored_at < self.ttl else "expired"
        expires_in = round(max(0.0, self.stored_at + self.ttl - now), 3) if state == "fresh" else 0.0
        return {"valid": valid, "state": state, "expires_in": expires_in}


def _knows_generations(backend: CacheBackend) -> bool:
    # The base class's generations() knows nothing (all None): validity is then unknown,
    # whereas None from a real implementation means the counter is gone, so the entry is too.
    return type(backend).generations is not CacheBackend.generations


async def _validity(backend: CacheBackend, summaries: Sequence[_Summary]) -> list[bool | None]:
    """Whether each entry's recorded counters are still current, in one ``generations`` call."""
    if not summaries or not _knows_generations(backend):
        return [None] * len(summaries)
    names = list(dict.fromkeys(name for summary in summaries for name in summary.names))
    values = await backend.generations(names)
    current = dict(zip(names, values, strict=True))
    return [
        len(summary.names) == len(summary.generations)
        and all(current[name] == recorded for name, recorded in zip(summary.names, summary.generations, strict=True))
        for summary in summaries
    ]


def _kind(value: Any) -> str:
    if isinstance(value, CachedResponse):
        return "response"
    if isinstance(value, VaryIndex):
        return "vary"
    return "corrupt" if value is None else "value"


async def _summarize(backend: CacheBackend, keys: Sequence[str]) -> dict[str, _Summary | tuple[str, int]]:
    """Read and decode each key: its summary if it holds a response, else its kind and size; absent keys left out.

    Decoded with ``entry.decode``, not ``manager.io.decode``: browsing must neither count
    corrupt entries as failed lookups nor push hot entries out of the decode memo.
    """
    found: dict[str, _Summary | tuple[str, int]] = {}
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(_READ_CONCURRENCY)

    async def read(key: str) -> None:
        async with limiter:
            try:
                raw = await backend.get(key)
            except Exception as exc:
                errors.append(exc)
                return
        if raw is None:  # expired or deleted since the scan
            return
        try:
            value = decode(raw)
            if isinstance(value, CachedResponse):
                found[key] = _Summary.of(value)
            else:  # decode() raises on corrupt bytes: anything else, None included, is a value
                found[key] = ("vary" if isinstance(value, VaryIndex) else "value", len(raw))
        except (CorruptEntryError, ValueError, TypeError):  # undecodable, or a path no route could have
            found[key] = ("corrupt", len(raw))

    async with anyio.create_task_group() as group:
        for key in keys:
            group.start_soon(read, key)
    if errors:
        raise errors[0]
    return found


def admin_router(manager: "CacheManager", options: AdminOptions | None = None) -> APIRouter:
    """Build the admin API router for ``manager``.

    Args:
        options: how the routes are protected; the manager's ``admin_*``
            settings if omitted.

    Raises:
        ConfigurationError: no auth dependency was configured and
            unauthenticated access is not allowed.
    """
    settings = options or manager.admin
    dependencies = settings.route_dependencies()
    if not dependencies:
        logger.warning("intelligent-cache admin routes are mounted WITHOUT authentication")
    # 401 as the usual answer of an auth dependency (one may answer 403 instead).
    unauthorized: dict[int | str, dict[str, Any]] = {401: UNAUTHORIZED} if dependencies else {}
    router = APIRouter(
        dependencies=dependencies,
        tags=["cache admin"],
        responses=unauthorized,
        include_in_schema=settings.include_in_schema,
    )
    service = manager.service()

    @router.get("/keys", response_model=KeysPage, response_model_exclude_unset=True, responses={503: UNAVAILABLE})
    async def list_keys(
        pattern: Pattern = "*",
        cursor: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        with_state: bool = False,
        include_invalidated: bool = True,
    ) -> dict[str, Any]:
        """One page of cached keys with their remaining TTL (cursor 0 = done).

        Each item is ``{"key", "ttl"}``: ``ttl`` is how long the backend keeps the key.

        ``with_state=true`` also reads and decodes every key of the page (at most
        ``limit`` reads, 16 at a time, plus one batched read of invalidation
        counters) and adds to each item:

        - ``kind``: ``response``, ``vary`` (pointer to per-header variants),
          ``value`` (set through ``CacheService``) or ``corrupt``;
        - ``valid``: for responses, whether no write invalidated the entry since it
          was computed (``true``/``false``), ``null`` if the backend cannot tell;
        - ``state``: for responses, ``fresh`` (served as a HIT), ``expired`` (past
          its TTL, kept only for the route's stale windows), ``invalidated``
          (never served again) or ``stale`` (invalidated, but ``soft_purge``
          keeps it as a stale fallback); ``null`` for other kinds;
        - ``expires_in``: seconds of freshness left, 0 unless ``fresh``;
        - ``size``: bytes of a response's body, or of the stored value for other kinds;
        - ``hits``: answers served from a response's entry (HIT or STALE) while its key is
          kept, counted by every process sharing the backend (flushed each
          ``stats_flush_interval``; this process's count is current).

        Keys that vanished between listing and reading are left out.

        ``include_invalidated=false`` (implies ``with_state``) leaves out entries
        whose state is ``invalidated`` and adds ``hidden``, how many were left out
        of this page. A page may then hold fewer keys than ``limit``, even none,
        before the cursor is done.
        """
        try:
            next_cursor, page = await manager.backend.scan(pattern, cursor, limit)
        except Exception as exc:
            raise _backend_failure(exc) from exc
        keys: list[dict[str, Any]] = [
            {"key": key, "ttl": None if ttl is None else round(ttl, 3)} for key, ttl in page if not is_internal(key)
        ]
        if not with_state and include_invalidated:
            return {"keys": keys, "cursor": next_cursor}
        try:
            found = await _summarize(manager.backend, [item["key"] for item in keys])
            responses = {key: value for key, value in found.items() if isinstance(value, _Summary)}
            validity = dict(zip(responses, await _validity(manager.backend, list(responses.values())), strict=True))
            hits = dict(zip(responses, await manager.key_hits(list(responses)), strict=True))
        except Exception as exc:
            raise _backend_failure(exc) from exc
        now = manager.clock()
        described: list[dict[str, Any]] = []
        for item in keys:
            value = found.get(item["key"])
            if value is None:
                continue
            if isinstance(value, _Summary):
                item.update(kind="response", **value.describe(validity[item["key"]], now, manager.soft_purge))
                item["size"] = value.size
                item["hits"] = hits[item["key"]]
            else:
                item.update(kind=value[0], valid=None, state=None, expires_in=None, size=value[1])
            described.append(item)
        if include_invalidated:
            return {"keys": described, "cursor": next_cursor}
        shown = [item for item in described if item["state"] != "invalidated"]
        return {"keys": shown, "cursor": next_cursor, "hidden": len(described) - len(shown)}

    async def existing(key: str, operation: Callable[[str], Awaitable[T | None]]) -> T:
        """``operation(key)`` on a cache key: 404 for internal or absent keys, 503 if the backend fails."""
        if is_internal(key):
            raise HTTPException(status_code=404, detail="no such key")
        try:
            result = await operation(key)
        except Exception as exc:
            raise _backend_failure(exc) from exc
        if not result:
            raise HTTPException(status_code=404, detail="no such key")
        return result

    @router.get(
        "/keys/{key:cache_key}",
        response_model=KeyDetail,
        response_model_exclude_unset=True,
        responses={404: NOT_FOUND, 503: UNAVAILABLE},
    )
    async def get_key(key: KeyPath) -> dict[str, Any]:
        """Metadata of one entry (no body).

        For a response: route, path, status, size, hits, stored_at, age, ttl, tags,
        headers, and ``valid``, ``state`` and ``expires_in`` as ``GET /keys?with_state=true``
        gives them (an invalidated entry is never ``fresh``, its ``expires_in`` is 0).
        """
        raw = await existing(key, manager.backend.get)
        entry = manager.io.decode(raw)
        if isinstance(entry, VaryIndex):
            return {"key": key, "kind": "vary", "size": len(raw), "vary": list(entry.names)}
        if not isinstance(entry, CachedResponse):
            return {"key": key, "kind": _kind(entry), "size": len(raw)}
        summary = _Summary.of(entry)
        try:
            (valid,) = await _validity(manager.backend, [summary])
            (hits,) = await manager.key_hits([key])
        except Exception as exc:
            raise _backend_failure(exc) from exc
        now = manager.clock()
        return {
            "key": key,
            "kind": "response",
            "route": entry.route,
            "path": entry.path,
            "status": entry.status,
            "size": len(entry.body),
            "hits": hits,
            "stored_at": entry.stored_at,
            "age": round(entry.age(now), 3),
            "ttl": entry.ttl,
            **summary.describe(valid, now, manager.soft_purge),
            "tags": list(entry.tags),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
        }

    @router.delete("/keys/{key:cache_key}", response_model=DeleteResult, responses={404: NOT_FOUND, 503: UNAVAILABLE})
    @_NOT_A_WRITE
    async def delete_key(key: KeyPath) -> dict[str, Any]:
        """Delete one entry; 404 if absent."""
        await existing(key, manager.backend.delete)
        return {"deleted": key}

    @router.post("/clear", response_model=ClearResult, responses={503: UNAVAILABLE})
    @_NOT_A_WRITE
    async def clear(
        pattern: Annotated[str | None, Query(min_length=1, max_length=MAX_PATTERN_LENGTH)] = None,
    ) -> dict[str, Any]:
        """Delete every entry of this cache's namespace, or those matching ``pattern``."""
        try:
            deleted = await (service.clear_all() if pattern is None else service.clear_pattern(pattern))
        except BackendError as exc:
            raise _backend_failure(exc) from exc
        return {"deleted": deleted, "pattern": pattern}

    @router.post(
        "/invalidate",
        response_model=InvalidateResult,
        responses={
            422: {
                "model": ValidationErrors | ErrorDetail,
                "description": "Invalid body, or one naming neither a path nor tags",
            },
            503: UNAVAILABLE,
        },
    )
    @_NOT_A_WRITE
    async def invalidate(request: Annotated[InvalidateRequest, Body()]) -> dict[str, Any]:
        """Invalidate as a write to ``path`` would, and/or every entry with one of ``tags``."""
        if request.path is None and not request.tags:
            raise HTTPException(status_code=422, detail="give a path, tags, or both")
        try:
            if request.path is not None:
                await service.invalidate_path(request.path)
            if request.tags:
                await service.invalidate_tags(*request.tags)
        except BackendError as exc:
            raise _backend_failure(exc) from exc
        return {"path": request.path, "tags": request.tags}

    @router.get("/stats", response_model=StatsDocument, response_model_exclude_unset=True)
    async def stats() -> dict[str, Any]:
        """Hit/miss counters (all workers sharing a Redis backend), per route, and backend state.

        With the memory backend, ``backend`` also says how full it is: ``entries``
        of ``max_entries``, ``bytes`` of ``max_bytes``.
        """
        document = await service.get_stats()
        document["backend"] = _backend_info(manager.backend)
        return document

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        # The route's media type is text, its 401 (from the auth dependency) is JSON.
        responses={
            status: {
                "description": UNAUTHORIZED["description"],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
            }
            for status in unauthorized
        },
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: requests by route and outcome, errors, latency histograms."""
        counters, _ = await manager.shared_counters()
        breaker = manager.backend.info().get("breaker")
        breaker_open = None if breaker is None else breaker.get("state") != "closed"
        return PlainTextResponse(render_metrics(counters, breaker_open=breaker_open), media_type=METRICS_CONTENT_TYPE)

    @router.get(
        "/health",
        response_model=HealthStatus,
        responses={503: {"model": HealthStatus, "description": "The backend does not answer"}},
    )
    async def health() -> JSONResponse:
        """200 with the backend's latency when it answers, 503 with a reason when not.

        ``last_error`` is the last failed backend call of this process, as
        ``"Type: message"`` (null if none yet), e.g. Redis's
        ``"AuthenticationError: invalid username-password pair..."``; it stays
        after the backend recovers, so compare with ``status``.
        """
        info = {**_backend_info(manager.backend), "last_error": manager.io.last_error}
        started = time.perf_counter()
        try:
            await manager.backend.ping()
        except Exception as exc:
            # Type and message (redis-py's repr() of its errors leaves the message out), no password.
            return JSONResponse({"status": "unavailable", **info, "reason": describe_error(exc)}, 503)
        latency_ms = (time.perf_counter() - started) * 1000
        return JSONResponse({"status": "ok", **info, "latency_ms": round(latency_ms, 3)})

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    @router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        """The dashboard page: one self-contained HTML file that only calls this API."""
        return HTMLResponse(_dashboard_html(), headers={"cache-control": "no-store"})

    return router


@functools.cache
def _dashboard_html() -> str:
    return resources.files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")
