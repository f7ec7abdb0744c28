"""Admin API: browse, delete, clear, invalidate, stats and health.

``admin_router(manager)`` builds a plain ``APIRouter`` (never cached, never
invalidating). It refuses to build without an auth dependency unless the
manager explicitly allows unauthenticated access.
"""

# No "from __future__ import annotations" here: FastAPI introspects these signatures.

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from ..entry import CachedResponse
from ..exceptions import BackendError, ConfigurationError
from ..invalidation import INTERNAL_PREFIX
from ..manager import CacheManager
from ..service import MAX_PATTERN_LENGTH
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render as render_metrics

__all__ = ["admin_router"]

logger = logging.getLogger("intelligent_cache")

Pattern = Annotated[str, Query(min_length=1, max_length=MAX_PATTERN_LENGTH)]
KeyPath = Annotated[str, Path(min_length=1, max_length=4096)]

T = TypeVar("T")


class InvalidateRequest(BaseModel):
    """What ``POST /invalidate`` takes: a path, tags, or both."""

    path: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^/")
    tags: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=100)


def _backend_failure(exc: Exception) -> HTTPException:
    return HTTPException(status_code=503, detail=f"cache backend unavailable: {exc}")


def admin_router(manager: CacheManager) -> APIRouter:
    """Build the admin API router for ``manager``.

    Raises:
        ConfigurationError: no auth dependency was configured and
            ``allow_unauthenticated_admin`` is not set.
    """
    dependencies = list(manager.admin_dependencies)
    if manager.admin_auth_dependency is not None:
        dependencies.append(Depends(manager.admin_auth_dependency))
    if not dependencies:
        if not manager.allow_unauthenticated_admin:
            raise ConfigurationError(
                "admin routes need authentication: pass admin_dependencies=[Depends(...)] or "
                "admin_auth_dependency=..., or allow_unauthenticated_admin=True for a trusted network"
            )
        logger.warning("intelligent-cache admin routes are mounted WITHOUT authentication")
    router = APIRouter(dependencies=dependencies, tags=["cache admin"])
    service = manager.service()

    @router.get("/keys")
    async def list_keys(
        pattern: Pattern = "*",
        cursor: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """One page of cached keys with their remaining TTL (cursor 0 = done)."""
        try:
            next_cursor, page = await manager.backend.scan(pattern, cursor, limit)
        except Exception as exc:
            raise _backend_failure(exc) from exc
        keys = [
            {"key": key, "ttl": None if ttl is None else round(ttl, 3)}
            for key, ttl in page
            if not key.startswith(INTERNAL_PREFIX)
        ]
        return {"keys": keys, "cursor": next_cursor}

    async def existing(key: str, operation: Callable[[str], Awaitable[T | None]]) -> T:
        """``operation(key)`` on a cache key: 404 for internal or absent keys, 503 if the backend fails."""
        if key.startswith(INTERNAL_PREFIX):
            raise HTTPException(status_code=404, detail="no such key")
        try:
            result = await operation(key)
        except Exception as exc:
            raise _backend_failure(exc) from exc
        if not result:
            raise HTTPException(status_code=404, detail="no such key")
        return result

    @router.get("/keys/{key:path}")
    async def get_key(key: KeyPath) -> dict[str, Any]:
        """Metadata of one entry (no body)."""
        raw = await existing(key, manager.backend.get)
        entry = manager.decode(raw)
        if not isinstance(entry, CachedResponse):
            kind = "corrupt" if entry is None else "value"
            return {"key": key, "kind": kind, "size": len(raw)}
        now = manager.clock()
        return {
            "key": key,
            "kind": "response",
            "route": entry.route,
            "path": entry.path,
            "status": entry.status,
            "size": len(entry.body),
            "stored_at": entry.stored_at,
            "age": round(entry.age(now), 3),
            "ttl": entry.ttl,
            "expires_in": round(max(0.0, entry.stored_at + entry.ttl - now), 3),
            "tags": list(entry.tags),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
        }

    @router.delete("/keys/{key:path}")
    async def delete_key(key: KeyPath) -> dict[str, Any]:
        """Delete one entry; 404 if absent."""
        await existing(key, manager.backend.delete)
        return {"deleted": key}

    @router.post("/clear")
    async def clear(
        pattern: Annotated[str | None, Query(min_length=1, max_length=MAX_PATTERN_LENGTH)] = None,
    ) -> dict[str, Any]:
        """Delete every entry of this cache's namespace, or those matching ``pattern``."""
        try:
            deleted = await (service.clear_all() if pattern is None else service.clear_pattern(pattern))
        except BackendError as exc:
            raise _backend_failure(exc) from exc
        return {"deleted": deleted, "pattern": pattern}

    @router.post("/invalidate")
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

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        """Hit/miss counters (all workers sharing a Redis backend), per route, and backend state."""
        return await service.get_stats()

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: requests by route and outcome, errors, latency histograms."""
        counters, _ = await manager.shared_counters()
        breaker = manager.backend.info().get("breaker")
        breaker_open = None if breaker is None else breaker.get("state") != "closed"
        return PlainTextResponse(render_metrics(counters, breaker_open=breaker_open), media_type=METRICS_CONTENT_TYPE)

    @router.get("/health", response_model=None)
    async def health() -> JSONResponse:
        """200 with the backend's latency when it answers, 503 with a reason when not."""
        info = manager.backend.info()
        started = time.perf_counter()
        try:
            await manager.backend.ping()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", **info, "reason": repr(exc)}, 503)
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
